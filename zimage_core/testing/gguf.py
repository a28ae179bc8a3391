"""Write GGUF files in the layouts users download, at tiny sizes: a Z-Image DiT as ComfyUI-GGUF's convert.py plus
its patched llama-quantize lay it out (arch "lumina2", original Z-Image key names), and the Qwen3 text encoder as
llama.cpp does (arch "qwen3", `blk.N.attn_q` names, `qwen3.*` metadata).

gguf-py writes any GGUF but encodes only the simple types (Q8_0, Q4_0, Q5_0, BF16, ...); its K-quants are
decode-only. `encode_q4_k` is a small numpy Q4_K encoder (plain min/scale per sub-block, no importance search) so the
most common K-quant can be tested; the tests check it against gguf-py's decoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as Q

from ..checkpoints import axes_dims_for, shipped_config
from . import tiny_transformer, transformer_to_original

# ComfyUI-GGUF never quantises these lumina2 tensors (they stay BF16)
LUMINA2_UNQUANTISED = ("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.",
                       "noise_refiner.")
PAD_TOKENS = ("x_pad_token", "cap_pad_token")


def encode_q4_k(x: np.ndarray) -> np.ndarray:
    """float rows (..., k·256) -> Q4_K blocks as uint8 (..., k·144). Each 256-value super-block holds fp16 d and
    dmin, eight 6-bit sub-block scales and mins packed into 12 bytes, and 4-bit values; value = d·sc·q − dmin·m."""
    b = x.reshape(-1, 8, 32).astype(np.float32)
    lo = np.minimum(b.min(-1), 0.0)
    step = (b.max(-1) - lo) / 15.0
    d = (step.max(-1, keepdims=True) / 63.0).astype(np.float16)
    dmin = ((-lo).max(-1, keepdims=True) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32), dmin.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(step / d32), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dmin32 > 0, np.rint(-lo / dmin32), 0).clip(0, 63).astype(np.uint8)
        scale, offset = (d32 * sc)[..., None], (dmin32 * m)[..., None]
        q = np.where(scale > 0, np.rint((b + offset) / scale), 0).clip(0, 15).astype(np.uint8)
    n = b.shape[0]
    packed = np.zeros((n, 12), np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    q = q.reshape(n, 4, 2, 32)  # each 32-byte chunk: sub-block 2c in the low nibbles, 2c+1 in the high ones
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    return np.concatenate([d.view(np.uint8), dmin.view(np.uint8), packed, qs], axis=1).reshape(*x.shape[:-1], -1)


def encode(a: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q]:
    """(data as GGUFWriter takes it, the type written). Rows that do not split into whole blocks fall back to F16,
    as llama-quantize does."""
    if qtype not in (Q.F32, Q.F16) and a.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        qtype = Q.F16
    if qtype == Q.Q4_K:
        return encode_q4_k(a), qtype
    return gguf.quants.quantize(a.astype(np.float32), qtype), qtype


def write_gguf(path: str | Path, tensors: dict[str, tuple[np.ndarray, Q]], arch: str | None,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write already-encoded tensors {name: (data, type)}; `arch=None` leaves out general.architecture (as
    stable-diffusion.cpp does). Metadata values: int -> uint32, float -> float32, str, or a list of ints (int32)."""
    path = Path(path)
    w = gguf.GGUFWriter(path, arch=arch or "")  # an empty arch string is not written
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_array(key, [int(v) for v in value])
    for name, (data, qtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def dit_tensor_type(key: str, ndim: int, qtype: str) -> Q:
    """The type ComfyUI-GGUF gives a tensor of the original Z-Image layout: 2-D weights of `layers.*` in `qtype`,
    1-D tensors F32, the rest BF16 (pad tokens included); `encode` may still fall back to F16."""
    if key in PAD_TOKENS:
        return Q.BF16
    if ndim == 1:
        return Q.F32
    return Q[qtype] if ndim == 2 and not key.startswith(LUMINA2_UNQUANTISED) else Q.BF16


def save_gguf_transformer(model_or_original_state_dict: torch.nn.Module | dict[str, torch.Tensor], path: str | Path,
                          qtype: str = "Q8_0", *, arch: str | None = "lumina2", prefix: str = "",
                          flat_pad_tokens: bool = True) -> Path:
    """A Z-Image DiT GGUF in ComfyUI-GGUF's layout (types per `dit_tensor_type`). Pad tokens are written 1-D as
    llama-quantize does (`flat_pad_tokens=False`: (1, dim), as ComfyUI-GGUF's convert.py alone writes them)."""
    sd = model_or_original_state_dict
    if isinstance(sd, torch.nn.Module):
        sd = transformer_to_original(sd.state_dict())
    tensors = {}
    for key, value in sd.items():
        a = value.detach().float().cpu().numpy()
        if key in PAD_TOKENS and flat_pad_tokens:
            a = a.reshape(-1)
        tensors[prefix + key] = encode(a, dit_tensor_type(key, a.ndim, qtype))
    return write_gguf(path, tensors, arch)


def save_gguf_text_encoder(model: torch.nn.Module, path: str | Path, qtype: str = "Q8_0", *, arch: str = "qwen3"
                           ) -> Path:
    """A Qwen3 text-encoder GGUF as llama.cpp writes it: llama.cpp tensor names, `<arch>.*` size metadata, 2-D
    weights (embedding table included) in `qtype`, 1-D norms F32; a tied lm_head is not written."""
    cfg = model.config
    sd = {k.removeprefix("model."): v for k, v in model.state_dict().items() if not k.startswith("lm_head.")}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, cfg.num_hidden_layers)
    tensors = {}
    for key, value in sd.items():
        name = names.get_name("model." + key, try_suffixes=(".weight", ".bias"))
        a = value.detach().float().cpu().numpy()
        tensors[name] = encode(a, Q.F32 if a.ndim == 1 else Q[qtype])
    metadata = {f"{arch}.block_count": cfg.num_hidden_layers, f"{arch}.context_length": cfg.max_position_embeddings,
                f"{arch}.embedding_length": cfg.hidden_size, f"{arch}.feed_forward_length": cfg.intermediate_size,
                f"{arch}.attention.head_count": cfg.num_attention_heads,
                f"{arch}.attention.head_count_kv": cfg.num_key_value_heads,
                f"{arch}.attention.key_length": cfg.head_dim, f"{arch}.attention.value_length": cfg.head_dim,
                f"{arch}.attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
                f"{arch}.rope.freq_base": float(cfg.rope_parameters["rope_theta"])}
    return write_gguf(path, tensors, arch, metadata)


def kquant_tiny_transformer(seed: int = 0):
    """A tiny Z-Image DiT whose main-layer 2-D weights all have rows of a multiple of 256 values, so K-quants apply
    (dim 768 is the smallest: the FFN hidden size int(dim·8/3) is 2048; adaLN input min(dim, 256) = 256)."""
    return tiny_transformer(seed, dim=768, n_heads=6, n_kv_heads=6, n_layers=2, n_refiner_layers=1, cap_feat_dim=256,
                            axes_dims=axes_dims_for(128))


def kquant_tiny_text_encoder(seed: int = 0, vocab_size: int = 4096):
    """A tiny Qwen3Model (hidden 256, 2 heads of 128, FFN 512) whose 2-D weights all have rows of a multiple of 256
    values. The vocabulary is small to keep files small (the GGUF loader reads the size from the file)."""
    from transformers import Qwen3Config, Qwen3Model

    cfg = shipped_config("text_encoder")
    cfg.pop("architectures")
    cfg.update(hidden_size=256, num_hidden_layers=2, max_window_layers=2, num_attention_heads=2,
               num_key_value_heads=1, head_dim=128, intermediate_size=512, vocab_size=vocab_size,
               pad_token_id=None, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config(**cfg)).eval()
    with torch.no_grad():  # norm weights start at 1: distinct values make a mix-up between two norms show
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(1.0, 0.1)
    return model
