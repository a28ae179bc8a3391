"""Feather stitch: exact reconstruction at 1x, masks, exact normalisation, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zimage_core.blocks import FeatherStitcher, feather_mask, slice_blocks, stitch_blocks
from zimage_core.blocks.stitch import feather_taper
from zimage_core.errors import InputError


@pytest.mark.parametrize("shape,block,overlap", [
    ((1, 256, 256, 3), 128, 32), ((2, 300, 173, 3), 64, 16), ((1, 1, 1, 3), 128, 32), ((1, 37, 500, 3), 128, 32),
    ((1, 99, 99, 3), 20, 19),
])
def test_unmodified_blocks_reproduce_input_exactly(shape, block, overlap):
    img = torch.rand(shape)
    bl = slice_blocks(img, block, overlap)
    out = stitch_blocks(bl.tensor, bl, 1)
    assert out.shape == img.shape
    assert torch.equal(out, img)  # bit-exact, not just close


def test_blocks_added_in_any_order_and_chunks_give_the_same_image():
    img = torch.rand(1, 200, 260, 3)
    bl = slice_blocks(img, 64, 24)
    st = FeatherStitcher(bl, 1)
    order = torch.randperm(len(bl), generator=torch.Generator().manual_seed(0))
    for chunk in order.split(5):
        st.add(bl.nchw()[chunk], bl.positions[chunk])
    assert torch.equal(st.result(), img)


def test_exact_weighted_mean_of_different_blocks():
    """With blocks that disagree the result is Σ w·x / Σ w, computed independently in numpy float64."""
    h = w = 100
    img = torch.zeros(1, h, w, 3)
    bl = slice_blocks(img, 40, 16)
    rng = np.random.default_rng(0)
    values = rng.random(len(bl))
    up = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 80, 80).contiguous()
    out = stitch_blocks(up, bl, 2).numpy()
    num = np.zeros((2 * h, 2 * w))
    den = np.zeros((2 * h, 2 * w))
    for v, (_, y, x) in zip(values, bl.positions.tolist()):
        m = feather_mask(80, 32, 2 * y, 2 * x, 2 * h, 2 * w, dtype=torch.float64).numpy()
        num[2 * y:2 * y + 80, 2 * x:2 * x + 80] += m * v
        den[2 * y:2 * y + 80, 2 * x:2 * x + 80] += m
    np.testing.assert_allclose(out[0, ..., 0], num / den, atol=1e-6)


def test_mask_tapers_only_inside_the_overlap_and_is_positive():
    t = feather_taper(128, 32, True, True, dtype=torch.float64)
    assert (t > 0).all() and (t[32:96] == 1).all() and (t[:32] < 1).all() and (t[96:] < 1).all()
    assert bool((t[1:32] > t[:31]).all())  # Gaussian rise, monotone
    edge = feather_taper(128, 32, False, True)
    assert (edge[:96] == 1).all()  # image border side: no taper, border pixels exact
    m = feather_mask(64, 16, 0, 0, 64, 64)
    assert (m == 1).all()  # a block covering the whole image is not tapered


def test_output_size_and_errors():
    img = torch.rand(2, 50, 70, 3)
    bl = slice_blocks(img, 32, 8)
    up = torch.nn.functional.interpolate(bl.nchw(), scale_factor=3, mode="nearest")
    out = stitch_blocks(up, bl, 3)
    assert out.shape == (2, 150, 210, 3)
    with pytest.raises(InputError):
        stitch_blocks(up, bl, 2)
    with pytest.raises(InputError):
        FeatherStitcher(bl, 1.5)
    st = FeatherStitcher(bl, 1)
    st.add(bl.nchw()[:2], bl.positions[:2])
    with pytest.raises(RuntimeError, match="not covered"):
        st.result()


@pytest.mark.parametrize("shape,block,overlap,scale", [
    ((1, 200, 260, 3), 64, 16, 4), ((2, 77, 130, 3), 32, 8, 3), ((1, 30, 400, 3), 128, 32, 2), ((1, 1, 1, 3), 8, 2, 4),
])
def test_fused_light_path_equals_per_block_lanczos_plus_feather_stitch(shape, block, overlap, scale):
    """light.feather_resample (one banded pass) is the same math as upscaling every block and stitching them."""
    from zimage_core.blocks.light import feather_resample
    from zimage_core.blocks.resample import lanczos_resize_nchw

    img = torch.rand(shape) * 0.5 + 0.25  # no LANCZOS overshoot past 0-1, so clipping plays no part
    bl = slice_blocks(img, block, overlap)
    bo = bl.block * scale
    per_block = stitch_blocks(lanczos_resize_nchw(bl.nchw(), (bo, bo)), bl, scale)
    np.testing.assert_allclose(feather_resample(img, bl, scale).numpy(), per_block.numpy(), atol=2e-6)


def test_heavy_blocks_blended_into_the_fused_image_equal_a_full_stitch():
    from zimage_core.blocks.light import blend_blocks_into, feather_resample
    from zimage_core.blocks.resample import lanczos_resize_nchw

    img = torch.rand(2, 120, 150, 3) * 0.5 + 0.25
    bl = slice_blocks(img, 48, 12)
    light = lanczos_resize_nchw(bl.nchw(), (96, 96))
    pick = torch.tensor([0, 3, 4, len(bl) - 1])
    heavy = torch.rand(len(pick), 3, 96, 96)
    fused = feather_resample(img, bl, 2)
    blend_blocks_into(fused, heavy, light[pick], bl.positions[pick], bl, 2)
    mixed = light.clone()
    mixed[pick] = heavy
    np.testing.assert_allclose(fused.numpy(), stitch_blocks(mixed, bl, 2).numpy(), atol=3e-6)
