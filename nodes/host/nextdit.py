"""ComfyUI's NextDiT internals the native guidance adapter uses: wrapper slots, classes and the helpers NextDiT's
forward calls, each refused with a clear message outside ComfyUI."""

from __future__ import annotations

from typing import Any

import torch

from .guards import _common_dit, _cutils, _flux_math, _lumina, _patcher, _pext, _samplers

def _native(module: Any, what: str) -> Any:
    if module is None or _cutils is None:
        from zimage_core.errors import MissingDependencyError

        raise MissingDependencyError(f"{what} is only available inside ComfyUI (its 'comfy' package could not be "
                                     "imported).")
    return module


def comfy_version() -> str:
    """ComfyUI's version string ('unknown' outside ComfyUI or when it does not say)."""
    try:
        import comfyui_version  # type: ignore

        return str(comfyui_version.__version__)
    except Exception:  # noqa: BLE001
        return "unknown"


def model_patcher_class() -> type | None:
    """comfy.model_patcher.ModelPatcher (what a MODEL socket carries), or None outside ComfyUI."""
    return _patcher.ModelPatcher if _patcher is not None else None


def nextdit_class() -> type | None:
    """comfy.ldm.lumina.model.NextDiT (Lumina 2 and Z-Image), or None outside ComfyUI."""
    return _lumina.NextDiT if _lumina is not None else None


def wrapper_type(name: str) -> str:
    """The ModelPatcher wrapper slot WrappersMP.<name> (e.g. 'DIFFUSION_MODEL', 'OUTER_SAMPLE')."""
    return getattr(_native(_pext, "ComfyUI's model wrappers").WrappersMP, name)


def pad_to_patch_size(x: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """comfy.ldm.common_dit.pad_to_patch_size: the padding NextDiT's forward applies to its input latents."""
    return _native(_common_dit, "NextDiT's patch padding").pad_to_patch_size(x, patch_size)


def repeat_to_batch_size(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """comfy.utils.repeat_to_batch_size, as NextDiT lines its caption up with the image batch."""
    return _native(_cutils, "ComfyUI's batch helper").repeat_to_batch_size(x, batch_size)


def rope(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """comfy.ldm.flux.math.rope: one axis of NextDiT's rotary embedding, (B, L) → (B, L, dim/2, 2, 2)."""
    return _native(_flux_math, "ComfyUI's RoPE").rope(pos, dim, theta)


def calc_cond_batch(model: Any, conds: list, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> list:
    """comfy.samplers.calc_cond_batch: evaluate the model on conditionings as the sampler does."""
    return _native(_samplers, "ComfyUI's sampler").calc_cond_batch(model, conds, x, sigma, model_options)
