"""Flux AE wrapper: spaces, encode/decode round trip, tiled decode accuracy and seams."""

from __future__ import annotations

import pytest
import torch

from zimage_core import vae as V
from zimage_core.errors import InputError
from zimage_core.images import load_image
from zimage_core.testing import tiny_vae

REPO_IMAGE = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def setup():
    vae = tiny_vae(0)
    img = load_image(REPO_IMAGE)[:, :256, :256]
    raw = V.to_vae_space(V.encode(vae, img), vae)
    return vae, raw, V.decode_raw(vae, raw)


def _column_seam_ratio(im: torch.Tensor, cols: list[int]) -> float:
    g = (im[:, :, 1:] - im[:, :, :-1]).abs().mean(dim=(0, 1, 3))
    mask = torch.zeros_like(g, dtype=torch.bool)
    mask[cols] = True
    return (g[mask].mean() / g[~mask].mean()).item()


def test_spaces_round_trip(setup):
    vae, raw, _ = setup
    torch.testing.assert_close(V.to_vae_space(V.to_model_space(raw, vae), vae), raw)
    assert vae.config.scaling_factor == pytest.approx(0.3611) and vae.config.shift_factor == pytest.approx(0.1159)


def test_decode_gives_0_1_images(setup):
    _, _, plain = setup
    assert plain.shape == (1, 256, 256, 3) and plain.min() >= 0 and plain.max() <= 1


def test_one_tile_equals_plain_decode(setup):
    vae, raw, plain = setup
    torch.testing.assert_close(V.decode_raw_tiled(vae, raw, tile=32, overlap=8), plain)


def test_tiled_decode_is_close_and_seamless(setup):
    vae, raw, plain = setup
    tile, overlap = 24, 8
    tiled = V.decode_raw_tiled(vae, raw, tile=tile, overlap=overlap)
    assert tiled.shape == plain.shape
    # random tiny weights make GroupNorm/attention statistics tile-dependent; the blend must still stay close
    assert (tiled - plain).abs().mean().item() < 0.06
    starts = V._tile_starts(raw.shape[-1], tile, overlap)
    cols = sorted({s * 8 - 1 for s in starts[1:]} | {(s + tile) * 8 - 1 for s in starts[:-1]})
    seam, reference = _column_seam_ratio(tiled, cols), _column_seam_ratio(plain, cols)
    assert seam < 1.25 and abs(seam - reference) < 0.15  # boundary columns look like any other columns


def test_auto_tiling_and_progress(setup):
    vae, raw, _ = setup
    ticks = []
    V.decode(vae, V.to_model_space(raw, vae), tiled=True, tile=16, overlap=4, on_tile=lambda d, t: ticks.append((d, t)))
    assert ticks[-1][0] == ticks[-1][1] == len(ticks) == 9


def test_bad_tiling_and_sizes(setup):
    vae, raw, _ = setup
    with pytest.raises(InputError, match="overlap"):
        V.decode_raw_tiled(vae, raw, tile=16, overlap=16)
    with pytest.raises(InputError, match="multiple of 16"):
        V.encode(vae, torch.rand(1, 50, 64, 3))
