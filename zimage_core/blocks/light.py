"""The light path fused with the feather stitch: LANCZOS every block and blend them, in one banded resample.

Per-block LANCZOS is linear and separable, the block grid is separable (rows ys × columns xs) and so are the
feather masks, whose total weight factorises as Wy(Y)·Wx(X). Therefore "upscale every block with LANCZOS, weight
it by its mask, sum, divide by the total weight" equals Py · X · Pxᵀ with one composite matrix per axis:

    Py[Y, u] = Σᵢ ŵᵢ(Y − s·yᵢ) · A[Y − s·yᵢ, u − yᵢ],   ŵᵢ = wᵢ / Wy   (A = the block's LANCZOS matrix)

Same result as the per-block route (up to float rounding and PIL's per-block 8-bit clipping between passes), but
every output pixel is written once instead of (overlap-many) times, and there is no (N, 3, 4·bs, 4·bs) tensor. The
matrices are banded, so the products run over row chunks against only the input rows they touch.
Heavy blocks are then blended in exactly: out += ŵ_b · (H_b − L_b), which turns the light block b's share of the
weighted mean into the heavy block's share (Σ ŵ = 1 at every pixel).
"""

from __future__ import annotations

import functools

import torch

from .resample import lanczos_matrix
from .slicer import Blocks
from .stitch import feather_taper

ROW_CHUNK = 64


@functools.lru_cache(maxsize=32)
def _axis_cpu(length: int, starts: tuple[int, ...], block: int, overlap: int, scale: int):
    """(composite matrix (L·s, L) float64, normalised per-block weights (n, bs·s) float64) for one axis."""
    bo, band, out_len = block * scale, overlap * scale, length * scale
    weights = torch.stack([
        feather_taper(bo, band, s > 0, s + block < length, dtype=torch.float64) for s in starts
    ])
    total = torch.zeros(out_len, dtype=torch.float64)
    for s, w in zip(starts, weights):
        total[s * scale:s * scale + bo] += w
    norm = torch.stack([w / total[s * scale:s * scale + bo] for s, w in zip(starts, weights)])
    a = lanczos_matrix(block, bo, dtype=torch.float64)
    p = torch.zeros(out_len, length, dtype=torch.float64)
    for s, w in zip(starts, norm):
        p[s * scale:s * scale + bo, s:s + block] += w[:, None] * a
    return p, norm


def axis_weights(length: int, starts: list[int], block: int, overlap: int, scale: int, *,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D feather weights ŵ of each block start along one axis: (n, block·scale), float32."""
    return _axis_cpu(length, tuple(starts), block, overlap, scale)[1].to(device=device, dtype=torch.float32)


def composite_matrix(length: int, starts: list[int], block: int, overlap: int, scale: int, *,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """The (length·scale, length) matrix of 'LANCZOS each block, feather-blend them' along one axis."""
    return _axis_cpu(length, tuple(starts), block, overlap, scale)[0].to(device=device, dtype=torch.float32)


def _bands(p: torch.Tensor, chunk: int) -> list[tuple[int, int, int, int]]:
    """Row chunks of a banded matrix with the input column range each one touches: (r0, r1, c0, c1)."""
    nz = p != 0
    out = []
    cols = torch.arange(p.shape[1], device=p.device)
    for r0 in range(0, p.shape[0], chunk):
        r1 = min(r0 + chunk, p.shape[0])
        used = nz[r0:r1].any(dim=0)
        if bool(used.any()):
            idx = cols[used]
            out.append((r0, r1, int(idx[0]), int(idx[-1]) + 1))
        else:
            out.append((r0, r1, 0, 1))
    return out


@functools.lru_cache(maxsize=32)
def _bands_cached(length: int, starts: tuple[int, ...], block: int, overlap: int, scale: int, chunk: int):
    return _bands(_axis_cpu(length, starts, block, overlap, scale)[0], chunk)


def feather_resample(images: torch.Tensor, blocks: Blocks, scale: int) -> torch.Tensor:
    """All blocks LANCZOS-upscaled by `scale` and feather-stitched: (B,H,W,3) → (B,H·s,W·s,3), clipped to 0-1."""
    b, h, w, _ = images.shape
    s, bs, ov = int(scale), blocks.block, blocks.overlap
    dev = images.device
    px = composite_matrix(w, blocks.xs, bs, ov, s, device=dev)
    py = composite_matrix(h, blocks.ys, bs, ov, s, device=dev)
    # Horizontal pass (as PIL: horizontal first) on (B·H·3, W) rows, banded over output columns.
    x = images.permute(0, 1, 3, 2).reshape(b * h * 3, w)
    t = torch.empty(b * h * 3, w * s, dtype=images.dtype, device=dev)
    for q0, q1, v0, v1 in _bands_cached(w, tuple(blocks.xs), bs, ov, s, ROW_CHUNK):
        t[:, q0:q1] = x[:, v0:v1] @ px[q0:q1, v0:v1].T
    t.clamp_(0.0, 1.0)  # PIL's 8-bit path clips between the passes
    t = t.view(b, h, 3, w * s).permute(0, 1, 3, 2).reshape(b, h, w * s * 3)  # (B, H, Wo·3), channels interleaved
    out = torch.empty(b, h * s, w * s * 3, dtype=images.dtype, device=dev)
    for r0, r1, c0, c1 in _bands_cached(h, tuple(blocks.ys), bs, ov, s, ROW_CHUNK):
        torch.matmul(py[r0:r1, c0:c1], t[:, c0:c1], out=out[:, r0:r1])
    return out.clamp_(0.0, 1.0).view(b, h * s, w * s, 3)


def blend_blocks_into(out: torch.Tensor, replacement: torch.Tensor, light: torch.Tensor, positions: torch.Tensor,
                      blocks: Blocks, scale: int) -> None:
    """Swap light blocks for replacement (heavy) blocks inside a feather-resampled image, exactly and in place.

    out: (B,Ho,Wo,3) from `feather_resample`; replacement / light: (n,3,bo,bo) the heavy output and the same blocks'
    LANCZOS upscale; positions: (n,3) source (batch, y, x).
    """
    h, w = blocks.source_size
    s, bo = int(scale), blocks.block * int(scale)
    wy = axis_weights(h, blocks.ys, blocks.block, blocks.overlap, s, device=out.device)
    wx = axis_weights(w, blocks.xs, blocks.block, blocks.overlap, s, device=out.device)
    iy = {y: i for i, y in enumerate(blocks.ys)}
    ix = {x: j for j, x in enumerate(blocks.xs)}
    delta = (replacement.to(out) - light.to(out)).permute(0, 2, 3, 1)  # (n, bo, bo, 3)
    for d, (b, y, x) in zip(delta, positions.tolist()):
        m = wy[iy[y]][:, None, None] * wx[ix[x]][None, :, None]
        out[b, y * s:y * s + bo, x * s:x * s + bo] += m * d


__all__ = ["feather_resample", "blend_blocks_into", "composite_matrix", "axis_weights"]
