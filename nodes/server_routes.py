"""`POST /zimage/generate` on ComfyUI's own server: the headless API's contract, run as a graph of our nodes through
ComfyUI's queue (so it shares the GPU, the model cache and the memory manager with everything else ComfyUI runs).

Flow: validate the body with zimage_core.service.parse_request (same rules and errors as the headless server) → build
the full-pipeline API graph (`route_graph.build_route_graph`) → POST it to ComfyUI's own /prompt over loopback (the
exact code path a client's POST /prompt takes: validation, on_prompt handlers, queue) → poll the prompt's history →
read the PreviewImage outputs → answer `{"image": base64 JPEG, "width", "height", "seed", "timing_report", ...}`.
The timing report comes from our nodes (host.record_timing, keyed by prompt id): the stages that ran.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from zimage_core.model_choice import AUTO, pick_face_model
from zimage_core.pipeline import encode_jpeg_base64
from zimage_core.service.request import SERVER_OPTIONS, Limits, RequestError, parse_request

from . import host
from .route_graph import build_route_graph

log = logging.getLogger(__name__)

ROUTE = "/zimage/generate"
TIMEOUT_S = 900.0
POLL_S = 0.25
CLIENT_ID = "zimage-generate-route"
_registered = False


def default_choices() -> dict[str, Any]:
    """Which model files the route uses: the loader's preferred defaults, and for the heavy upscaler and the face
    model what 'auto' picks (zimage_core.model_choice); `heavy_note` / `face_note` say what was chosen and why."""
    from .blocks import NO_HEAVY, heavy_choices, resolve_auto_heavy
    from .faces import FACE_FOLDER
    from .loaders import ZImageLoader

    req = ZImageLoader.INPUT_TYPES()["required"]
    picks = {name: req[name][1].get("default") for name in ("diffusion_model", "text_encoder", "vae")}
    files = {name: list(req[name][0]) for name in ("diffusion_model", "text_encoder", "vae")}
    heavy, why = resolve_auto_heavy()
    host.register_folder(FACE_FOLDER)
    faces = host.list_files(FACE_FOLDER)
    face, face_why = pick_face_model(faces)
    return {**picks, "files": files, "heavy_choices": [c for c in heavy_choices() if c != AUTO], "heavy": heavy,
            "heavy_note": f"heavy upscaler: {why}", "face_choices": faces, "face_model": face,
            "face_note": f"faces: {face_why}", "no_heavy": NO_HEAVY}


def _json(status: int, body: dict):
    from aiohttp import web

    return web.json_response(body, status=status)


def _error(status: int, message: str, field: str | None = None, **extra) -> Any:
    return _json(status, {"error": message, "field": field, **extra})


async def _queue(server, prompt: dict) -> tuple[str | None, dict]:
    """POST the graph to ComfyUI's own /prompt (same validation and queue as any client)."""
    import aiohttp

    url = host.server_base_url(server) + "/prompt"
    body = {"prompt": prompt, "client_id": CLIENT_ID, "prompt_id": str(uuid.uuid4())}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, ssl=False) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                return None, data
            return data.get("prompt_id"), data


async def _wait(server, prompt_id: str, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = server.prompt_queue.get_history(prompt_id=prompt_id)  # an entry appears once execution ended
        if hist and prompt_id in hist:
            return hist[prompt_id]
        await asyncio.sleep(POLL_S)
    return None


def _execution_error(entry: dict) -> dict | None:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            return {"kind": kind, **(data or {})}
    return None


def _read_outputs(entry: dict, node_id: str) -> list:
    """Every image an output node wrote (a batch writes one file per image), as (1, H, W, 3) tensors."""
    from zimage_core.images import load_image

    images = entry.get("outputs", {}).get(node_id, {}).get("images", [])
    if not images:
        raise RuntimeError(f"the graph finished but node {node_id} produced no image.")
    out = []
    for item in images:
        base = host.directory_by_type(item.get("type", "temp"))
        if base is None:
            raise RuntimeError("ComfyUI's output folders are not available.")
        out.append(load_image(base / item.get("subfolder", "") / item["filename"]))
    return out


class _Refused(Exception):
    """An answer other than 200, raised by the steps of handle_generate."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra


def _one_of(choices: list[str]) -> str:
    return ", ".join(choices[:20]) or "(none installed)"


def _choose_files(req) -> tuple[dict[str, Any], list[str]]:
    """The model files of the graph (the request's names checked against ComfyUI's folders, else the defaults) and
    the notes saying which heavy upscaler and face model were chosen."""
    choices = default_choices()
    missing = [k for k in ("diffusion_model", "text_encoder", "vae") if not choices.get(k)]
    if missing:
        raise _Refused(500, "server model files: no Z-Image " + ", ".join(missing) + " file in ComfyUI's model "
                       "folders (models/diffusion_models, models/text_encoders, models/vae).")
    files = {"heavy": AUTO, "face_model": AUTO}  # the nodes resolve "auto" exactly as default_choices() reports it
    for field, folder in (("diffusion_model", "diffusion_models"), ("text_encoder", "text_encoders"),
                          ("vae", "vae")):
        wanted = getattr(req, field)
        if wanted is not None and wanted not in choices["files"][field]:
            raise _Refused(400, f"{field} '{wanted}' is not a file in ComfyUI's models/{folder}; choose one of: "
                           + _one_of(choices["files"][field]), field)
        files[field] = wanted or choices[field]
    notes = [choices["heavy_note"], choices["face_note"]]
    if req.heavy is not None:
        if req.heavy not in choices["heavy_choices"]:
            raise _Refused(400, f"heavy '{req.heavy}' is not an upscaler ComfyUI knows; choose one of: "
                           + _one_of(choices["heavy_choices"]), "heavy")
        files["heavy"], notes[0] = req.heavy, f"heavy upscaler: {req.heavy} (requested)"
    if req.face_model is not None:
        if req.face_model not in choices["face_choices"]:
            raise _Refused(400, f"face_model '{req.face_model}' is not in models/facerestore_models; choose one of: "
                           + _one_of(choices["face_choices"]), "face_model")
        files["face_model"], notes[1] = req.face_model, f"faces: {req.face_model} (requested)"
    return files, notes


def _check_graph_request(req) -> None:
    """What a text-to-image graph cannot do, and LoRA names that are not in ComfyUI's folder."""
    given = [name for name, present in (("hires_passes", bool(req.job.hires_passes)),
                                        ("init_image", req.job.init_image is not None),
                                        ("control_image", req.control_image is not None)) if present]
    if given:
        raise _Refused(400, f"{given[0]}: this route builds a text-to-image graph; hi-res passes, start images, masks "
                       "and control images are offered by the headless server (zimage serve) and by graphs of the "
                       "Z-Image nodes.", given[0])
    loras = host.list_files("loras") if req.loras else []
    for name, _ in req.loras:
        if name not in loras:
            raise _Refused(400, f"loras: '{name}' is not in ComfyUI's models/loras; choose one of: "
                           + _one_of(loras), "loras")


async def _run_graph(server, graph: dict) -> tuple[str, dict]:
    """Queue the graph, wait for its history entry; (prompt id, entry) or _Refused saying what went wrong."""
    try:
        prompt_id, answer = await _queue(server, graph)
    except Exception as err:  # noqa: BLE001
        log.exception("Z-Image route: could not queue the graph")
        raise _Refused(500, f"could not queue the graph on ComfyUI ({type(err).__name__}: {err}).") from err
    if prompt_id is None:
        raise _Refused(400 if answer.get("node_errors") else 500, "ComfyUI refused the graph: "
                       + str(answer.get("error", {}).get("message", answer.get("error"))),
                       node_errors=answer.get("node_errors", {}))
    entry = await _wait(server, prompt_id, TIMEOUT_S)
    if entry is None:
        raise _Refused(504, f"the graph did not finish within {TIMEOUT_S:g} s (prompt_id {prompt_id}; it is still "
                       "in ComfyUI's queue, POST /interrupt to stop it).", prompt_id=prompt_id)
    failure = _execution_error(entry)
    if failure is not None or entry.get("status", {}).get("status_str") == "error":
        failure = failure or {}
        host.pop_timings(prompt_id)
        if failure.get("kind") == "execution_interrupted":
            raise _Refused(503, "the job was interrupted in ComfyUI.", prompt_id=prompt_id)
        etype = str(failure.get("exception_type", ""))
        status = 500 if ("ModelFileError" in etype or "zimage" not in etype) else 400
        raise _Refused(status, f"{failure.get('node_type', 'a node')} failed: "
                       f"{failure.get('exception_message', '?')}", prompt_id=prompt_id)
    return prompt_id, entry


async def handle_generate(request) -> Any:
    """The headless API's contract, answered by a graph queued on ComfyUI."""
    server = host.prompt_server()
    t_start = time.perf_counter()
    try:
        data = await request.json()
    except Exception:  # noqa: BLE001
        return _error(400, "the body is not valid UTF-8 JSON.", "body")
    try:
        req = parse_request(data, Limits())
        _check_graph_request(req)
        files, notes = await asyncio.to_thread(_choose_files, req)
        graph = build_route_graph(req.job, loras=req.loras, route=req.route, **files)
        prompt_id, entry = await _run_graph(server, graph.nodes)
    except RequestError as err:
        return _error(err.status, err.message, err.field)
    except _Refused as err:
        return _error(err.status, err.message, err.field, **err.extra)

    images = [im for node in graph.outputs for im in await asyncio.to_thread(_read_outputs, entry, node)]
    stage = host.pop_timings(prompt_id)
    report = {k: round(float(v), 4) for k, v in stage.items() if k != "total"}  # stages that ran, as nodes timed them
    report["total"] = round(sum(report.values()), 4)
    encoded = await asyncio.to_thread(lambda: [encode_jpeg_base64(im) for im in images])  # off the event loop
    body: dict[str, Any] = {
        "image": encoded[0], "width": int(images[0].shape[2]), "height": int(images[0].shape[1]),
        "seed": req.seed, "timing_report": report, "prompt_id": prompt_id,
        "wall_seconds": round(time.perf_counter() - t_start, 4),
        "notes": [*graph.notes, *notes, "stages a cached node skipped are absent"], "warnings": req.warnings,
        "options": {**{k: v for k, v in req.job.values().items() if k not in SERVER_OPTIONS}, **req.route},
    }
    if len(images) > 1:
        body["images"] = encoded
        body["seeds"] = [req.seed + i for i in range(len(images))]
    return _json(200, body)


def register() -> bool:
    """Add the route to ComfyUI's server (only when it exists; the nodes work without it)."""
    global _registered
    server = host.prompt_server()
    if server is None or _registered:
        return False
    server.routes.post(ROUTE)(handle_generate)
    _registered = True
    log.info("Z-Image: POST %s registered", ROUTE)
    return True
