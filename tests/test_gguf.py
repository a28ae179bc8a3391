"""GGUF files (zimage_core.gguf_files): ComfyUI-GGUF DiTs and llama.cpp Qwen3 text encoders load with their weights
still quantised and straight from the file's memory map, give the fp32 model's results within the quantisation
error, and files of the wrong kind are refused by name.

Two references per quantised file: the fp32 model it was written from (the error users see: quantisation plus
diffusers' fp16 dequantisation), and an fp32 model holding exactly the weights gguf-py's own decoder reads back
(which isolates our loading: names, shapes, splits, pad tokens).
"""

from __future__ import annotations

import copy
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter, dequantize_gguf_tensor
from gguf import GGMLQuantizationType as Q

from zimage_core.errors import ModelFileError
from zimage_core.gguf_files import (GGUFEmbedding, load_text_encoder_gguf, load_transformer_gguf, read_gguf)
from zimage_core.sample import transformer_velocity
from zimage_core.testing import tiny_transformer, transformer_to_original
from zimage_core.testing.gguf import (dit_tensor_type, encode, encode_q4_k, kquant_tiny_text_encoder,
                                      kquant_tiny_transformer, save_gguf_text_encoder, save_gguf_transformer,
                                      write_gguf)

# relative L2 error vs the fp32 model (random weights; Q8_0 ≈ 0.3 %, 4-bit ≈ 3 % on the DiT) and vs the model
# holding gguf-py's decoded weights (only diffusers' fp16 dequantisation remains)
DIT_BOUND = {"Q8_0": 0.01, "Q4_K": 0.06}
TE_BOUND = {"Q8_0": 0.03, "Q4_K": 0.3}  # the text encoder's perturbed norms amplify 4-bit error
DECODED_BOUND = 5e-3
# resident bytes of `layers.*` relative to fp32: Q8_0 is 34 B per 32 weights (26.6 %), Q4_K 144 B per 256 (14 %)
RESIDENT_BOUND = {"Q8_0": 0.40, "Q4_K": 0.25}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _velocity(model: torch.nn.Module) -> torch.Tensor:
    """Velocity in the model's compute dtype (the loader's `zimage_compute_dtype`; `model.dtype` agrees here because
    every parameter that is not quantised is stored in it and GGUFParameter bytes are uint8, which `dtype` skips)."""
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 16, 16, generator=g)
    caps = [torch.randn(7, model.config.cap_feat_dim, generator=g)]  # 7 tokens: the caption pad token is used
    with torch.no_grad():
        return transformer_velocity(model, latents, 0.7, caps)


def _decoded(values: dict[str, torch.Tensor], type_of) -> dict[str, torch.Tensor]:
    """Each tensor encoded as the writer encodes it and decoded by gguf-py's numpy decoder."""
    out = {}
    for key, value in values.items():
        a = value.detach().float().numpy()
        data, qtype = encode(a, type_of(key, a.ndim))
        out[key] = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(data, qtype)).reshape(a.shape))
    return out


def _file_backed_fraction(path: Path, tensors: list[torch.Tensor]) -> float:
    """The share of the tensors' bytes whose memory lies in a mapping of `path` (i.e. was not copied)."""
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == str(path.resolve()):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            spans.append((lo, hi))
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    inside = sum(size(t) for t in tensors if any(lo <= t.data_ptr() < hi for lo, hi in spans))
    return inside / sum(size(t) for t in tensors)


def _rss_mb() -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(status[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile")}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def dit():
    return kquant_tiny_transformer()


@pytest.fixture(scope="module")
def dit_velocity(dit):
    return _velocity(dit)


@pytest.fixture(scope="module")
def dit_files(tmp_path_factory, dit) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf_dit")
    return {qtype: save_gguf_transformer(dit, root / f"z_image_tiny-{qtype}.gguf", qtype) for qtype in DIT_BOUND}


@pytest.fixture(scope="module")
def te():
    return kquant_tiny_text_encoder()


@pytest.fixture(scope="module")
def te_files(tmp_path_factory, te) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf_te")
    return {qtype: save_gguf_text_encoder(te, root / f"qwen3_tiny-{qtype}.gguf", qtype) for qtype in TE_BOUND}


def _hidden(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 872, 198, 32, 4000, 15, 198], [5, 6, 7, 0, 0, 0, 0]])
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]


# ------------------------------------------------------------------------------------------------ writer
def test_q4_k_encoder_round_trips_through_both_decoders():
    a = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32) * 0.02
    a[0] += 0.05  # an all-positive row: the sub-block minimum is clamped at 0
    blocks = encode_q4_k(a)
    assert blocks.shape == (8, 2 * 144) and blocks.dtype == np.uint8
    back = gguf.quants.dequantize(blocks, Q.Q4_K)
    err = np.linalg.norm(back - a) / np.linalg.norm(a)
    print(f"Q4_K encoder: relative error {err:.3f}")
    assert err < 0.1
    ours = dequantize_gguf_tensor(GGUFParameter(torch.from_numpy(blocks), quant_type=Q.Q4_K)).float().numpy()
    np.testing.assert_allclose(ours, back, atol=2e-4)  # diffusers reads the same blocks (fp16 scales)


def test_tensor_shapes_are_in_torch_order_and_orig_shape_is_honoured(tmp_path):
    path = write_gguf(tmp_path / "shapes.gguf", {"w": (np.zeros((5, 64), np.float32), Q.F32),
                                                  "conv": (np.zeros((45, 256), np.float16), Q.F16)},
                      "sdxl", {"comfy.gguf.orig_shape.conv": [320, 4, 3, 3]})
    g = read_gguf(path)
    assert g.arch == "sdxl"
    assert g.tensors["w"].logical_shape == (5, 64) and g.tensors["w"].qtype_name == "F32"
    assert g.tensors["conv"].logical_shape == (320, 4, 3, 3)


# ------------------------------------------------------------------------------------------------ transformer
@pytest.mark.parametrize("qtype", list(DIT_BOUND))
def test_dit_gguf_stays_quantised_and_matches_fp32(dit, dit_velocity, dit_files, qtype):
    model = load_transformer_gguf(dit_files[qtype], torch.float32)
    assert model.zimage_compute_dtype == torch.float32
    ref_params = dict(dit.named_parameters())
    layer_weights = [n for n, p in ref_params.items() if n.startswith("layers.") and p.ndim == 2]
    params = dict(model.named_parameters())
    assert all(isinstance(params[n], GGUFParameter) and params[n].quant_type.name == qtype for n in layer_weights)
    assert all(isinstance(model.get_submodule(n.removesuffix(".weight")), GGUFLinear) for n in layer_weights)
    assert not any(isinstance(p, GGUFParameter) for n, p in params.items() if not n.startswith("layers."))
    resident = sum(p.numel() * p.element_size() for n, p in params.items() if n.startswith("layers."))
    fp32 = sum(p.numel() * 4 for n, p in ref_params.items() if n.startswith("layers."))

    decoded = copy.deepcopy(dit)
    original = _decoded(transformer_to_original(dit.state_dict()), lambda k, ndim: dit_tensor_type(k, ndim, qtype))
    decoded.load_state_dict(convert_z_image_transformer_checkpoint_to_diffusers(original))
    v = _velocity(model)
    err, err_decoded = _rel(v, dit_velocity), _rel(v, _velocity(decoded))
    print(f"DiT {qtype}: layers.* resident {resident / fp32:.1%} of fp32; velocity rel. error vs fp32 {err:.4f}, "
          f"vs gguf-py-decoded weights {err_decoded:.1e}")
    assert resident / fp32 < RESIDENT_BOUND[qtype]
    assert err < DIT_BOUND[qtype]
    assert err_decoded < DECODED_BOUND


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc to see memory mappings")
def test_dit_gguf_weights_are_views_of_the_file(dit, dit_velocity, dit_files):
    """bf16 compute: quantised blocks and the BF16 refiners/embedders are used in place (no copy of the file)."""
    path = dit_files["Q8_0"]
    before = _rss_mb()
    model = load_transformer_gguf(path, torch.bfloat16)
    weights = [p.as_tensor() if isinstance(p, GGUFParameter) else p for p in model.parameters() if p.ndim == 2]
    for w in weights:  # read one byte per KiB: every page of every weight is faulted in
        w.reshape(-1).view(torch.uint8)[::1024].sum()
    after = _rss_mb()
    backed = _file_backed_fraction(path, weights)
    print(f"DiT Q8_0 bf16: file {path.stat().st_size / 2**20:.1f} MiB; after load + reading every weight: RssFile "
          f"{after['RssFile'] - before['RssFile']:+.1f} MiB, RssAnon {after['RssAnon'] - before['RssAnon']:+.1f} MiB; "
          f"2-D weights file-backed {backed:.1%}")
    assert backed == 1.0
    assert model.zimage_compute_dtype == torch.bfloat16 and model.dtype == torch.bfloat16
    assert _rel(_velocity(model), dit_velocity) < 0.05


def test_dit_gguf_with_prefix_no_arch_and_2d_pad_tokens(tmp_path):
    """A stable-diffusion.cpp style file: no arch field, `model.diffusion_model.` prefix, (1, dim) pad tokens; the
    small model's FFN rows (170) do not split into Q8_0 blocks, so those weights fall back to F16."""
    ref = tiny_transformer(0)
    path = save_gguf_transformer(ref, tmp_path / "sdcpp.gguf", "Q8_0", arch=None, prefix="model.diffusion_model.",
                                 flat_pad_tokens=False)
    g = read_gguf(path)
    assert g.arch is None
    assert g.tensors["model.diffusion_model.x_pad_token"].logical_shape == (1, ref.config.dim)
    assert g.tensors["model.diffusion_model.layers.0.feed_forward.w2.weight"].qtype_name == "F16"
    model = load_transformer_gguf(path, torch.float32)
    assert isinstance(model.layers[0].attention.to_q, GGUFLinear)
    err = _rel(_velocity(model), _velocity(ref))
    print(f"DiT tiny Q8_0 (prefix, no arch): velocity rel. error {err:.4f}")
    assert err < DIT_BOUND["Q8_0"]


# ------------------------------------------------------------------------------------------------ text encoder
@pytest.mark.parametrize("qtype", list(TE_BOUND))
def test_text_encoder_gguf_stays_quantised_and_matches_fp32(te, te_files, qtype):
    model = load_text_encoder_gguf(te_files[qtype], torch.float32)
    assert model.zimage_compute_dtype == torch.float32
    assert model.config.vocab_size == te.config.vocab_size and model.config.num_hidden_layers == 2
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, GGUFLinear) and m.weight.quant_type.name == qtype for m in linears)
    assert isinstance(model.embed_tokens, GGUFEmbedding)
    resident = sum(p.numel() * p.element_size() for p in model.parameters())
    fp32 = sum(p.numel() * 4 for p in te.parameters())

    decoded = copy.deepcopy(te)
    decoded.load_state_dict(_decoded(te.state_dict(), lambda k, ndim: Q.F32 if ndim == 1 else Q[qtype]))
    h = _hidden(model)
    err, err_decoded = _rel(h, _hidden(te)), _rel(h, _hidden(decoded))
    print(f"TE {qtype}: resident {resident / fp32:.1%} of fp32; hidden_states[-2] rel. error vs fp32 {err:.4f}, "
          f"vs gguf-py-decoded weights {err_decoded:.1e}")
    assert resident / fp32 < RESIDENT_BOUND[qtype]
    assert err < TE_BOUND[qtype]
    assert err_decoded < DECODED_BOUND


# ------------------------------------------------------------------------------------------------ refusals
def _refused(loader, path: Path, *needles: str) -> str:
    with pytest.raises(ModelFileError) as info:
        loader(path, torch.float32)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_unreadable_files_are_refused(tmp_path, dit_files):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(dit_files["Q8_0"].read_bytes()[: dit_files["Q8_0"].stat().st_size // 2])
    _refused(load_transformer_gguf, truncated, "not a readable GGUF")
    noise = tmp_path / "noise.gguf"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(load_text_encoder_gguf, noise, "not a readable GGUF")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    _refused(load_transformer_gguf, empty, "not a readable GGUF")


def test_other_architectures_are_refused_by_name(tmp_path, te):
    flux = write_gguf(tmp_path / "flux1-dev-Q8_0.gguf",
                      {"double_blocks.0.img_attn.qkv.weight": (np.zeros((6, 64), np.float16), Q.F16)}, "flux")
    _refused(load_transformer_gguf, flux, "Flux", "not Z-Image")
    lumina = write_gguf(tmp_path / "lumina_2-Q8_0.gguf",
                        {"x_embedder.weight": (np.zeros((2304, 64), np.float16), Q.F16),
                         "cap_embedder.1.weight": (np.zeros((2304, 8), np.float16), Q.F16)}, "lumina2")
    _refused(load_transformer_gguf, lumina, "Lumina-Image 2.0")
    vl = save_gguf_text_encoder(te, tmp_path / "Qwen3-VL-4B-Q8_0.gguf", "Q8_0", arch="qwen3vl")
    _refused(load_text_encoder_gguf, vl, "Qwen3-VL", "Qwen3-4B")
    big = write_gguf(tmp_path / "Qwen3-8B-Q8_0.gguf",
                     {"token_embd.weight": (np.zeros((16, 4096), np.float16), Q.F16),
                      "blk.0.attn_q.weight": (np.zeros((8, 4096), np.float16), Q.F16)}, "qwen3")
    _refused(load_text_encoder_gguf, big, "Qwen3-8B")


def test_unsupported_quant_type_is_refused_by_name(tmp_path):
    path = write_gguf(tmp_path / "z_image-IQ2_XXS.gguf",
                      {"layers.0.attention.qkv.weight": (np.zeros((6, 66), np.uint8), Q.IQ2_XXS),
                       "x_embedder.weight": (np.zeros((4, 64), np.float16), Q.F16),
                       "cap_embedder.1.weight": (np.zeros((4, 8), np.float16), Q.F16)}, "lumina2")
    _refused(load_transformer_gguf, path, "IQ2_XXS", "Q8_0", "Q4_K", ".safetensors")


def test_component_in_the_wrong_slot_is_refused(dit_files, te_files):
    _refused(load_transformer_gguf, te_files["Q8_0"], "text encoder", "text_encoders")
    _refused(load_text_encoder_gguf, dit_files["Q8_0"], "diffusion model", "diffusion_models")


def test_incomplete_dit_is_refused_by_key_check(tmp_path):
    original = transformer_to_original(tiny_transformer(0).state_dict())
    del original["layers.1.feed_forward.w2.weight"]
    path = save_gguf_transformer(original, tmp_path / "incomplete.gguf")
    _refused(load_transformer_gguf, path, "missing", "layers.1.feed_forward.w2.weight")
