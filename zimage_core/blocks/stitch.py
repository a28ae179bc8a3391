"""Feather stitch: blend upscaled overlapping blocks back into one image with no seam.

Each block is weighted by a separable mask that is 1 in its interior and falls off as a Gaussian only inside the
overlap band on sides that have a neighbour; on sides that touch the image border it stays 1, and it is > 0
everywhere, so every output pixel has positive total weight and border pixels come out exact. The result is the exact
weighted mean Σ wᵢ·xᵢ / Σ wᵢ, accumulated as a running weighted mean (acc += (x − acc)·w / Σw): mathematically the
same as summing weighted pixels and weights and dividing at the end, but identical blocks reproduce their pixels
bit-exactly (x − acc = 0), and the accumulator stays in the image range.
"""

from __future__ import annotations

import functools

import torch

from ..errors import InputError
from .slicer import Blocks

TAPER_SIGMAS = 3.0  # the overlap band spans this many Gaussian σ: weight exp(-4.5) ≈ 0.011 at the block edge


@functools.lru_cache(maxsize=256)
def _taper_cpu(length: int, band: int, taper_start: bool, taper_end: bool) -> torch.Tensor:
    w = torch.ones(length, dtype=torch.float64)
    band = min(band, length)
    if band > 0:
        d = torch.arange(band, dtype=torch.float64) + 0.5  # pixel-centre distance from the block edge
        ramp = torch.exp(-0.5 * ((band - d) / (band / TAPER_SIGMAS)) ** 2)
        if taper_start:
            w[:band] = torch.minimum(w[:band], ramp)
        if taper_end:
            w[length - band:] = torch.minimum(w[length - band:], ramp.flip(0))
    return w


def feather_taper(length: int, band: int, taper_start: bool = True, taper_end: bool = True, *,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """1-D feather weights for one block axis: Gaussian fall-off over `band` pixels at the tapered ends, else 1."""
    return _taper_cpu(int(length), int(band), bool(taper_start), bool(taper_end)).to(dtype=dtype, device=device)


def feather_mask(block_out: int, band: int, y: int, x: int, height_out: int, width_out: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(block_out, block_out) weight mask of a block placed at output (y, x) in a height_out × width_out image."""
    wy = feather_taper(block_out, band, y > 0, y + block_out < height_out, dtype=dtype, device=device)
    wx = feather_taper(block_out, band, x > 0, x + block_out < width_out, dtype=dtype, device=device)
    return wy[:, None] * wx[None, :]


class FeatherStitcher:
    """Incremental feather stitch: add upscaled blocks in any order and any number of calls, then take the image.

    Blocks can come in chunks (light path, heavy batches), so the full set of upscaled blocks never has to be in
    memory at once.
    """

    def __init__(self, blocks: Blocks, scale: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        if int(scale) != scale or scale < 1:
            raise InputError(f"The stitch works at a whole-number scale; got {scale}.")
        self.scale = int(scale)
        self.blocks = blocks
        h, w = blocks.source_size
        self.height, self.width = h * self.scale, w * self.scale
        self.block_out = blocks.block * self.scale
        self.band = blocks.overlap * self.scale
        device = device if device is not None else blocks.tensor.device
        self.acc = torch.zeros(blocks.batch_size, 3, self.height, self.width, dtype=dtype, device=device)
        self.wsum = torch.zeros(blocks.batch_size, self.height, self.width, dtype=dtype, device=device)

    def add(self, upscaled: torch.Tensor, positions: torch.Tensor) -> None:
        """Blend (n, 3, bs·scale, bs·scale) upscaled blocks whose source positions are (n, 3) (batch, y, x) rows."""
        bo = self.block_out
        if upscaled.ndim != 4 or tuple(upscaled.shape[1:]) != (3, bo, bo):
            raise InputError(f"Upscaled blocks must be (n, 3, {bo}, {bo}); got {tuple(upscaled.shape)}.")
        if upscaled.shape[0] != positions.shape[0]:
            raise InputError("Number of upscaled blocks and positions differ.")
        upscaled = upscaled.to(device=self.acc.device, dtype=self.acc.dtype)
        for blk, (b, y, x) in zip(upscaled, positions.tolist()):
            oy, ox = y * self.scale, x * self.scale
            m = feather_mask(bo, self.band, oy, ox, self.height, self.width, dtype=self.acc.dtype,
                             device=self.acc.device)
            ws = self.wsum[b, oy:oy + bo, ox:ox + bo]
            ws += m
            acc = self.acc[b, :, oy:oy + bo, ox:ox + bo]
            acc += (blk - acc) * (m / ws)

    def result(self) -> torch.Tensor:
        """The stitched (B, H·scale, W·scale, 3) image; refuses if some pixel got no block (a caller bug)."""
        if not bool((self.wsum > 0).all()):
            raise RuntimeError("Feather stitch: some output pixels were not covered by any block.")
        return self.acc.permute(0, 2, 3, 1).contiguous()


def stitch_blocks(upscaled: torch.Tensor, blocks: Blocks, scale: int = 1) -> torch.Tensor:
    """Stitch all upscaled blocks of `blocks` at once: (N, bs·s, bs·s, 3) or (N, 3, bs·s, bs·s) → (B, H·s, W·s, 3)."""
    bo = blocks.block * int(scale)
    # channels-last only when it cannot be channels-first (a 3 px block makes (N, 3, 3, 3) ambiguous: NCHW wins)
    if upscaled.ndim == 4 and tuple(upscaled.shape[1:]) == (bo, bo, 3) and upscaled.shape[1] != 3:
        upscaled = upscaled.permute(0, 3, 1, 2)
    st = FeatherStitcher(blocks, scale, device=upscaled.device)
    st.add(upscaled, blocks.positions)
    return st.result()


__all__ = ["FeatherStitcher", "stitch_blocks", "feather_mask", "feather_taper", "TAPER_SIGMAS"]
