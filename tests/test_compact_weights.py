"""Compact weights on tiny models through the real loaders: fp8 files stay fp8 (upcast per layer), ComfyUI's two
scaled-fp8 layouts load with their scales, a bf16 file can be stored as fp8, and packed formats are refused by name.
Each mode's image is compared with the fp32 reference (same seed); the error is printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zimage_core.errors import ModelFileError
from zimage_core.fp8 import Fp8Embedding, Fp8Linear, quantize_fp8
from zimage_core.generate import generate
from zimage_core.models import load_models
from zimage_core.offload import weight_bytes

DIT = "diffusion_models/z_image_turbo_tiny.safetensors"
TE = "text_encoders/qwen_3_4b_tiny.safetensors"
KW = dict(width=64, height=64, steps=3, seed=5)
ERRORS: dict[str, float] = {}


def tree_with(tiny_dirs, tmp_path: Path, name: str, edits: dict[str, callable]) -> Path:
    root = tmp_path / name
    shutil.copytree(tiny_dirs["comfy"], root)
    for rel, edit in edits.items():
        save_file(edit(load_file(str(root / rel))), str(root / rel))
    return root


def is_block_weight(key: str, t: torch.Tensor) -> bool:
    return t.ndim == 2 and key.startswith("layers.")


def plain_fp8(sd: dict) -> dict:
    return {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 and not k.endswith("pad_token") else v for k, v in sd.items()}


def legacy_scaled(sd: dict) -> dict:
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if is_block_weight(k, v):
            out[k], scale = quantize_fp8(v)
            out[k.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
        else:
            out[k] = v
    return out


def comfy_quant_scaled(sd: dict, fmt: str = "float8_e4m3fn") -> dict:
    out = {}
    for k, v in sd.items():
        if is_block_weight(k, v):
            layer = k.removesuffix(".weight")
            out[k], out[layer + ".weight_scale"] = quantize_fp8(v)
            out[layer + ".input_scale"] = torch.ones(())
            out[layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)
        else:
            out[k] = v
    return out


@pytest.fixture(scope="module")
def reference(tiny_dirs):
    bundle = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32")
    return bundle, generate(bundle, "a red chair on a hill", **KW).images


def image_error(name: str, bundle, reference) -> float:
    err = float((generate(bundle, "a red chair on a hill", **KW).images - reference[1]).abs().mean())
    ERRORS[name] = err
    return err


def test_fp8_file_keeps_fp8_storage(tiny_dirs, tmp_path, reference):
    root = tree_with(tiny_dirs, tmp_path, "fp8", {DIT: plain_fp8})
    bundle = load_models(root, device="cpu", dtype="fp32")
    model = bundle.transformer
    w1 = model.layers[0].feed_forward.w1
    assert isinstance(w1, Fp8Linear) and w1.weight.dtype == torch.float8_e4m3fn and w1.weight_scale is None
    assert model.x_pad_token.dtype == torch.float32  # not a Linear weight: upcast
    assert weight_bytes(model.layers) < 0.3 * weight_bytes(reference[0].transformer.layers)
    assert image_error("fp8 file", bundle, reference) < 0.05


@pytest.mark.parametrize("layout", ["legacy scaled_fp8", "comfy_quant float8"])
def test_scaled_fp8_files_load_with_their_scales(tiny_dirs, tmp_path, reference, layout):
    edit = legacy_scaled if layout.startswith("legacy") else comfy_quant_scaled
    root = tree_with(tiny_dirs, tmp_path, "scaled", {DIT: edit})
    bundle = load_models(root, device="cpu", dtype="fp32")
    q = bundle.transformer.layers[1].attention.to_q
    ref_q = reference[0].transformer.layers[1].attention.to_q
    assert isinstance(q, Fp8Linear) and q.weight_scale is not None
    assert torch.allclose(q.dequantized_weight(torch.float32), ref_q.weight, rtol=0.07, atol=2e-4)
    assert image_error(layout, bundle, reference) < 0.02  # scaled: finer than a plain cast


def test_bf16_file_stored_as_fp8_and_fp8_file_upcast_in_full(tiny_dirs, tmp_path, reference):
    stored = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", storage="fp8")
    dit, te = stored.transformer, stored.text_encoder
    assert isinstance(dit.layers[0].attention.to_out[0], Fp8Linear)
    assert type(dit.cap_embedder[1]) is nn.Linear  # embedders keep full precision
    assert isinstance(te.embed_tokens, Fp8Embedding) and isinstance(te.layers[0].mlp.up_proj, Fp8Linear)
    assert image_error("bf16 file stored as fp8", stored, reference) < 0.02

    root = tree_with(tiny_dirs, tmp_path, "full", {DIT: legacy_scaled})
    full = load_models(root, device="cpu", dtype="fp32", storage="full").transformer
    fp8 = load_models(root, device="cpu", dtype="fp32").transformer
    to_q = full.layers[0].attention.to_q
    assert type(to_q) is nn.Linear and to_q.weight.dtype == torch.float32
    assert torch.equal(to_q.weight, fp8.layers[0].attention.to_q.dequantized_weight(torch.float32))


def test_fp8_text_encoder_file(tiny_dirs, tmp_path, reference):
    root = tree_with(tiny_dirs, tmp_path, "te", {TE: lambda sd: {k: v.to(torch.float8_e5m2) if v.ndim == 2 else v
                                                                 for k, v in sd.items()}})
    bundle = load_models(root, device="cpu", dtype="fp32")
    assert isinstance(bundle.text_encoder.embed_tokens, Fp8Embedding)
    assert bundle.text_encoder.embed_tokens.weight.dtype == torch.float8_e5m2
    assert image_error("fp8 (e5m2) text encoder", bundle, reference) < 0.05


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp8"])
def test_packed_comfy_quant_formats_are_refused_by_name(tiny_dirs, tmp_path, fmt):
    root = tree_with(tiny_dirs, tmp_path, fmt, {DIT: lambda sd: comfy_quant_scaled(sd, fmt)})
    with pytest.raises(ModelFileError, match=fr"is a {fmt} Z-Image transformer.*Supported"):
        load_models(root, device="cpu").transformer


def test_lora_on_an_fp8_model_stays_in_the_compute_dtype(tiny_dirs, tmp_path):
    from zimage_core.lora import apply_loras
    from zimage_core.testing.lora import make_tiny_lora

    bundle = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", storage="fp8")
    sd, _ = make_tiny_lora(bundle.transformer, style="diffusers")
    save_file(sd, str(tmp_path / "l.safetensors"))
    (loaded,) = apply_loras(bundle.transformer, [(tmp_path / "l.safetensors", 1.0)])
    to_q = bundle.transformer.layers[0].attention.to_q
    assert isinstance(to_q.base_layer, Fp8Linear) and to_q.lora_A[loaded.name].weight.dtype == torch.float32
    assert generate(bundle, "a cat", **KW).images.isfinite().all()
    apply_loras(bundle.transformer, [])


def test_errors_printed():
    if ERRORS:
        print("\nmean abs image error vs the fp32 reference (0-1 images): "
              + ", ".join(f"{k} {v:.4f}" for k, v in ERRORS.items()))
