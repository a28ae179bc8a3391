"""The signature route: generate at a working size → block upscale → faces → final resize, with the
per-stage timing report. `upscale_route` is the same chain for any existing image (no Z-Image weights needed).
"""

from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from .blocks import ChainResult, lanczos_resize, upscale_chain
from .checks import check_number
from .errors import InputError
from .images import as_image_batch, check_pixels, to_pil
from .sizes import MAX_SIZE, MIN_SIZE, check_size, snap
from .settings import DEFAULT_BLOCK, DEFAULT_OVERLAP, DEFAULT_ROUTE_SCALE
from .timing import StageTimer

if TYPE_CHECKING:
    from .job import GenerationJob

log = logging.getLogger(__name__)

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


def describe_route(gen_width: int, gen_height: int, width: int, height: int, scale: float) -> str:
    """What the route did for a request, as its answer's first note."""
    if (gen_width, gen_height) == (width, height):
        return f"generated at {gen_width}×{gen_height} as requested; no upscaling needed"
    if gen_width >= width and gen_height >= height:
        return f"generated at {gen_width}×{gen_height} (hi-res passes), resized to {width}×{height}"
    return (f"generated at {gen_width}×{gen_height}, upscaled ×{scale:g} through the block route, resized to "
            f"{width}×{height}")


def plan_route(width: int, height: int, *, scale: float = DEFAULT_ROUTE_SCALE, work_max: int = WORK_MAX,
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
                         f"is more extreme than {MAX_SIZE // MIN_SIZE}:1, which cannot be generated.", side)
    if width <= work_max and height <= work_max:
        return RoutePlan(width, height, width, height, False, float(scale))
    w, h = working_size(width, height, work_max)
    return RoutePlan(width, height, w, h, (w, h) != (width, height), float(scale))


def _upscale_faces_resize(image: torch.Tensor, timer: StageTimer, notes: list[str], *, scale: float, heavy,
                          heavy_ratio, block: int, overlap: int, heavy_options: dict | None, face_model,
                          face_fidelity: float, out_size: tuple[int, int] | None, device, on_progress,
                          should_stop) -> RouteResult:
    """The block route, then the face step, then the resize to the requested size."""
    chain = upscale_chain(image, scale=scale, block=block, overlap=overlap, heavy=heavy, heavy_ratio=heavy_ratio,
                          heavy_options=heavy_options, device=device, previews=False, on_progress=on_progress,
                          should_stop=should_stop)
    timer.merge(chain.timings)
    if chain.heavy_name is None:
        notes.append("no heavy upscaler given: every block used LANCZOS")
    else:
        c = chain.counts()
        notes.append(f"heavy path {chain.heavy_name}: {c['heavy']} of {c['heavy'] + c['light']} blocks")
    result = chain.image

    result, face_report = _faces(result, image, face_model, face_fidelity, timer, notes)

    if out_size is not None and tuple(result.shape[1:3]) != out_size:
        with timer.stage("resize"):
            result = lanczos_resize(result, out_size)
    return RouteResult(result.clamp(0, 1), timer.report(), notes, chain, face_report)


def _faces(image: torch.Tensor, source: torch.Tensor, face_model, fidelity: float, timer: StageTimer,
           notes: list[str]):
    """The face step: restore with a GFPGAN model when given, else detect on the (smaller) source image and say what
    restoring would have touched."""
    report = None
    with timer.stage("faces"):
        if face_model is not None:
            from .faces import restore_faces

            image, report = restore_faces(image, face_model, fidelity=fidelity)
            notes.append(f"faces: {report.summary()}")
        else:
            from .faces import detect_only_report

            notes.append(f"faces: {detect_only_report(source)}")
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


def upscale_route(image, *, scale: float = DEFAULT_ROUTE_SCALE, heavy=None, heavy_ratio: float | None = None,
                  block: int = DEFAULT_BLOCK, overlap: int = DEFAULT_OVERLAP, heavy_options: dict | None = None,
                  face_model: str | os.PathLike | None = None,
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
    return _upscale_faces_resize(images, StageTimer(), [], scale=scale, heavy=heavy, heavy_ratio=heavy_ratio,
                                 block=block, overlap=overlap, heavy_options=heavy_options, face_model=face_model,
                                 face_fidelity=face_fidelity, out_size=out_size, device=device,
                                 on_progress=on_progress, should_stop=should_stop)


def generate_route(bundle, job: "GenerationJob | str | list[str]", *, heavy=None, heavy_ratio: float | None = None,
                   heavy_options: dict | None = None, face_model: str | os.PathLike | None = None,
                   face_fidelity: float = 1.0, scale: float = DEFAULT_ROUTE_SCALE, block: int = DEFAULT_BLOCK,
                   overlap: int = DEFAULT_OVERLAP, work_max: int = WORK_MAX, callback=None,
                   should_stop: Callable[[], bool] | None = None, **options) -> RouteResult:
    """The full pipeline for a final size: Z-Image at the working size (`plan_route`), then — when the images are
    still smaller than asked — the block route ×scale, then faces and a resize to the requested size.

    job: a GenerationJob whose width × height is the final size, or prompts plus option values, e.g.
    `generate_route(bundle, "a cat", width=1536, height=1024, nag_scale=4.0, negative_prompt="blurry")`. Hi-res
    passes start from the working size; when they reach the requested size the block route is skipped."""
    from .job import GenerationJob

    if not isinstance(job, GenerationJob):
        job = GenerationJob.build([job] if isinstance(job, str) else list(job), options)
    elif options:
        raise TypeError(f"options {sorted(options)} given with a GenerationJob; set them on the job.")
    return generate_routes(bundle, [job], heavy=heavy, heavy_ratio=heavy_ratio, heavy_options=heavy_options,
                           face_model=face_model, face_fidelity=face_fidelity, scale=scale, block=block,
                           overlap=overlap, work_max=work_max, callback=callback, should_stop=should_stop)[0]


def generate_routes(bundle, jobs: "list[GenerationJob]", *, heavy=None, heavy_ratio: float | None = None,
                    heavy_options: dict | None = None, face_model: str | os.PathLike | None = None,
                    face_fidelity: float = 1.0, scale: float = DEFAULT_ROUTE_SCALE, block: int = DEFAULT_BLOCK,
                    overlap: int = DEFAULT_OVERLAP, work_max: int = WORK_MAX, callback=None,
                    should_stop: Callable[[], bool] | None = None) -> list[RouteResult]:
    """`generate_route` for several jobs that differ only in prompts and seeds (job.batch_key equal): one generation
    batch through the model, each image with its own job's seed (so it equals the job run alone), then each job's
    images through the rest of the route. The generation stages' seconds are the batch's, in every report."""
    from .job import merge_jobs, run_job

    first = jobs[0]
    width, height = first.generation.width, first.generation.height
    plan = plan_route(width, height, scale=scale, work_max=work_max)
    merged, seeds = merge_jobs([j.at_size(plan.work_width, plan.work_height) for j in jobs])
    gen = run_job(bundle, merged, callback=callback, should_stop=should_stop, seeds=seeds)
    results, start = [], 0
    for job in jobs:
        count = job.image_count
        timer = StageTimer()
        timer.merge(gen.timings)
        images = gen.images[start:start + count]
        result = _finish_route(images, timer, list(gen.notes), width, height, scale=scale, heavy=heavy,
                               heavy_ratio=heavy_ratio, block=block, overlap=overlap, heavy_options=heavy_options,
                               face_model=face_model, face_fidelity=face_fidelity, should_stop=should_stop)
        result.seeds = list(gen.seeds[start:start + count])
        results.append(result)
        start += count
    return results


def _finish_route(images: torch.Tensor, timer: StageTimer, gen_notes: list[str], width: int, height: int, *,
                  scale: float, heavy, heavy_ratio, block: int, overlap: int, heavy_options: dict | None, face_model,
                  face_fidelity: float, should_stop) -> RouteResult:
    """Generated images → the requested size: faces (and a resize) when they are already large enough, else the
    block route, faces and the resize."""
    gen_h, gen_w = int(images.shape[1]), int(images.shape[2])
    notes = [describe_route(gen_w, gen_h, width, height, scale), *gen_notes]
    if gen_w < width or gen_h < height:
        return _upscale_faces_resize(images, timer, notes, scale=scale, heavy=heavy, heavy_ratio=heavy_ratio,
                                     block=block, overlap=overlap, heavy_options=heavy_options,
                                     face_model=face_model, face_fidelity=face_fidelity, out_size=(height, width),
                                     device=None, on_progress=None, should_stop=should_stop)
    if heavy is not None:
        notes.append("heavy upscaler not used: no upscaling was needed")
    image, face_report = _faces(images, images, face_model, face_fidelity, timer, notes)
    if (gen_w, gen_h) != (width, height):
        with timer.stage("resize"):
            image = lanczos_resize(image, (height, width))
    return RouteResult(image.clamp(0, 1), timer.report(), notes, faces=face_report)


def encode_jpeg_base64(image: torch.Tensor, index: int = 0, quality: int = 92) -> str:
    """One image of a batch as base64 JPEG (the HTTP contract's "image" field)."""
    buf = io.BytesIO()
    to_pil(image, index).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")
