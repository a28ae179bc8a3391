"""DyPE: only the spatial RoPE axes change, the change fades to nothing at σ = 0, per-axis scales are honest for
non-square sizes, inactive settings leave the transformer output bit-identical, and the hook always unwinds."""

from __future__ import annotations

import math

import pytest
import torch

from zimage_core.errors import InputError
from zimage_core.guidance.dype import (METHODS, DyPE, DyPEDenoiser, DyPERopeEmbedder, axis_frequencies,
                                       base_frequencies, kappa, mscale)
from zimage_core.sample import transformer_velocity
from zimage_core.testing import tiny_transformer

SIGMAS = [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3, 0.0]


@pytest.fixture(scope="module")
def dit():
    return tiny_transformer(seed=3)


def image_ids(h_tokens: int, w_tokens: int, cap_len: int = 32) -> torch.Tensor:
    """Position ids as Z-Image builds them: image token (cap_len+1, h, w), plus a few caption tokens (1+i, 0, 0)."""
    hh, ww = torch.meshgrid(torch.arange(h_tokens), torch.arange(w_tokens), indexing="ij")
    img = torch.stack([torch.full_like(hh, cap_len + 1), hh, ww], -1).reshape(-1, 3)
    cap = torch.stack([torch.arange(1, 9), torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)], -1)
    return torch.cat([img, cap])


def axis_slices(embedder) -> list[slice]:
    out, off = [], 0
    for d in embedder.axes_dims:
        out.append(slice(off, off + d // 2))
        off += d // 2
    return out


@pytest.mark.parametrize("method", METHODS)
def test_frequency_change_decays_to_zero_at_sigma_zero(method):
    omega = base_frequencies(48, 256.0)
    devs = [float((axis_frequencies(method, 48, 256.0, 2.0, kappa(s), 64) / omega - 1).abs().max()) for s in SIGMAS]
    assert devs[0] > 0.2  # strong at pure noise
    assert all(a >= b for a, b in zip(devs, devs[1:]))  # fades monotonically with σ
    assert devs[-1] == 0.0
    assert torch.equal(axis_frequencies(method, 48, 256.0, 2.0, 0.0, 64), omega)  # exactly plain RoPE
    assert torch.equal(axis_frequencies(method, 48, 256.0, 1.0, 2.0, 64), omega)  # s ≤ 1 → unchanged
    # frequencies only ever slow down (interpolation), never speed up past plain RoPE
    assert bool((axis_frequencies(method, 48, 256.0, 2.0, 2.0, 64) <= omega + 1e-15).all())


def test_kappa_and_mscale_formulas():
    assert kappa(1.0) == 2.0 and kappa(0.0) == 0.0 and kappa(0.5, 2.0, 2.0) == pytest.approx(0.5)
    assert mscale(2.0, 2.0, 1.0) == pytest.approx(1 + 0.1 * math.log(2))
    assert mscale(2.0, 2.0, 0.0) == 1.0
    assert mscale(1.125, 2.0, 1.0) == pytest.approx(1 + 0.1 * math.log(math.sqrt(2.25)))
    assert mscale(0.5, 0.75, 1.0) == 1.0


def test_per_axis_scale_non_square_and_mirror():
    wide, tall = DyPE(2048, 1152), DyPE(1152, 2048)
    assert (wide.scale_w, wide.scale_h) == (2.0, 1.125)
    assert (tall.scale_w, tall.scale_h) == (1.125, 2.0)
    assert DyPE(2048, 1024).scale_h == 1.0 and DyPE(2048, 768).scale_h == 1.0  # an axis ≤ base stays plain


@pytest.mark.parametrize("method", METHODS)
def test_embedder_changes_only_spatial_axes_and_mirrors(dit, method):
    orig = dit.rope_embedder
    ids_wide = image_ids(72, 128)  # 1152 × 2048 px in 16-px tokens
    ids_tall = ids_wide[:, [0, 2, 1]]  # the same image transposed
    wide, tall = DyPE(2048, 1152, method=method), DyPE(1152, 2048, method=method)
    ref_wide = orig(ids_wide)
    sl = axis_slices(orig)
    for sigma in (1.0, 0.5):
        wide.set_sigma(sigma)
        tall.set_sigma(sigma)
        out_w = DyPERopeEmbedder(orig, wide)(ids_wide)
        out_t = DyPERopeEmbedder(orig, tall)(ids_tall)
        m = wide.current_mscale()
        assert m == tall.current_mscale()
        # axis 0: angles identical, only the shared amplitude sqrt(mscale)
        assert torch.allclose(out_w[:, sl[0]], ref_wide[:, sl[0]] * math.sqrt(m), atol=1e-6)
        # both spatial axes change, width more than height (2 vs 1.125)
        # frequency change per axis, read at the token (h=1, w=1) where angles are one step of ω (no wrapping)
        row = int(((ids_wide[:, 1] == 1) & (ids_wide[:, 2] == 1)).nonzero()[0])
        dh = (out_w[row, sl[1]].angle() / ref_wide[row, sl[1]].angle() - 1).abs().max()
        dw = (out_w[row, sl[2]].angle() / ref_wide[row, sl[2]].angle() - 1).abs().max()
        assert dw > dh > 0
        # mirror symmetry: the wide image's width axis is the tall image's height axis, bit for bit
        assert torch.equal(out_w[:, sl[2]], out_t[:, sl[1]])
        assert torch.equal(out_w[:, sl[1]], out_t[:, sl[2]])
    # σ = 0 → the original embedder's output, bit for bit
    wide.set_sigma(0.0)
    assert torch.equal(DyPERopeEmbedder(orig, wide)(ids_wide), ref_wide)
    # an axis at the base size keeps plain RoPE at every σ
    flat = DyPE(2048, 1024, method=method)
    flat.set_sigma(1.0)
    out = DyPERopeEmbedder(orig, flat)(ids_wide)
    assert torch.allclose(out[:, sl[1]], ref_wide[:, sl[1]] * math.sqrt(flat.current_mscale()), atol=1e-6)


def _velocity(dit, sigma: float, w: int = 128, h: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 16, h // 8, w // 8, generator=g)
    cap = [torch.randn(7, 32, generator=g)]
    return transformer_velocity(dit, lat, sigma, cap)


def test_transformer_output_identical_when_off_or_not_above_base(dit):
    plain = _velocity(dit, 0.9)
    for dype in (DyPE(128, 64, base=64, method=None), DyPE(128, 64, base=128), DyPE(64, 64, base=64)):
        assert not dype.active
        dype.set_sigma(0.9)
        with dype.applied(dit):
            assert dit.rope_embedder.__class__.__name__ == "RopeEmbedder"
            assert torch.equal(_velocity(dit, 0.9), plain)


def test_transformer_output_changes_at_high_sigma_and_not_at_zero(dit):
    dype = DyPE(128, 64, base=64)  # 2× wider than its (tiny) base: width scale 2, height 1
    assert dype.active and dype.scale_w == 2.0 and dype.scale_h == 1.0
    dype.set_sigma(1.0)
    with dype.applied(dit):
        changed = _velocity(dit, 1.0)
    assert (changed - _velocity(dit, 1.0)).abs().max() > 1e-4
    dype.set_sigma(0.0)
    with dype.applied(dit):
        at_zero = _velocity(dit, 0.0)
    assert torch.equal(at_zero, _velocity(dit, 0.0))


def test_context_manager_restores_even_on_error_and_nests(dit):
    orig = dit.rope_embedder
    dype = DyPE(2048, 2048)
    with pytest.raises(RuntimeError):
        with dype.applied(dit):
            assert isinstance(dit.rope_embedder, DyPERopeEmbedder)
            raise RuntimeError("boom")
    assert dit.rope_embedder is orig
    inner = DyPE(2048, 1152, method="ntk")
    with dype.applied(dit):
        outer_emb = dit.rope_embedder
        with inner.applied(dit):
            assert dit.rope_embedder.original is orig and dit.rope_embedder.dype is inner  # replaced, not stacked
        assert dit.rope_embedder is outer_emb
    assert dit.rope_embedder is orig


def test_denoiser_wrapper_sets_sigma_and_unwinds(dit):
    seen = []

    def inner(latents, sigma, step):
        seen.append((type(dit.rope_embedder).__name__, dype.sigma))
        return latents

    dype = DyPE(128, 64, base=64)
    den = DyPEDenoiser(inner, dit, dype)
    den(torch.zeros(1), 0.75, 3)
    assert seen == [("DyPERopeEmbedder", 0.75)]
    assert type(dit.rope_embedder).__name__ == "RopeEmbedder"


def test_bad_settings_are_named():
    with pytest.raises(InputError, match="vision_yarn"):
        DyPE(2048, 2048, method="pi")
    with pytest.raises(InputError, match="λs"):
        DyPE(2048, 2048, lambda_s=-1)
