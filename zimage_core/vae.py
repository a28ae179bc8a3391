"""Flux AE encode/decode, plain and tiled, between model-space latents and (B, H, W, 3) 0-1 images.

Spaces: raw VAE latents are what the autoencoder produces (ComfyUI's LATENT holds these, so native VAE nodes mix
with ours); model-space latents = (raw − shift)·scale are what the transformer denoises.
Tiled decode splits the latent into overlapping tiles, decodes each and blends them with smooth (raised-cosine)
weights over the overlap, normalised exactly, so large images decode in bounded memory with no visible seam.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from .errors import InputError
from .images import as_image_batch

log = logging.getLogger(__name__)

VAE_SCALE = 8
AUTO_TILE_PIXELS = 2048 * 2048  # decode plainly up to this many output pixels, tiled above (or on OOM)


def _factors(vae) -> tuple[float, float]:
    cfg = vae.config
    return float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", None) or 0.0)


def to_vae_space(latents: torch.Tensor, vae) -> torch.Tensor:
    scale, shift = _factors(vae)
    return latents / scale + shift


def to_model_space(raw: torch.Tensor, vae) -> torch.Tensor:
    scale, shift = _factors(vae)
    return (raw - shift) * scale


def _vae_device_dtype(vae) -> tuple[torch.device, torch.dtype]:
    p = next(vae.parameters())
    return p.device, p.dtype


@torch.no_grad()
def decode_raw(vae, raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents (B,16,h,w) → images (B,H,W,3) in 0-1, one plain decoder call."""
    device, dtype = _vae_device_dtype(vae)
    img = vae.decode(raw.to(device=device, dtype=dtype), return_dict=False)[0]
    return ((img.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def _blend_ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D weights: raised-cosine ramps of `overlap` samples at inner edges, 1 elsewhere (never exactly 0)."""
    w = torch.ones(n)
    if overlap > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(overlap) + 0.5) / overlap)
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[n - overlap:] = ramp.flip(0)
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


@torch.no_grad()
def decode_raw_tiled(vae, raw: torch.Tensor, tile: int = 64, overlap: int = 16,
                     on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Tiled decode. `tile` and `overlap` are in latent pixels (×8 in the image)."""
    if overlap < 0 or overlap >= tile:
        raise InputError(f"tile overlap must be in 0..tile-1 (tile={tile}); got {overlap}.")
    if tile < 8:
        raise InputError(f"tile must be at least 8 latent pixels (64 px); got {tile}.")
    b, _, h, w = raw.shape
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    out = torch.zeros((b, h * VAE_SCALE, w * VAE_SCALE, 3))
    weight = torch.zeros((1, h * VAE_SCALE, w * VAE_SCALE, 1))
    total, done = len(ys) * len(xs), 0
    for y in ys:
        th = min(tile, h)
        for x in xs:
            tw = min(tile, w)
            piece = decode_raw(vae, raw[:, :, y:y + th, x:x + tw]).cpu()
            py, px = y * VAE_SCALE, x * VAE_SCALE
            ph, pw = th * VAE_SCALE, tw * VAE_SCALE
            # ramp only where a neighbouring tile actually overlaps (the real overlap can exceed `overlap` at the end)
            wy = _blend_ramp(ph, overlap * VAE_SCALE, y == 0, y + th >= h)
            wx = _blend_ramp(pw, overlap * VAE_SCALE, x == 0, x + tw >= w)
            wt = (wy[:, None] * wx[None, :])[None, :, :, None]
            out[:, py:py + ph, px:px + pw] += piece * wt
            weight[:, py:py + ph, px:px + pw] += wt
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return (out / weight).clamp(0, 1)


def decode(vae, latents: torch.Tensor, *, tiled: bool | None = None, tile: int = 64, overlap: int = 16,
           on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Model-space latents → images (B,H,W,3) in 0-1. tiled=None picks tiling for large images and falls back to
    tiles when a plain decode runs out of GPU memory."""
    raw = to_vae_space(latents.float(), vae)
    pixels = raw.shape[-2] * raw.shape[-1] * VAE_SCALE * VAE_SCALE
    if tiled is None:
        tiled = pixels > AUTO_TILE_PIXELS
    if tiled:
        return decode_raw_tiled(vae, raw, tile, overlap, on_tile)
    try:
        return decode_raw(vae, raw).cpu()
    except torch.OutOfMemoryError:
        log.warning("VAE decode ran out of GPU memory at %dx%d; retrying with tiled decode (tile %d, overlap %d).",
                    raw.shape[-1] * VAE_SCALE, raw.shape[-2] * VAE_SCALE, tile, overlap)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return decode_raw_tiled(vae, raw, tile, overlap, on_tile)


@torch.no_grad()
def encode(vae, images: torch.Tensor) -> torch.Tensor:
    """Images (B,H,W,3) 0-1 → model-space latents; deterministic (the posterior mean)."""
    images = as_image_batch(images)
    _, h, w, _ = images.shape
    if h % 16 or w % 16:
        raise InputError(f"Image size {w}×{h} must be a multiple of 16 to encode; resize it to "
                         f"{round(w / 16) * 16}×{round(h / 16) * 16}.")
    device, dtype = _vae_device_dtype(vae)
    x = images.permute(0, 3, 1, 2).to(device=device, dtype=dtype) * 2.0 - 1.0
    raw = vae.encode(x).latent_dist.mode()
    return to_model_space(raw.float(), vae)
