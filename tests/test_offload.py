"""Memory modes: model and block offload give the same image as keeping everything on the device (bit for bit on
the CPU), 'auto' picks the lightest mode that fits, a mode that cannot fit says which would, and bundles are not
kept alive by the cache once nobody uses them."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from zimage_core.errors import InputError
from zimage_core.generate import generate
from zimage_core.models import load_models
from zimage_core.offload import (GIB, Need, block_footprint, block_offloaded, choose_mode, estimate, weight_bytes)

KW = dict(width=64, height=80, steps=2, seed=3)


@pytest.fixture(scope="module")
def reference(tiny_dirs):
    return generate(load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", memory="gpu"), "a lake", **KW)


@pytest.mark.parametrize("memory,blocks", [("model", None), ("block", 1), ("block", 2)])
def test_offload_modes_are_bit_identical(tiny_dirs, reference, memory, blocks):
    bundle = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", memory=memory, resident_blocks=blocks)
    result = generate(bundle, "a lake", **KW)
    assert torch.equal(result.images, reference.images) and torch.equal(result.latents, reference.latents)
    assert bundle.memory_plan.mode == memory and result.notes[0].startswith("memory: ")
    assert block_offloaded(bundle.transformer) == (memory == "block")
    assert block_offloaded(bundle.text_encoder) == (memory == "block")


def test_auto_picks_the_lightest_mode_that_fits():
    need = Need(gpu=20 * GIB, model=13 * GIB, block={4: 5 * GIB, 2: 4 * GIB, 1: 3 * GIB})
    assert choose_mode(need, 24 * GIB).mode == "gpu"
    assert choose_mode(need, 16 * GIB).mode == "model"
    plan = choose_mode(need, 4.5 * GIB)
    assert (plan.mode, plan.resident_blocks) == ("block", 2)
    assert "block offload (2 block(s) resident)" in plan.describe() and "4.5 GiB free" in plan.describe()
    assert choose_mode(need, None).mode == "gpu"  # CPU: no device limit
    with pytest.raises(InputError, match=r"memory='gpu' needs ≈ 20.00 GiB .* memory='model' needs ≈ 13.00 GiB"):
        choose_mode(need, 14 * GIB, "gpu")
    with pytest.raises(InputError, match="even block offload with 1 resident block"):
        choose_mode(need, 2 * GIB)
    with pytest.raises(InputError, match="memory must be one of"):
        choose_mode(need, None, "lots")


def test_estimate_counts_stored_bytes_and_grows_with_size(tiny_dirs):
    bundle = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32")
    dit, te, vae = bundle.transformer, bundle.text_encoder, bundle.vae
    small, big = estimate(dit, te, vae, 512, 512), estimate(dit, te, vae, 1024, 1024)
    assert big.gpu > small.gpu and small.gpu > weight_bytes(dit) + weight_bytes(te) + weight_bytes(vae)
    assert small.block[1] <= small.block[2] <= small.block[4] and small.model <= small.gpu
    assert block_footprint(dit, 1) < weight_bytes(dit)
    fp8 = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", storage="fp8").transformer
    assert weight_bytes(fp8.layers) < 0.3 * weight_bytes(dit.layers)


def test_bundles_are_not_kept_alive_by_the_cache(tiny_dirs):
    bundle = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", memory="model")
    assert load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32", memory="model") is bundle  # found while used
    weights = weakref.ref(bundle.transformer)
    del bundle
    gc.collect()
    assert weights() is None  # what ComfyUI's /free relies on: dropping the node outputs frees the weights


def test_bad_memory_options_fail_before_loading(tiny_dirs):
    with pytest.raises(InputError, match="memory must be one of"):
        load_models(tiny_dirs["comfy"], device="cpu", memory="swap")
    with pytest.raises(InputError, match="resident_blocks"):
        load_models(tiny_dirs["comfy"], device="cpu", memory="block", resident_blocks=0)
    with pytest.raises(InputError, match="storage must be one of"):
        load_models(tiny_dirs["comfy"], device="cpu", storage="int4")
