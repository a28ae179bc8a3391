"""Runs one validated generate request on the models: the bridge between the job queue and the pipeline.

Lives in the worker thread: it owns the model bundle, loads the heavy upscaler and face model a request names
(keeping the last two loaded: reloading per request would dominate its time), runs the request's job through the
route and encodes the answer, which echoes the effective options.
"""

from __future__ import annotations

import collections
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..errors import Interrupted, ModelFileError, ZImageError
from ..pipeline import RouteResult, encode_jpeg_base64, generate_route
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

    def run(self, req: GenerateRequest, files: dict[str, Path | None], should_stop: Callable[[], bool]
            ) -> dict[str, Any]:
        if should_stop():
            raise Interrupted("cancelled before it started.")
        chosen = {name: files.get(name) for name in MODEL_FIELDS if files.get(name) is not None}
        bundle = self.bundle_for(**chosen) if chosen else self.provider()
        self.bundle = bundle
        kwargs = {k: v for k, v in self.route_options.items() if k != "heavy_options"}
        kwargs.update(self._load_extras(req, files, getattr(bundle, "device", None)))
        kwargs.update(req.route)
        result = self.route(bundle, req.job, should_stop=should_stop, **kwargs)
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


def _resolve(name: str | None, roots: list[Path], what: str) -> Path | None:
    if name is None:
        return None
    try:
        return resolve_inside(name, roots)
    except ModelFileError as err:
        raise RequestError(str(err), what) from None


__all__ = ["GenerationRunner", "LOADED_PARTS", "ROUTE_OPTION_KEYS"]
