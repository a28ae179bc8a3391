"""Faults: interrupts leave the process healthy, OOM falls back to tiles, outputs are written atomically."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from zimage_core import vae as V
from zimage_core.blocks import upscale_chain
from zimage_core.errors import Interrupted
from zimage_core.images import save_image_atomic
from zimage_core.testing import tiny_vae


def test_interrupt_in_the_block_route_then_next_run_is_correct():
    image = torch.rand(1, 300, 260, 3)
    polls = []

    def stop_on_second_poll() -> bool:
        polls.append(1)
        return len(polls) >= 2

    with pytest.raises(Interrupted):
        upscale_chain(image, scale=2, block=64, overlap=16, should_stop=stop_on_second_poll)
    a = upscale_chain(image, scale=2, block=64, overlap=16).image
    b = upscale_chain(image, scale=2, block=64, overlap=16).image
    assert a.shape == (1, 600, 520, 3) and torch.equal(a, b)


def test_vae_out_of_memory_falls_back_to_tiled_decode(caplog):
    vae = tiny_vae(0)
    latents = torch.randn(1, 16, 24, 24) * 0.5
    plain = V.decode(vae, latents, tiled=False)
    calls = []

    def fake_oom(module, args):
        calls.append(args[0].shape[-1])
        if args[0].shape[-1] > 16:  # only the full-size decode "runs out of memory"
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = vae.decoder.register_forward_pre_hook(fake_oom)
    try:
        with caplog.at_level(logging.WARNING):
            out = V.decode(vae, latents, tiled=False, tile=16, overlap=8)
    finally:
        handle.remove()
    assert "retrying with tiled decode" in caplog.text
    assert calls[0] == 24 and all(c <= 16 for c in calls[1:]) and len(calls) > 2
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert (out - plain).abs().mean() < 0.15


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.png"
    image = Image.new("RGB", (8, 8), "red")
    save_image_atomic(image, target)
    before = target.read_bytes()
    assert target.stat().st_mode & 0o044  # readable by others like any normal file (not mkstemp's 0600)
    with pytest.raises(Exception):
        save_image_atomic(Image.new("RGB", (8, 8), "blue"), target, format="PNG", compress_level="bad")
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp files left behind
