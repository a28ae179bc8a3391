"""GGUF model files, loaded with their weights still quantised.

Why: many ComfyUI users run Z-Image from GGUF files — DiTs made by city96/ComfyUI-GGUF (arch "lumina2", original
Z-Image key names) and Qwen3-4B text encoders converted by llama.cpp (arch "qwen3", `blk.N.attn_q` names) — because a
Q8_0 or Q4_K_M file fits GPUs the bf16 release does not. Quantised weights stay as diffusers' GGUFParameter blocks on
the device, inside diffusers' GGUFLinear, which dequantises one layer's weight when that layer runs; the text
encoder's embedding table dequantises only the rows it looks up. No dequantisation code of our own.

Tensors are views of gguf-py's read-only memory map (torch.from_numpy, no copy), so loading needs about one file's
worth of RAM (diffusers' own load_gguf_checkpoint copies every tensor: two). 16/32-bit tensors (norms, biases, the
BF16 refiners and embedders) are cast to the compute dtype, which is a view when the file already holds that dtype.

Before anything is built, a file of another architecture (Flux, SD3, Qwen-Image, ... and Lumina-Image 2.0, which
shares Z-Image's arch string), of the other component, or with quant types diffusers cannot dequantise is refused
by name with what to use instead.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import (check_keys, file_structure, guess_architecture, require_tensor, strip_prefix,
                          text_encoder_config_from_shapes, transformer_config_from_shapes)
from .errors import MissingDependencyError, ModelFileError
from .fp8 import COMPUTE_DTYPE_ATTR

try:
    import gguf
    from gguf import GGMLQuantizationType, GGUFReader, ReaderTensor
except ImportError as err:
    raise MissingDependencyError("Loading .gguf files needs the gguf package: pip install 'gguf>=0.17'.") from err
from diffusers.quantizers.gguf.utils import (SUPPORTED_GGUF_QUANT_TYPES, GGUFLinear, GGUFParameter,
                                             dequantize_gguf_tensor)

GGUF_DIT_ARCH = "lumina2"
GGUF_TE_ARCH = "qwen3"
_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
SUPPORTED_QTYPES = frozenset({q.name for q in SUPPORTED_GGUF_QUANT_TYPES} | set(_FLOATS))

# arch strings of ComfyUI-GGUF / llama.cpp files, with the names users know them by
IMAGE_ARCHS = {"flux": "Flux", "sd1": "Stable Diffusion 1.x", "sdxl": "SDXL", "sd3": "SD3", "aura": "AuraFlow",
               "hidream": "HiDream", "cosmos": "Cosmos", "ltxv": "LTX-Video", "hyvid": "HunyuanVideo", "wan": "Wan",
               "qwen_image": "Qwen-Image", "lumina2": "Z-Image / Lumina 2 transformer"}
TEXT_ARCHS = {"qwen3": "Qwen3 text encoder", "qwen3vl": "Qwen3-VL", "qwen2vl": "Qwen2-VL", "qwen2": "Qwen2",
              "llama": "Llama", "t5": "T5", "t5encoder": "T5 encoder", "gemma2": "Gemma 2", "gemma3": "Gemma 3"}
# no arch (stable-diffusion.cpp) or ComfyUI-GGUF's "compat" markers: the architecture is told by the keys
_KEYS_DECIDE = (None, "pig", "cow")
DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
DIT_KEYS = ("layers.0.attention.qkv.weight", "x_embedder.weight", "cap_embedder.1.weight")
TE_KEYS = ("token_embd.weight", "blk.0.attn_q.weight")
LUMINA2_DIM = 2304  # Lumina-Image 2.0 and NewBie (Gemma-2 captions); Z-Image is 3840
LARGER_QWEN3 = {4096: "Qwen3-8B", 5120: "Qwen3-14B"}
PAD_TOKENS = ("x_pad_token", "cap_pad_token")
DIT_INSTEAD = ("Use a Z-Image-Turbo GGUF (e.g. z_image_turbo-Q8_0.gguf) or the bf16 / fp8 .safetensors release "
               "(z_image_turbo_bf16.safetensors) in models/diffusion_models/.")
TE_INSTEAD = ("Use a Qwen3-4B GGUF (e.g. Qwen3-4B-Q8_0.gguf) or the bf16 / fp8 .safetensors release "
              "(qwen_3_4b.safetensors) in models/text_encoders/.")


@dataclass(frozen=True)
class GgufTensor:
    """One tensor: its GGML type name, its shape in torch order, and gguf-py's memory-mapped view of its bytes."""

    qtype_name: str
    logical_shape: tuple[int, ...]
    reader_tensor: ReaderTensor


@dataclass(frozen=True)
class GgufFile:
    """A parsed GGUF: the arch string (None when absent), tensors by name, and the reader for metadata."""

    path: Path
    arch: str | None
    tensors: dict[str, GgufTensor]
    reader: GGUFReader

    def metadata(self, key: str, default: Any = None) -> Any:
        """A metadata value (str, number or list), or `default` when the key is absent."""
        field = self.reader.get_field(key)
        return default if field is None else field.contents()

    def header(self) -> dict[str, tuple[str, list[int]]]:
        """{name: (type name, logical shape)}, the form the config-from-shapes functions take."""
        return {name: (t.qtype_name, list(t.logical_shape)) for name, t in self.tensors.items()}


def read_gguf(path: str | Path) -> GgufFile:
    """Parse a GGUF file (memory-mapped; no tensor data is read). Shapes are given in torch order: GGUF stores `ne`
    fastest-first, and ComfyUI-GGUF records a reshaped tensor's original shape in `comfy.gguf.orig_shape.<name>`."""
    path = Path(path)
    try:
        reader = GGUFReader(path)
        arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
        arch = str(arch_field.contents()) if arch_field is not None else None
        tensors = {}
        for t in reader.tensors:
            orig = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
            shape = tuple(int(d) for d in orig.contents()) if orig is not None else tuple(
                int(d) for d in reversed(t.shape.tolist()))
            tensors[t.name] = GgufTensor(t.tensor_type.name, shape, t)
    except (OSError, ValueError, IndexError, KeyError, TypeError, OverflowError, MemoryError) as err:
        detail = (str(err).strip().splitlines() or [""])[0][:120]
        raise ModelFileError(f"{path.name} is not a readable GGUF file ({type(err).__name__}: {detail}); download it "
                             "again, or use the bf16 / fp8 .safetensors release.") from None
    return GgufFile(path, arch, tensors, reader)


def _check_qtypes(path: Path, g: GgufFile, instead: str) -> None:
    bad = sorted({t.qtype_name for t in g.tensors.values()} - SUPPORTED_QTYPES)
    if bad:
        raise ModelFileError(
            f"{path.name} is quantised as {', '.join(bad)}, which diffusers cannot dequantise. Supported GGUF types: "
            f"{', '.join(sorted(SUPPORTED_QTYPES))} (files named Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, IQ4_XS, ...). "
            f"{instead}")


def check_dit_gguf(path: Path, g: GgufFile) -> GgufFile:
    """Refuse anything but a Z-Image DiT GGUF (by name: other architectures, Lumina-Image 2.0, text encoders,
    unsupported quant types); returns it with a `model.diffusion_model.` / `diffusion_model.` prefix stripped."""
    if g.arch in TEXT_ARCHS:
        raise ModelFileError(f"{path.name} is a GGUF of a text encoder ({TEXT_ARCHS[g.arch]}), not a Z-Image "
                             f"transformer: it belongs in models/text_encoders/. {DIT_INSTEAD}")
    if g.arch not in (GGUF_DIT_ARCH, *_KEYS_DECIDE):
        raise ModelFileError(f"{path.name} is a GGUF of {IMAGE_ARCHS.get(g.arch, f'architecture {g.arch!r}')}, "
                             f"not Z-Image. {DIT_INSTEAD}")
    g = replace(g, tensors=strip_prefix(g.tensors, DIT_PREFIXES, "layers.0.")[1])
    cap = g.tensors.get("cap_embedder.1.weight")
    if cap is not None and cap.logical_shape[:1] == (LUMINA2_DIM,):
        kind = "NewBie" if "clip_text_pooled_proj.0.weight" in g.tensors else "Lumina-Image 2.0"
        raise ModelFileError(f"{path.name} is a GGUF of {kind} (dim {LUMINA2_DIM}), which shares the lumina2 "
                             f"architecture string but is not Z-Image. {DIT_INSTEAD}")
    if any(k not in g.tensors for k in DIT_KEYS):
        raise ModelFileError(f"{path.name} is not a Z-Image transformer GGUF{guess_architecture(list(g.tensors))}: "
                             f"expected tensors like {', '.join(DIT_KEYS)}. {DIT_INSTEAD}")
    _check_qtypes(path, g, DIT_INSTEAD)
    return g


def check_te_gguf(path: Path, g: GgufFile) -> GgufFile:
    """Refuse anything but a Qwen3-4B text-encoder GGUF in llama.cpp's layout (by name: Qwen3-VL, Qwen2-VL, Llama,
    larger Qwen3 models, DiT files, unsupported quant types)."""
    if g.arch in IMAGE_ARCHS:
        raise ModelFileError(f"{path.name} is a GGUF of a diffusion model ({IMAGE_ARCHS[g.arch]}), not a text "
                             f"encoder: it belongs in models/diffusion_models/. {TE_INSTEAD}")
    if g.arch not in (GGUF_TE_ARCH, None):
        raise ModelFileError(f"{path.name} is a GGUF of {TEXT_ARCHS.get(g.arch, f'architecture {g.arch!r}')}, not "
                             f"the Qwen3-4B text encoder Z-Image uses. {TE_INSTEAD}")
    if any(k not in g.tensors for k in TE_KEYS):
        raise ModelFileError(f"{path.name} is not a Qwen3 text encoder in llama.cpp's layout: expected tensors like "
                             f"{', '.join(TE_KEYS)}. {TE_INSTEAD}")
    hidden = (g.tensors["token_embd.weight"].logical_shape or (0,))[-1]
    if hidden in LARGER_QWEN3:
        raise ModelFileError(f"{path.name} looks like {LARGER_QWEN3[hidden]} (hidden size {hidden}); Z-Image-Turbo "
                             f"needs Qwen3-4B (hidden size 2560). {TE_INSTEAD}")
    _check_qtypes(path, g, TE_INSTEAD)
    return g


# ------------------------------------------------------------------------------------------------ building modules
class GGUFEmbedding(nn.Embedding):
    """An embedding table kept in GGUF blocks: gathers the rows it needs, then dequantises only those (blocks never
    cross rows), so a 151936-row table costs its file size rather than a full-precision copy."""

    compute_dtype: torch.dtype = torch.float32

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = GGUFParameter(self.weight.as_tensor()[ids.reshape(-1)], quant_type=self.weight.quant_type)
        return dequantize_gguf_tensor(rows).to(self.compute_dtype).reshape(*ids.shape, -1)


def _tensor(t: GgufTensor, compute_dtype: torch.dtype) -> torch.Tensor:
    """The file's bytes without a copy: a GGUFParameter for quantised types, else a tensor in `compute_dtype` (BF16
    arrives from gguf-py as raw bytes and is reinterpreted)."""
    with warnings.catch_warnings():  # the memory map is read-only; nothing ever writes to these weights
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        raw = torch.from_numpy(t.reader_tensor.data)
    if t.qtype_name in _FLOATS:
        return raw.view(_FLOATS[t.qtype_name]).reshape(t.logical_shape).to(compute_dtype)
    return GGUFParameter(raw, quant_type=GGMLQuantizationType[t.qtype_name])


def _swap_quantised_modules(model: nn.Module, sd: dict[str, torch.Tensor], compute_dtype: torch.dtype) -> None:
    """Linear / Embedding modules whose weight stays quantised become GGUFLinear / GGUFEmbedding (on meta)."""
    for key, value in sd.items():
        name = key.removesuffix(".weight")
        if not isinstance(value, GGUFParameter) or name == key:
            continue
        old = model.get_submodule(name)
        with torch.device("meta"):
            if isinstance(old, nn.Linear):
                new = GGUFLinear(old.in_features, old.out_features, old.bias is not None, compute_dtype=compute_dtype)
            elif isinstance(old, nn.Embedding):
                new = GGUFEmbedding(old.num_embeddings, old.embedding_dim, old.padding_idx)
                new.compute_dtype = compute_dtype
            else:
                continue
        parent, _, child = name.rpartition(".")
        model.get_submodule(parent)._modules[child] = new


def _build(model: nn.Module, sd: dict[str, torch.Tensor], compute_dtype: torch.dtype, path: Path, what: str
           ) -> nn.Module:
    """Put `sd` into a meta-device `model` by assignment (load_state_dict would reject the byte shapes of quantised
    weights); keys and logical shapes are checked first. Quantised tensors other than Linear/Embedding weights
    (biases, norms, pad tokens) are dequantised."""
    own = model.state_dict()

    def shape(v: torch.Tensor) -> tuple[int, ...]:
        return tuple(v.quant_shape) if isinstance(v, GGUFParameter) else tuple(v.shape)

    check_keys(path, what, [k for k in own if k not in sd], [k for k in sd if k not in own],
               [k for k, v in sd.items() if k in own and shape(v) != tuple(own[k].shape)])
    _swap_quantised_modules(model, sd, compute_dtype)
    for key, value in sd.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        kept_quantised = attr == "weight" and isinstance(owner, (GGUFLinear, GGUFEmbedding))
        if isinstance(value, GGUFParameter) and not kept_quantised:
            value = dequantize_gguf_tensor(value).to(compute_dtype)
        if attr in owner._buffers:
            owner._buffers[attr] = value
        else:
            owner._parameters[attr] = value if isinstance(value, GGUFParameter) else nn.Parameter(
                value, requires_grad=False)
    setattr(model, COMPUTE_DTYPE_ATTR, compute_dtype)
    return model.eval().requires_grad_(False)


def load_transformer_gguf(path: str | Path, compute_dtype: torch.dtype, device: str | torch.device = "cpu"):
    """A Z-Image DiT GGUF (ComfyUI-GGUF / stable-diffusion.cpp) as ZImageTransformer2DModel with the quantised
    weights of its blocks left quantised."""
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers as convert

    path = Path(path)
    g = check_dit_gguf(path, read_gguf(path))
    header, what = g.header(), "Z-Image transformer"
    require_tensor(path, header, "x_embedder.weight", 2, what)
    require_tensor(path, header, "layers.0.attention.q_norm.weight", 1, what)
    require_tensor(path, header, "cap_embedder.1.weight", 2, what)
    with file_structure(path, what):
        cfg = transformer_config_from_shapes(header)
        sd = {name: _tensor(t, compute_dtype) for name, t in g.tensors.items()}
        for key in PAD_TOKENS:  # llama.cpp writes these (1, dim) parameters 1-D; they are used whole, not as Linear
            if key in sd:
                sd[key] = dequantize_gguf_tensor(sd[key]).to(compute_dtype).reshape(1, -1)
        with torch.device("meta"):
            model = ZImageTransformer2DModel.from_config(cfg)
        _build(model, convert(sd), compute_dtype, path, what)
    return model.to(device)


def _qwen3_key_map(n_layers: int) -> dict[str, str]:
    """{llama.cpp tensor name: Qwen3Model key}, through gguf-py's name table (the one transformers uses); the keys
    come from a size-free meta model."""
    from transformers import Qwen3Config, Qwen3Model

    with torch.device("meta"):
        keys = Qwen3Model(Qwen3Config(vocab_size=1, hidden_size=8, intermediate_size=8, num_hidden_layers=n_layers,
                                      num_attention_heads=1, num_key_value_heads=1, head_dim=8)).state_dict()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, n_layers)
    return {names.get_name("model." + k, try_suffixes=(".weight", ".bias")): k for k in keys}


def load_text_encoder_gguf(path: str | Path, compute_dtype: torch.dtype, device: str | torch.device = "cpu"):
    """A Qwen3 text-encoder GGUF (llama.cpp layout) as transformers' Qwen3Model with its Linear weights and
    embedding table left quantised."""
    from transformers import Qwen3Config, Qwen3Model

    path = Path(path)
    g = check_te_gguf(path, read_gguf(path))
    what = "Qwen3 text encoder"
    with file_structure(path, what):
        n_layers = 1 + max(int(m.group(1)) for k in g.tensors if (m := re.match(r"blk\.(\d+)\.", k)))
        key_map = _qwen3_key_map(n_layers)
        tensors = {key_map.get(name, name): t for name, t in g.tensors.items() if name != "output.weight"}
    header = {k: (t.qtype_name, list(t.logical_shape)) for k, t in tensors.items()}
    require_tensor(path, header, "embed_tokens.weight", 2, what)
    require_tensor(path, header, "layers.0.self_attn.q_norm.weight", 1, what)
    for key in ("layers.0.mlp.gate_proj.weight", "layers.0.self_attn.q_proj.weight",
                "layers.0.self_attn.k_proj.weight"):
        require_tensor(path, header, key, 2, what)
    with file_structure(path, what):
        cfg = text_encoder_config_from_shapes(header)
        for key, meta in (("rope_theta", "rope.freq_base"), ("rms_norm_eps", "attention.layer_norm_rms_epsilon")):
            value = g.metadata(f"{g.arch or GGUF_TE_ARCH}.{meta}")
            if value is not None:
                cfg[key] = float(f"{value:.7g}")  # stored as float32: 1e-6 reads back as 9.99999997e-07
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # unused by the encoder; keep them valid
            if cfg.get(key) is not None and cfg[key] >= cfg["vocab_size"]:
                cfg[key] = None
        config = Qwen3Config(**cfg)
        sd = {k: _tensor(t, compute_dtype) for k, t in tensors.items()}
        with torch.device("meta"):
            model = Qwen3Model._from_config(config, attn_implementation="sdpa")
        _build(model, sd, compute_dtype, path, what)
        with torch.device("cpu"):  # its rotary tables are buffers computed at construction (on meta above)
            model.rotary_emb = type(model.rotary_emb)(config)
    return model.to(device)
