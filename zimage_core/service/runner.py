"""Runs one validated generate request on the models: the bridge between the job queue and the pipeline.

Lives in the worker thread: it owns the model bundle, loads the heavy upscaler and face model a request names
(keeping the last two loaded: reloading per request would dominate its time), runs the request's job through the
route and encodes the answer, which echoes the effective options.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..controlnet import CONTROL_FOLDERS
from ..errors import Interrupted, ModelFileError, ZImageError
from ..job import batch_key
from ..pipeline import RouteResult, encode_jpeg_base64, generate_route, generate_routes
from ..weights import resolve_inside
from .request import MODEL_FIELDS, SERVER_OPTIONS, GenerateRequest, RequestError

LOADED_PARTS = ("transformer", "text_encoder", "vae", "tokenizer")
ROUTE_OPTION_KEYS = ("scale", "work_max", "heavy_ratio", "heavy_options", "face_fidelity")

BundleProvider = Callable[[], Any]
RouteFn = Callable[..., RouteResult]


class GenerationRunner:
    """Turns a GenerateRequest into the answer payload (worker thread only, except `resolve`)."""

    def __init__(self, provider: BundleProvider, *, route: RouteFn = generate_route,
                 route_options: dict[str, Any] | None = None, heavy_dirs: list[Path] = (),
                 face_dirs: list[Path] = (), lora_dirs: list[Path] = (), control_dirs: list[Path] = (),
                 bundle: Any = None,
                 model_dirs: dict[str, list[Path]] | None = None, bundle_for: Callable[..., Any] | None = None):
        options = dict(route_options or {})
        bad = sorted(set(options) - set(ROUTE_OPTION_KEYS))
        if bad:
            raise ValueError(f"unknown route_options {bad}; allowed: {', '.join(ROUTE_OPTION_KEYS)}.")
        self.provider, self.route, self.route_options = provider, route, options
        self.heavy_dirs, self.face_dirs, self.lora_dirs = list(heavy_dirs), list(face_dirs), list(lora_dirs)
        self.control_dirs = list(control_dirs)
        # where request-chosen model files may come from, and how a bundle of other files is loaded
        self.model_dirs, self.bundle_for = dict(model_dirs or {}), bundle_for
        self.bundle = bundle
        self._cache: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    @property
    def work_max(self) -> int:
        from ..pipeline import WORK_MAX

        return int(self.route_options.get("work_max", WORK_MAX))

    def resolve(self, req: GenerateRequest) -> dict[str, Path | None]:
        """The model files a request names, resolved inside the allowed folders (on the event loop: no loading)."""
        files = {"heavy": _resolve(req.heavy, self.heavy_dirs, "heavy"),
                 "face_model": _resolve(req.face_model, self.face_dirs, "face_model")}
        for name in MODEL_FIELDS:
            value = getattr(req, name)
            if value is not None and (self.bundle_for is None or name not in self.model_dirs):
                raise RequestError(f"{name}: this server serves one fixed set of model files.", name)
            files[name] = _resolve(value, self.model_dirs.get(name, []), name)
        return files

    def resolve_job_files(self, req: GenerateRequest) -> GenerateRequest:
        """The request with its LoRA and ControlNet names resolved inside their folders, joined to the job (on the
        event loop: headers are read, no weights)."""
        job = req.job
        if req.loras:
            job = replace(job, loras=tuple((_resolve(name, self.lora_dirs, "loras"), strength)
                                           for name, strength in req.loras))
        if req.control_model is not None:
            from ..controlnet import check_controlnet_file

            path = _resolve(req.control_model, self.control_dirs, "control_model")
            try:
                check_controlnet_file(path)
            except ModelFileError as err:
                raise RequestError(str(err), "control_model") from None
            job = replace(job, control_image=req.control_image, control_model=path)
        return replace(req, job=job)

    def preload(self) -> None:
        bundle = self.provider()
        self.bundle = bundle
        for name in LOADED_PARTS:
            getattr(bundle, name, None)

    def loaded(self) -> dict[str, bool]:
        bundle = self.bundle
        if bundle is None or not hasattr(bundle, "is_loaded"):
            return {}
        return {name: bool(bundle.is_loaded(name)) for name in LOADED_PARTS}

    def _cached(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _load_extras(self, req: GenerateRequest, files: dict[str, Path | None], device: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        heavy_options = self.route_options.get("heavy_options") or {}
        if files["heavy"] is not None:
            from ..blocks.upscale import load_heavy_upscaler

            path = files["heavy"]
            try:
                kwargs["heavy"] = self._cached(("heavy", str(path), path.stat().st_mtime_ns),
                                               lambda: load_heavy_upscaler(path, device=device, **heavy_options))
            except ZImageError as err:
                raise RequestError(f"could not load heavy upscaler '{req.heavy}': {err}", "heavy") from err
        if files["face_model"] is not None:
            from ..faces import FaceRestorer

            path = files["face_model"]
            try:
                kwargs["face_model"] = self._cached(("face", str(path), path.stat().st_mtime_ns),
                                                    lambda: FaceRestorer.load(path, device=device or "cpu"))
            except ZImageError as err:
                raise RequestError(f"could not load face model '{req.face_model}': {err}", "face_model") from err
        return kwargs

    def _setup(self, req: GenerateRequest, files: dict[str, Path | None]) -> tuple[Any, dict[str, Any]]:
        """The bundle the request's files name and the route's keyword arguments (server options, then the
        request's, with its heavy upscaler and face model loaded)."""
        chosen = {name: files.get(name) for name in MODEL_FIELDS if files.get(name) is not None}
        bundle = self.bundle_for(**chosen) if chosen else self.provider()
        self.bundle = bundle
        kwargs = {k: v for k, v in self.route_options.items() if k != "heavy_options"}
        kwargs.update(self._load_extras(req, files, getattr(bundle, "device", None)))
        kwargs.update(req.route)
        return bundle, kwargs

    def run(self, req: GenerateRequest, files: dict[str, Path | None], should_stop: Callable[[], bool]
            ) -> dict[str, Any]:
        if should_stop():
            raise Interrupted("cancelled before it started.")
        bundle, kwargs = self._setup(req, files)
        return _answer(req, self.route(bundle, req.job, should_stop=should_stop, **kwargs))

    def batch_key(self, req: GenerateRequest, files: dict[str, Path | None]) -> str | None:
        """Requests with equal keys can share one generation batch: their jobs differ only in prompts and seeds and
        they name the same files and route options (None: the request runs alone)."""
        key = batch_key(req.job)
        if key is None or self.route is not generate_route:
            return None
        return json.dumps([key, req.route, {k: str(v) for k, v in files.items()}], sort_keys=True)

    def run_batch(self, items: list[tuple[GenerateRequest, dict[str, Path | None]]],
                  should_stop: Callable[[], bool] = lambda: False) -> list[dict[str, Any] | BaseException]:
        """Answers for requests a replica received together, in order: those with equal batch keys are generated in
        one batch (generate_routes, each with its own seed), the others alone. Every answer says its batch size; a
        failure is returned in its request's place."""
        groups: dict[Any, list[int]] = {}
        for i, (req, files) in enumerate(items):
            key = self.batch_key(req, files)
            groups.setdefault(key if key is not None else ("alone", i), []).append(i)
        answers: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * len(items)
        for members in groups.values():
            group = [items[i] for i in members]
            try:
                if len(group) == 1:  # alone: exactly as the server runs one request (its route, a test's gate say)
                    group_answers: list = [self.run(*group[0], should_stop)]
                else:
                    if should_stop():
                        raise Interrupted("cancelled before it started.")
                    bundle, kwargs = self._setup(*group[0])
                    results = generate_routes(bundle, [req.job for req, _ in group], should_stop=should_stop,
                                              **kwargs)
                    group_answers = [_answer(req, result) for (req, _), result in zip(group, results)]
            except Exception as err:  # noqa: BLE001 - each request of the group gets the failure as its answer
                group_answers = [err] * len(group)
            for i, answer in zip(members, group_answers):
                if isinstance(answer, dict):
                    answer["batch_size"] = len(group)
                answers[i] = answer
        return answers


def _answer(req: GenerateRequest, result: RouteResult) -> dict[str, Any]:
    """The JSON answer of one request: its images (base64 JPEG), size, seeds, stages, notes and effective options."""
    images = [encode_jpeg_base64(result.image, i) for i in range(result.image.shape[0])]
    seeds = list(result.seeds) or [req.seed + i for i in range(len(images))]
    payload: dict[str, Any] = {"image": images[0], "width": int(result.image.shape[2]),
                               "height": int(result.image.shape[1]), "seed": req.seed,
                               "timing_report": {k: round(float(v), 6) for k, v in result.timings.items()},
                               "notes": list(result.notes),
                               "options": {**{k: v for k, v in req.job.values().items() if k not in SERVER_OPTIONS},
                                           **req.route}}
    if len(images) > 1:
        payload["images"], payload["seeds"] = images, seeds
    return payload


def build_runner(models: str | os.PathLike | Callable[[], Any], *, device: str | None = None,
                 tokenizer: str | os.PathLike | None = None, model_options: dict[str, Any] | None = None,
                 route_options: dict[str, Any] | None = None, route: RouteFn = generate_route,
                 heavy_dirs: list[str | os.PathLike] | None = None, face_dirs: list[str | os.PathLike] | None = None,
                 lora_dirs: list[str | os.PathLike] | None = None,
                 control_dirs: list[str | os.PathLike] | None = None) -> tuple[GenerationRunner, str]:
    """The runner for a models folder (files checked now, weights on the first job; a request may pick other files
    of a ComfyUI-layout folder) or a bundle provider, with the folders request file names may come from (default:
    the folder's upscale_models, facerestore_models, loras, model_patches and controlnet), and a label for /health
    (the folder's name, never its path)."""
    options = dict(route_options or {})
    bundle, model_dirs, bundle_for = None, {}, None
    if callable(models):
        provider, label = models, getattr(models, "__name__", "provider")
        default_heavy: list[Path] = []
        default_face: list[Path] = []
        default_lora: list[Path] = []
        default_control: list[Path] = []
    else:
        from ..models import load_models

        root = Path(models).expanduser()
        bundle = load_models(root, device=device, tokenizer=tokenizer, **(model_options or {}))  # fails now if wrong
        provider, label = (lambda: bundle), root.name
        default_heavy, default_face = [root / "upscale_models"], [root / "facerestore_models"]
        default_lora = [root / "loras"]
        default_control = [root / folder for folder in CONTROL_FOLDERS]
        if bundle.files.layout == "comfy":  # a request may pick other files of the same folders
            model_dirs = {"diffusion_model": [root / "diffusion_models", root / "unet"],
                          "text_encoder": [root / "text_encoders", root / "clip"], "vae": [root / "vae"]}

            def bundle_for(diffusion_model=None, text_encoder=None, vae=None):
                return load_models(root, transformer=diffusion_model, text_encoder=text_encoder, vae=vae,
                                   device=device, tokenizer=tokenizer, **(model_options or {}))
    runner = GenerationRunner(
        provider, route=route, route_options=options, bundle=bundle, model_dirs=model_dirs, bundle_for=bundle_for,
        heavy_dirs=[Path(p) for p in heavy_dirs] if heavy_dirs is not None else default_heavy,
        face_dirs=[Path(p) for p in face_dirs] if face_dirs is not None else default_face,
        lora_dirs=[Path(p) for p in lora_dirs] if lora_dirs is not None else default_lora,
        control_dirs=[Path(p) for p in control_dirs] if control_dirs is not None else default_control)
    return runner, label


def _resolve(name: str | None, roots: list[Path], what: str) -> Path | None:
    if name is None:
        return None
    try:
        return resolve_inside(name, roots)
    except ModelFileError as err:
        raise RequestError(str(err), what) from None


__all__ = ["GenerationRunner", "LOADED_PARTS", "ROUTE_OPTION_KEYS", "build_runner"]
