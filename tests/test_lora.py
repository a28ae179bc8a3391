"""LoRA: known deltas land exactly on the targeted weights (strength × alpha/rank × B@A) in every key layout users'
files come in, nothing else changes, strength 0 is the exact base model, swapping/unloading never touches the base
weights, and LoRAs for other architectures are refused by name."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from zimage_core.errors import ModelFileError
from zimage_core.lora import apply_loras, loaded_loras, remove_loras
from zimage_core.sample import transformer_velocity
from zimage_core.testing import tiny_transformer
from zimage_core.testing.lora import DEFAULT_TARGETS, foreign_lora, save_tiny_lora


@pytest.fixture()
def dit():
    return tiny_transformer(seed=5)


def effective_delta(dit, module: str) -> torch.Tensor:
    """W_eff − W of one Linear, read from its outputs on the identity (bias cancels)."""
    m = dit.get_submodule(module)
    x = torch.eye(m.in_features)
    with torch.no_grad():
        if hasattr(m, "base_layer"):
            return (m(x) - m.base_layer(x)).T
        return torch.zeros_like(m.weight)


def base_weights(dit) -> dict[str, torch.Tensor]:
    """Every base parameter by its original name (peft's wrappers add '.base_layer')."""
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in dit.named_parameters() if "lora_" not in k}


def velocity(dit) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return transformer_velocity(dit, torch.randn(1, 16, 8, 8, generator=g), 0.7, [torch.randn(9, 32, generator=g)])


@pytest.mark.parametrize("style,alpha", [("diffusers", None), ("diffusers", 2.0), ("kohya", 2.0), ("kohya", None),
                                         ("comfy", 8.0), ("comfy_qkv", 2.0)])
def test_known_deltas_land_exactly_on_targets(dit, tmp_path, style, alpha):
    before = base_weights(dit)
    linears = [n for n, m in dit.named_modules() if isinstance(m, torch.nn.Linear)]
    deltas = save_tiny_lora(tmp_path / f"{style}.safetensors", dit, style=style, alpha=alpha, rank=4)
    [info] = apply_loras(dit, [(tmp_path / f"{style}.safetensors", 0.7)])
    assert sorted(info.modules) == sorted(deltas) and not info.ignored_keys
    for name in linears:
        got = effective_delta(dit, name)
        want = 0.7 * deltas[name] if name in deltas else torch.zeros_like(got)
        assert torch.allclose(got, want, atol=2e-6), name
    # base weights untouched (LoRA lives beside them)
    assert {k: torch.equal(v, before[k]) for k, v in base_weights(dit).items()} == {k: True for k in before}


def test_qkv_split_covers_all_three_projections(dit, tmp_path):
    deltas = save_tiny_lora(tmp_path / "qkv.safetensors", dit, style="comfy_qkv", targets=["layers.3.attention.to_q"])
    assert sorted(deltas) == sorted(f"layers.3.attention.to_{p}" for p in "qkv")
    apply_loras(dit, [(tmp_path / "qkv.safetensors", 1.0)])
    for name, d in deltas.items():
        assert torch.allclose(effective_delta(dit, name), d, atol=2e-6)


def test_several_loras_add_with_their_strengths_and_swap(dit, tmp_path):
    d1 = save_tiny_lora(tmp_path / "a.safetensors", dit, style="kohya", alpha=2.0, seed=1)
    d2 = save_tiny_lora(tmp_path / "b.safetensors", dit, style="comfy", seed=2,
                        targets=["layers.0.attention.to_q", "layers.3.feed_forward.w2"])
    base_q = dit.get_submodule("layers.0.attention.to_q").weight
    apply_loras(dit, [(tmp_path / "a.safetensors", 0.5), (tmp_path / "b.safetensors", -1.25)])
    q = "layers.0.attention.to_q"
    assert torch.allclose(effective_delta(dit, q), 0.5 * d1[q] - 1.25 * d2[q], atol=2e-6)
    assert torch.allclose(effective_delta(dit, "layers.3.feed_forward.w2"), -1.25 * d2["layers.3.feed_forward.w2"],
                          atol=2e-6)
    # swap: only b at 1.0 — a's adapter is gone, the base weight object is the very same tensor (no reload)
    apply_loras(dit, [(tmp_path / "b.safetensors", 1.0)])
    assert len(loaded_loras(dit)) == 1
    assert torch.allclose(effective_delta(dit, q), d2[q], atol=2e-6)
    assert torch.allclose(effective_delta(dit, "layers.1.feed_forward.w1"), torch.zeros(1), atol=0)
    assert dit.get_submodule(q).base_layer.weight is base_q


def test_strength_zero_and_unload_give_the_exact_base_model(dit, tmp_path):
    plain = velocity(dit)
    save_tiny_lora(tmp_path / "a.safetensors", dit, style="kohya", alpha=4.0)
    save_tiny_lora(tmp_path / "b.safetensors", dit, style="diffusers", seed=3)
    apply_loras(dit, [(tmp_path / "a.safetensors", 0.0)])
    assert torch.equal(velocity(dit), plain)
    apply_loras(dit, [(tmp_path / "a.safetensors", 1.0), (tmp_path / "b.safetensors", 0.0)])
    with_a = velocity(dit)
    assert not torch.equal(with_a, plain)
    apply_loras(dit, [(tmp_path / "a.safetensors", 0.0), (tmp_path / "b.safetensors", 0.0)])
    assert torch.equal(velocity(dit), plain)
    apply_loras(dit, [(tmp_path / "a.safetensors", 1.0)])  # re-enabled after all-zero
    assert torch.equal(velocity(dit), with_a)
    remove_loras(dit)
    assert torch.equal(velocity(dit), plain)
    assert not any("lora_" in k for k, _ in dit.named_parameters())


@pytest.mark.parametrize("kind,words", [("sdxl", "SDXL"), ("flux", "Flux")])
def test_lora_for_another_architecture_is_refused_by_name(dit, tmp_path, kind, words):
    path = tmp_path / f"{kind}_style.safetensors"
    save_file(foreign_lora(kind), str(path))
    with pytest.raises(ModelFileError, match=rf"{kind}_style\.safetensors.*{words}"):
        apply_loras(dit, [(path, 1.0)])
    assert not loaded_loras(dit)


def test_full_model_file_and_wrong_size_are_refused(dit, tmp_path):
    path = tmp_path / "not_a_lora.safetensors"
    save_file({k: v.contiguous() for k, v in list(dit.state_dict().items())[:5]}, str(path))
    with pytest.raises(ModelFileError, match="no LoRA weights"):
        apply_loras(dit, [(path, 1.0)])
    big = tiny_transformer(seed=0, dim=128, n_heads=4, n_kv_heads=4)
    save_tiny_lora(tmp_path / "big.safetensors", big, style="comfy")
    with pytest.raises(ModelFileError, match="big.safetensors.*shape mismatch"):
        apply_loras(dit, [(tmp_path / "big.safetensors", 1.0)])


def test_partly_matching_file_warns_with_the_ignored_keys(dit, tmp_path, caplog):
    from zimage_core.testing.lora import make_tiny_lora

    sd, deltas = make_tiny_lora(dit, style="comfy")
    sd.update({"diffusion_model.layers.0.not_a_module.lora_A.weight": torch.zeros(4, 64),
               "diffusion_model.layers.0.not_a_module.lora_B.weight": torch.zeros(64, 4)})
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with caplog.at_level(logging.WARNING, logger="zimage_core.lora"):
        [info] = apply_loras(dit, [(tmp_path / "partial.safetensors", 1.0)])
    assert info.ignored_keys == ["layers.0.not_a_module.lora_A.weight", "layers.0.not_a_module.lora_B.weight"]
    assert "not_a_module" in caplog.text and "partial.safetensors" in caplog.text
    assert sorted(info.modules) == sorted(DEFAULT_TARGETS)


def test_missing_file_is_named(dit, tmp_path):
    with pytest.raises(ModelFileError, match="nope.safetensors"):
        apply_loras(dit, [(tmp_path / "nope.safetensors", 1.0)])

