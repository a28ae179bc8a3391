"""The running prompt: interrupts, progress bars with previews, and the per-prompt timing report."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator

import torch

from zimage_core.errors import Interrupted

from .guards import _cutils, _mm, inside_comfyui
from .server import prompt_server

log = logging.getLogger(__name__)

_interrupt = threading.Event()


def request_interrupt(value: bool = True) -> None:
    """Outside ComfyUI: ask running nodes to stop at the next step (inside, ComfyUI's own flag is used too)."""
    if value:
        _interrupt.set()
    else:
        _interrupt.clear()
    if _mm is not None:
        _mm.interrupt_current_processing(value)


def should_stop() -> bool:
    """Polled by zimage_core between steps / tiles / block batches."""
    if _mm is not None and _mm.processing_interrupted():
        return True
    return _interrupt.is_set()


def interrupt_exception() -> type[BaseException]:
    """ComfyUI's InterruptProcessingException (shown as "interrupted", not as an error), else Interrupted."""
    if _mm is not None:
        return _mm.InterruptProcessingException
    return Interrupted


def raise_interrupted(err: BaseException | None = None) -> None:
    """Clear the flag and raise the host's interrupt exception."""
    _interrupt.clear()
    exc = interrupt_exception()
    if _mm is not None:
        _mm.interrupt_current_processing(False)
    if err is not None:
        raise exc(str(err)) from err
    raise exc("Interrupted by the user.")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn zimage_core's Interrupted into the host's interrupt exception."""
    try:
        yield
    except Interrupted as err:
        raise_interrupted(err)


class Progress:
    """ComfyUI progress bar (with optional preview images); a no-op outside ComfyUI."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.bar = _cutils.ProgressBar(self.total) if _cutils is not None and inside_comfyui() else None

    def update(self, done: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = max(1, int(total))
        if self.bar is not None:
            self.bar.update_absolute(min(int(done), self.total), self.total, preview)


def latent_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function model-space latents (B,16,h,w) → ComfyUI preview payload, using ComfyUI's own previewer for the
    Flux latent format (TAESD 'taef1' when installed and chosen, else its linear latent→RGB factors, per the
    user's --preview-method). None outside ComfyUI or with previews off."""
    if not inside_comfyui():
        return None
    try:
        import latent_preview  # type: ignore
        from comfy import latent_formats  # type: ignore

        previewer = latent_preview.get_previewer(_mm.get_torch_device(), latent_formats.Flux())
    except Exception as err:  # noqa: BLE001 - previews are a nicety; never fail a run for them
        log.debug("No latent previewer: %s", err)
        return None
    if previewer is None:
        return None
    return lambda x0: previewer.decode_latent_to_preview_image("JPEG", x0)


_TIMINGS: "OrderedDict[str | None, dict[str, float]]" = OrderedDict()
_TIMINGS_LOCK = threading.Lock()
_TIMINGS_KEEP = 64


def current_prompt_id() -> str | None:
    """The id of the prompt ComfyUI is executing (None outside ComfyUI)."""
    try:
        from comfy_execution.utils import get_executing_context  # type: ignore

        ctx = get_executing_context()
        if ctx is not None:
            return ctx.prompt_id
    except Exception:  # noqa: BLE001
        pass
    server = prompt_server()
    return getattr(server, "last_prompt_id", None) if server is not None else None


def record_timing(stage: str, seconds: float) -> None:
    """Add seconds to a stage of the current prompt's timing report (read back by /zimage/generate)."""
    pid = current_prompt_id()
    with _TIMINGS_LOCK:
        report = _TIMINGS.setdefault(pid, {})
        report[stage] = report.get(stage, 0.0) + float(seconds)
        _TIMINGS.move_to_end(pid)
        while len(_TIMINGS) > _TIMINGS_KEEP:
            _TIMINGS.popitem(last=False)


def pop_timings(prompt_id: str | None) -> dict[str, float]:
    with _TIMINGS_LOCK:
        return _TIMINGS.pop(prompt_id, {})


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Time a node's work for the timing report (GPU work is synchronised so the seconds are real)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        record_timing(stage, time.perf_counter() - t)
