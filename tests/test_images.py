"""The one image convention: anything in → (B, H, W, 3) float32 RGB 0-1, values scaled by their bit depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zimage_core.errors import InputError
from zimage_core.images import as_image_batch


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_8_bit_values_in_any_integer_dtype(dtype):
    arr = np.array([[0, 51, 255]], dtype=dtype)
    torch.testing.assert_close(as_image_batch(arr)[0, 0, :, 0], torch.tensor([0.0, 0.2, 1.0]))
    torch.testing.assert_close(as_image_batch(torch.from_numpy(arr))[0, 0, :, 0], torch.tensor([0.0, 0.2, 1.0]))


def test_16_bit_values():
    arr = np.array([[0, 13107, 65535]], dtype=np.uint16)
    torch.testing.assert_close(as_image_batch(arr)[0, 0, :, 0], torch.tensor([0.0, 0.2, 1.0]))
    pil16 = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    torch.testing.assert_close(as_image_batch(pil16)[0, 0, :, 0], torch.tensor([0.0, 1.0]))


def test_rgba_is_composited_over_black_and_gray_expanded():
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)
    rgba[0, 1] = (255, 255, 255, 0)
    out = as_image_batch(rgba)
    assert out.shape == (1, 1, 2, 3) and out[0, 0, 0].tolist() == [1, 1, 1] and out[0, 0, 1].tolist() == [0, 0, 0]
    assert as_image_batch(np.ones((3, 5), dtype=np.float32)).shape == (1, 3, 5, 3)


def test_bad_images_are_refused():
    with pytest.raises(InputError, match="empty"):
        as_image_batch(np.zeros((0, 4, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="channels"):
        as_image_batch(np.zeros((1, 4, 4, 7), dtype=np.uint8))
    with pytest.raises(InputError, match="Expected an image"):
        as_image_batch("picture.png")
