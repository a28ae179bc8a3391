"""Reading the single files ComfyUI users have: safetensors headers (validated before anything indexes them), the
weight format a file is in, sizes inferred from shapes, and tensors streamed one at a time.

Formats: 16/32-bit floats; plain fp8 (float8_e4m3fn / e5m2 weights); ComfyUI "scaled fp8" (fp8 weights with a
per-tensor scale beside each: the legacy `scaled_fp8` marker + `<layer>.scale_weight`, or the newer per-layer
`<layer>.comfy_quant` entries of format float8_* + `<layer>.weight_scale`). Packed formats (nvfp4, mxfp8, int8
repacks, GPTQ / bitsandbytes) are refused by name with the alternatives.

Why stream: a file read whole into memory and then converted holds two copies at once (a 6 GB fp8 file upcast to
bf16 needs 18 GB). `read_tensors` reads each tensor with a positioned read and converts it before the next, so the
peak is what is kept plus one tensor. Why infer sizes from shapes: tiny test models and the real 6 B model go
through the same code.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch

from .errors import ModelFileError
from .weights import load_state_dict

TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")
TEXT_ENCODER_PREFIXES = ("text_encoders.qwen3_4b.transformer.", "model.", "transformer.")
VAE_PREFIXES = ("first_stage_model.", "vae.")


def shipped_config(name: str) -> dict[str, Any]:
    """A config shipped inside the package (the real models' configs), so nothing ever touches the hub."""
    return json.loads(resources.files("zimage_core.configs").joinpath(f"{name}.json").read_text())


# ------------------------------------------------------------------------------------------------ safetensors header
TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
DTYPE_BYTES = {name: torch.empty((), dtype=dt).element_size() for name, dt in TORCH_DTYPES.items()}
DTYPE_BYTES.update({"U16": 2, "U32": 4, "U64": 8})
MAX_HEADER_BYTES = 100_000_000


class TensorInfo(NamedTuple):
    """One header entry: dtype string, shape, and the absolute byte range in the file (-1 for pickle files)."""

    dtype: str
    shape: list[int]
    begin: int = -1
    end: int = -1


Header = dict[str, TensorInfo]


def _malformed(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path.name} is not a valid safetensors file ({why}); download it again or pick another "
                          "file.")


def _validate_header(path: Path, header: object, data_start: int, data_len: int) -> Header:
    """The header's structure, checked before anything indexes it: an object of tensor entries, each with a dtype
    string, a shape of non-negative integers and data offsets inside the file that match the shape."""
    if not isinstance(header, dict):
        raise _malformed(path, f"the header is a JSON {type(header).__name__}, not an object")
    out: Header = {}
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
        out[key] = TensorInfo(dtype, shape, data_start + offsets[0], data_start + offsets[1])
    return out


def read_header(path: Path) -> Header:
    """Key -> TensorInfo from a safetensors header, without loading any tensor; the structure is validated (see
    `_validate_header`). Pickle files (.pth/.ckpt) are read whole (they cannot be read in parts)."""
    if path.suffix.lower() == ".gguf":
        raise ModelFileError(f"{path.name} is a GGUF file; it is read by the GGUF loader, not as safetensors.")
    if path.suffix.lower() not in (".safetensors", ".sft"):
        sd = load_state_dict(path)
        return {k: TensorInfo(str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in sd.items()}
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
    return _validate_header(path, header, 8 + size, file_len - 8 - size)


def read_tensors(path: Path, header: Header, convert: Callable[[str, torch.Tensor], torch.Tensor | None]
                 ) -> dict[str, torch.Tensor]:
    """{key: convert(key, tensor)} for every key of `header` (a key whose conversion returns None is left out).
    safetensors: one positioned read per tensor into memory this process owns (no memory map, no whole-file
    buffer), so the peak is what `convert` keeps plus one tensor."""
    if any(info.begin < 0 for info in header.values()):
        sd = load_state_dict(path)
        out = {}
        for key in header:
            kept = convert(key, sd.pop(key))
            if kept is not None:
                out[key] = kept
        return out
    out = {}
    with open(path, "rb") as fh:
        fd = fh.fileno()
        for key, info in header.items():
            dtype = TORCH_DTYPES.get(info.dtype)
            if dtype is None:
                raise ModelFileError(f"{path.name}: tensor '{key}' has dtype {info.dtype}, which this pack does not "
                                     "read.")
            buf = _buffer(info.end - info.begin)
            if len(buf) and os.preadv(fd, [buf], info.begin) != len(buf):
                raise ModelFileError(f"{path.name} is truncated (tensor '{key}' ends past the end of the file).")
            tensor = (torch.frombuffer(buf, dtype=dtype) if len(buf) else torch.empty(0, dtype=dtype)).reshape(
                info.shape)
            kept = convert(key, tensor)
            if kept is not None:
                out[key] = kept
    return out


def _buffer(size: int) -> bytearray | mmap.mmap:
    """Memory for one tensor read. Large ones get their own anonymous mapping, so releasing a model really gives
    the memory back to the system (the C heap keeps freed medium-sized blocks for the process)."""
    return mmap.mmap(-1, size) if size >= (1 << 20) else bytearray(size)


def strip_prefix(header: Header, prefixes: tuple[str, ...], marker: str) -> tuple[str, Header]:
    """(the prefix in front of `marker` keys — possibly empty —, the header with that prefix stripped)."""
    prefix = next((p for p in prefixes if any(k.startswith(p + marker) for k in header)), "")
    return prefix, {k[len(prefix):]: v for k, v in header.items() if k.startswith(prefix)}


def require_tensor(path: Path, header: Header, key: str, rank: int, what: str) -> list[int]:
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


def check_keys(path: Path, what: str, missing: list, unexpected: list, mismatched: list = ()) -> None:
    """Refuse a file whose keys do not fit the architecture (never load partially or fill gaps with random weights)."""
    if missing or unexpected or mismatched:
        raise ModelFileError(
            f"{path.name} does not match the {what} architecture: {len(missing)} missing keys "
            f"(e.g. {list(missing)[:3]}), {len(unexpected)} unexpected keys (e.g. {list(unexpected)[:3]}), "
            f"{len(mismatched)} with other shapes. Is this the right file for this slot?"
        )


def guess_architecture(keys: list[str]) -> str:
    """' (it looks like a <kind> file)' for keys of a well-known other architecture, else ''."""
    joined = " ".join(keys[:2000])
    for marker, name in (("double_blocks.", "Flux"), ("input_blocks.", "SD1.x/SDXL UNet"),
                         ("joint_blocks.", "SD3"), ("encoder.down.", "VAE"), ("model.layers.", "text encoder"),
                         ("transformer_blocks.", "diffusers transformer"), ("lora_", "LoRA")):
        if marker in joined:
            return f" (it looks like a {name} file)"
    return ""


# ------------------------------------------------------------------------------------------------ weight formats
SUPPORTED_HINT = ("Supported: the bf16 file, a plain fp8 (float8_e4m3fn) file, a ComfyUI scaled-fp8 file, or a GGUF "
                  "(e.g. z_image_turbo_bf16.safetensors, a Q8_0 / Q4_K_M .gguf).")
FP8_NAMES = {"F8_E4M3", "F8_E5M2"}
COMFY_FP8_FORMATS = {"float8_e4m3fn", "float8_e5m2"}


@dataclass
class WeightFormat:
    """What a single file holds: `kind` 'full' (16/32-bit), 'fp8' (float8 weights) or 'scaled_fp8' (float8 weights
    with per-tensor scales); `scale_keys` maps weight key → its scale key; `extra` lists bookkeeping keys that are not
    model weights (markers, input scales, comfy_quant entries)."""

    kind: str
    scale_keys: dict[str, str] = field(default_factory=dict)
    extra: set[str] = field(default_factory=set)

    def describe(self) -> str:
        return {"full": "16/32-bit", "fp8": "fp8", "scaled_fp8": "scaled fp8"}[self.kind]


def _comfy_quant_formats(path: Path, header: Header) -> dict[str, str]:
    """{layer: format} from the per-layer `.comfy_quant` entries (JSON stored as bytes)."""
    keys = [k for k in header if k.endswith(".comfy_quant")]
    raw = read_tensors(path, {k: header[k] for k in keys}, lambda k, t: t)
    formats = {}
    for key, tensor in raw.items():
        try:
            formats[key.removesuffix(".comfy_quant")] = str(json.loads(bytes(tensor.to(torch.uint8).tolist()))
                                                            .get("format", "?"))
        except (ValueError, AttributeError):
            formats[key.removesuffix(".comfy_quant")] = "?"
    return formats


def detect_format(path: Path, header: Header, what: str) -> WeightFormat:
    """The format of a single file (see the module docstring); packed formats are refused by name."""
    keys = header.keys()
    if any(k.endswith((".qweight", ".scales", ".absmax", ".quant_state.bitsandbytes__nf4")) for k in keys):
        raise ModelFileError(f"{path.name} is a GPTQ/bitsandbytes-quantised {what}. {SUPPORTED_HINT}")
    if any(k.endswith(".comfy_quant") for k in keys):
        formats = _comfy_quant_formats(path, header)
        other = sorted({f for f in formats.values() if f not in COMFY_FP8_FORMATS})
        if other:
            name = "int8_convrot" if any("convrot" in k for k in keys) else "/".join(other)
            raise ModelFileError(f"{path.name} is a {name} {what} (ComfyUI mixed-precision repack), which this pack "
                                 f"cannot load. {SUPPORTED_HINT}")
        scale_keys = {f"{layer}.weight": f"{layer}.weight_scale" for layer in formats
                      if f"{layer}.weight_scale" in header}
        extra = {k for k in keys if k.endswith((".comfy_quant", ".input_scale"))}
        return _checked_scales(path, header, WeightFormat("scaled_fp8", scale_keys, extra), what)
    if any(k.endswith(".weight_scale_2") for k in keys) or any(
            header[k].dtype == "U8" and k.endswith(".weight") for k in keys):
        raise ModelFileError(f"{path.name} is an nvfp4/int8 packed {what}, which this pack cannot load. "
                             f"{SUPPORTED_HINT}")
    if any(k.endswith("scaled_fp8") or k.endswith(".scale_weight") for k in keys):
        scale_keys = {k.removesuffix(".scale_weight") + ".weight": k for k in keys if k.endswith(".scale_weight")}
        extra = {k for k in keys if k.endswith(("scaled_fp8", ".scale_input"))}
        return _checked_scales(path, header, WeightFormat("scaled_fp8", scale_keys, extra), what)
    if any(info.dtype in FP8_NAMES for info in header.values()):
        return WeightFormat("fp8")
    return WeightFormat("full")


def _checked_scales(path: Path, header: Header, fmt: WeightFormat, what: str) -> WeightFormat:
    for weight, scale in fmt.scale_keys.items():
        if weight not in header or math.prod(header[scale].shape) != 1:
            raise ModelFileError(f"{path.name}: the scaled-fp8 {what} has a scale '{scale}' that is not one number "
                                 f"per tensor (or its weight is missing); only per-tensor scales are supported. "
                                 f"{SUPPORTED_HINT}")
    return fmt


def read_scales(path: Path, header: Header, fmt: WeightFormat) -> dict[str, torch.Tensor]:
    """{weight key: fp32 scalar scale} of a scaled-fp8 file."""
    if not fmt.scale_keys:
        return {}
    by_scale = {s: w for w, s in fmt.scale_keys.items()}
    raw = read_tensors(path, {s: header[s] for s in by_scale}, lambda k, t: t.float().reshape(()))
    return {by_scale[s]: v for s, v in raw.items()}


# ------------------------------------------------------------------------------------------------ sizes from shapes
def transformer_config_from_shapes(header: Header) -> dict[str, Any]:
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


def text_encoder_config_from_shapes(header: Header) -> dict[str, Any]:
    """The Qwen3 config for a transformers-layout file (prefix stripped), sizes from shapes."""
    cfg = shipped_config("text_encoder")
    cfg.pop("architectures", None)
    vocab, hidden = header["embed_tokens.weight"][1]
    head_dim = header["layers.0.self_attn.q_norm.weight"][1][0]
    n_layers = 1 + max(int(m.group(1)) for k in header if (m := re.match(r"layers\.(\d+)\.", k)))
    cfg.update(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim, num_hidden_layers=n_layers,
               max_window_layers=n_layers, intermediate_size=header["layers.0.mlp.gate_proj.weight"][1][0],
               num_attention_heads=header["layers.0.self_attn.q_proj.weight"][1][0] // head_dim,
               num_key_value_heads=header["layers.0.self_attn.k_proj.weight"][1][0] // head_dim)
    return cfg


def vae_config_from_shapes(header: Header) -> dict[str, Any]:
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
