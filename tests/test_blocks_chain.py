"""The whole chain: no seams (measured), sizes for any scale and input, heavy models, progress, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import ndimage

from zimage_core.blocks import (STAGES, lanczos_resize, lanczos_upscale_blocks, upscale_chain)
from zimage_core.errors import InputError, Interrupted, ModelFileError

import blocks_models


def scene(h: int, w: int, seed: int = 0, waves: bool = True, batch: int = 1) -> torch.Tensor:
    """Smooth natural-ish content: blurred colour noise (+ optional sinusoids)."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((batch, h, w, 3)), sigma=(0, 2, 2, 0))
    if waves:
        yy, xx = np.mgrid[0:h, 0:w]
        img += 0.3 * (np.sin(xx / 7.0) * np.cos(yy / 11.0))[None, ..., None]
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img.astype(np.float32))


def seam_ratio(out: torch.Tensor, starts: list[int], block: int, scale: int, length: int) -> float:
    """Mean squared step across block-boundary rows divided by the mean over all rows (1 = no seam)."""
    e = ((out[0, 1:] - out[0, :-1]) ** 2).mean(dim=(1, 2))
    rows = sorted({scale * s - 1 for s in starts if s > 0} | {scale * (s + block) - 1 for s in starts
                                                               if s + block < length})
    return float(e[rows].mean() / e.mean())


def hard_paste(upscaled: torch.Tensor, blocks, scale: int) -> torch.Tensor:
    h, w = blocks.source_size
    out = torch.zeros(1, h * scale, w * scale, 3)
    bo = blocks.block * scale
    for u, (_, y, x) in zip(upscaled, blocks.positions.tolist()):
        out[0, scale * y:scale * y + bo, scale * x:scale * x + bo] = u.permute(1, 2, 0)
    return out


class OffsetUpscaler:
    """A heavy upscaler with a per-block colour shift (what makes tiled upscaling show seams)."""

    name, scale = "lanczos+offset", 4

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        off = (x.mean(dim=(1, 2, 3), keepdim=True) * 1000 % 1 - 0.5) * 0.06
        return (lanczos_upscale_blocks(x, 4) + off).clamp(0, 1)


@pytest.mark.parametrize("waves", [False, True])
def test_lanczos_route_has_no_seam(waves):
    img = scene(192, 192, waves=waves)
    r = upscale_chain(img, scale=4, block=48, overlap=12)
    bl = r.blocks
    assert r.image.shape == (1, 768, 768, 3) and len(bl.ys) >= 4
    rows = seam_ratio(r.image, bl.ys, bl.block, 4, 192)
    cols = seam_ratio(r.image.transpose(1, 2), bl.xs, bl.block, 4, 192)
    whole = lanczos_resize(img, (768, 768))  # one resample of the whole image: seam-free by construction
    ref_rows = seam_ratio(whole, bl.ys, bl.block, 4, 192)
    ref_cols = seam_ratio(whole.transpose(1, 2), bl.xs, bl.block, 4, 192)
    assert abs(rows - ref_rows) < 0.05 and abs(cols - ref_cols) < 0.05
    if not waves:  # stationary content: boundary rows look like any other row
        assert 0.75 < rows < 1.33 and 0.75 < cols < 1.33
    assert float((r.image - whole).abs().max()) < 2e-3
    # the metric does see seams: the same blocks pasted without feathering
    hard = hard_paste(lanczos_upscale_blocks(bl.nchw(), 4), bl, 4)
    assert seam_ratio(hard, bl.ys, bl.block, 4, 192) > ref_rows + 0.5


def test_feather_hides_per_block_colour_shifts():
    img = scene(192, 192, waves=False)
    r = upscale_chain(img, scale=4, block=48, overlap=12, heavy=OffsetUpscaler(), heavy_ratio=1.0)
    bl = r.blocks
    assert r.heavy.all() and r.heavy_name == "lanczos+offset"
    hard = hard_paste(OffsetUpscaler()(bl.nchw()), bl, 4)
    feather = seam_ratio(r.image, bl.ys, bl.block, 4, 192)
    assert seam_ratio(hard, bl.ys, bl.block, 4, 192) > 3.0
    assert feather < 1.5


@pytest.mark.parametrize("shape,scale,expected", [
    ((1, 64, 96, 3), 4, (256, 384)), ((2, 50, 70, 3), 2.5, (125, 175)), ((1, 40, 40, 3), 1, (40, 40)),
    ((1, 33, 47, 3), 0.5, (16, 24)), ((1, 1, 1, 3), 4, (4, 4)), ((3, 20, 150, 3), 3, (60, 450)),
])
def test_output_size_is_scale_times_input(shape, scale, expected):
    img = torch.rand(shape)
    r = upscale_chain(img, scale=scale, block=32, overlap=8)
    assert r.image.shape == (shape[0], *expected, 3)
    assert torch.isfinite(r.image).all() and float(r.image.min()) >= 0 and float(r.image.max()) <= 1
    assert r.saliency.shape == shape[:3]
    # no heavy model: no heavy blocks were stitched, so that stage is absent rather than 0.0
    assert set(r.timings) == set(STAGES) - {"stitching"} and all(t >= 0 for t in r.timings.values())
    assert r.previews["saliency"].shape == (*shape[:3], 3) and r.previews["classes"].shape == (*shape[:3], 3)


def test_odd_inputs():
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65535, (40, 30), dtype=np.uint16)
    rgba = rng.integers(0, 256, (30, 20, 4), dtype=np.uint8)
    nan = torch.rand(1, 24, 24, 3)
    nan[0, 5, 5, 1] = float("nan")
    for img, size in ((gray16, (160, 120)), (rgba, (120, 80)), (nan, (96, 96))):
        r = upscale_chain(img, scale=4, block=128, overlap=32)  # block larger than every image here
        assert r.image.shape == (1, *size, 3) and torch.isfinite(r.image).all()
    g = upscale_chain(gray16, scale=2).image
    assert torch.allclose(g[..., 0], g[..., 1]) and torch.allclose(g[..., 1], g[..., 2])  # gray stays gray


@pytest.mark.parametrize("kwargs", [dict(block=32, overlap=32), dict(block=32, overlap=50), dict(scale=0),
                                    dict(scale=-2), dict(scale=float("nan")), dict(scale=64), dict(scale="big"),
                                    dict(heavy_ratio=2.0), dict(batch_size=0, heavy=OffsetUpscaler())])
def test_bad_arguments_are_clear_errors(kwargs):
    with pytest.raises(InputError):
        upscale_chain(torch.rand(1, 64, 64, 3), **kwargs)


def test_empty_image_is_refused():
    with pytest.raises(InputError, match="empty"):
        upscale_chain(np.zeros((0, 10, 3), np.float32))


def test_no_heavy_model_says_so_and_runs_light(caplog):
    with caplog.at_level(logging.INFO):
        r = upscale_chain(scene(96, 96), block=32, overlap=8)
    assert "No heavy upscaler" in caplog.text
    assert not r.heavy.any() and r.heavy_name is None
    assert r.counts()["light"] == len(r.blocks)


def test_batch_matches_single_images():
    imgs = scene(80, 100, batch=3)
    r = upscale_chain(imgs, scale=2, block=32, overlap=8)
    for b in range(3):
        single = upscale_chain(imgs[b:b + 1], scale=2, block=32, overlap=8)
        assert torch.allclose(r.image[b:b + 1], single.image, atol=1e-6)
        assert torch.equal(r.labels[b * r.blocks.per_image:(b + 1) * r.blocks.per_image], single.labels)


def test_progress_and_interrupt():
    seen = []
    r = upscale_chain(scene(128, 128), block=32, overlap=8, heavy=OffsetUpscaler(), batch_size=3,
                      on_progress=lambda d, t: seen.append((d, t)))
    total = len(r.blocks)
    assert seen[-1] == (total, total) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Interrupted):
        upscale_chain(scene(128, 128), block=32, overlap=8, heavy=OffsetUpscaler(), heavy_ratio=1.0, batch_size=2,
                      should_stop=stop)


def test_heavy_route_with_tiny_esrgan_file():
    path = blocks_models.esrgan_file()
    img = scene(48, 64, batch=2)
    r = upscale_chain(img, scale=4, block=24, overlap=6, heavy=path, heavy_ratio=0.5, batch_size=4)
    assert r.image.shape == (2, 192, 256, 3) and torch.isfinite(r.image).all()
    assert int(r.heavy.sum()) >= 1 and not r.heavy.all()
    assert r.heavy_name == path.name
    light = upscale_chain(img, scale=4, block=24, overlap=6)
    # heavy blocks changed the image where they sit; pixels no heavy block covers are exactly the light result
    diff = (r.image - light.image).abs().amax(dim=-1)
    covered = torch.zeros_like(diff, dtype=torch.bool)
    for k in range(len(r.blocks)):
        b, y, x = r.blocks.positions[k].tolist()
        if r.heavy[k]:
            assert float(diff[b, 4 * y:4 * (y + 24), 4 * x:4 * (x + 24)].max()) > 1e-3
            covered[b, 4 * y:4 * (y + 24), 4 * x:4 * (x + 24)] = True
    assert (~covered).any() and float(diff[~covered].max()) == 0.0
    r3 = upscale_chain(img[:1], scale=3, block=24, overlap=6, heavy=path)  # model 4x, asked 3x
    assert r3.image.shape == (1, 144, 192, 3)


def test_heavy_route_with_tiny_sd_x4():
    r = upscale_chain(scene(32, 48), scale=4, block=32, overlap=16, heavy=blocks_models.sd_x4_folder(),
                      heavy_ratio=1.0, batch_size=8,
                      heavy_options=dict(steps=2, noise_level=20, guidance_scale=1.0, prompt=""))
    assert r.image.shape == (1, 128, 192, 3) and torch.isfinite(r.image).all()
    assert len(r.blocks) == 2 and r.heavy.all() and "SD x4" in r.heavy_name


def test_corrupt_heavy_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "4x-UltraSharp.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="4x-UltraSharp.pth"):
        upscale_chain(torch.rand(1, 32, 32, 3), heavy=bad)
