"""The block upscaling chain: slice → saliency → classify/route → upscale (heavy | light) → feather stitch.

Works on any image, on CPU with no weights at all (everything LANCZOS, with a warning) and on the GPU with a heavy
model. Non-integer factors run the blocks at the next whole factor and resample the stitched image, so the output is
always round(scale × input) per side.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError, Interrupted
from ..images import as_image_batch, check_pixels
from ..timing import StageTimer
from .classify import Classification, classification_preview, classify_blocks
from .resample import lanczos_resize
from .saliency import saliency_heatmap, saliency_of_batch
from .slicer import DEFAULT_BLOCK, DEFAULT_OVERLAP, Blocks, slice_batch
from .light import blend_blocks_into, feather_resample
from .upscale import (HeavyUpscaler, ProgressFn, StopFn, heavy_routes, lanczos_upscale_blocks, upscale_heavy_route,
                      load_heavy_upscaler, release_upscaler)

log = logging.getLogger(__name__)

STAGES = ("slicing", "saliency", "classification", "upscaling", "stitching")
MAX_SCALE = 16.0


@dataclass
class ChainResult:
    """Output of `upscale_chain`.

    image: (B, round(H·scale), round(W·scale), 3); saliency: (B, H, W); classification: per-block labels and planned
    routes; heavy: (N,) bool, the route each block actually took; blocks: the grid (pixels included);
    previews: {"saliency": heatmap IMAGE, "classes": class/route IMAGE} (empty when previews=False);
    timings: seconds per stage that ran (of STAGES); the light path's LANCZOS and feather blend are one fused pass,
    counted under 'upscaling'; 'stitching' (the blending of heavy blocks) appears only when heavy blocks ran.
    heavy_name: the heavy model used, or None.
    """

    image: torch.Tensor
    saliency: torch.Tensor
    classification: Classification
    heavy: torch.Tensor
    blocks: Blocks
    previews: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    heavy_name: str | None = None

    @property
    def labels(self) -> torch.Tensor:
        return self.classification.labels

    def counts(self) -> dict[str, int]:
        c = self.classification.counts()
        c["heavy"] = int(self.heavy.sum())
        c["light"] = int((~self.heavy).sum())
        return c


def _check_stop(should_stop: StopFn | None, stage: str) -> None:
    """Polled between stages (and between heavy batches) so an interrupt lands quickly on any image size."""
    if should_stop is not None and should_stop():
        raise Interrupted(f"Upscaling interrupted by the user before {stage}.")


def _check_scale(scale: object) -> float:
    try:
        value = float(scale)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise InputError(f"scale must be a number; got {scale!r}.") from err
    if not math.isfinite(value) or value <= 0 or value > MAX_SCALE:
        raise InputError(f"scale must be > 0 and at most {MAX_SCALE:g}; got {value}.")
    return value


def working_scale(scale: float) -> int:
    """Whole factor the blocks are upscaled by: the scale itself when whole, else the next whole number (≥ 1)."""
    return max(1, int(math.ceil(scale - 1e-9)))


def upscale_chain(
    images,
    *,
    scale: float = 4,
    block: int = DEFAULT_BLOCK,
    overlap: int = DEFAULT_OVERLAP,
    heavy=None,
    heavy_ratio: float | None = None,
    batch_size: int = 8,
    heavy_options: dict | None = None,
    device: torch.device | str | None = None,
    previews: bool = True,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ChainResult:
    """Upscale a batch of images block by block, spending the heavy model only where saliency says it matters.

    images: anything `as_image_batch` takes. scale: output/input size factor (> 0, ≤ 16). block/overlap: block
    grid in input pixels. heavy: None (all LANCZOS), a HeavyUpscaler, a spandrel descriptor (ComfyUI
    UPSCALE_MODEL), an upscale model file or an SD x4 upscaler diffusers folder; heavy_options go to the SD x4
    loader (prompt, noise_level, steps, guidance_scale, seed). heavy_ratio: target fraction of heavy blocks
    (None = natural routing). batch_size: heavy blocks per model call (halved automatically on OOM).
    device: where the chain's tensors live (default: the images'). on_progress(done, total) is called after
    every chunk of blocks; should_stop() is polled between chunks and raises errors.Interrupted.
    """
    scale = _check_scale(scale)
    images = as_image_batch(images)
    if device is not None:
        images = images.to(device)
    clock = StageTimer(sync_cuda=images.device.type == "cuda")
    b, h, w, _ = images.shape
    out_size = (max(1, round(h * scale)), max(1, round(w * scale)))
    check_pixels(out_size[1], out_size[0], f"the ×{scale:g} upscale of a {w}×{h} image")
    work = working_scale(scale)
    # Load the heavy model before any work, so a bad file fails fast.
    upscaler: HeavyUpscaler | None = (
        load_heavy_upscaler(heavy, device=device, **(heavy_options or {})) if heavy is not None else None
    )

    with clock.stage("slicing"):
        blocks = slice_batch(images, block, overlap)
    _check_stop(should_stop, "saliency")
    with clock.stage("saliency"):
        sal = saliency_of_batch(images)
    _check_stop(should_stop, "classification")
    with clock.stage("classification"):
        cls = classify_blocks(blocks, sal, heavy_ratio)

    route = heavy_routes(len(blocks), cls.heavy, upscaler, scale)
    image = _upscale_blocks(images, blocks, route, upscaler, work, clock, batch_size=batch_size,
                            on_progress=on_progress, should_stop=should_stop)
    return _result(images, image, out_size, sal, cls, route, blocks, previews, clock, upscaler)


def _upscale_blocks(images: torch.Tensor, blocks: Blocks, route: torch.Tensor, upscaler: HeavyUpscaler | None,
                    work: int, clock: StageTimer, *, batch_size: int, on_progress: ProgressFn | None,
                    should_stop: StopFn | None) -> torch.Tensor:
    """Every block ×work, stitched: the light path for all blocks in one fused pass, then the heavy blocks swapped
    in batch by batch. The upscaler is released at the end, also on error or interrupt."""
    total, done = len(blocks), 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None and n:
            on_progress(done, total)

    try:
        _check_stop(should_stop, "upscaling")
        # Light path for every block at once: LANCZOS + feather stitch fused into one banded resample (light.py).
        with clock.stage("upscaling"):
            image = feather_resample(images, blocks, work)
        progress(int((~route).sum()))
        _check_stop(should_stop, "the heavy path")
    except BaseException:
        release_upscaler(upscaler)
        raise
    if not route.any():
        release_upscaler(upscaler)
        return image
    nchw = blocks.nchw()
    last = [clock.now()]

    def blend(idx: torch.Tensor, out: torch.Tensor) -> None:
        """Swap these blocks' LANCZOS share of the weighted mean for the heavy output (exact, see light.py)."""
        mid = clock.now()
        clock.add("upscaling", mid - last[0])
        light = lanczos_upscale_blocks(nchw[idx.to(nchw.device)], work)
        blend_blocks_into(image, out.to(images.device), light, blocks.positions[idx], blocks, work)
        last[0] = clock.now()
        clock.add("stitching", last[0] - mid)
        progress(idx.numel())

    upscale_heavy_route(upscaler, nchw, route, work, on_batch=blend, batch_size=batch_size, should_stop=should_stop)
    return image.clamp_(0.0, 1.0)


def _result(images: torch.Tensor, image: torch.Tensor, out_size: tuple[int, int], sal: torch.Tensor,
            cls: Classification, route: torch.Tensor, blocks: Blocks, previews: bool, clock: StageTimer,
            upscaler: HeavyUpscaler | None) -> ChainResult:
    """The final resize to the exact output size (when the whole-number block factor overshot) and the previews."""
    if tuple(image.shape[1:3]) != out_size:
        with clock.stage("upscaling"):
            image = lanczos_resize(image, out_size)

    pv: dict[str, torch.Tensor] = {}
    if previews:
        from dataclasses import replace

        pv["saliency"] = saliency_heatmap(sal)
        pv["classes"] = classification_preview(images, blocks, replace(cls, heavy=route.to(cls.heavy.device)))
    return ChainResult(image=image, saliency=sal, classification=cls, heavy=route, blocks=blocks, previews=pv,
                       timings=dict(clock.seconds), heavy_name=upscaler.name if upscaler is not None else None)


__all__ = ["upscale_chain", "ChainResult", "STAGES", "working_scale"]
