"""One image convention for the whole library: torch float32 tensors shaped (B, H, W, 3), RGB, values in 0-1.

This is ComfyUI's IMAGE layout, so nodes pass tensors straight through. Everything that enters the library from
outside (PIL images, numpy arrays of any dtype, grayscale, RGBA, 16-bit) goes through `as_image_batch` first.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .checks import output_format
from .errors import InputError, OutputError

log = logging.getLogger(__name__)

ImageLike = "torch.Tensor | np.ndarray | Image.Image"

# Pixel budget for images read from files and for results: a 48 KB PNG can declare 20000² pixels (a decompression
# bomb) and a ×4 upscale of a 4096² image needs > 16 GB. 8192² (67 MP) fits a 2048² image upscaled ×4.
DEFAULT_MAX_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "ZIMAGE_MAX_PIXELS"
# Formats are chosen by content, never by file name, and only real raster formats are tried: Pillow would otherwise
# hand EPS content named .png to Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


def max_pixels() -> int:
    """The pixel budget: $ZIMAGE_MAX_PIXELS when set (a positive integer), else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"${MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels.")
    return int(raw)


def check_pixels(width: int, height: int, what: str, budget: int | None = None) -> None:
    """Refuse an image of width×height pixels above the budget, saying how to get under it."""
    budget = max_pixels() if budget is None else budget
    if width * height > budget:
        raise InputError(f"{what} would be {width}×{height} = {width * height / 1e6:.1f} MP, over the "
                         f"{budget / 1e6:.1f} MP pixel budget; use a smaller size or scale, or raise the budget with "
                         f"${MAX_PIXELS_ENV}.")


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
    # reductions first, so an image that is already clean (ComfyUI's IMAGE) passes through without a copy
    if not (torch.isfinite(t.sum()) or torch.isfinite(t).all()):
        log.warning("Image contains NaN or infinite pixels; NaN set to 0 and infinities clamped to 0-1.")
        t = torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0)
    if t.numel() and (t.min() < 0.0 or t.max() > 1.0):
        t = t.clamp(0.0, 1.0)
    return t.contiguous()


def to_pil(image: torch.Tensor, index: int = 0) -> Image.Image:
    """One image of a (B, H, W, 3) batch as an 8-bit PIL RGB image."""
    arr = (image[index].detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def load_image(path: str | os.PathLike, budget: int | None = None) -> torch.Tensor:
    """Read an image file into a (1, H, W, 3) batch. The size is checked against the pixel budget from the header,
    before any pixel is decoded; formats are recognised by content (IMAGE_FORMATS only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file not found: {path}" if not path.is_dir() else f"{path} is a folder, not an image.")
    return _decode(path, path.name, budget)


def decode_image(data: bytes, name: str = "upload", budget: int | None = None) -> torch.Tensor:
    """Decode encoded image bytes (an upload, a base64 field) into a (1, H, W, 3) batch, with the same pixel budget
    and content-based format check as `load_image`."""
    return _decode(io.BytesIO(data), name, budget)


def _decode(source: Path | io.BytesIO, name: str, budget: int | None) -> torch.Tensor:
    try:
        with Image.open(source, formats=IMAGE_FORMATS) as im:
            check_pixels(im.width, im.height, f"image {name}", budget)
            im.load()
            return as_image_batch(im)
    except Image.DecompressionBombError as err:  # Pillow refuses it while reading the header, before our check
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found[1]) / 1e6:.0f} MP" if found else "more pixels than Pillow opens"
        raise InputError(f"image {name} declares {size} (a decompression bomb), over the "
                         f"{(max_pixels() if budget is None else budget) / 1e6:.1f} MP pixel budget.") from None
    except UnidentifiedImageError:
        raise InputError(f"Could not read image {name}: its content is not {', '.join(IMAGE_FORMATS)} (the "
                         "format is recognised by content, not by the file name).") from None
    except (OSError, SyntaxError, ValueError) as err:  # ValueError: e.g. a PNG text chunk that inflates too far
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(source, Path):
            detail = detail.replace(str(source), name)
        raise InputError(f"Could not read image {name}: {detail}. Use a PNG, JPEG, WebP, BMP, TIFF or GIF "
                         "file.") from None


def save_image_atomic(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Write an image via a temp file + rename, so a crash never leaves half an image behind. A failed write (full
    disk, read-only folder) is an OutputError and leaves any earlier file at `path` untouched."""
    path = Path(path)
    fmt = save_kwargs.pop("format", None) or output_format(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should be as readable as any other file
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format=fmt, **save_kwargs)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise OutputError(f"could not write {path}: {err.strerror or err}.") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path
