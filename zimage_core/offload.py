"""Where weights live while a model runs, and how much device memory each choice needs.

Modes:
  gpu    every part stays on the compute device (fastest; needs DiT + text encoder + VAE + activations);
  model  one part at a time: the text encoder and the DiT are never on the device together (each is moved there
         for its stage and back to the CPU after);
  block  the DiT and the text encoder stream their transformer blocks from CPU memory, `resident_blocks` at a time
         (diffusers' group offloading; with a CUDA device the next group is prefetched on a side stream);
  auto   the lightest mode that fits the free device memory at the requested size (`choose_mode`).
Results are identical in every mode (only where the weights sit changes).

The memory estimate (`estimate`): weights = the bytes of the parameters and buffers as stored (fp8 and GGUF count
their compact bytes); DiT activations ≈ tokens × (6·dim + 3·ffn) × bytes per value (the residual stream, q/k/v,
attention output and the three FFN projections of one block live at once; attention itself is assumed to use a
memory-efficient kernel, as PyTorch SDPA does on CUDA), times the forwards batched per step (2 for CFG; NAG adds the
negative caption's tokens); VAE decode ≈ 8 × 128 channels × H × W × bytes (the widest full-resolution stage). These
are documented estimates with a 15 % margin, not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .settings import MEMORY_MODES

HOST_MANAGED = "host"  # a host application (ComfyUI's memory manager) places the weights; Placement does nothing
MARGIN = 1.15
GIB = 1 << 30
_OFFLOAD_ATTR = "zimage_block_offload"
_HOOK_NAMES = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module | None) -> int:
    """Bytes of the parameters and buffers as they are stored (fp8: 1 per value; GGUF: the quantised blocks)."""
    if module is None:
        return 0
    return sum(tensor_bytes(t) for t in module.parameters()) + sum(tensor_bytes(t) for t in module.buffers())


def _block_lists(module: nn.Module) -> list[nn.ModuleList]:
    """The block lists group offloading streams: the direct ModuleList children (DiT layers and refiners; Qwen3
    layers)."""
    return [child for child in module.children() if isinstance(child, nn.ModuleList)]


def block_footprint(module: nn.Module, resident_blocks: int) -> int:
    """Bytes resident on the device when `module` streams its blocks `resident_blocks` at a time: everything outside
    the block lists, plus the largest group (twice: the running group and the prefetched next one)."""
    lists = _block_lists(module)
    in_lists = sum(weight_bytes(lst) for lst in lists)
    biggest = max((weight_bytes(b) for lst in lists for b in lst), default=0)
    return weight_bytes(module) - in_lists + 2 * resident_blocks * biggest


def dit_activation_bytes(width: int, height: int, *, dim: int = 3840, ffn: int = 10240, caption_tokens: int = 512,
                         forwards: int = 1, itemsize: int = 2) -> int:
    tokens = (width // 16) * (height // 16) + caption_tokens
    return int(forwards * tokens * (6 * dim + 3 * ffn) * itemsize)


def vae_decode_bytes(width: int, height: int, itemsize: int = 2) -> int:
    return int(8 * 128 * width * height * itemsize)


@dataclass(frozen=True)
class Need:
    """Device bytes each mode needs for one generation."""

    gpu: int
    model: int
    block: dict[int, int]  # resident_blocks -> bytes

    def for_mode(self, mode: str, resident_blocks: int = 1) -> int:
        return {"gpu": self.gpu, "model": self.model}.get(mode) or self.block[resident_blocks]


def estimate(dit: nn.Module, text_encoder: nn.Module | None, vae: nn.Module | None, width: int, height: int, *,
             forwards: int = 1, itemsize: int = 2, blocks: Iterable[int] = (1, 2, 4)) -> Need:
    """Device bytes per mode (see the module docstring), with the margin applied."""
    cfg = getattr(dit, "config", None)
    dim = int(getattr(cfg, "dim", 3840)) if cfg is not None else 3840
    ffn = max((m.out_features for m in dit.modules() if isinstance(m, nn.Linear)), default=dim * 8 // 3)
    act = dit_activation_bytes(width, height, dim=dim, ffn=ffn, forwards=forwards, itemsize=itemsize)
    vae_b, vae_act = weight_bytes(vae), vae_decode_bytes(width, height, itemsize)
    dit_b, te_b = weight_bytes(dit), weight_bytes(text_encoder)
    stage = max(dit_b + act, vae_b + vae_act, te_b)  # one part at a time; the VAE stays on the device
    block = {}
    for k in blocks:
        te_k = block_footprint(text_encoder, k) if text_encoder is not None else 0
        block[k] = int(MARGIN * (max(block_footprint(dit, k) + act, te_k, vae_act) + vae_b))
    return Need(gpu=int(MARGIN * (dit_b + te_b + vae_b + max(act, vae_act))), model=int(MARGIN * (stage + vae_b)),
                block=block)


@dataclass(frozen=True)
class MemoryPlan:
    """The mode chosen for a generation and why (shown in reports)."""

    mode: str
    resident_blocks: int
    need: int
    free: int | None

    def describe(self) -> str:
        what = {"host": "placed by the host application", "gpu": "all on the device",
                "model": "model offload (one part on the device at a time)",
                "block": f"block offload ({self.resident_blocks} block(s) resident)"}[self.mode]
        budget = f", {self.free / GIB:.1f} GiB free" if self.free is not None else ""
        return f"memory: {what}; needs ≈ {self.need / GIB:.2f} GiB{budget}"


def choose_mode(need: Need, free: int | None, requested: str = "auto", resident_blocks: int | None = None
                ) -> MemoryPlan:
    """The requested mode, or for 'auto' the lightest mode that fits `free` bytes (None = no limit: a CPU device).
    A requested mode that does not fit is refused with the mode that would."""
    from .errors import InputError

    if requested not in MEMORY_MODES:
        raise InputError(f"memory must be one of {', '.join(MEMORY_MODES)}; got {requested!r}.")
    ladder = [("gpu", 1, need.gpu), ("model", 1, need.model)]
    ladder += [("block", k, need.block[k]) for k in sorted(need.block, reverse=True)]
    if resident_blocks is not None:
        ladder = [s for s in ladder if s[0] != "block"] + [("block", resident_blocks,
                                                            need.block.get(resident_blocks, need.block[1]))]
    if free is None:
        mode, k, n = next(s for s in ladder if requested in ("auto", s[0]))
        return MemoryPlan(mode, k, n, None)
    if requested != "auto":
        mode, k, n = next(s for s in ladder if s[0] == requested)
        if n > free:
            fits = next((s for s in ladder if s[2] <= free), None)
            hint = (f"memory='{fits[0]}'" + (f" with {fits[1]} resident block(s)" if fits[0] == "block" else "")
                    + f" needs ≈ {fits[2] / GIB:.2f} GiB and fits") if fits else \
                "no mode fits: choose a smaller size or a compact weight file (fp8 or GGUF)"
            raise InputError(f"memory='{mode}' needs ≈ {n / GIB:.2f} GiB but only {free / GIB:.2f} GiB is free; "
                             f"{hint}.")
        return MemoryPlan(mode, k, n, free)
    for mode, k, n in ladder:
        if n <= free:
            return MemoryPlan(mode, k, n, free)
    lightest = ladder[-1]
    raise InputError(f"even block offload with {lightest[1]} resident block(s) needs ≈ {lightest[2] / GIB:.2f} GiB but "
                     f"only {free / GIB:.2f} GiB is free; choose a smaller size or a compact weight file (fp8 or "
                     "GGUF).")


# ------------------------------------------------------------------------------------------------ block streaming
def enable_block_offload(module: nn.Module, device: torch.device, resident_blocks: int = 1) -> None:
    """Stream `module`'s blocks to `device`, `resident_blocks` at a time, from CPU memory (diffusers' group
    offloading; prefetch on a side stream when the device is CUDA). Replaces any earlier setting."""
    from diffusers.hooks import apply_group_offloading

    if getattr(module, _OFFLOAD_ATTR, None) == (str(device), resident_blocks):
        return
    disable_block_offload(module)
    module.to("cpu")
    cuda = torch.device(device).type == "cuda"
    apply_group_offloading(module, onload_device=torch.device(device), offload_device=torch.device("cpu"),
                           offload_type="block_level", num_blocks_per_group=resident_blocks, use_stream=cuda,
                           non_blocking=cuda)
    setattr(module, _OFFLOAD_ATTR, (str(device), resident_blocks))


def disable_block_offload(module: nn.Module) -> None:
    """Remove block streaming; the weights stay where they are (on the CPU)."""
    from diffusers.hooks import HookRegistry

    if getattr(module, _OFFLOAD_ATTR, None) is None:
        return
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry):
            for name in _HOOK_NAMES:
                registry.remove_hook(name, recurse=False)
    setattr(module, _OFFLOAD_ATTR, None)


def block_offloaded(module: nn.Module) -> bool:
    return getattr(module, _OFFLOAD_ATTR, None) is not None


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: the device it streams its blocks to when block-offloaded (its parameters then sit
    on the CPU), else the device of its parameters."""
    streamed = getattr(module, _OFFLOAD_ATTR, None)
    if streamed is not None:
        return torch.device(streamed[0])
    return next(module.parameters()).device


__all__ = ["HOST_MANAGED", "MEMORY_MODES", "MemoryPlan", "Need", "block_footprint", "block_offloaded", "choose_mode",
           "execution_device", "disable_block_offload", "dit_activation_bytes", "enable_block_offload", "estimate",
           "vae_decode_bytes", "weight_bytes"]


# ------------------------------------------------------------------------------------------------ placement
BIG_PARTS = ("transformer", "text_encoder")


class Placement:
    """Moves a bundle's parts between the CPU and the compute device according to the memory mode.

    `prepare(parts, width, height)` chooses the mode for a generation (auto: from the free device memory) and
    `activate(parts, name)` makes one part ready to run: in 'model' mode the other big part goes back to the CPU
    first; in 'block' mode the big parts stream their blocks and only the VAE moves."""

    def __init__(self, device: torch.device, memory: str = "auto", resident_blocks: int | None = None):
        from .errors import InputError

        if memory not in MEMORY_MODES + (HOST_MANAGED,):
            raise InputError(f"memory must be one of {', '.join(MEMORY_MODES)}; got {memory!r}.")
        if resident_blocks is not None and resident_blocks < 1:
            raise InputError(f"resident_blocks must be ≥ 1; got {resident_blocks}.")
        self.device, self.memory, self.resident_blocks = torch.device(device), memory, resident_blocks
        self.plan: MemoryPlan | None = None

    def free_bytes(self, parts: dict[str, nn.Module]) -> int | None:
        """Free device memory plus what our own parts hold there now (they can move); None on the CPU."""
        if self.device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(self.device)
        ours = sum(weight_bytes(m) for m in parts.values()
                   if not block_offloaded(m) and next(m.parameters()).device.type == "cuda")
        return free + ours

    def prepare(self, parts: dict[str, nn.Module], width: int, height: int, forwards: int = 1) -> MemoryPlan:
        if self.memory == HOST_MANAGED:
            self.plan = MemoryPlan("host", 0, 0, None)
            return self.plan
        itemsize = torch.empty((), dtype=_compute(parts["transformer"])).element_size()
        need = estimate(parts["transformer"], parts.get("text_encoder"), parts.get("vae"), width, height,
                        forwards=forwards, itemsize=itemsize)
        self.plan = choose_mode(need, self.free_bytes(parts), self.memory, self.resident_blocks)
        for name in BIG_PARTS:
            if name in parts:
                if self.plan.mode == "block":
                    enable_block_offload(parts[name], self.device, self.plan.resident_blocks)
                else:
                    disable_block_offload(parts[name])
        return self.plan

    def activate(self, parts: dict[str, nn.Module], name: str) -> None:
        if self.memory == HOST_MANAGED:
            return
        mode = self.plan.mode if self.plan is not None else ("gpu" if self.memory == "auto" else self.memory)
        if mode == "block" and name in BIG_PARTS:
            enable_block_offload(parts[name], self.device, (self.plan.resident_blocks if self.plan else
                                                            self.resident_blocks or 1))
            return
        if mode == "model":
            for other in BIG_PARTS:
                if other != name and other in parts:
                    parts[other].to("cpu")
        disable_block_offload(parts[name])
        parts[name].to(self.device)


def _compute(module: nn.Module) -> torch.dtype:
    from .fp8 import compute_dtype

    return compute_dtype(module)


__all__ += ["Placement"]
