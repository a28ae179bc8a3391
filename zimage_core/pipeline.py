"""The signature route (DESIGN §1): generate at a working size → block upscale → faces → final resize, with the
per-stage timing report. `upscale_route` is the same chain for any existing image (no Z-Image weights needed).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .blocks import STAGES, ChainResult, lanczos_resize, upscale_chain
from .errors import InputError
from .images import as_image_batch, to_pil
from .sizes import check_size, snap

log = logging.getLogger(__name__)

TIMING_STAGES = ("generation", *STAGES, "faces", "resize", "total")
WORK_MIN, WORK_MAX = 512, 768  # working generation size per side for the upscale route
MAX_OUTPUT_SIDE = 8192


@dataclass
class RouteResult:
    image: torch.Tensor  # (B, H, W, 3) 0-1
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    chain: ChainResult | None = None
    faces: object | None = None  # faces.FaceReport
    seeds: list[int] = field(default_factory=list)


def working_size(width: int, height: int, work_min: int = WORK_MIN, work_max: int = WORK_MAX) -> tuple[int, int]:
    """Generation size for the route: each side clamped to work_min-work_max (default 512-768 px) and snapped to a
    multiple of 16. When clamping the sides separately would change the aspect ratio by more than 2 % (e.g. a
    2048×512 request), the requested shape is kept instead, longest side at work_max, so the final resize never
    stretches the image. The bounds are options so servers/tests can trade quality for speed."""
    if not 16 <= work_min <= work_max:
        raise InputError(f"working size bounds must satisfy 16 <= work_min <= work_max; got {work_min}, {work_max}.")
    w, h = (snap(min(max(v, work_min), work_max)) for v in (width, height))
    aspect = width / height
    if abs((w / h) / aspect - 1.0) <= 0.02:
        return w, h
    fit = work_max / max(width, height) if max(width, height) > work_max else work_min / min(width, height)
    fit = min(fit, work_max / max(width, height))
    return snap(width * fit), snap(height * fit)


def _empty_timings() -> dict[str, float]:
    return {k: 0.0 for k in TIMING_STAGES}


def _finish(image: torch.Tensor, timings: dict[str, float], notes: list[str], *, scale: float, heavy, heavy_ratio,
            block: int, overlap: int, heavy_options: dict | None, face_model, face_fidelity: float,
            out_size: tuple[int, int] | None, device, on_progress, should_stop) -> RouteResult:
    chain = upscale_chain(image, scale=scale, block=block, overlap=overlap, heavy=heavy, heavy_ratio=heavy_ratio,
                          heavy_options=heavy_options, device=device, previews=False, on_progress=on_progress,
                          should_stop=should_stop)
    timings.update(chain.timings)
    if chain.heavy_name is None:
        notes.append("no heavy upscaler given: every block used LANCZOS")
    else:
        c = chain.counts()
        notes.append(f"heavy path {chain.heavy_name}: {c['heavy']} of {c['heavy'] + c['light']} blocks")
    result = chain.image

    face_report = None
    t = time.perf_counter()
    if face_model is not None:
        from .faces import restore_faces

        result, face_report = restore_faces(result, face_model, fidelity=face_fidelity)
        notes.append(f"faces: {face_report.summary()}")
    else:
        # informational only: detect on the small source image, not the ×scale result (far cheaper, same faces)
        notes.append(f"faces: {_count_faces(image)}; not restored (no GFPGAN model given: pass GFPGANv1.4.pth, "
                     "e.g. from models/facerestore_models)")
    timings["faces"] = time.perf_counter() - t

    t = time.perf_counter()
    if out_size is not None and tuple(result.shape[1:3]) != out_size:
        result = lanczos_resize(result, out_size)
    timings["resize"] = time.perf_counter() - t
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    return RouteResult(result.clamp(0, 1), timings, notes, chain, face_report)


def _count_faces(images: torch.Tensor) -> str:
    """Detection alone, so a run without a face model still says what restoring would have touched."""
    from .errors import ZImageError
    from .faces import FaceDetector

    try:
        finder = FaceDetector("auto")
        found = sum(len(f) for f in finder(images))
    except (ZImageError, ImportError) as err:
        return f"detection unavailable ({err})"
    return f"{found} found by {finder.backend}"


def _out_size(out_width: int | None, out_height: int | None, src_hw: tuple[int, int], scale: float):
    if out_width is None and out_height is None:
        return None
    h, w = src_hw
    ow = out_width if out_width is not None else round(w * scale * (out_height / (h * scale)))
    oh = out_height if out_height is not None else round(h * scale * (out_width / (w * scale)))
    for name, v in (("width", ow), ("height", oh)):
        if not 1 <= v <= MAX_OUTPUT_SIDE:
            raise InputError(f"output {name} must be 1..{MAX_OUTPUT_SIDE}; got {v}.")
    return (int(oh), int(ow))


def upscale_route(image, *, scale: float = 4.0, heavy=None, heavy_ratio: float | None = None, block: int = 128,
                  overlap: int = 32, heavy_options: dict | None = None, face_model: str | os.PathLike | None = None,
                  face_fidelity: float = 1.0, out_width: int | None = None, out_height: int | None = None,
                  device: str | torch.device | None = None, on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> RouteResult:
    """Block upscale + faces + resize for any image. Runs on CPU with no weights (LANCZOS everywhere, faces
    skipped) and says so in `notes`."""
    images = as_image_batch(image)
    out_size = _out_size(out_width, out_height, tuple(images.shape[1:3]), scale)
    return _finish(images, _empty_timings(), [], scale=scale, heavy=heavy, heavy_ratio=heavy_ratio, block=block,
                   overlap=overlap, heavy_options=heavy_options, face_model=face_model, face_fidelity=face_fidelity,
                   out_size=out_size, device=device, on_progress=on_progress, should_stop=should_stop)


def generate_route(bundle, prompts: str | list[str], *, width: int = 1024, height: int = 1024, steps: int = 9,
                   seed: int = 42, heavy=None, heavy_ratio: float | None = None, heavy_options: dict | None = None,
                   face_model: str | os.PathLike | None = None, face_fidelity: float = 1.0, scale: float = 4.0,
                   make_denoiser=None, callback=None, should_stop: Callable[[], bool] | None = None,
                   work_min: int = WORK_MIN, work_max: int = WORK_MAX) -> RouteResult:
    """The full seed pipeline: Z-Image at the working size, then the block route, then resize to width×height.
    work_min/work_max bound the working generation size per side (DESIGN §1: 512-768)."""
    from .generate import generate

    check_size(width, height, min_size=64, max_size=MAX_OUTPUT_SIDE)
    work_w, work_h = working_size(width, height, work_min, work_max)
    timings = _empty_timings()
    t = time.perf_counter()
    gen = generate(bundle, prompts, width=work_w, height=work_h, steps=steps, seed=seed, make_denoiser=make_denoiser,
                   callback=callback, should_stop=should_stop)
    timings["generation"] = time.perf_counter() - t
    notes = [f"generated at {work_w}×{work_h}, upscaled ×{scale:g}, resized to {width}×{height}"]
    result = _finish(gen.images, timings, notes, scale=scale, heavy=heavy, heavy_ratio=heavy_ratio, block=128,
                     overlap=32, heavy_options=heavy_options, face_model=face_model, face_fidelity=face_fidelity,
                     out_size=(height, width), device=None, on_progress=None, should_stop=should_stop)
    result.seeds = gen.seeds
    return result


def encode_jpeg_base64(image: torch.Tensor, index: int = 0, quality: int = 92) -> str:
    """One image of a batch as base64 JPEG (the HTTP contract's "image" field)."""
    buf = io.BytesIO()
    to_pil(image, index).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")
