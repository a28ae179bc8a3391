"""The light path fused with the feather stitch: LANCZOS every block and blend them, in one banded resample.

Per-block LANCZOS is linear and separable, the block grid is separable (rows ys × columns xs) and so are the
feather masks, whose total weight factorises as Wy(Y)·Wx(X). Therefore "upscale every block with LANCZOS, weight
it by its mask, sum, divide by the total weight" equals Py · X · Pxᵀ with one composite matrix per axis:

    Py[Y, u] = Σᵢ ŵᵢ(Y − s·yᵢ) · A[Y − s·yᵢ, u − yᵢ],   ŵᵢ = wᵢ / Wy   (A = the block's LANCZOS matrix)

Same result as the per-block route (up to float rounding and PIL's per-block 8-bit clipping between passes), but
every output pixel is written once instead of (overlap-many) times, and there is no (N, 3, 4·bs, 4·bs) tensor. The
matrices are banded and kept as row chunks with only the input columns they touch, so memory stays O(size).
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
def _axis_cpu(length: int, starts: tuple[int, ...], block: int, overlap: int, scale: int, chunk: int = ROW_CHUNK):
    """One axis of the fused resample, built in float64 on the CPU.

    Returns (bands, norm): bands = [(r0, r1, c0, c1, piece)] where piece = P[r0:r1, c0:c1] is the only non-zero part
    of those composite-matrix rows (the matrix is never materialised, so huge images cost O(length) memory);
    norm = (n, block·scale) normalised feather weights ŵ of each block.
    """
    bo, band, out_len = block * scale, overlap * scale, length * scale
    weights = [feather_taper(bo, band, st > 0, st + block < length, dtype=torch.float64) for st in starts]
    total = torch.zeros(out_len, dtype=torch.float64)
    for st, w in zip(starts, weights):
        total[st * scale:st * scale + bo] += w
    norm = torch.stack([w / total[st * scale:st * scale + bo] for st, w in zip(starts, weights)])
    a = lanczos_matrix(block, bo, dtype=torch.float64)
    bands = []
    for r0 in range(0, out_len, chunk):
        r1 = min(r0 + chunk, out_len)
        touching = [(st, w) for st, w in zip(starts, norm) if st * scale < r1 and st * scale + bo > r0]
        c0 = min(st for st, _ in touching)
        c1 = max(st + block for st, _ in touching)
        piece = torch.zeros(r1 - r0, c1 - c0, dtype=torch.float64)
        for st, w in touching:
            lo, hi = max(r0, st * scale), min(r1, st * scale + bo)  # output rows this block covers here
            rows = slice(lo - st * scale, hi - st * scale)
            piece[lo - r0:hi - r0, st - c0:st - c0 + block] += w[rows, None] * a[rows]
        used = torch.nonzero(piece.abs().sum(dim=0)).flatten()
        u0, u1 = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 1)
        bands.append((r0, r1, c0 + u0, c0 + u1, piece[:, u0:u1].float().contiguous()))
    return bands, norm


def axis_weights(length: int, starts: list[int], block: int, overlap: int, scale: int, *,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D feather weights ŵ of each block start along one axis: (n, block·scale), float32."""
    return _axis_cpu(length, tuple(starts), block, overlap, scale)[1].to(device=device, dtype=torch.float32)


def composite_matrix(length: int, starts: list[int], block: int, overlap: int, scale: int, *,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """The dense (length·scale, length) matrix of 'LANCZOS each block, feather-blend them' along one axis
    (for inspection and tests; the resample itself only uses the bands)."""
    p = torch.zeros(length * scale, length, dtype=torch.float32)
    for r0, r1, c0, c1, piece in _axis_cpu(length, tuple(starts), block, overlap, scale)[0]:
        p[r0:r1, c0:c1] = piece
    return p.to(device)


def _bands(length: int, starts: list[int], block: int, overlap: int, scale: int, device: torch.device):
    bands = _axis_cpu(length, tuple(starts), block, overlap, scale)[0]
    return [(r0, r1, c0, c1, piece.to(device)) for r0, r1, c0, c1, piece in bands]


def feather_resample(images: torch.Tensor, blocks: Blocks, scale: int) -> torch.Tensor:
    """All blocks LANCZOS-upscaled by `scale` and feather-stitched: (B,H,W,3) → (B,H·s,W·s,3), clipped to 0-1."""
    b, h, w, _ = images.shape
    s, bs, ov = int(scale), blocks.block, blocks.overlap
    dev = images.device
    # Horizontal pass (as PIL: horizontal first) on (B·H·3, W) rows, banded over output columns.
    x = images.permute(0, 1, 3, 2).reshape(b * h * 3, w)
    t = torch.empty(b * h * 3, w * s, dtype=images.dtype, device=dev)
    for q0, q1, v0, v1, piece in _bands(w, blocks.xs, bs, ov, s, dev):
        t[:, q0:q1] = x[:, v0:v1] @ piece.T
    t.clamp_(0.0, 1.0)  # PIL's 8-bit path clips between the passes
    t = t.view(b, h, 3, w * s).permute(0, 1, 3, 2).reshape(b, h, w * s * 3)  # (B, H, Wo·3), channels interleaved
    out = torch.empty(b, h * s, w * s * 3, dtype=images.dtype, device=dev)
    for r0, r1, c0, c1, piece in _bands(h, blocks.ys, bs, ov, s, dev):
        torch.matmul(piece, t[:, c0:c1], out=out[:, r0:r1])
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
