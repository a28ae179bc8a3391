"""Saliency map: formula checked against an independent scipy computation, range, constant and odd inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from zimage_core.blocks import saliency_heatmap, saliency_map, saliency_terms


def _norm(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 1e-12 else np.zeros_like(x)


def reference_saliency(rgb: np.ndarray) -> np.ndarray:
    """The saliency formula (0.4·edges + 0.4·local contrast + 0.2·colour variance, blurred) written with
    scipy.ndimage (float64), one image (H, W, 3) in 0-1."""
    rgb = rgb.astype(np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    e = np.hypot(ndimage.sobel(gray, axis=1, mode="reflect"), ndimage.sobel(gray, axis=0, mode="reflect"))
    lap = np.abs(ndimage.laplace(gray, mode="reflect"))
    c = rgb.var(axis=-1)
    s = 0.4 * _norm(e) + 0.4 * _norm(lap) + 0.2 * _norm(c)
    return _norm(ndimage.gaussian_filter(s, sigma=2.0, mode="reflect", truncate=4.0))


@pytest.mark.parametrize("shape", [(2, 23, 31), (1, 40, 40), (1, 3, 50), (1, 7, 5)])
def test_matches_independent_scipy_formula(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.random((*shape, 3)).astype(np.float32)
    s = saliency_map(torch.from_numpy(img)).numpy()
    assert s.shape == shape
    for b in range(shape[0]):
        np.testing.assert_allclose(s[b], reference_saliency(img[b]), atol=2e-6)


def test_structured_image_terms_and_weights():
    """A colour patch and an edge: each term alone is what its formula says, and the weights are 0.4/0.4/0.2."""
    img = np.zeros((32, 32, 3), np.float32)
    img[:, 16:] = 0.8  # vertical gray edge: gradient and Laplacian, no colour
    img[4:10, 4:10] = [1.0, 0.0, 0.0]  # red patch: colour variance
    t = saliency_terms(torch.from_numpy(img))
    assert t["colour"][0, 6, 6] == pytest.approx(1.0)
    assert t["colour"][0, 20, 24] == 0.0
    assert float(t["edges"][0, 20, 15:17].min()) > 0.5 and float(t["edges"][0, 20, 25]) < 1e-6
    s_unblurred = saliency_map(torch.from_numpy(img), sigma=0).numpy()[0]
    ref = 0.4 * t["edges"] + 0.4 * t["contrast"] + 0.2 * t["colour"]
    np.testing.assert_allclose(s_unblurred, _norm(ref[0].numpy()), atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_constant_image_gives_zeros_not_nan(value):
    s = saliency_map(torch.full((2, 20, 30, 3), value))
    assert torch.isfinite(s).all() and (s == 0).all()


def test_range_and_odd_inputs():
    rng = np.random.default_rng(1)
    for img in (
        rng.integers(0, 65535, (19, 21), dtype=np.uint16),  # 16-bit grayscale
        rng.integers(0, 255, (12, 9, 4), dtype=np.uint8),  # RGBA
        np.array([[[0.5, 0.2, 0.9]]], np.float32),  # 1x1
    ):
        s = saliency_map(img)
        assert s.shape == (1, *img.shape[:2])
        assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0 and torch.isfinite(s).all()
    nan_img = torch.rand(1, 16, 16, 3)
    nan_img[0, 3, 3] = float("nan")
    assert torch.isfinite(saliency_map(nan_img)).all()


def test_heatmap_is_an_image_and_monotone_in_brightness():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 64).expand(1, 4, 64)
    hm = saliency_heatmap(ramp)
    assert hm.shape == (1, 4, 64, 3) and float(hm.min()) >= 0 and float(hm.max()) <= 1
    brightness = hm[0, 0].sum(-1)
    assert bool((brightness[1:] >= brightness[:-1] - 1e-6).all())
    assert saliency_heatmap(ramp[0]).shape == (1, 4, 64, 3)
