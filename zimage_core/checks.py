"""Checks of user input that need no model: run them before any weight loads, so a typo costs milliseconds.

Every check raises InputError with a message that names the input (in the caller's spelling: `--device` on the
command line, `device` in Python or HTTP) and the value it got.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, OutputError

if TYPE_CHECKING:  # torch loads only when a device is checked: option checks stay instant
    import torch

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def check_text(value: str, name: str) -> str:
    """Text must be encodable as UTF-8. JSON bodies and command lines can carry lone UTF-16 surrogates ("\\ud800"),
    which tokenizers and file systems reject deep inside with a TypeError or UnicodeEncodeError."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text; got {type(value).__name__}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"{name} contains something that is not text (a lone surrogate at character {err.start}); "
                         "send valid UTF-8.") from None
    return value


def check_number(name: str, value: object, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number within [lo, hi] (NaN and infinities are refused: they turn whole images black)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number; got {value!r}.")
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number; got {value!r}.")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-∞" if lo is None else f"{lo:g}"
        hi_s = "∞" if hi is None else f"{hi:g}"
        raise InputError(f"{name} must be between {lo_s} and {hi_s}; got {value:g}.")
    return float(value)


def check_device(spec: "str | torch.device | None", name: str = "device") -> "torch.device | None":
    """A torch device this machine has: 'cpu', 'cuda', 'cuda:N', 'mps' (None = choose automatically)."""
    import torch

    if spec is None or spec == "":
        return None
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"{name} '{spec}' is not a device; use cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name} '{spec}': no CUDA GPU is visible to this torch ({torch.__version__}); use cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{name} '{spec}': this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"{name} '{spec}': Apple MPS is not available here; use cpu.")
    elif device.type != "cpu":
        raise InputError(f"{name} '{spec}' is not supported; use cpu, cuda, cuda:N or mps.")
    return device


def output_format(path: str | os.PathLike) -> str:
    """The image format an output path asks for, from its extension; an error naming the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise OutputError(f"cannot write '{Path(path).name}': the extension {suffix or '(none)'} is not an image "
                          f"format this pack writes; use {', '.join(OUTPUT_FORMATS)}.")
    return OUTPUT_FORMATS[suffix]


def check_output_path(path: str | os.PathLike) -> Path:
    """Check before any work that an image can be written at `path`: a file name with a supported extension, not a
    folder, in a folder that exists (or can be made) and is writable. Returns the path."""
    if not str(path).strip():
        raise OutputError("the output path is empty; give a file name such as out/image.png.")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"the output path {path} is a folder; give a file name inside it, e.g. {path / 'image.png'}.")
    output_format(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"cannot write to {path.parent}: {err.strerror or err}.") from None
    return path


__all__ = ["OUTPUT_FORMATS", "check_device", "check_number", "check_output_path", "check_text", "output_format"]
