"""Property tests: any image size, layout, dtype, batch and block settings → a valid result or a clear error.

Each property counts the cases it ran; the counts are asserted so a silently shrunk run cannot pass unnoticed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zimage_core.blocks import saliency_map, slice_blocks, stitch_blocks, upscale_chain
from zimage_core.errors import InputError
from zimage_core.images import as_image_batch
from zimage_core.sizes import check_size

CASES: dict[str, int] = {}
def fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@st.composite
def raw_images(draw, max_area: int = 40_000):
    h = draw(st.integers(1, 4096))
    w = draw(st.integers(1, max(1, min(4096, max_area // h))))
    b = draw(st.integers(1, 4))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4]))
    if channels is None:
        b = 1  # documented layouts are HW, HWC, BHWC: a bare (B, H, W) stack is ambiguous with HWC
    dtype = draw(st.sampled_from(["uint8", "uint16", "float32", "float64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (b, h, w) + ((channels,) if channels else ())
    if dtype == "uint8":
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
    elif dtype == "uint16":
        arr = rng.integers(0, 65536, shape, dtype=np.uint16)
    else:
        arr = rng.random(shape).astype(dtype)
        if draw(st.booleans()):
            arr.flat[rng.integers(0, arr.size, max(1, arr.size // 50))] = draw(st.sampled_from([np.nan, np.inf,
                                                                                              -np.inf]))
    if channels is None or (b == 1 and draw(st.booleans())):
        arr = arr[0]  # unbatched HW / HWC
        if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4):
            arr = arr[..., :1]
    return arr, (b, h, w)


@fast(150)
@given(raw_images())
def test_any_input_becomes_a_valid_batch(case):
    arr, (b, h, w) = case
    out = as_image_batch(arr)
    assert out.shape == (b, h, w, 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    _count("as_image_batch")


@fast(60)
@given(raw_images(max_area=20_000), st.integers(4, 160), st.integers(0, 170),
       st.sampled_from([1.0, 2.0, 0.5, 1.5, 3.0]))
def test_chain_gives_the_right_size_or_a_clear_error(case, block, overlap, scale):
    arr, (b, h, w) = case
    try:
        result = upscale_chain(arr, scale=scale, block=block, overlap=overlap, previews=False)
    except InputError as err:
        assert "overlap" in str(err) or "block" in str(err)
        _count("chain_error")
        return
    assert result.image.shape == (b, max(1, round(h * scale)), max(1, round(w * scale)), 3)
    assert torch.isfinite(result.image).all()
    _count("chain")


@fast(60)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(8, 128), st.integers(0, 64), st.integers(1, 3))
def test_slice_and_stitch_round_trip_covers_every_pixel(h, w, block, overlap, b):
    image = torch.rand(b, h, w, 3)
    try:
        blocks = slice_blocks(image, block, overlap)
    except InputError:
        assert overlap >= min(block, h, w) or overlap >= block
        _count("slice_error")
        return
    out = stitch_blocks(blocks.nchw(), blocks, 1)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
    _count("slice_stitch")


@fast(40)
@given(st.integers(1, 200), st.integers(1, 200))
def test_saliency_is_bounded_for_any_size(h, w):
    s = saliency_map(torch.rand(1, h, w, 3))
    assert s.shape == (1, h, w) and torch.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    _count("saliency")


@fast(300)
@given(st.integers(-100, 5000), st.integers(-100, 5000))
def test_size_rule(width, height):
    valid = all(64 <= v <= 4096 and v % 16 == 0 for v in (width, height))
    try:
        check_size(width, height)
        assert valid
    except InputError as err:
        assert not valid
        bad = width if not (64 <= width <= 4096 and width % 16 == 0) else height
        if 64 <= bad <= 4096:
            assert str((bad // 16) * 16) in str(err)
    _count("sizes")


def test_case_counts_were_recorded():
    """Runs last in this module: every property really ran its examples."""
    if not CASES:
        pytest.skip("run with the whole module")
    assert CASES.get("as_image_batch", 0) >= 100
    assert CASES.get("chain", 0) + CASES.get("chain_error", 0) >= 40
    assert CASES.get("slice_stitch", 0) + CASES.get("slice_error", 0) >= 40
    assert CASES.get("sizes", 0) >= 200
    print("hypothesis cases:", dict(sorted(CASES.items())), "total", sum(CASES.values()))
