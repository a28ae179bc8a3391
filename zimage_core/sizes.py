"""Image-size rules: Z-Image needs width and height in multiples of 16 (8× VAE downsampling, then 2×2 patches)."""

from __future__ import annotations

from .errors import InputError

SIZE_MULTIPLE = 16
MIN_SIZE = 64
MAX_SIZE = 4096


def snap(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    """The nearest multiple of `multiple` (at least one multiple)."""
    return max(multiple, int(round(value / multiple)) * multiple)


def check_side(name: str, value: object, *, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> int:
    """One side of a size: an int in min_size..max_size and a multiple of 16. The error names the side and the value
    the caller gave, and the nearest valid sizes."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{name} must be an integer number of pixels, got {value!r}.", name)
    if not min_size <= value <= max_size:
        raise InputError(f"{name}={value} is out of range; use {min_size}..{max_size} pixels.", name)
    if value % SIZE_MULTIPLE:
        lo, hi = (value // SIZE_MULTIPLE) * SIZE_MULTIPLE, (value // SIZE_MULTIPLE + 1) * SIZE_MULTIPLE
        near = " and ".join(str(v) for v in (lo, hi) if min_size <= v <= max_size) or str(min_size)
        raise InputError(f"{name}={value} is not a multiple of {SIZE_MULTIPLE}; the nearest valid sizes are {near}.",
                         name)
    return value


def check_size(width: int, height: int, *, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> None:
    """Raise InputError naming the side, its value and the nearest valid sizes when width/height cannot be
    generated."""
    check_side("width", width, min_size=min_size, max_size=max_size)
    check_side("height", height, min_size=min_size, max_size=max_size)
