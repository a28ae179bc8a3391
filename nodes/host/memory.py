"""Devices and memory: our models through ComfyUI's memory manager (ModelPatchers sized by stored bytes), or block
streaming under --lowvram / --novram and when a model cannot fit."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

from .guards import _mm, _patcher

def compute_device() -> torch.device:
    """Where models run: ComfyUI's torch device, else CUDA when present, else CPU."""
    if _mm is not None:
        return torch.device(_mm.get_torch_device())
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_device() -> torch.device:
    """Where freshly loaded weights are placed. Inside ComfyUI: its offload device (the memory manager moves them
    to the GPU on use); outside: the compute device."""
    if _mm is not None:
        return torch.device(_mm.unet_offload_device())
    return compute_device()


class _Holder(torch.nn.Module):
    """A plain container around one of our modules, so ComfyUI's ModelPatcher can write its bookkeeping attributes
    (`device`, memory counters) without touching the diffusers/transformers module (whose `device` is read-only)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device


_PATCHER_ATTR = "_zimage_comfy_patcher"
_PATCHERS_LOCK = threading.Lock()


def _patcher_for(module: torch.nn.Module):
    """One ModelPatcher per module, stored on the module itself so it lives and dies with it (a global registry
    would keep every model ever loaded alive in RAM, even after ComfyUI's /free)."""
    with _PATCHERS_LOCK:
        patcher = module.__dict__.get(_PATCHER_ATTR)
        if patcher is None:
            device = next(module.parameters()).device
            # the holder references the module; the module references the patcher: a cycle the GC frees together
            patcher = _patcher.ModelPatcher(_Holder(module, device), load_device=_mm.get_torch_device(),
                                            offload_device=_mm.unet_offload_device())
            module.__dict__[_PATCHER_ATTR] = patcher
        return patcher


def _stream_wanted(mods: list[torch.nn.Module], extra_bytes: int, device: torch.device) -> bool:
    """Block streaming instead of full residency: when ComfyUI runs with --lowvram / --novram, or when the modules
    and their working memory could not fit the device even with everything else unloaded."""
    from zimage_core.offload import weight_bytes

    if device.type != "cuda":
        return False
    state = getattr(_mm, "vram_state", None)
    if state is not None and getattr(state, "name", "") in ("LOW_VRAM", "NO_VRAM"):
        return True
    need = sum(weight_bytes(m) for m in mods) + extra_bytes + _mm.minimum_inference_memory()
    return need > _mm.get_total_memory(device)


def _unload_ours(patchers: list) -> None:
    """Take our patchers out of ComfyUI's loaded set (their weights go back to the CPU), keeping every other model."""
    ours = {id(p) for p in patchers}
    keep = [e for e in getattr(_mm, "current_loaded_models", []) if id(getattr(e, "model", None)) not in ours]
    _mm.free_memory(1e30, compute_device(), keep_loaded=keep)


@contextlib.contextmanager
def models_ready(*modules: torch.nn.Module | None, extra_bytes: int = 0) -> Iterator[str]:
    """Make these modules ready on the compute device for the work inside the block; yields the mode used.

    Outside ComfyUI: 'local' (they already are where zimage_core placed them). Inside ComfyUI:
      'full'   through the memory manager: one ModelPatcher each, sized by the bytes actually stored (fp8 and GGUF
               count their compact bytes); other models are offloaded to make room, ours when others need it;
      'block'  with --lowvram / --novram, or when they cannot fit the device: the DiT and the text encoder stream
               their blocks from CPU memory (zimage_core.offload), ComfyUI frees room for one block group plus the
               working memory, and modules without blocks (the VAE) are moved for the work and back after it.
    """
    from zimage_core.offload import block_footprint, disable_block_offload, enable_block_offload

    mods = [m for m in modules if m is not None]
    if not mods or _mm is None or _patcher is None:
        yield "local"
        return
    device = compute_device()
    patchers = [_patcher_for(m) for m in mods]
    if not _stream_wanted(mods, extra_bytes, device):
        for m, patcher in zip(mods, patchers):
            disable_block_offload(m)
            patcher.size = 0  # re-measured on load: LoRA adapters added since the last use must count too
        _mm.load_models_gpu(patchers, memory_required=extra_bytes, force_full_load=True)
        yield "full"
        return
    _unload_ours(patchers)
    streamed = [m for m in mods if any(isinstance(c, torch.nn.ModuleList) for c in m.children())]
    moved = [m for m in mods if m not in streamed]
    _mm.free_memory(sum(block_footprint(m, 1) for m in streamed) + sum(_bytes(m) for m in moved) + extra_bytes,
                    device)
    for m in streamed:
        enable_block_offload(m, device, resident_blocks=1)
    for m in moved:
        m.to(device)
    try:
        yield "block"
    finally:
        for m in moved:
            m.to(load_device())


def _bytes(module: torch.nn.Module) -> int:
    from zimage_core.offload import weight_bytes

    return weight_bytes(module)


def free_memory_for(module: torch.nn.Module) -> None:
    """Ask ComfyUI to free room for a module we move ourselves (upscale/face models, like its upscale node)."""
    if _mm is None:
        return
    _mm.free_memory(_bytes(module) * 2, _mm.get_torch_device())


def soft_empty_cache() -> None:
    if _mm is not None:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
