"""One image convention for the whole library: torch float32 tensors shaped (B, H, W, 3), RGB, values in 0-1.

This is ComfyUI's IMAGE layout, so nodes pass tensors straight through. Everything that enters the library from
outside (PIL images, numpy arrays of any dtype, grayscale, RGBA, 16-bit) goes through `as_image_batch` first.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import InputError

log = logging.getLogger(__name__)

ImageLike = "torch.Tensor | np.ndarray | Image.Image"


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return (arr / peak).astype(np.float32)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image)


def as_image_batch(image: torch.Tensor | np.ndarray | Image.Image) -> torch.Tensor:
    """Convert any supported image to a (B, H, W, 3) float32 RGB tensor in 0-1.

    Accepts HW, HWC and BHWC layouts with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels; uint8, uint16
    and float inputs. Alpha is dropped (composited over black, which is what ComfyUI's LoadImage gives). NaN pixels
    become 0 and infinities are clamped, with a warning, so one bad pixel cannot poison a whole route.
    """
    if isinstance(image, Image.Image):
        image = _pil_to_array(image)
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            t = torch.from_numpy(image.astype(np.float32) / 255.0)
        elif image.dtype == np.uint16:
            t = torch.from_numpy(image.astype(np.float32) / 65535.0)
        elif image.dtype == np.bool_:
            t = torch.from_numpy(image.astype(np.float32))
        elif np.issubdtype(image.dtype, np.integer):  # other integer arrays: 8-bit values unless they exceed 255
            arr = image.astype(np.float32)
            t = torch.from_numpy(arr / (65535.0 if arr.size and arr.max() > 255 else 255.0))
        elif np.issubdtype(image.dtype, np.floating):
            t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        else:
            raise InputError(f"Unsupported image dtype {image.dtype}; use uint8, uint16 or float.")
    elif isinstance(image, torch.Tensor):
        if image.dtype == torch.bool or image.is_floating_point():
            t = image.float()
        else:  # integer tensors: 8-bit values unless they exceed 255 (then 16-bit)
            t = image.float()
            t = t / (65535.0 if t.numel() and t.max() > 255 else 255.0)
    else:
        raise InputError(f"Expected an image (tensor, numpy array or PIL image), got {type(image).__name__}.")

    if t.ndim == 2:
        t = t[None, :, :, None]
    elif t.ndim == 3:
        t = t[None] if t.shape[-1] in (1, 2, 3, 4) else t[..., None]
    elif t.ndim != 4:
        raise InputError(f"Image must have 2-4 dimensions (H,W / H,W,C / B,H,W,C); got shape {tuple(t.shape)}.")
    b, h, w, c = t.shape
    if b == 0 or h == 0 or w == 0:
        raise InputError(f"Image is empty (shape {tuple(t.shape)}); give an image with at least one pixel.")
    if c == 1:
        t = t.expand(b, h, w, 3)
    elif c == 2:
        t = (t[..., :1] * t[..., 1:2]).expand(b, h, w, 3)
    elif c == 4:
        t = t[..., :3] * t[..., 3:4]
    elif c != 3:
        raise InputError(f"Image must have 1, 2, 3 or 4 channels in the last dimension; got {c}.")
    if not torch.isfinite(t).all():
        log.warning("Image contains NaN or infinite pixels; NaN set to 0 and infinities clamped to 0-1.")
        t = torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0)
    return t.clamp(0.0, 1.0).contiguous()


def to_pil(image: torch.Tensor, index: int = 0) -> Image.Image:
    """One image of a (B, H, W, 3) batch as an 8-bit PIL RGB image."""
    arr = (image[index].detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file into a (1, H, W, 3) batch, with a clear error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return as_image_batch(im)
    except (OSError, SyntaxError) as err:
        raise InputError(f"Could not read image {path}: {err}. Is it a valid PNG/JPEG/WebP file?") from err


def save_image_atomic(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Write an image via a temp file + rename, so a crash never leaves half an image behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = save_kwargs.pop("format", None) or Image.registered_extensions().get(path.suffix.lower(), "PNG")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should be as readable as any other file
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format=fmt, **save_kwargs)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
