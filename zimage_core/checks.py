"""Checks of user input that need no model: run them before any weight loads, so a typo costs milliseconds.

Every check raises InputError with a message that names the input (in the caller's spelling: `--device` on the
command line, `device` in Python or HTTP) and the value it got.
"""

from __future__ import annotations

import math

import torch

from .errors import InputError


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


def check_device(spec: str | torch.device | None, name: str = "device") -> torch.device | None:
    """A torch device this machine has: 'cpu', 'cuda', 'cuda:N', 'mps' (None = choose automatically)."""
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


__all__ = ["check_text", "check_number", "check_device"]
