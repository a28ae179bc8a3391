"""Cut images into overlapping square blocks that cover every pixel.

Blocks start every `stride = block − overlap` pixels; the last block on each axis is shifted inward so it ends exactly
on the image border (it overlaps its neighbour by more than `overlap`), so no block ever reads padding and the
stitch never blends in invented pixels. The grid is the same for every image of a batch (they share H and W) and is
separable: block k of image b sits at (ys[i], xs[j]).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..images import as_image_batch
from ..settings import DEFAULT_BLOCK, DEFAULT_OVERLAP

log = logging.getLogger(__name__)



def axis_starts(length: int, block: int, stride: int) -> list[int]:
    """Start offsets along one axis: 0, stride, 2·stride, … and a last block flush with the end."""
    if block >= length:
        return [0]
    starts = list(range(0, length - block, stride))
    starts.append(length - block)
    return starts


@dataclass
class Blocks:
    """Overlapping blocks of a batch of images, and where each came from.

    tensor: (N, bs, bs, 3) block pixels; positions: (N, 3) int64 rows of (batch index, y, x) in source pixels;
    source_size: (H, W) of the source images; ys / xs: the per-axis start offsets of the grid (N = B·len(ys)·len(xs),
    ordered batch-major, then row, then column).
    """

    tensor: torch.Tensor
    positions: torch.Tensor
    source_size: tuple[int, int]
    batch_size: int
    block: int
    overlap: int
    ys: list[int]
    xs: list[int]

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def stride(self) -> int:
        return self.block - self.overlap

    @property
    def per_image(self) -> int:
        return len(self.ys) * len(self.xs)

    def nchw(self) -> torch.Tensor:
        """The blocks as (N, 3, bs, bs), the layout upscale models take."""
        return self.tensor.permute(0, 3, 1, 2)


def resolve_geometry(height: int, width: int, block: int, overlap: int) -> tuple[int, int]:
    """Validate block/overlap and clamp them to the image: (block, overlap) actually used."""
    if int(block) != block or int(overlap) != overlap:
        raise InputError(f"Block size and overlap must be whole pixels; got block={block}, overlap={overlap}.")
    block, overlap = int(block), int(overlap)
    if block < 1:
        raise InputError(f"Block size must be at least 1 pixel; got {block}.")
    if overlap < 0:
        raise InputError(f"Overlap must be 0 or more pixels; got {overlap}.")
    if overlap >= block:
        raise InputError(
            f"Overlap ({overlap}) must be smaller than the block size ({block}); the blocks would not advance. "
            f"Try overlap={block // 4}."
        )
    side = min(height, width)
    if block > side:
        new_overlap = overlap * side // block
        log.info("Block size %d is larger than the %dx%d image; using %d px blocks with %d px overlap.",
                 block, width, height, side, new_overlap)
        block, overlap = side, new_overlap
    return block, overlap


def slice_blocks(images: torch.Tensor, block: int = DEFAULT_BLOCK, overlap: int = DEFAULT_OVERLAP) -> Blocks:
    """Slice a (B,H,W,3) batch (or anything `as_image_batch` takes) into overlapping square blocks."""
    return slice_batch(as_image_batch(images), block, overlap)


def slice_batch(images: torch.Tensor, block: int = DEFAULT_BLOCK, overlap: int = DEFAULT_OVERLAP) -> Blocks:
    """`slice_blocks` for a tensor that is already a valid (B,H,W,3) batch (skips the conversion pass)."""
    b, h, w, _ = images.shape
    block, overlap = resolve_geometry(h, w, block, overlap)
    stride = block - overlap
    ys, xs = axis_starts(h, block, stride), axis_starts(w, block, stride)
    # Gather with one advanced-indexing op: (B, ny, bs, W) rows, then (B, ny, nx, bs, bs) columns.
    dev = images.device
    ar = torch.arange(block, device=dev)
    yi = (torch.tensor(ys, device=dev)[:, None] + ar).reshape(-1)
    xi = (torch.tensor(xs, device=dev)[:, None] + ar).reshape(-1)
    rows = images.index_select(1, yi).view(b, len(ys), block, w, 3)
    cols = rows.index_select(3, xi).view(b, len(ys), block, len(xs), block, 3)
    tensor = cols.permute(0, 1, 3, 2, 4, 5).reshape(-1, block, block, 3)
    bb, yy, xx = torch.meshgrid(torch.arange(b), torch.tensor(ys), torch.tensor(xs), indexing="ij")
    positions = torch.stack([bb.reshape(-1), yy.reshape(-1), xx.reshape(-1)], dim=1).to(torch.int64)
    return Blocks(tensor=tensor, positions=positions, source_size=(h, w), batch_size=b, block=block,
                  overlap=overlap, ys=ys, xs=xs)


def slice_map(maps: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Cut a per-pixel map (B,H,W) (e.g. saliency) with the same grid as `blocks`: (N, bs, bs)."""
    if maps.ndim != 3 or tuple(maps.shape[1:]) != tuple(blocks.source_size) or maps.shape[0] != blocks.batch_size:
        raise InputError(f"Map of shape {tuple(maps.shape)} does not match the sliced images "
                         f"({blocks.batch_size}, {blocks.source_size[0]}, {blocks.source_size[1]}).")
    b, h, w = maps.shape
    bs = blocks.block
    dev = maps.device
    ar = torch.arange(bs, device=dev)
    yi = (torch.tensor(blocks.ys, device=dev)[:, None] + ar).reshape(-1)
    xi = (torch.tensor(blocks.xs, device=dev)[:, None] + ar).reshape(-1)
    rows = maps.index_select(1, yi).view(b, len(blocks.ys), bs, w)
    cols = rows.index_select(3, xi).view(b, len(blocks.ys), bs, len(blocks.xs), bs)
    return cols.permute(0, 1, 3, 2, 4).reshape(-1, bs, bs)


__all__ = ["Blocks", "slice_blocks", "slice_map", "axis_starts", "resolve_geometry", "DEFAULT_BLOCK",
           "DEFAULT_OVERLAP"]
