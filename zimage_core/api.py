"""Headless HTTP API (aiohttp, no ComfyUI): `POST /generate` (the DESIGN §1 contract) and `GET /health`.

Why it is shaped this way:
  * GPU work is serial, so one worker runs one generation at a time in a dedicated thread; the event loop only
    parses, validates and queues, and stays responsive (health checks answer while a job runs).
  * The queue is bounded: when `queue_size` requests are already waiting, new ones get 503 + Retry-After at once
    instead of piling up memory and latency.
  * Every request gets exactly one answer: its handler awaits its own job's future; a timed-out job is flagged, the
    route stops at its next step (`should_stop`) or is skipped if it has not started, and its late result is
    dropped.
  * Every error is JSON: `{"error": "...", "field": "<request field or null>", "request_id": "..."}`.

Request (`POST /generate`, JSON object):
  prompts          list of 1..4 non-empty strings, each <= 4000 characters (required)
  width, height    integers 64..2048, multiples of 16 (default 1024); the error names the nearest valid sizes
  steps            integer 1..50 (default 9; = model evaluations)
  seed             integer 0..2**63-1; absent or null -> a random seed in 0..2**32-1, echoed back
  negative_prompt  optional string (<= 4000 chars), applied with NAG (needs zimage_core.guidance; 400 if missing)
  heavy            optional heavy upscaler: a file/folder name resolved only inside the configured upscaler folders
  face_model       optional GFPGAN v1.4 file name resolved only inside the configured face-restore folders
Unknown fields are ignored (clients of the reference server may send more) and listed in the answer's "warnings",
so a typo such as "setps" is visible.

Answer (200): `{"image": <base64 JPEG>, "width", "height", "seed", "timing_report": {stage: seconds},
"request_id", "notes", "warnings"}`. Several prompts run as one batch (prompt i gets seed + i): "image" is the
first prompt's image and, only then, "images" lists every image in prompt order with their "seeds".

Status codes: 400 invalid request (JSON error naming the field), 413 body over `max_body`, 503 queue full (with
Retry-After) or shutting down, 504 per-request timeout (the job is cancelled), 500 unexpected failure.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import math
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from .errors import InputError, Interrupted, ModelFileError, ZImageError
from .pipeline import TIMING_STAGES, RouteResult, encode_jpeg_base64, generate_route, working_size
from .sizes import check_size
from .weights import resolve_inside

log = logging.getLogger(__name__)

KNOWN_FIELDS = ("prompts", "width", "height", "steps", "seed", "negative_prompt", "heavy", "face_model")
ROUTE_OPTION_KEYS = ("scale", "work_min", "work_max", "heavy_ratio", "heavy_options", "face_fidelity")
LOADED_PARTS = ("transformer", "text_encoder", "vae", "tokenizer")
RANDOM_SEED_BOUND = 2**32  # random seeds stay small enough to type into any UI
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

BundleProvider = Callable[[], Any]
RouteFn = Callable[..., RouteResult]


@dataclass(frozen=True)
class Limits:
    """Request bounds. Defaults keep one request's cost and memory predictable on a single GPU."""

    max_body: int = 1 << 20  # bytes (413 beyond)
    max_prompts: int = 4
    max_prompt_chars: int = 4000
    min_side: int = 64
    max_side: int = 2048
    max_steps: int = 50
    max_seed: int = 2**63 - 1


class RequestError(Exception):
    """A request the client must change; becomes a JSON error with an HTTP status."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


@dataclass
class GenerateRequest:
    """A validated `POST /generate` body."""

    prompts: list[str]
    width: int = 1024
    height: int = 1024
    steps: int = 9
    seed: int = 0
    negative_prompt: str | None = None
    heavy: str | None = None
    face_model: str | None = None
    warnings: list[str] = field(default_factory=list)


def _int_field(data: dict, name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = data.get(name, default)
    if value is None:
        return None
    if type(value) is not int:  # rejects bool, float (even 1024.0) and strings: clients must send what they mean
        raise RequestError(f"{name} must be an integer; got {json.dumps(value)[:40]}.", name)
    if not lo <= value <= hi:
        raise RequestError(f"{name} must be between {lo} and {hi}; got {value}.", name)
    return value


def _optional_str(data: dict, name: str, max_chars: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string.", name)
    if value.strip() == "":  # blank or whitespace-only = not given (a " " negative_prompt must not turn NAG on)
        return None
    if len(value) > max_chars:
        raise RequestError(f"{name} is {len(value)} characters; the limit is {max_chars}.", name)
    return value


def parse_request(data: object, limits: Limits = Limits()) -> GenerateRequest:
    """Validate a decoded JSON body against `limits`; raises RequestError naming the offending field."""
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object such as {\"prompts\": [\"a cat\"]}.", "body")
    prompts = data.get("prompts")
    if prompts is None:
        hint = " (use \"prompts\": [\"...\"], a list)" if "prompt" in data else ""
        raise RequestError(f"prompts is required{hint}.", "prompts")
    if not isinstance(prompts, list):
        raise RequestError("prompts must be a list of strings, e.g. [\"a cat\"].", "prompts")
    if not 1 <= len(prompts) <= limits.max_prompts:
        raise RequestError(f"prompts must hold 1 to {limits.max_prompts} strings; got {len(prompts)}.", "prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise RequestError(f"prompts[{i}] must be a string.", "prompts")
        if not p.strip():
            raise RequestError(f"prompts[{i}] is empty.", "prompts")
        if len(p) > limits.max_prompt_chars:
            raise RequestError(f"prompts[{i}] is {len(p)} characters; the limit is {limits.max_prompt_chars}.",
                               "prompts")
    width = _int_field(data, "width", 1024, -2**63, 2**63)
    height = _int_field(data, "height", 1024, -2**63, 2**63)
    for name, v in (("width", width), ("height", height)):
        try:  # one side at a time so the error names the right field; the other side is a known-valid size
            check_size(v, limits.min_side, min_size=limits.min_side, max_size=limits.max_side)
        except InputError as err:
            raise RequestError(str(err).replace("width", name, 1), name) from None
    steps = _int_field(data, "steps", 9, 1, limits.max_steps)
    seed = _int_field(data, "seed", None, 0, limits.max_seed)
    if seed is None:
        seed = secrets.randbelow(RANDOM_SEED_BOUND)
    req = GenerateRequest(list(prompts), width, height, steps, seed,
                          negative_prompt=_optional_str(data, "negative_prompt", limits.max_prompt_chars),
                          heavy=_optional_str(data, "heavy", 255), face_model=_optional_str(data, "face_model", 255))
    unknown = sorted(k for k in data if k not in KNOWN_FIELDS)
    if unknown:
        req.warnings.append(f"unknown fields ignored: {', '.join(unknown)}")
    return req


@dataclass
class _Job:
    id: str
    request: GenerateRequest
    future: asyncio.Future
    stop: threading.Event = field(default_factory=threading.Event)
    heavy_path: Path | None = None
    face_path: Path | None = None


class GenerationService:
    """The bounded queue, the single worker and the one thread that touches the models."""

    def __init__(self, provider: BundleProvider, *, queue_size: int, timeout_s: float | None, route: RouteFn,
                 route_options: dict[str, Any], heavy_dirs: list[Path], face_dirs: list[Path], models_label: str,
                 bundle: Any = None, preload: bool = False):
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be at least 1; got {queue_size}.")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive or None; got {timeout_s}.")
        self.provider, self.queue_size, self.timeout_s, self.route = provider, int(queue_size), timeout_s, route
        self.route_options = dict(route_options)
        self.heavy_dirs, self.face_dirs, self.models_label = heavy_dirs, face_dirs, models_label
        self.bundle, self.preload = bundle, preload
        self.counts = collections.Counter()
        self.busy: str | None = None
        self._avg_job_s = 5.0
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._running: _Job | None = None
        self._cache: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="zimage-gpu")
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="zimage-worker")

    async def stop(self) -> None:
        """Refuse new work, stop the running job at its next step, answer every queued job with 503."""
        self._stopping.set()
        if self._running is not None:
            self._running.stop.set()
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RequestError("the server is shutting down.", None, 503))
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the average job time times the jobs ahead."""
        return max(1, min(3600, math.ceil(self._avg_job_s * (self.waiting + 1))))

    def submit(self, job: _Job) -> None:
        if self._stopping.is_set() or self._queue is None:
            raise RequestError("the server is shutting down.", None, 503)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.counts["rejected_full"] += 1
            raise RequestError(f"the queue is full ({self.queue_size} requests waiting); retry later.", None,
                               503) from None
        self.counts["accepted"] += 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        if self.preload:  # load the weights before the first request instead of inside it
            self.busy = "preload"
            try:
                await loop.run_in_executor(self._executor, self._load_all)
            except Exception:  # noqa: BLE001 - the first request will report the same problem to its client
                log.exception("preloading the models failed")
            finally:
                self.busy = None
        while True:
            job = await self._queue.get()
            if job.stop.is_set() or job.future.done():  # timed out (or client gone) while waiting: never run it
                self.counts["skipped"] += 1
                continue
            self._running, self.busy = job, job.id
            t0 = time.perf_counter()
            try:
                payload = await loop.run_in_executor(self._executor, self._execute, job)
            except asyncio.CancelledError:
                job.stop.set()
                if not job.future.done():
                    job.future.set_exception(RequestError("the server is shutting down.", None, 503))
                raise
            except BaseException as err:  # noqa: BLE001 - every failure must reach exactly one client
                self.counts["failed"] += 1
                if job.stop.is_set():
                    job.future.cancel()  # its handler already answered 504; nobody is waiting for this
                elif not job.future.done():
                    job.future.set_exception(err)
            else:
                self.counts["completed"] += 1
                if job.stop.is_set():
                    job.future.cancel()
                elif not job.future.done():
                    job.future.set_result(payload)
            finally:
                self._avg_job_s = 0.7 * self._avg_job_s + 0.3 * (time.perf_counter() - t0)
                self._running, self.busy = None, None

    # ----------------------------------------------------------------------------------- worker thread only
    def _should_stop_for(self, job: _Job) -> Callable[[], bool]:
        return lambda: job.stop.is_set() or self._stopping.is_set()

    def _cached(self, key: tuple, load: Callable[[], Any]) -> Any:
        """Keep the last two heavy/face models loaded: reloading one per request would dominate its time."""
        if key not in self._cache:
            self._cache[key] = load()
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _load_all(self) -> None:
        bundle = self.provider()
        self.bundle = bundle
        for name in LOADED_PARTS:
            getattr(bundle, name, None)

    def _execute(self, job: _Job) -> dict[str, Any]:
        req, stop = job.request, self._should_stop_for(job)
        if stop():
            raise Interrupted("cancelled before it started.")
        bundle = self.provider()
        self.bundle = bundle
        kwargs = dict(self.route_options)
        heavy_options = kwargs.pop("heavy_options", None) or {}
        device = getattr(bundle, "device", None)
        if job.heavy_path is not None:
            from .blocks.upscale import load_heavy_upscaler

            path = job.heavy_path
            try:
                kwargs["heavy"] = self._cached(("heavy", str(path), path.stat().st_mtime_ns),
                                               lambda: load_heavy_upscaler(path, device=device, **heavy_options))
            except ZImageError as err:
                raise RequestError(f"could not load heavy upscaler '{req.heavy}': {err}", "heavy") from err
        if job.face_path is not None:
            from .faces import FaceRestorer

            path = job.face_path
            try:
                kwargs["face_model"] = self._cached(("face", str(path), path.stat().st_mtime_ns),
                                                    lambda: FaceRestorer.load(path, device=device or "cpu"))
            except ZImageError as err:
                raise RequestError(f"could not load face model '{req.face_model}': {err}", "face_model") from err
        if req.negative_prompt:
            kwargs["make_denoiser"] = _nag_denoiser(bundle, req.negative_prompt)
        result = self.route(bundle, req.prompts, width=req.width, height=req.height, steps=req.steps, seed=req.seed,
                            should_stop=stop, **kwargs)
        images = [encode_jpeg_base64(result.image, i) for i in range(result.image.shape[0])]
        seeds = list(result.seeds) or [req.seed + i for i in range(len(images))]
        timings = {k: round(float(v), 6) for k, v in result.timings.items()}
        payload: dict[str, Any] = {"image": images[0], "width": int(result.image.shape[2]),
                                   "height": int(result.image.shape[1]), "seed": req.seed, "timing_report": timings,
                                   "notes": list(result.notes)}
        if req.negative_prompt:
            payload["notes"].append("negative prompt applied with NAG (" + ", ".join(
                f"{k.removeprefix('nag_')} {v:g}" for k, v in NAG_SETTINGS.items()) + ")")
        if len(images) > 1:
            payload["images"], payload["seeds"] = images, seeds
        return payload

    # ----------------------------------------------------------------------------------------------- health
    def health(self) -> dict[str, Any]:
        bundle = self.bundle
        loaded = {}
        if bundle is not None and hasattr(bundle, "is_loaded"):
            loaded = {name: bool(bundle.is_loaded(name)) for name in LOADED_PARTS}
        return {"status": "stopping" if self._stopping.is_set() else "ok", "queue": self.waiting,
                "queue_size": self.queue_size, "busy": self.busy is not None, "models": self.models_label,
                "loaded": loaded, "counts": dict(self.counts)}


NAG_SETTINGS = {"nag_scale": 3.0, "nag_tau": 2.5, "nag_alpha": 0.25}  # the CLI's; DESIGN §4 "sensible on"


def _nag_denoiser(bundle: Any, negative: str):
    """NAG with the CLI's settings (Turbo has no CFG, so NAG is how a negative prompt acts); a clear 400 when this
    installation has no guidance module."""
    try:
        from .generate import prompt_encoder
        from .guidance import GuidanceOptions, guided_denoiser
    except ImportError as err:  # module absent; any error past the imports is a real failure (500 path)
        raise RequestError(f"negative_prompt needs NAG guidance, which this installation lacks ({err}).",
                           "negative_prompt") from err
    neg = prompt_encoder(bundle).encode([negative])  # one entry applies to every prompt of the batch
    return guided_denoiser(GuidanceOptions(negative=neg, **NAG_SETTINGS))


# ------------------------------------------------------------------------------------------------- HTTP layer
SERVICE = web.AppKey("zimage_service", GenerationService)
LIMITS = web.AppKey("zimage_limits", Limits)


def _error(status: int, message: str, field: str | None, request_id: str | None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": message, "field": field, "request_id": request_id}
    hdrs = dict(headers or {})
    if request_id:
        hdrs["X-Request-Id"] = request_id
    return web.json_response(body, status=status, headers=hdrs)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own 404/405/413 answers are text; make every error JSON like ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        field = "body" if exc.status == 413 else None
        return _error(exc.status, exc.reason if exc.status != 413 else "the request body is too large.", field,
                      None, {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")})


async def _read_json(request: web.Request, limits: Limits) -> object:
    if request.content_length is not None and request.content_length > limits.max_body:
        raise RequestError(f"the request body is {request.content_length} bytes; the limit is {limits.max_body}.",
                           "body", 413)
    try:
        raw = await request.read()  # the app's client_max_size also stops chunked bodies at the limit
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"the request body is larger than the limit of {limits.max_body} bytes.", "body",
                           413) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("the body is not valid UTF-8 JSON.", "body") from None


def _resolve(name: str | None, roots: list[Path], what: str) -> Path | None:
    if name is None:
        return None
    try:
        return resolve_inside(name, roots)
    except ModelFileError as err:
        raise RequestError(str(err), what) from None


async def handle_generate(request: web.Request) -> web.Response:
    service, limits = request.app[SERVICE], request.app[LIMITS]
    rid = _request_id(request)
    try:
        req = parse_request(await _read_json(request, limits), limits)
        job = _Job(rid, req, asyncio.get_running_loop().create_future(),
                   heavy_path=_resolve(req.heavy, service.heavy_dirs, "heavy"),
                   face_path=_resolve(req.face_model, service.face_dirs, "face_model"))
        service.submit(job)
    except RequestError as err:
        headers = {"Retry-After": str(service.retry_after())} if err.status == 503 else None
        return _error(err.status, err.message, err.field, rid, headers)
    try:
        payload = await asyncio.wait_for(asyncio.shield(job.future), service.timeout_s)
    except asyncio.TimeoutError:
        job.stop.set()
        service.counts["timed_out"] += 1
        return _error(504, f"the request did not finish within {service.timeout_s:g} s; it was cancelled.", None,
                      rid)
    except asyncio.CancelledError:  # the client went away: free the GPU for the others
        job.stop.set()
        raise
    except RequestError as err:
        return _error(err.status, err.message, err.field, rid)
    except Interrupted as err:
        return _error(503, f"the job was stopped: {err}", None, rid, {"Retry-After": "1"})
    except ModelFileError as err:  # the server's own model files are at fault, not the request
        log.error("request %s: %s", rid, err)
        return _error(500, f"server model files: {err}", None, rid)
    except ZImageError as err:
        return _error(400, str(err), None, rid)
    except Exception as err:  # noqa: BLE001
        log.exception("request %s failed", rid)
        return _error(500, f"internal error ({type(err).__name__}): {err}", None, rid)
    payload = {**payload, "request_id": rid, "warnings": req.warnings}
    return web.json_response(payload, headers={"X-Request-Id": rid})


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].health())


def create_app(models: str | os.PathLike | BundleProvider, *, queue_size: int = 8, max_body: int = 1 << 20,
               timeout_s: float | None = 600.0, device: str | None = None, limits: Limits | None = None,
               route_options: dict[str, Any] | None = None, heavy_dirs: list[str | os.PathLike] | None = None,
               face_dirs: list[str | os.PathLike] | None = None, route: RouteFn = generate_route,
               preload: bool = False) -> web.Application:
    """The aiohttp application.

    models: a ComfyUI models/ folder or a diffusers folder (files are checked now, weights load on the first job),
        or a callable returning a ModelBundle (called in the worker thread).
    route_options: server-side settings passed to `generate_route` (scale, work_min, work_max, heavy_ratio,
        heavy_options, face_fidelity), e.g. a smaller working size for CPU smoke tests.
    heavy_dirs/face_dirs: the only folders request file names may come from (default <models>/upscale_models and
        <models>/facerestore_models for a folder). route: injectable for tests and alternative pipelines.
    preload: load every model part at start-up (health shows busy until done) so the first request is not slow.
    """
    limits = limits or Limits(max_body=max_body)
    options = dict(route_options or {})
    bad = sorted(set(options) - set(ROUTE_OPTION_KEYS))
    if bad:
        raise ValueError(f"unknown route_options {bad}; allowed: {', '.join(ROUTE_OPTION_KEYS)}.")
    working_size(64, 64, options.get("work_min", 512), options.get("work_max", 768))  # fail now, not per request
    bundle = None
    if callable(models):
        provider, label = models, getattr(models, "__name__", "provider")
        default_heavy: list[Path] = []
        default_face: list[Path] = []
    else:
        from .models import load_models

        root = Path(models).expanduser()
        bundle = load_models(root, device=device)  # finds the files now so a wrong folder fails at start-up
        provider, label = (lambda: bundle), str(root)
        default_heavy, default_face = [root / "upscale_models"], [root / "facerestore_models"]
    service = GenerationService(
        provider, queue_size=queue_size, timeout_s=timeout_s, route=route, route_options=options,
        heavy_dirs=[Path(p) for p in heavy_dirs] if heavy_dirs is not None else default_heavy,
        face_dirs=[Path(p) for p in face_dirs] if face_dirs is not None else default_face,
        models_label=label, bundle=bundle, preload=preload)
    app = web.Application(client_max_size=limits.max_body, middlewares=[_json_errors])
    app[SERVICE], app[LIMITS] = service, limits
    app.router.add_post("/generate", handle_generate)
    app.router.add_get("/health", handle_health)

    async def _start(_app: web.Application) -> None:
        await service.start()

    async def _stop(_app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)
    return app


def serve(models: str | os.PathLike | BundleProvider, host: str = "127.0.0.1", port: int = 8190,
          queue_size: int = 8, device: str | None = None, **options: Any) -> None:
    """Run the API until interrupted. Loopback by default: there is no authentication, so expose it on purpose."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("Serving on %s: the API has no authentication; put it behind a proxy you control.", host)
    app = create_app(models, queue_size=queue_size, device=device, **options)
    web.run_app(app, host=host, port=port, print=lambda msg: log.warning("%s", msg))


class BackgroundServer:
    """Run an app on a real socket in a background thread (tests, notebooks): `with BackgroundServer(app) as s:`."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        ready = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._runner = web.AppRunner(self.app, handle_signals=False)
                await self._runner.setup()
                site = web.TCPSite(self._runner, self.host, self.port)
                await site.start()
                self.port = self._runner.addresses[0][1]

            try:
                loop.run_until_complete(boot())
            except BaseException as err:  # noqa: BLE001
                ready.set_exception(err)
                return
            ready.set_result(True)
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="zimage-api", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Limits", "GenerateRequest", "RequestError", "parse_request", "create_app", "serve", "BackgroundServer",
           "TIMING_STAGES"]
