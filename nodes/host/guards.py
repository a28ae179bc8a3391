"""Every import of ComfyUI's own modules, each guarded: a module that is missing (no ComfyUI: tests, headless use)
is None here and the functions of this package fall back to plain torch."""

from __future__ import annotations

try:  # ComfyUI's model folders
    import folder_paths as _fp  # type: ignore
except Exception:  # noqa: BLE001 - any failure means "not inside ComfyUI"
    _fp = None

try:  # memory manager + interrupt flag
    import comfy.model_management as _mm  # type: ignore
except Exception:  # noqa: BLE001
    _mm = None

try:
    import comfy.model_patcher as _patcher  # type: ignore
except Exception:  # noqa: BLE001
    _patcher = None

try:
    import comfy.utils as _cutils  # type: ignore
except Exception:  # noqa: BLE001
    _cutils = None


def inside_comfyui() -> bool:
    """True when ComfyUI's folder and memory modules are importable (i.e. the pack runs as a custom node)."""
    return _fp is not None and _mm is not None

# What the native guidance adapter needs to put our guidance on ComfyUI's own Z-Image MODEL (a ModelPatcher around
# ComfyUI's NextDiT): the wrapper slots, NextDiT's class, and the helpers its forward uses.
try:
    import comfy.ldm.common_dit as _common_dit  # type: ignore
    import comfy.ldm.flux.math as _flux_math  # type: ignore
    import comfy.ldm.lumina.model as _lumina  # type: ignore
    import comfy.patcher_extension as _pext  # type: ignore
    import comfy.samplers as _samplers  # type: ignore
except Exception:  # noqa: BLE001
    _common_dit = _flux_math = _lumina = _pext = _samplers = None
