"""Block slicer: every pixel covered, blocks equal their source pixels, edge blocks shifted inward, bad geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zimage_core.blocks import slice_blocks, slice_map
from zimage_core.errors import InputError


def _check(h: int, w: int, block: int, overlap: int, batch: int = 1):
    img = torch.rand(batch, h, w, 3)
    bl = slice_blocks(img, block, overlap)
    bs = bl.block
    assert bs == min(block, h, w)
    assert bl.tensor.shape == (len(bl), bs, bs, 3) and len(bl) == batch * len(bl.ys) * len(bl.xs)
    cover = np.zeros((batch, h, w), np.int32)
    for t, (b, y, x) in zip(bl.tensor, bl.positions.tolist()):
        assert 0 <= y and y + bs <= h and 0 <= x and x + bs <= w  # inside the image: no padding ever
        assert torch.equal(t, img[b, y:y + bs, x:x + bs])
        cover[b, y:y + bs, x:x + bs] += 1
    assert cover.min() >= 1
    # consecutive blocks advance by the stride, except the last one which is flush with the border
    for starts, length in ((bl.ys, h), (bl.xs, w)):
        assert starts[0] == 0 and starts[-1] + bs == length
        steps = np.diff(starts)
        assert (steps[:-1] == bs - bl.overlap).all() if len(steps) > 1 else True
        assert (steps > 0).all() and (steps <= bs - bl.overlap).all()
    return bl


@pytest.mark.parametrize("h,w", [(128, 128), (256, 384), (300, 301), (129, 97), (768, 512), (200, 1000)])
def test_every_pixel_covered(h, w):
    _check(h, w, 128, 32)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), block=st.integers(1, 40), frac=st.floats(0, 0.95),
       batch=st.integers(1, 2))
def test_every_pixel_covered_property(h, w, block, frac, batch):
    _check(h, w, block, int(frac * block), batch)


def test_image_smaller_than_block_is_clamped(caplog):
    with caplog.at_level("INFO"):
        bl = _check(40, 90, 128, 32)
    assert bl.block == 40 and bl.overlap == 10 and "larger than" in caplog.text
    one = _check(1, 1, 128, 32)
    assert len(one) == 1 and one.block == 1 and one.overlap == 0


def test_batch_order_and_slice_map():
    img = torch.rand(3, 150, 200, 3)
    bl = slice_blocks(img, 64, 16)
    per = bl.per_image
    assert bl.positions[:, 0].tolist() == [b for b in range(3) for _ in range(per)]
    maps = img[..., 0]
    assert torch.equal(slice_map(maps, bl), bl.tensor[..., 0])
    with pytest.raises(InputError):
        slice_map(maps[:, :10], bl)


@pytest.mark.parametrize("block,overlap", [(32, 32), (32, 40), (0, 0), (16, -1), (16.5, 2)])
def test_bad_geometry_is_a_clear_error(block, overlap):
    with pytest.raises(InputError, match="(?i)overlap|block"):
        slice_blocks(torch.rand(1, 64, 64, 3), block, overlap)


def test_odd_inputs_are_converted():
    gray16 = (np.random.default_rng(0).random((70, 50)) * 65535).astype(np.uint16)
    bl = slice_blocks(gray16, 32, 8)
    assert bl.tensor.shape[1:] == (32, 32, 3) and float(bl.tensor.max()) <= 1.0
    with pytest.raises(InputError):
        slice_blocks(np.zeros((0, 5, 3), np.float32))
