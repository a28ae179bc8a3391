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
from .checks import check_number
from .errors import InputError
from .images import as_image_batch, check_pixels, to_pil
from .sizes import MAX_SIZE, MIN_SIZE, check_size, snap

log = logging.getLogger(__name__)

TIMING_STAGES = ("generation", *STAGES, "faces", "resize", "total")
WORK_MAX = 768  # longest side generated for the upscale route
MAX_OUTPUT_SIDE = 8192


@dataclass
class RouteResult:
    image: torch.Tensor  # (B, H, W, 3) 0-1
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    chain: ChainResult | None = None
    faces: object | None = None  # faces.FaceReport
    seeds: list[int] = field(default_factory=list)


def working_size(width: int, height: int, work_max: int = WORK_MAX) -> tuple[int, int]:
    """Generation size for a request larger than the working size: multiples of 16 with the requested shape (within
    2 % where 16 px steps allow, else as close as they allow) and the longest side as large as possible up to
    work_max (default 768), so the final resize does not stretch the image. When even a 64 px short side (the
    sampler's minimum) puts the long side past work_max, the short side stays at 64 and the long side follows the
    aspect (never past the request): every size the sampler can make has a working size it can make too."""
    long_side, short_side = max(width, height), min(width, height)
    aspect = long_side / short_side
    best: tuple[float, int, int] | None = None
    for short in range(snap(work_max / aspect), MIN_SIZE - 1, -16):  # largest first
        long = snap(short * aspect)
        if long > work_max:
            continue
        error = abs(long / short / aspect - 1.0)
        if error <= 0.02:
            best = (error, long, short)
            break
        if best is None or error < best[0] - 1e-9:
            best = (error, long, short)
    if best is None:  # the shape is too elongated for work_max: short side at the minimum
        best = (0.0, min(snap(MIN_SIZE * aspect), long_side, MAX_SIZE), MIN_SIZE)
    _, long, short = best
    return (long, short) if width >= height else (short, long)


@dataclass(frozen=True)
class RoutePlan:
    """What `generate_route` does for a requested size, decided before any model loads."""

    width: int  # the requested (final) size
    height: int
    work_width: int  # the generation size
    work_height: int
    upscale: bool  # block route ×scale, then resize; False when the request fits the working size
    scale: float

    def describe(self) -> str:
        if not self.upscale:
            return f"generated at {self.work_width}×{self.work_height} as requested; no upscaling needed"
        return (f"generated at {self.work_width}×{self.work_height}, upscaled ×{self.scale:g} through the block route, "
                f"resized to {self.width}×{self.height}")


def plan_route(width: int, height: int, *, scale: float = 4.0, work_max: int = WORK_MAX,
               max_side: int = MAX_OUTPUT_SIDE) -> RoutePlan:
    """Check a requested size and decide the generation size: requests with both sides ≤ work_max are generated as
    asked (upscaling and shrinking back would only lose detail); larger ones at `working_size`, then upscaled ×scale
    through the block route and resized to the request."""
    check_size(width, height, min_size=MIN_SIZE, max_size=max_side)
    check_number("scale", scale, lo=1.0, hi=16.0)
    if not MIN_SIZE <= work_max <= MAX_SIZE or work_max % 16:
        raise InputError(f"work_max must be a multiple of 16 in {MIN_SIZE}..{MAX_SIZE}; got {work_max}.")
    if max(width, height) / min(width, height) > MAX_SIZE / MIN_SIZE:
        side = "width" if width > height else "height"
        raise InputError(f"{side}={max(width, height)}: the aspect ratio {max(width, height)}:{min(width, height)} "
                         f"is more extreme than {MAX_SIZE // MIN_SIZE}:1, which cannot be generated.")
    if width <= work_max and height <= work_max:
        return RoutePlan(width, height, width, height, False, float(scale))
    w, h = working_size(width, height, work_max)
    return RoutePlan(width, height, w, h, (w, h) != (width, height), float(scale))


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

    result, face_report = _faces(result, image, face_model, face_fidelity, timings, notes)

    t = time.perf_counter()
    if out_size is not None and tuple(result.shape[1:3]) != out_size:
        result = lanczos_resize(result, out_size)
    timings["resize"] = time.perf_counter() - t
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    return RouteResult(result.clamp(0, 1), timings, notes, chain, face_report)


def _faces(image: torch.Tensor, source: torch.Tensor, face_model, fidelity: float, timings: dict[str, float],
           notes: list[str]):
    """The face step: restore with a GFPGAN model when given, else detect on the (smaller) source image and say what
    restoring would have touched."""
    report = None
    t = time.perf_counter()
    if face_model is not None:
        from .faces import restore_faces

        image, report = restore_faces(image, face_model, fidelity=fidelity)
        notes.append(f"faces: {report.summary()}")
    else:
        from .faces import detect_only_report

        notes.append(f"faces: {detect_only_report(source)}")
    timings["faces"] = time.perf_counter() - t
    return image, report


def _out_size(out_width: int | None, out_height: int | None, src_hw: tuple[int, int], scale: float):
    if out_width is None and out_height is None:
        return None
    h, w = src_hw
    ow = out_width if out_width is not None else round(w * scale * (out_height / (h * scale)))
    oh = out_height if out_height is not None else round(h * scale * (out_width / (w * scale)))
    for name, v in (("width", ow), ("height", oh)):
        if not 1 <= v <= MAX_OUTPUT_SIDE:
            raise InputError(f"output {name} must be 1..{MAX_OUTPUT_SIDE}; got {v}.")
    check_pixels(int(ow), int(oh), "the output")
    return (int(oh), int(ow))


def upscale_route(image, *, scale: float = 4.0, heavy=None, heavy_ratio: float | None = None, block: int = 128,
                  overlap: int = 32, heavy_options: dict | None = None, face_model: str | os.PathLike | None = None,
                  face_fidelity: float = 1.0, out_width: int | None = None, out_height: int | None = None,
                  device: str | torch.device | None = None, on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> RouteResult:
    """Block upscale + faces + resize for any image. Runs on CPU with no weights (LANCZOS everywhere, faces
    skipped) and says so in `notes`."""
    images = as_image_batch(image)
    check_number("scale", scale, lo=0.125, hi=16.0)
    h, w = images.shape[1:3]
    check_pixels(max(1, round(w * scale)), max(1, round(h * scale)), f"the ×{scale:g} upscale of a {w}×{h} image")
    out_size = _out_size(out_width, out_height, (h, w), scale)
    return _finish(images, _empty_timings(), [], scale=scale, heavy=heavy, heavy_ratio=heavy_ratio, block=block,
                   overlap=overlap, heavy_options=heavy_options, face_model=face_model, face_fidelity=face_fidelity,
                   out_size=out_size, device=device, on_progress=on_progress, should_stop=should_stop)


def generate_route(bundle, prompts: str | list[str], *, width: int = 1024, height: int = 1024, steps: int = 9,
                   seed: int = 42, heavy=None, heavy_ratio: float | None = None, heavy_options: dict | None = None,
                   face_model: str | os.PathLike | None = None, face_fidelity: float = 1.0, scale: float = 4.0,
                   make_denoiser=None, callback=None, should_stop: Callable[[], bool] | None = None,
                   work_max: int = WORK_MAX) -> RouteResult:
    """The full pipeline: Z-Image at the working size (`plan_route`), then the block route, then resize to
    width×height; requests that fit the working size are generated as asked and only go through the face step."""
    from .generate import generate

    plan = plan_route(width, height, scale=scale, work_max=work_max)
    timings = _empty_timings()
    t = time.perf_counter()
    gen = generate(bundle, prompts, width=plan.work_width, height=plan.work_height, steps=steps, seed=seed,
                   make_denoiser=make_denoiser, callback=callback, should_stop=should_stop)
    timings["generation"] = time.perf_counter() - t
    notes = [plan.describe(), *gen.notes]
    if plan.upscale:
        result = _finish(gen.images, timings, notes, scale=scale, heavy=heavy, heavy_ratio=heavy_ratio, block=128,
                         overlap=32, heavy_options=heavy_options, face_model=face_model, face_fidelity=face_fidelity,
                         out_size=(height, width), device=None, on_progress=None, should_stop=should_stop)
    else:
        if heavy is not None:
            notes.append("heavy upscaler not used: no upscaling was needed")
        image, face_report = _faces(gen.images, gen.images, face_model, face_fidelity, timings, notes)
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        result = RouteResult(image.clamp(0, 1), timings, notes, faces=face_report)
    result.seeds = gen.seeds
    return result


def encode_jpeg_base64(image: torch.Tensor, index: int = 0, quality: int = 92) -> str:
    """One image of a batch as base64 JPEG (the HTTP contract's "image" field)."""
    buf = io.BytesIO()
    to_pil(image, index).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")
