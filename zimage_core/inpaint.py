"""Masked inpainting: repaint where the mask is 1, keep the rest.

Latents: after every Euler step the kept area is set back to the start image at the next step's noise level,
σ'·noise + (1 − σ')·x0, and to x0 itself after the last step — what diffusers' ZImageInpaintPipeline does, so the
result matches it. Pixels: the decoded image is blended back onto the original with the pixel mask, so the kept
area is the input itself (a VAE round trip would otherwise shift it by a few levels).

The mask (1 = repaint, ComfyUI's MASK convention) is binarised at 0.5 as diffusers does, optionally grown (dilated by
`grow` pixels) and feathered (a Gaussian of `feather` pixels; a feathered mask stays soft, so the repainted area
fades into the kept one). In latent space a hard mask takes each 8×8 cell's top-left pixel (diffusers' nearest
resize); a soft one is averaged over the cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError
from .images import as_image_batch

VAE_SCALE = 8


def as_mask(mask: torch.Tensor | object, what: str = "mask") -> torch.Tensor:
    """A (B, H, W) float mask in 0-1 from a MASK tensor, an image (its first channel) or anything as_image_batch
    reads; values outside 0-1 are an error (a mask is a share, not an intensity)."""
    if isinstance(mask, torch.Tensor) and mask.ndim in (2, 3) and not (mask.ndim == 3 and mask.shape[-1] in (3, 4)):
        m = mask.float()
        m = m[None] if m.ndim == 2 else m
    else:
        m = as_image_batch(mask)[..., 0]
    if not torch.isfinite(m).all():
        raise InputError(f"{what} has NaN or infinite values.", "mask")
    lo, hi = float(m.min()), float(m.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{what} values must be within 0-1 (1 = repaint); got {lo:g}..{hi:g}.", "mask")
    return m


def prepare_mask(mask: torch.Tensor, width: int, height: int, *, grow: int = 0, feather: int = 0,
                 notes: list[str] | None = None) -> torch.Tensor:
    """The pixel mask at width×height: resized (bilinear) when it has another size, binarised, grown, feathered."""
    m = as_mask(mask)
    if tuple(m.shape[1:]) != (height, width):
        if notes is not None:
            notes.append(f"mask {m.shape[2]}×{m.shape[1]} resized to {width}×{height}")
        m = F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    m = (m >= 0.5).float()
    if grow > 0:
        m = F.max_pool2d(m[:, None], kernel_size=2 * grow + 1, stride=1, padding=grow)[:, 0]
    if feather > 0:
        m = _gaussian_blur(m, feather)
    return m


def _gaussian_blur(m: torch.Tensor, radius: int) -> torch.Tensor:
    sigma = max(radius / 2.0, 0.5)
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(xs ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.pad(m[:, None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0].clamp(0, 1)


def latent_mask(pixel_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H/8, W/8): nearest (each cell's top-left pixel) for a hard mask, the cell average for a soft one."""
    m = pixel_mask[:, None]
    size = (m.shape[-2] // VAE_SCALE, m.shape[-1] // VAE_SCALE)
    if bool(((m == 0) | (m == 1)).all()):
        return F.interpolate(m, size=size, mode="nearest")
    return F.avg_pool2d(m, kernel_size=VAE_SCALE)


@dataclass
class LatentBlend:
    """The after-step hook of the sampling loop: keep the start image outside the mask (see the module doc)."""

    x0: torch.Tensor  # (B, 16, h, w) start latents, model space
    noise: torch.Tensor  # the loop's noise
    mask: torch.Tensor  # (B or 1, 1, h, w), 1 = repaint
    sigmas: torch.Tensor

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        last = step == len(self.sigmas) - 2
        s = float(self.sigmas[step + 1])
        proper = self.x0 if last else s * self.noise + (1.0 - s) * self.x0
        return (1 - self.mask) * proper + self.mask * x


def paste_back(decoded: torch.Tensor, original: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """The decoded images inside the mask, the original pixels outside it (blended across a feathered edge)."""
    m = pixel_mask[..., None].to(decoded)
    if m.shape[0] == 1 and decoded.shape[0] > 1:
        m = m.expand(decoded.shape[0], -1, -1, -1)
    original = original.to(decoded)
    if original.shape[0] == 1 and decoded.shape[0] > 1:
        original = original.expand(decoded.shape[0], -1, -1, -1)
    return decoded * m + original * (1 - m)


def describe(pixel_mask: torch.Tensor) -> str:
    share = float(pixel_mask.mean())
    return f"inpainting {share:.0%} of the image (mask 1 = repaint)" if math.isfinite(share) else "inpainting"


__all__ = ["LatentBlend", "as_mask", "describe", "latent_mask", "paste_back", "prepare_mask"]
