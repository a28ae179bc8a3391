"""FP8 weight storage: Linear and Embedding weights kept in 1-byte float8 on the device and upcast per layer at
compute time (what ComfyUI's weight_dtype fp8_e4m3fn means), with an optional per-tensor scale (ComfyUI's "scaled
fp8" files store weight/scale in fp8 and the scale beside it).

Why our own modules instead of diffusers' layerwise casting: that hook also casts biases to fp8, applies no scale,
cannot be removed, and would cast the whole 151936×2560 embedding table on every text-encoder call; an Fp8Embedding
upcasts only the rows it looks up. The modules are nn.Linear / nn.Embedding subclasses, so LoRA adapters (peft) and
group offloading see ordinary layers.

Exactness: fp8 → compute dtype is exact; the result is weight·scale rounded once to the compute dtype.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}
COMPUTE_DTYPE_ATTR = "zimage_compute_dtype"


def is_fp8(t: torch.Tensor) -> bool:
    return t.dtype in FP8_DTYPES


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype activations run in. Set by our loaders, because `module.dtype` reports the first floating parameter,
    which is 1-byte fp8 (or raw GGUF bytes) on compact models."""
    explicit = getattr(module, COMPUTE_DTYPE_ATTR, None)
    if explicit is not None:
        return explicit
    for p in module.parameters():
        if p.is_floating_point() and not is_fp8(p):
            return p.dtype
    return torch.float32


def quantize_fp8(weight: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, fp32 scale) with weight ≈ fp8·scale: one per-tensor scale so the largest magnitude lands on the
    fp8 maximum (a plain cast would flush small weights to zero and clip large ones)."""
    amax = weight.detach().abs().max().float().clamp_min(1e-12)
    scale = amax / FP8_MAX[dtype]
    return (weight.float() / scale).to(dtype), scale.reshape(())


class Fp8Linear(nn.Linear):
    """nn.Linear with an fp8 weight (plus optional fp32 scale); bias and output in the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, storage: torch.dtype,
                 compute: torch.dtype, device: torch.device | str | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=storage, device=device),
                                   requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=compute, device=device), requires_grad=False)
                     if bias else None)
        self.register_buffer("weight_scale", None, persistent=False)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight.to(dtype)
        return w * self.weight_scale.to(device=w.device, dtype=dtype) if self.weight_scale is not None else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.dequantized_weight(x.dtype), bias)


class Fp8Embedding(nn.Embedding):
    """nn.Embedding with an fp8 table: only the looked-up rows are upcast."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 storage: torch.dtype, compute: torch.dtype, device: torch.device | str | None = None):
        nn.Module.__init__(self)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = None, 2.0, False, False
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, dtype=storage, device=device),
                                   requires_grad=False)
        self.register_buffer("weight_scale", None, persistent=False)
        self.compute = compute

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight).to(self.compute)
        return rows * self.weight_scale.to(device=rows.device, dtype=self.compute) if self.weight_scale is not None \
            else rows


def fp8_twin(module: nn.Module, storage: torch.dtype, compute: torch.dtype) -> nn.Module:
    """An fp8 module with the same shape as an nn.Linear / nn.Embedding (on the meta device, to be loaded with
    assign=True)."""
    if isinstance(module, nn.Linear):
        return Fp8Linear(module.in_features, module.out_features, module.bias is not None, storage=storage,
                         compute=compute, device="meta")
    if isinstance(module, nn.Embedding):
        return Fp8Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx, storage=storage,
                            compute=compute, device="meta")
    raise TypeError(f"no fp8 form for {type(module).__name__}")


def swap_in_fp8(model: nn.Module, weights: dict[str, torch.Tensor], compute: torch.dtype) -> list[str]:
    """Replace every nn.Linear / nn.Embedding of `model` whose `<name>.weight` in `weights` is fp8 by its fp8 twin
    (before loading `weights` with assign=True). Returns the module names swapped."""
    swapped = []
    for name, module in list(model.named_modules()):
        tensor = weights.get(f"{name}.weight")
        if tensor is None or not is_fp8(tensor) or type(module) not in (nn.Linear, nn.Embedding):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, fp8_twin(module, tensor.dtype, compute))
        swapped.append(name)
    return swapped


def to_fp8_storage(model: nn.Module, compute: torch.dtype, include: Callable[[str], bool],
                   storage: torch.dtype = torch.float8_e4m3fn) -> list[str]:
    """Convert a loaded model's Linear / Embedding modules whose name passes `include` to scaled fp8 storage, in
    place (for models that come from a folder rather than a file read tensor by tensor)."""
    converted = []
    for name, module in list(model.named_modules()):
        if type(module) not in (nn.Linear, nn.Embedding) or not include(name):
            continue
        weight, scale = quantize_fp8(module.weight.data, storage)
        twin = fp8_twin(module, storage, compute)
        twin.weight = nn.Parameter(weight, requires_grad=False)
        if isinstance(twin, Fp8Linear) and module.bias is not None:
            twin.bias = nn.Parameter(module.bias.data.to(compute), requires_grad=False)
        twin.weight_scale = scale.to(weight.device)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, twin)
        converted.append(name)
    setattr(model, COMPUTE_DTYPE_ATTR, compute)
    return converted


def set_scales(model: nn.Module, scales: dict[str, torch.Tensor]) -> None:
    """Attach per-tensor scales ({module name: scalar}) to fp8 modules after loading."""
    for name, scale in scales.items():
        module = model.get_submodule(name)
        module.weight_scale = scale.detach().float().reshape(()).to(module.weight.device)


def fp8_bytes(model: nn.Module) -> int:
    """Bytes of fp8 weights in a model (for footprints and tests)."""
    return sum(p.numel() for p in model.parameters() if is_fp8(p))


__all__ = ["FP8_DTYPES", "Fp8Linear", "Fp8Embedding", "compute_dtype", "fp8_bytes", "fp8_twin", "is_fp8",
           "quantize_fp8", "set_scales", "swap_in_fp8", "to_fp8_storage", "COMPUTE_DTYPE_ATTR"]
