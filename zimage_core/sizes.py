"""Image-size rules: Z-Image needs width and height in multiples of 16 (8× VAE downsampling, then 2×2 patches)."""

from __future__ import annotations

from .errors import InputError

SIZE_MULTIPLE = 16
MIN_SIZE = 64
MAX_SIZE = 4096


def snap(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    """The nearest multiple of `multiple` (at least one multiple)."""
    return max(multiple, int(round(value / multiple)) * multiple)


def check_size(width: int, height: int, *, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> None:
    """Raise InputError naming the nearest valid sizes when width/height cannot be generated."""
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise InputError(f"{name} must be an integer number of pixels, got {v!r}.")
        if not min_size <= v <= max_size:
            raise InputError(f"{name}={v} is out of range; use {min_size}..{max_size} pixels.")
        if v % SIZE_MULTIPLE:
            lo, hi = (v // SIZE_MULTIPLE) * SIZE_MULTIPLE, (v // SIZE_MULTIPLE + 1) * SIZE_MULTIPLE
            raise InputError(f"{name}={v} is not a multiple of {SIZE_MULTIPLE}; the nearest valid sizes are {lo} and "
                             f"{hi}.")
