"""LoRA files on the Z-Image transformer: load several with strengths, swap or unload without reloading the model.

Why this shape: the base weights are never touched (no fusing), LoRAs live as peft adapters beside them, so changing
the set or the strengths is cheap and strength 0 is exactly the base model. Files are read with our safe loader
(`weights.load_state_dict`); diffusers' Z-Image converter (`ZImageLoraLoaderMixin.lora_state_dict`) turns the
common layouts (kohya `lora_unet_…`/`lora_down`/`.alpha`, ai-toolkit/ComfyUI `diffusion_model.…`, peft `lora_A`)
into diffusers keys, with alpha/rank folded into the weights; we add the fused `attention.qkv` split for LoRAs
trained on the original (ComfyUI) module layout. A file whose keys match no Z-Image module is refused with a
ModelFileError naming the file and what architecture it looks like; partly matching files load with a warning that
lists the keys that were ignored.

Effective weight of a targeted Linear with LoRAs i: W + Σ_i strength_i · (alpha_i / rank_i) · B_i @ A_i.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .errors import InputError, ModelFileError
from .fp8 import compute_dtype
from .weights import load_state_dict

log = logging.getLogger(__name__)

ADAPTER_PREFIX = "zlora_"
_STRIP_PREFIXES = ("base_model.model.", "model.diffusion_model.", "transformer.")
_QKV = re.compile(r"^(?P<block>.+)\.attention\.qkv\.lora_(?P<ab>[AB])\.weight$")
_FOREIGN_MARKERS = (
    ("lora_unet_input_blocks", "an SD 1.x/SDXL UNet LoRA (original layout)"),
    ("lora_unet_down_blocks", "an SD 1.x/SDXL UNet LoRA (diffusers layout)"),
    ("lora_te1_", "an SDXL LoRA (it has text-encoder keys)"),
    ("lora_te_", "an SD 1.x LoRA (it has text-encoder keys)"),
    ("double_blocks", "a Flux LoRA"),
    ("single_blocks", "a Flux LoRA"),
    ("single_transformer_blocks", "a Flux LoRA (diffusers layout)"),
    ("joint_blocks", "an SD3 LoRA"),
    ("transformer_blocks", "a LoRA for another diffusion transformer (Flux/SD3/Qwen-Image/Wan …)"),
    ("model.layers.", "a language-model (text encoder) LoRA"),
)


@dataclass
class LoraSpec:
    """One LoRA to apply: a file and its strength (1 = as trained; 0 = off; negative values invert it)."""

    path: str | os.PathLike
    strength: float = 1.0


@dataclass
class LoadedLora:
    """What was loaded from one file (the report users see)."""

    name: str  # adapter name inside the transformer
    path: Path
    strength: float
    modules: list[str]  # transformer modules it changes
    ignored_keys: list[str] = field(default_factory=list)  # keys that match nothing in Z-Image
    rank: int = 0

    def summary(self) -> str:
        s = f"{self.path.name}: strength {self.strength:g}, rank {self.rank}, {len(self.modules)} modules"
        if self.ignored_keys:
            s += f", {len(self.ignored_keys)} keys ignored (no matching Z-Image module)"
        return s


# ------------------------------------------------------------------------------------------------ conversion


def describe_foreign(keys: Iterable[str]) -> str:
    """A phrase naming what architecture a set of LoRA keys looks like."""
    joined = " ".join(list(keys)[:4000])
    for marker, name in _FOREIGN_MARKERS:
        if marker in joined:
            return name
    return "a LoRA for another model"


def convert_lora(sd: dict[str, torch.Tensor], source: str = "LoRA") -> dict[str, torch.Tensor]:
    """Any supported LoRA layout → diffusers/peft keys `<module>.lora_A.weight` / `.lora_B.weight` (no prefix),
    alpha/rank folded into the weights, fused qkv split into to_q/to_k/to_v."""
    from diffusers.loaders.lora_pipeline import ZImageLoraLoaderMixin

    sd = {k: v for k, v in sd.items() if "dora_scale" not in k}
    for prefix in _STRIP_PREFIXES:  # peft/diffusers-saved files; the converter re-adds one "transformer."
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if not any(("lora" in k) for k in sd):
        raise ModelFileError(f"{source} holds no LoRA weights (no lora_A/lora_B/lora_down/lora_up keys); "
                             f"it looks like {describe_foreign(sd)} or a full model, not a LoRA.")
    if any(".lokr_" in k or ".hada_" in k for k in sd):
        raise ModelFileError(f"{source} is a LyCORIS (LoKr/LoHa) file; only plain LoRA files are supported.")
    try:
        out = ZImageLoraLoaderMixin.lora_state_dict(dict(sd))
    except (ValueError, KeyError, RuntimeError) as err:
        raise ModelFileError(f"{source} could not be read as a Z-Image LoRA: it looks like {describe_foreign(sd)} "
                             f"({err}).") from err
    out = {k.removeprefix("transformer."): v for k, v in out.items()}
    split: dict[str, torch.Tensor] = {}
    for key, value in out.items():
        m = _QKV.match(key)
        if m is None:
            split[key] = value
            continue
        block, ab = m["block"], m["ab"]
        if any(f"{block}.attention.to_{p}.lora_A.weight" in out for p in "qkv"):
            continue  # redundant next to split keys
        chunks = [value] * 3 if ab == "A" else list(value.chunk(3, dim=0))
        for proj, chunk in zip("qkv", chunks):
            split[f"{block}.attention.to_{proj}.lora_{ab}.weight"] = chunk.contiguous()
    return split


def match_modules(transformer: torch.nn.Module, sd: dict[str, torch.Tensor]
                  ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str], list[str]]:
    """Pair converted keys with the transformer's Linear layers: ({module: (A, B)}, ignored keys, shape errors)."""
    linears = {n.removesuffix(".base_layer"): m for n, m in transformer.named_modules()
               if isinstance(m, torch.nn.Linear)}  # with LoRAs already loaded, peft wraps them as <name>.base_layer
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    ignored, bad = [], []
    for key in sorted(sd):
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                ignored.append(key)
            continue
        module = key[: -len(".lora_A.weight")]
        b_key = f"{module}.lora_B.weight"
        if module not in linears or b_key not in sd:
            ignored += [key] + ([b_key] if b_key in sd else [])
            continue
        a, b = sd[key], sd[b_key]
        w = linears[module].weight
        shape = tuple(getattr(w, "quant_shape", w.shape))  # a GGUF weight's own shape is that of its byte blocks
        fits = a.ndim == b.ndim == 2 and a.shape[1] == shape[1] and b.shape[0] == shape[0] and a.shape[0] == b.shape[1]
        if not fits:
            bad.append(f"{module}: LoRA {tuple(b.shape)}@{tuple(a.shape)} vs weight {shape}")
            continue
        pairs[module] = (a, b)
    return pairs, ignored, bad


def read_lora(path: str | os.PathLike, transformer: torch.nn.Module
              ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """Read and check one LoRA file against this transformer: ({module: (A, B)}, ignored keys)."""
    from .checkpoints import file_structure

    path = Path(path)
    raw = load_state_dict(path)
    with file_structure(path, "Z-Image LoRA"):
        pairs, ignored, bad = match_modules(transformer, convert_lora(raw, path.name))
    if bad:
        raise ModelFileError(f"{path.name} does not fit this Z-Image transformer (shape mismatch in {len(bad)} "
                             f"module(s), e.g. {bad[0]}); it was trained for a model of another size.")
    if not pairs:
        raise ModelFileError(f"{path.name} matches no Z-Image transformer module: it looks like "
                             f"{describe_foreign(raw)} (e.g. key '{next(iter(raw))}'). Pick a LoRA trained for "
                             "Z-Image / Z-Image-Turbo.")
    if ignored:
        log.warning("%s: %d key(s) match no Z-Image module and were ignored: %s%s", path.name, len(ignored),
                    ", ".join(ignored[:8]), " …" if len(ignored) > 8 else "")
    return pairs, ignored


# ------------------------------------------------------------------------------------------------ adapters


def _adapter_name(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return ADAPTER_PREFIX + digest


def _registry(transformer: torch.nn.Module) -> dict[str, LoadedLora]:
    reg = getattr(transformer, "_zimage_loras", None)
    if reg is None:
        reg = {}
        transformer._zimage_loras = reg
    return reg


def _require_peft() -> None:
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise ModelFileError("LoRA support needs the 'peft' package (diffusers keeps LoRAs as peft adapters): "
                             "pip install 'peft>=0.15' into the Python that runs ComfyUI.")


def _load_adapter(transformer: torch.nn.Module, path: Path, name: str) -> LoadedLora:
    _require_peft()
    pairs, ignored = read_lora(path, transformer)
    dtype = compute_dtype(transformer)
    sd = {}
    for module, (a, b) in pairs.items():
        sd[f"transformer.{module}.lora_A.weight"] = a.to(dtype)
        sd[f"transformer.{module}.lora_B.weight"] = b.to(dtype)
    # alpha is already folded into the weights, so the adapter scale is exactly the strength (lora_alpha = r)
    with warnings.catch_warnings():  # peft warns on every second adapter; several adapters are what we want
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.load_lora_adapter(sd, prefix="transformer", adapter_name=name)
    _keep_adapter_dtype(transformer, name, dtype)
    rank = max(int(a.shape[0]) for a, _ in pairs.values())
    return LoadedLora(name, path, 0.0, sorted(pairs), ignored, rank)


def _keep_adapter_dtype(transformer: torch.nn.Module, name: str, dtype: torch.dtype) -> None:
    """peft puts an adapter in its base layer's dtype; over an fp8 base layer that would make the LoRA itself fp8.
    Keep every adapter in the compute dtype."""
    from peft.tuners.lora import LoraLayer

    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            for table in (module.lora_A, module.lora_B):
                if name in table:
                    table[name].to(dtype)


def apply_loras(transformer: torch.nn.Module, loras: Sequence[LoraSpec | tuple[str | os.PathLike, float]]
                ) -> list[LoadedLora]:
    """Make exactly these LoRAs active at these strengths. Files already loaded are reused (keyed by path, size and
    mtime), LoRAs no longer listed are deleted, the base weights stay untouched. An empty list removes all."""
    specs = [s if isinstance(s, LoraSpec) else LoraSpec(*s) for s in loras]
    reg = _registry(transformer)
    wanted: dict[str, tuple[Path, float]] = {}
    for spec in specs:
        path = Path(spec.path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"LoRA file not found: {path}")
        try:
            strength = float(spec.strength)
        except (TypeError, ValueError):
            raise InputError(f"LoRA strength for {path.name} must be a number; got {spec.strength!r}.") from None
        name = _adapter_name(path)
        prev = wanted.get(name, (path, 0.0))[1]
        wanted[name] = (path, prev + strength)  # the same file twice: strengths add up
    for name in [n for n in reg if n not in wanted]:
        transformer.delete_adapters(name)
        del reg[name]
    for name, (path, _) in wanted.items():
        if name not in reg:
            reg[name] = _load_adapter(transformer, path, name)
    for name, (_, strength) in wanted.items():
        reg[name].strength = strength
    active = [n for n in wanted if wanted[n][1] != 0.0]
    if active:
        transformer.enable_lora()
        transformer.set_adapters(active, weights=[wanted[n][1] for n in active])
    elif reg:
        transformer.disable_lora()  # strength 0 everywhere: the exact base model
    for item in reg.values():
        log.info("LoRA %s", item.summary())
    return [reg[n] for n in wanted]


def remove_loras(transformer: torch.nn.Module) -> None:
    """Delete every LoRA this module loaded; the transformer is the plain base model again."""
    reg = _registry(transformer)
    if reg:
        transformer.delete_adapters(list(reg))
        reg.clear()


def loaded_loras(transformer: torch.nn.Module) -> list[LoadedLora]:
    return list(_registry(transformer).values())


__all__ = ["LoadedLora", "LoraSpec", "apply_loras", "convert_lora", "describe_foreign", "loaded_loras",
           "match_modules", "read_lora", "remove_loras"]
