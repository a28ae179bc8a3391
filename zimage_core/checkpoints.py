"""Reading the single files ComfyUI users have, in their original key layouts, into diffusers/transformers modules.

Each reader inspects the file header first (no tensors loaded), refuses formats we do not support with a message
that names the format and the alternatives, checks that the keys belong to the expected architecture, infers the
sizes from tensor shapes (so tiny test models and the real 6 B model go through the same code), converts keys with
diffusers' own converters, and loads onto the meta device with `assign=True` so the full model is never built twice.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ModelFileError
from .weights import load_state_dict

TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")
TEXT_ENCODER_PREFIXES = ("text_encoders.qwen3_4b.transformer.", "model.", "transformer.")
VAE_PREFIXES = ("first_stage_model.", "vae.")


def shipped_config(name: str) -> dict[str, Any]:
    """A config shipped inside the package (the real models' configs), so nothing ever touches the hub."""
    return json.loads(resources.files("zimage_core.configs").joinpath(f"{name}.json").read_text())


# bytes per element of the safetensors dtypes whose sizes we check (others are left to the format checks)
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
MAX_HEADER_BYTES = 100_000_000


def _malformed(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path.name} is not a valid safetensors file ({why}); download it again or pick another "
                          "file.")


def _validate_header(path: Path, header: object, data_len: int) -> dict[str, tuple[str, list[int]]]:
    """The header's structure, checked before anything indexes it: an object of tensor entries, each with a dtype
    string, a shape of non-negative integers and data offsets inside the file that match the shape."""
    if not isinstance(header, dict):
        raise _malformed(path, f"the header is a JSON {type(header).__name__}, not an object")
    out: dict[str, tuple[str, list[int]]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict):
                raise _malformed(path, "__metadata__ is not an object")
            continue
        if not isinstance(entry, dict):
            raise _malformed(path, f"entry '{key[:60]}' is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise _malformed(path, f"tensor '{key[:60]}' has no dtype")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _malformed(path, f"tensor '{key[:60]}' has an invalid shape {str(shape)[:40]}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise _malformed(path, f"tensor '{key[:60]}' has data offsets outside the file")
        size = DTYPE_BYTES.get(dtype)
        if size is not None and offsets[1] - offsets[0] != math.prod(shape) * size:
            raise _malformed(path, f"tensor '{key[:60]}' holds {offsets[1] - offsets[0]} bytes, not the "
                                   f"{math.prod(shape) * size} its shape {shape} needs")
        out[key] = (dtype, shape)
    return out


def read_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Key -> (dtype string, shape) from a safetensors header, without loading any tensor; the structure is
    validated (see `_validate_header`)."""
    if path.suffix.lower() == ".gguf":
        raise ModelFileError(
            f"{path.name} is a GGUF quantised file, which this pack does not load yet. Use the bf16 or fp8 "
            "(float8_e4m3fn) .safetensors release instead (e.g. z_image_turbo_bf16.safetensors)."
        )
    if path.suffix.lower() not in (".safetensors", ".sft"):
        sd = load_state_dict(path)
        return {k: (str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in sd.items()}
    try:
        file_len = path.stat().st_size
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 2 <= size <= min(MAX_HEADER_BYTES, file_len - 8):
                raise _malformed(path, f"header length {size} does not fit a {file_len}-byte file")
            header = json.loads(fh.read(size))
    except ModelFileError:
        raise
    except (OSError, ValueError, RecursionError) as err:
        raise _malformed(path, f"unreadable header: {type(err).__name__}") from None
    return _validate_header(path, header, file_len - 8 - size)


def require_tensor(path: Path, header: dict[str, tuple[str, list[int]]], key: str, rank: int, what: str
                   ) -> list[int]:
    """The shape of a tensor that config inference indexes, or a ModelFileError naming the key."""
    if key not in header:
        raise ModelFileError(f"{path.name} is not a complete {what}: the tensor '{key}' is missing.")
    shape = header[key][1]
    if len(shape) != rank or not all(shape):
        raise ModelFileError(f"{path.name} is not a valid {what}: '{key}' has shape {shape}, expected "
                             f"{rank} non-zero dimension(s).")
    return shape


@contextmanager
def file_structure(path: Path, what: str) -> Iterator[None]:
    """The one ModelFileError path for a file whose header is valid but whose contents do not form the model: any
    lookup, conversion or load failure inside becomes one message naming the file (never a traceback)."""
    try:
        yield
    except ModelFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError, ZeroDivisionError,
            AssertionError, OverflowError) as err:
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise ModelFileError(f"{path.name} does not have the structure of a {what} ({type(err).__name__}: "
                             f"{detail}). Is this the right file for this slot?") from None


def _prefixed_header(path: Path, prefixes: tuple[str, ...], marker: str):
    """(all keys, the prefix in front of `marker` keys — possibly empty —, the header with that prefix stripped)."""
    header = read_header(path)
    keys = list(header)
    prefix = next((p for p in prefixes if any(k.startswith(p + marker) for k in keys)), "")
    return keys, prefix, {k[len(prefix):]: v for k, v in header.items() if k.startswith(prefix)}


def _refuse_quantised(path: Path, header: dict[str, tuple[str, list[int]]], what: str) -> None:
    """Name packed/quantised formats we cannot load instead of failing later with a shape mismatch."""
    keys = header.keys()
    dtypes = {dt for dt, _ in header.values()}
    if any(k.endswith(("comfy_quant", ".weight_scale_2", ".input_scale")) for k in keys) or "U8" in dtypes:
        kind = "nvfp4/int8 packed (Comfy-Org mixed-precision repack)"
        if any("convrot" in k for k in keys):
            kind = "int8_convrot"
        raise ModelFileError(
            f"{path.name} is a {kind} {what}, which this pack cannot load yet. Supported: the bf16 file, or a plain "
            "fp8 (float8_e4m3fn) file, e.g. z_image_turbo_bf16.safetensors / qwen_3_4b.safetensors."
        )
    if any(k.endswith(("scale_weight", "scaled_fp8", ".weight_scale")) for k in keys):
        raise ModelFileError(
            f"{path.name} is a scaled-fp8 {what} (per-tensor scales stored beside the weights), which this pack "
            "cannot load yet. Use the bf16 file or a plain fp8 (float8_e4m3fn) file without scale tensors.")
    if any(k.endswith((".qweight", ".scales", ".absmax")) for k in keys):
        raise ModelFileError(f"{path.name} is a GPTQ/bitsandbytes-quantised {what}; use the bf16 or fp8 file.")


def _load_converted(path: Path, prefix: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    sd = load_state_dict(path, device=device)
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _upcast(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """FP8 and other storage dtypes are upcast to the compute dtype (FP8 compute is a separate fast mode)."""
    return {k: (v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v) for k, v in sd.items()}


def _check_keys(path: Path, what: str, missing: list, unexpected: list, mismatched: list = ()) -> None:
    """Refuse a file whose keys do not fit the architecture (never load partially or fill gaps with random weights)."""
    if missing or unexpected or mismatched:
        raise ModelFileError(
            f"{path.name} does not match the {what} architecture: {len(missing)} missing keys "
            f"(e.g. {list(missing)[:3]}), {len(unexpected)} unexpected keys (e.g. {list(unexpected)[:3]}), "
            f"{len(mismatched)} with other shapes. Is this the right file for this slot?"
        )


def _assign_load(model: torch.nn.Module, sd: dict[str, torch.Tensor], path: Path, what: str) -> None:
    own = model.state_dict()
    mismatched = [k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    _check_keys(path, what, [k for k in own if k not in sd], [k for k in sd if k not in own], mismatched)
    model.load_state_dict(sd, strict=True, assign=True)


# --------------------------------------------------------------------------------------------- transformer (DiT)


def transformer_config_from_shapes(header: dict[str, tuple[str, list[int]]]) -> dict[str, Any]:
    """The Z-Image DiT config for a file in the original layout (prefix already stripped), sizes from shapes."""
    cfg = shipped_config("transformer")
    dim = header["x_embedder.weight"][1][0]
    in_ch = header["x_embedder.weight"][1][1] // 4
    head_dim = header["layers.0.attention.q_norm.weight"][1][0]
    n_layers = 1 + max(int(m.group(1)) for k in header if (m := re.match(r"layers\.(\d+)\.", k)))
    n_ref = 1 + max(int(m.group(1)) for k in header if (m := re.match(r"noise_refiner\.(\d+)\.", k)))
    cfg.update(dim=dim, in_channels=in_ch, n_heads=dim // head_dim, n_kv_heads=dim // head_dim, n_layers=n_layers,
               n_refiner_layers=n_ref, cap_feat_dim=header["cap_embedder.1.weight"][1][1],
               axes_dims=axes_dims_for(head_dim))
    return cfg


def axes_dims_for(head_dim: int) -> list[int]:
    """RoPE axis split: Turbo's [32, 48, 48] for head_dim 128, the same 1/4 : 3/8 : 3/8 proportions otherwise."""
    if head_dim == 128:
        return [32, 48, 48]
    a0 = 2 * round(head_dim / 8)
    rest = (head_dim - a0) // 2
    rest -= rest % 2
    return [head_dim - 2 * rest, rest, rest]


def load_transformer_file(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """Load `diffusion_models/*.safetensors` (original Z-Image layout, optional prefix) as ZImageTransformer2DModel."""
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    keys, prefix, header = _prefixed_header(path, TRANSFORMER_PREFIXES, "layers.0.")
    if any(k not in header for k in ("layers.0.attention.qkv.weight", "x_embedder.weight", "cap_embedder.1.weight")):
        raise ModelFileError(
            f"{path.name} is not a Z-Image transformer in the original layout{_guess_architecture(keys)}. Expected "
            "keys like 'layers.0.attention.qkv.weight', 'x_embedder.weight', 'cap_embedder.1.weight'. Put "
            "z_image_turbo_bf16.safetensors in models/diffusion_models/ (or point --models at a diffusers folder)."
        )
    _refuse_quantised(path, header, "Z-Image transformer")
    what = "Z-Image transformer"
    require_tensor(path, header, "x_embedder.weight", 2, what)
    require_tensor(path, header, "layers.0.attention.q_norm.weight", 1, what)
    require_tensor(path, header, "cap_embedder.1.weight", 2, what)
    with file_structure(path, what):
        cfg = transformer_config_from_shapes(header)
        sd = _load_converted(path, prefix)
        sd = convert_z_image_transformer_checkpoint_to_diffusers(sd)
        sd = _upcast(sd, dtype)
        with torch.device("meta"):
            model = ZImageTransformer2DModel.from_config(cfg)
        _assign_load(model, sd, path, what)
    return model.to(device=device).eval()


def _guess_architecture(keys: list[str]) -> str:
    joined = " ".join(keys[:2000])
    for marker, name in (("double_blocks.", "Flux"), ("input_blocks.", "SD1.x/SDXL UNet"),
                         ("joint_blocks.", "SD3"), ("encoder.down.", "VAE"), ("model.layers.", "text encoder"),
                         ("transformer_blocks.", "diffusers transformer"), ("lora_", "LoRA")):
        if marker in joined:
            return f" (it looks like a {name} file)"
    return ""


# --------------------------------------------------------------------------------------------- text encoder


def load_text_encoder_file(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """Load `text_encoders/qwen_3_4b.safetensors` (transformers key layout, with or without 'model.') as Qwen3Model."""
    keys, prefix, header = _prefixed_header(path, TEXT_ENCODER_PREFIXES, "layers.0.")
    if "embed_tokens.weight" not in header or "layers.0.self_attn.q_norm.weight" not in header:
        raise ModelFileError(
            f"{path.name} is not a Qwen3 text encoder{_guess_architecture(keys)}. Z-Image needs Qwen3-4B: put "
            "qwen_3_4b.safetensors in models/text_encoders/."
        )
    _refuse_quantised(path, header, "Qwen3 text encoder")
    what = "Qwen3 text encoder"
    require_tensor(path, header, "embed_tokens.weight", 2, what)
    require_tensor(path, header, "layers.0.self_attn.q_norm.weight", 1, what)
    for key in ("layers.0.mlp.gate_proj.weight", "layers.0.self_attn.q_proj.weight",
                "layers.0.self_attn.k_proj.weight"):
        require_tensor(path, header, key, 2, what)
    with file_structure(path, what):
        return _build_text_encoder(path, prefix, header, dtype, device)


def _build_text_encoder(path: Path, prefix: str, header: dict[str, tuple[str, list[int]]], dtype: torch.dtype,
                        device: str | torch.device):
    from transformers import Qwen3Config, Qwen3Model

    cfg = shipped_config("text_encoder")
    vocab, hidden = header["embed_tokens.weight"][1]
    head_dim = header["layers.0.self_attn.q_norm.weight"][1][0]
    n_layers = 1 + max(int(m.group(1)) for k in header if (m := re.match(r"layers\.(\d+)\.", k)))
    cfg.update(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim, num_hidden_layers=n_layers,
               max_window_layers=n_layers,
               intermediate_size=header["layers.0.mlp.gate_proj.weight"][1][0],
               num_attention_heads=header["layers.0.self_attn.q_proj.weight"][1][0] // head_dim,
               num_key_value_heads=header["layers.0.self_attn.k_proj.weight"][1][0] // head_dim)
    if hidden != 2560 or n_layers != 36:
        if hidden == 4096 or n_layers == 40:
            raise ModelFileError(f"{path.name} looks like Qwen3-8B; Z-Image-Turbo needs Qwen3-4B (qwen_3_4b).")
    config = Qwen3Config(**{k: v for k, v in cfg.items() if k != "architectures"})
    sd = _load_converted(path, prefix)
    sd = {k: v for k, v in sd.items() if not k.startswith("lm_head.")}
    sd = _upcast(sd, dtype)
    # transformers would fill missing or mis-shaped weights with random values: compare with the architecture first
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Qwen3Model(config).state_dict().items()}
    _check_keys(path, "Qwen3 text encoder", [k for k in expected if k not in sd], [k for k in sd if k not in expected],
                [k for k, v in sd.items() if k in expected and tuple(v.shape) != expected[k]])
    model = Qwen3Model.from_pretrained(None, config=config, state_dict=sd, torch_dtype=dtype)
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------- VAE


def vae_config_from_shapes(header: dict[str, tuple[str, list[int]]]) -> dict[str, Any]:
    """The Flux AE config for an ldm-layout file, sizes from shapes."""
    cfg = shipped_config("vae")
    n_down = 1 + max(int(m.group(1)) for k in header if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    channels = [header[f"encoder.down.{i}.block.0.conv1.weight"][1][0] for i in range(n_down)]
    per_block = 1 + max(int(m.group(1)) for k in header if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
    cfg.update(block_out_channels=channels, layers_per_block=per_block,
               down_block_types=["DownEncoderBlock2D"] * n_down, up_block_types=["UpDecoderBlock2D"] * n_down,
               latent_channels=header["encoder.conv_out.weight"][1][0] // 2,
               norm_num_groups=min(32, channels[0]))
    return cfg


def load_vae_file(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """Load `vae/ae.safetensors` (Flux AE, original ldm layout) as diffusers AutoencoderKL."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    keys, prefix, header = _prefixed_header(path, VAE_PREFIXES, "encoder.")
    if "encoder.conv_out.weight" not in header or "decoder.conv_in.weight" not in header:
        raise ModelFileError(
            f"{path.name} is not an autoencoder in the original layout{_guess_architecture(keys)}. Z-Image uses the "
            "Flux AE: put ae.safetensors in models/vae/."
        )
    what = "Flux AE"
    require_tensor(path, header, "encoder.conv_out.weight", 4, what)
    require_tensor(path, header, "encoder.down.0.block.0.conv1.weight", 4, what)
    with file_structure(path, what):
        cfg = vae_config_from_shapes(header)
        if cfg["latent_channels"] != 16:
            raise ModelFileError(
                f"{path.name} has {cfg['latent_channels']} latent channels; Z-Image needs the 16-channel Flux AE "
                "(ae.safetensors), not an SD/SDXL VAE."
            )
        sd = _load_converted(path, prefix)
        sd = convert_ldm_vae_checkpoint(sd, cfg)
        sd = _upcast(sd, dtype)
        with torch.device("meta"):
            model = AutoencoderKL.from_config(cfg)
        _assign_load(model, sd, path, what)
    return model.to(device=device).eval()
