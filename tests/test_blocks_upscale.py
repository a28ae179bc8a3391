"""Upscalers: LANCZOS matches PIL; heavy path with tiny random ESRGAN/Compact and SD x4 models loaded from disk;
batching, OOM halving, progress/interrupt, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zimage_core.blocks import (SDUpscaler, SpandrelUpscaler, heavy_upscale_blocks, lanczos_resize,
                                lanczos_resize_nchw,
                                lanczos_upscale_blocks, load_heavy_upscaler, load_spandrel)
from zimage_core.blocks.upscale import run_batched
from zimage_core.errors import InputError, Interrupted, ModelFileError
from zimage_core.testing.upscalers import save_tiny_compact

import blocks_models


@pytest.fixture
def esrgan_file():
    return blocks_models.esrgan_file()


@pytest.fixture
def sd_x4_folder():
    return blocks_models.sd_x4_folder()


# ----------------------------------------------------------------------------------------------------- LANCZOS
@pytest.mark.parametrize("h,w,oh,ow", [(37, 53, 148, 212), (128, 128, 512, 512), (100, 80, 33, 47), (5, 1, 20, 4),
                                       (1, 1, 4, 4), (64, 64, 160, 160), (30, 90, 120, 45)])
def test_lanczos_matches_pil_float_mode(h, w, oh, ow):
    """Same filter geometry as PIL: equal to PIL's float ('F') resize up to float rounding."""
    a = np.random.default_rng(h * w).random((h, w)).astype(np.float32)
    ref = np.asarray(Image.fromarray(a, "F").resize((ow, oh), Image.LANCZOS))
    ours = lanczos_resize_nchw(torch.from_numpy(a)[None, None], (oh, ow))[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("h,w,factor", [(37, 53, 4), (128, 128, 4), (50, 70, 2), (9, 3, 3)])
def test_lanczos_matches_pil_8bit_within_one_level(h, w, factor):
    u = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(u).resize((w * factor, h * factor), Image.LANCZOS)).astype(int)
    ours = (lanczos_resize(torch.from_numpy(u)[None].float() / 255, (h * factor, w * factor))[0].numpy() * 255)
    diff = np.abs(np.round(ours).astype(int) - ref)
    assert diff.max() <= 1 and diff.mean() < 0.3


def test_light_blocks_are_batched_and_in_range():
    x = torch.rand(5, 3, 16, 16)
    y = lanczos_upscale_blocks(x, 4)
    assert y.shape == (5, 3, 64, 64) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y[2], lanczos_upscale_blocks(x[2:3], 4)[0], atol=1e-6)  # batch-independent


# ---------------------------------------------------------------------------------------------------- spandrel
def test_tiny_esrgan_from_file(esrgan_file):
    up = load_heavy_upscaler(esrgan_file, device="cpu")
    assert isinstance(up, SpandrelUpscaler) and up.scale == 4 and "ESRGAN" in up.descriptor.architecture.name
    y = up(torch.rand(3, 3, 20, 24))
    assert y.shape == (3, 3, 80, 96) and torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1


def test_loaded_descriptor_is_accepted_like_comfy_upscale_model(esrgan_file, tmp_path):
    desc = load_spandrel(esrgan_file)  # what ComfyUI's UpscaleModelLoader hands over
    up = load_heavy_upscaler(desc, device="cpu")
    x = torch.rand(2, 3, 16, 16)
    direct = desc(x).clamp(0, 1)
    assert torch.allclose(up(x), direct, atol=1e-6)
    # .pth through weights_only works too
    pth = tmp_path / "tiny.pth"
    torch.save(desc.model.state_dict(), pth)
    assert load_heavy_upscaler(pth, device="cpu").scale == 4


def test_model_scale_other_than_requested_is_resampled(tmp_path):
    up = load_heavy_upscaler(save_tiny_compact(tmp_path / "compact2x.safetensors", scale=2), device="cpu")
    assert up.scale == 2
    outs = list(heavy_upscale_blocks(up, torch.rand(5, 3, 16, 16), 4, batch_size=2))
    assert [o.shape for _, o in outs] == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64)]
    assert [(s.start, s.stop) for s, _ in outs] == [(0, 2), (2, 4), (4, 5)]


def test_corrupt_and_wrong_model_files(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="broken.safetensors"):
        load_heavy_upscaler(bad)
    from safetensors.torch import save_file

    alien = tmp_path / "not_an_upscaler.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(alien))
    with pytest.raises(ModelFileError, match="not_an_upscaler.safetensors"):
        load_heavy_upscaler(alien)
    with pytest.raises(ModelFileError, match="not found"):
        load_heavy_upscaler(tmp_path / "missing.pth")
    with pytest.raises(ModelFileError, match="model_index"):
        load_heavy_upscaler(tmp_path)  # a folder that is not a diffusers pipeline
    with pytest.raises(InputError):
        load_heavy_upscaler(12345)


# ------------------------------------------------------------------------------------------------------- SD x4
def test_tiny_sd_x4_upscaler_from_folder(sd_x4_folder):
    up = load_heavy_upscaler(sd_x4_folder, device="cpu", prompt="sharp photo", steps=2, noise_level=30,
                             guidance_scale=1.0, seed=1)
    assert isinstance(up, SDUpscaler) and up.scale == 4
    y = up(torch.rand(2, 3, 16, 20))
    assert y.shape == (2, 3, 64, 80) and torch.isfinite(y).all()
    assert float(y.std()) > 0
    y2 = up(torch.rand(1, 3, 13, 11))  # sizes the UNet cannot take directly are padded and cropped
    assert y2.shape == (1, 3, 52, 44)
    with pytest.raises(InputError):
        SDUpscaler(up.pipe, noise_level=1000)


# ---------------------------------------------------------------------------------------- batching / interrupts
class _Flaky:
    """Stands in for a GPU that runs out of memory above a batch size (cannot happen for real on CPU)."""

    name, scale = "flaky", 2

    def __init__(self, max_batch: int):
        self.max_batch, self.calls = max_batch, []

    def __call__(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_oom_halves_the_batch_and_keeps_going():
    up = _Flaky(max_batch=2)
    x = torch.rand(7, 3, 8, 8)
    outs = list(heavy_upscale_blocks(up, x, 2, batch_size=8))
    assert up.calls[:3] == [7, 4, 2] and max(up.calls[3:]) <= 2
    got = torch.cat([o for _, o in outs])
    assert torch.equal(got, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    with pytest.raises(torch.OutOfMemoryError):
        list(heavy_upscale_blocks(_Flaky(max_batch=0), x, 2, batch_size=4))
    with pytest.raises(InputError):
        list(run_batched(up, x, 0))


def test_interrupt_between_batches():
    up = _Flaky(max_batch=100)
    polls = iter([False, False, True])
    gen = run_batched(up, torch.rand(10, 3, 4, 4), 3, should_stop=lambda: next(polls))
    with pytest.raises(Interrupted):
        list(gen)
    assert up.calls == [3, 3]
