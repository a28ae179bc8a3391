"""Building the three Z-Image components from single files (ComfyUI's models/ layout) into diffusers/transformers
modules, with the weight storage the caller asks for.

storage "auto": keep what the file is — fp8 weights stay fp8 (scaled fp8 keeps its scales), GGUF stays quantised,
    16/32-bit weights are cast to the compute dtype;
storage "fp8":  as auto, and 16/32-bit Linear weights of the transformer blocks (and the text encoder's layers and
    embedding table) are stored as scaled fp8 (one scale per tensor), upcast per layer at compute time;
storage "full": everything in the compute dtype (fp8 weights dequantised with their scales).
fp8 weights live in our Fp8Linear / Fp8Embedding (see fp8.py). The model is built on the meta device and loaded with
assign=True from tensors read one at a time (checkpoints.read_tensors), so it is never held twice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from .checkpoints import (TEXT_ENCODER_PREFIXES, TRANSFORMER_PREFIXES, VAE_PREFIXES, Header, WeightFormat,
                          check_keys, detect_format, file_structure, guess_architecture, read_header, read_scales,
                          read_tensors, require_tensor, strip_prefix, text_encoder_config_from_shapes,
                          transformer_config_from_shapes, vae_config_from_shapes)
from .errors import InputError, ModelFileError
from .fp8 import COMPUTE_DTYPE_ATTR, is_fp8, quantize_fp8, set_scales, swap_in_fp8
from .settings import STORAGE_MODES

_DIT_BLOCK_WEIGHT = re.compile(r"^(layers|noise_refiner|context_refiner)\.\d+\..+\.weight$")
_TE_FP8_WEIGHT = re.compile(r"^(layers\.\d+\..+|embed_tokens)\.weight$")


def check_storage(storage: str) -> str:
    if storage not in STORAGE_MODES:
        raise InputError(f"storage must be one of {', '.join(STORAGE_MODES)}; got {storage!r}.")
    return storage


def _dequantized(t: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    return (t.float() * scale).to(dtype) if scale is not None else t.to(dtype)


def read_component(path: Path, header: Header, prefix: str, fmt: WeightFormat, storage: str, compute: torch.dtype,
                   quantizable: Callable[[str, list[int]], bool]) -> tuple[dict[str, torch.Tensor],
                                                                           dict[str, torch.Tensor]]:
    """Stream a file's tensors (prefix stripped) into their storage form: ({key: tensor}, {key: fp32 scale of the
    fp8 weights kept with a scale})."""
    file_scales = {k[len(prefix):]: v for k, v in read_scales(path, header, fmt).items()}
    skip = fmt.extra | set(fmt.scale_keys.values())
    kept_scales: dict[str, torch.Tensor] = {}

    def convert(key: str, t: torch.Tensor) -> torch.Tensor | None:
        if key in skip or not key.startswith(prefix):
            return None
        key = key[len(prefix):]
        if is_fp8(t):
            if storage == "full" or t.ndim != 2 or not key.endswith(".weight"):
                return _dequantized(t, file_scales.get(key), compute)
            if key in file_scales:
                kept_scales[key] = file_scales[key]
            return t
        if t.is_floating_point():
            if key in file_scales:  # a scale beside a 16/32-bit weight still multiplies it
                return _dequantized(t, file_scales[key], compute)
            if storage == "fp8" and quantizable(key, list(t.shape)):
                q, kept_scales[key] = quantize_fp8(t)
                return q
            return t if t.dtype == compute else t.to(compute)
        return t

    raw = read_tensors(path, header, convert)
    return {k[len(prefix):]: v for k, v in raw.items()}, kept_scales


def _key_map(keys: list[str], convert: Callable[[dict], dict]) -> dict[str, str]:
    """{converted key: original key} for a key converter that renames and splits (e.g. fused qkv → q, k, v), found
    by running it on tagged dummy tensors (so the mapping is whatever the converter really does)."""
    dummies = {k: torch.full((3, 1), float(i)) for i, k in enumerate(keys)}
    return {new: keys[int(t.flatten()[0])] for new, t in convert(dummies).items()}


def build(model: torch.nn.Module, tensors: dict[str, torch.Tensor], scales: dict[str, torch.Tensor],
          key_map: dict[str, str] | None, path: Path, what: str, compute: torch.dtype,
          keep_fp8: Callable[[str], bool] = lambda name: True) -> torch.nn.Module:
    """Load converted `tensors` into a meta-device `model`: fp8 tensors of Linear/Embedding modules that `keep_fp8`
    allows into fp8 twins (with the scales of their original keys), any other fp8 tensor dequantised; keys and
    shapes checked first."""
    swapped = set(swap_in_fp8(model, {k: v for k, v in tensors.items() if keep_fp8(k.rsplit(".", 1)[0])}, compute))
    module_scales: dict[str, torch.Tensor] = {}
    for key, t in list(tensors.items()):
        if not is_fp8(t):
            continue
        original = key_map.get(key, key) if key_map is not None else key
        module = key.rsplit(".", 1)[0]
        if module in swapped:
            if original in scales:
                module_scales[module] = scales[original]
        else:
            tensors[key] = _dequantized(t, scales.get(original), compute)
    own = model.state_dict()
    check_keys(path, what, [k for k in own if k not in tensors], [k for k in tensors if k not in own],
               [k for k, v in tensors.items() if k in own and tuple(own[k].shape) != tuple(v.shape)])
    model.load_state_dict(tensors, strict=True, assign=True)
    set_scales(model, module_scales)
    setattr(model, COMPUTE_DTYPE_ATTR, compute)
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ transformer
def load_transformer_file(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu", storage: str = "auto"):
    """`diffusion_models/*` (original Z-Image layout, optional prefix; safetensors or GGUF) as
    ZImageTransformer2DModel."""
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers as convert

    check_storage(storage)
    if path.suffix.lower() == ".gguf":
        from .gguf_files import load_transformer_gguf

        return load_transformer_gguf(path, dtype, device)
    what = "Z-Image transformer"
    full_header = read_header(path)
    prefix, header = strip_prefix(full_header, TRANSFORMER_PREFIXES, "layers.0.")
    if any(k not in header for k in ("layers.0.attention.qkv.weight", "x_embedder.weight", "cap_embedder.1.weight")):
        raise ModelFileError(
            f"{path.name} is not a Z-Image transformer in the original layout{guess_architecture(list(full_header))}. "
            "Expected keys like 'layers.0.attention.qkv.weight', 'x_embedder.weight', 'cap_embedder.1.weight'. Put "
            "z_image_turbo_bf16.safetensors in models/diffusion_models/ (or point --models at a diffusers folder)."
        )
    fmt = detect_format(path, full_header, what)
    require_tensor(path, header, "x_embedder.weight", 2, what)
    require_tensor(path, header, "layers.0.attention.q_norm.weight", 1, what)
    require_tensor(path, header, "cap_embedder.1.weight", 2, what)
    with file_structure(path, what):
        cfg = transformer_config_from_shapes(header)
        tensors, scales = read_component(path, full_header, prefix, fmt, storage, dtype,
                                         lambda k, shape: len(shape) == 2 and bool(_DIT_BLOCK_WEIGHT.match(k)))
        key_map = _key_map(list(tensors), convert)
        tensors = convert(tensors)
        with torch.device("meta"):
            model = ZImageTransformer2DModel.from_config(cfg)
        # diffusers casts the timestep features to t_embedder's weight dtype, so that weight must not be fp8
        build(model, tensors, scales, key_map, path, what, dtype, lambda name: not name.startswith("t_embedder."))
    return model.to(device=device)


# ------------------------------------------------------------------------------------------------ text encoder
def load_text_encoder_file(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu", storage: str = "auto"):
    """`text_encoders/qwen_3_4b*` (transformers key layout, with or without 'model.'; safetensors or GGUF) as
    Qwen3Model."""
    from transformers import Qwen3Config, Qwen3Model

    check_storage(storage)
    if path.suffix.lower() == ".gguf":
        from .gguf_files import load_text_encoder_gguf

        return load_text_encoder_gguf(path, dtype, device)
    what = "Qwen3 text encoder"
    full_header = read_header(path)
    prefix, header = strip_prefix(full_header, TEXT_ENCODER_PREFIXES, "layers.0.")
    if "embed_tokens.weight" not in header or "layers.0.self_attn.q_norm.weight" not in header:
        raise ModelFileError(
            f"{path.name} is not a Qwen3 text encoder{guess_architecture(list(full_header))}. Z-Image needs Qwen3-4B: "
            "put qwen_3_4b.safetensors in models/text_encoders/."
        )
    fmt = detect_format(path, full_header, what)
    require_tensor(path, header, "embed_tokens.weight", 2, what)
    require_tensor(path, header, "layers.0.self_attn.q_norm.weight", 1, what)
    for key in ("layers.0.mlp.gate_proj.weight", "layers.0.self_attn.q_proj.weight",
                "layers.0.self_attn.k_proj.weight"):
        require_tensor(path, header, key, 2, what)
    with file_structure(path, what):
        cfg = text_encoder_config_from_shapes(header)
        if cfg["hidden_size"] == 4096 or cfg["num_hidden_layers"] == 40:
            raise ModelFileError(f"{path.name} looks like Qwen3-8B; Z-Image-Turbo needs Qwen3-4B (qwen_3_4b).")
        config = Qwen3Config(**cfg)
        lm_head = {k for k in full_header if k[len(prefix):].startswith("lm_head.")}
        header_used = {k: v for k, v in full_header.items() if k not in lm_head}
        tensors, scales = read_component(path, header_used, prefix, fmt, storage, dtype,
                                         lambda k, shape: len(shape) == 2 and bool(_TE_FP8_WEIGHT.match(k)))
        with torch.device("meta"):
            model = Qwen3Model._from_config(config, attn_implementation="sdpa")
        build(model, tensors, scales, None, path, what, dtype)
        with torch.device("cpu"):  # its rotary tables are buffers computed at construction (on meta above)
            model.rotary_emb = type(model.rotary_emb)(config)
    return model.to(device)


# ------------------------------------------------------------------------------------------------ VAE
def load_vae_file(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """`vae/ae.safetensors` (Flux AE, original ldm layout) as diffusers AutoencoderKL (always full precision: it is
    160 MB and decodes every pixel)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    full_header = read_header(path)
    prefix, header = strip_prefix(full_header, VAE_PREFIXES, "encoder.")
    if "encoder.conv_out.weight" not in header or "decoder.conv_in.weight" not in header:
        raise ModelFileError(
            f"{path.name} is not an autoencoder in the original layout{guess_architecture(list(full_header))}. "
            "Z-Image uses the Flux AE: put ae.safetensors in models/vae/."
        )
    what = "Flux AE"
    fmt = detect_format(path, full_header, what)
    require_tensor(path, header, "encoder.conv_out.weight", 4, what)
    require_tensor(path, header, "encoder.down.0.block.0.conv1.weight", 4, what)
    with file_structure(path, what):
        cfg = vae_config_from_shapes(header)
        if cfg["latent_channels"] != 16:
            raise ModelFileError(
                f"{path.name} has {cfg['latent_channels']} latent channels; Z-Image needs the 16-channel Flux AE "
                "(ae.safetensors), not an SD/SDXL VAE."
            )
        tensors, _ = read_component(path, full_header, prefix, fmt, "full", dtype, lambda k, s: False)
        tensors = convert_ldm_vae_checkpoint(tensors, cfg)
        with torch.device("meta"):
            model = AutoencoderKL.from_config(cfg)
        build(model, tensors, {}, None, path, what, dtype)
    return model.to(device=device)


__all__ = ["STORAGE_MODES", "check_storage", "load_transformer_file", "load_text_encoder_file", "load_vae_file"]
