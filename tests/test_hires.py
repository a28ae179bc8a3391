"""Multi-pass hi-res end to end on the tiny bundle: sizes, DyPE live in the refine pass (and only there), one
continuous progress count, latent and pixel upscales, and bad pass lists named."""

from __future__ import annotations

import pytest
import torch

from zimage_core.errors import InputError
from zimage_core.guidance.settings import DypeSettings
from zimage_core.hires import bislerp, generate_hires, parse_passes, plan_sizes, upscale_latents
from zimage_core.sample import TransformerDenoiser


class RecordingFactory:
    """A real (plain) denoiser per pass that notes which RoPE embedder the transformer has at each evaluation."""

    def __init__(self):
        self.calls: list[tuple[int, int, str, float]] = []

    def __call__(self, width: int, height: int):
        def factory(transformer, cond):
            plain = TransformerDenoiser(transformer, cond)

            def denoiser(latents, sigma, step):
                emb = transformer.rope_embedder
                scale_w = emb.dype.scale_w if hasattr(emb, "dype") else 1.0
                self.calls.append((width, height, type(emb).__name__, scale_w))
                return plain(latents, sigma, step)

            return denoiser

        return factory


def test_latent_hires_end_to_end_with_dype_in_the_refine_pass(tiny_bundle):
    rec, steps_seen = RecordingFactory(), []
    r = generate_hires(tiny_bundle, "a cat on a chair", width=64, height=64, steps=2, seed=4,
                       passes=[{"scale": 2.0, "steps": 4, "strength": 0.5}],
                       dype=DypeSettings(method="vision_yarn", base=64), make_denoiser_for=rec,
                       callback=lambda info: steps_seen.append((info.step, info.total)))
    assert r.images.shape == (1, 128, 128, 3) and r.latents.shape == (1, 16, 16, 16)
    assert 0.0 <= float(r.images.min()) and float(r.images.max()) <= 1.0
    # base pass (64² = the DyPE base here): plain RoPE; refine (128²): DyPE with width scale 2
    assert rec.calls == [(64, 64, "RopeEmbedder", 1.0)] * 2 + [(128, 128, "DyPERopeEmbedder", 2.0)] * 2
    assert type(tiny_bundle.transformer.rope_embedder).__name__ == "RopeEmbedder"  # restored afterwards
    assert [s["dype"] for s in r.passes] == [False, True]
    assert [s["evaluations"] for s in r.passes] == [2, 2]
    assert steps_seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for key in ("text_encode", "base_denoise", "pass1_upscale", "pass1_denoise", "decode", "total"):
        assert key in r.timings


def test_dype_acts_in_the_refine_pass_and_off_matches_inactive(tiny_bundle):
    kw = dict(width=64, height=64, steps=1, seed=7, passes=[{"scale": 1.25, "steps": 2, "strength": 1.0}])
    off = generate_hires(tiny_bundle, "a house", dype=None, **kw).images
    # 128² is below 1024²
    inactive = generate_hires(tiny_bundle, "a house", dype=DypeSettings(method="vision_yarn"), **kw).images
    on = generate_hires(tiny_bundle, "a house", dype=DypeSettings(method="vision_yarn", base=64), **kw).images
    assert torch.equal(off, inactive)
    assert (on - off).abs().max() > 1e-3


def test_two_pixel_passes_non_square_and_batch(tiny_bundle):
    r = generate_hires(tiny_bundle, ["a"], width=80, height=64, steps=1, seed=1, images_per_prompt=2,
                       upscale="pixel", dype=DypeSettings(method="vision_yarn", base=64),
                       passes=[{"scale": 1.5, "steps": 2, "strength": 0.5}, {"scale": 1.25, "steps": 2,
                                                                              "strength": 0.5}])
    assert [(s["width"], s["height"]) for s in r.passes] == [(80, 64), (128, 96), (160, 128)]
    assert r.images.shape == (2, 128, 160, 3) and r.seeds == [1, 2]
    assert not torch.allclose(r.images[0], r.images[1])  # images per prompt stay distinct through the passes


def test_latent_resamplers():
    x = torch.randn(2, 16, 6, 5)
    for mode in ("bicubic", "bilinear", "bislerp"):
        assert upscale_latents(x, 80, 96, mode).shape == (2, 16, 12, 10)
    assert torch.allclose(bislerp(x, 6, 5), x, atol=1e-5)  # same size → unchanged
    const = torch.ones(1, 16, 1, 1) * torch.randn(1, 16, 1, 1)
    assert torch.allclose(bislerp(const.expand(1, 16, 3, 3), 7, 7), const.expand(1, 16, 7, 7), atol=1e-5)
    # orthogonal neighbours of norm 2: bilinear shrinks the in-between pixels toward 2·sqrt(1/2), bislerp keeps 2
    pair = torch.zeros(1, 16, 1, 2)
    pair[0, 0, 0, 0], pair[0, 1, 0, 1] = 2.0, 2.0
    mid_lin = torch.nn.functional.interpolate(pair, size=(1, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(bislerp(pair, 1, 4).norm(dim=1), torch.full((1, 1, 4), 2.0), atol=1e-5)
    assert mid_lin.norm(dim=1).min() < 1.6


def test_bad_passes_are_named():
    with pytest.raises(InputError, match="pass 2: scale"):
        parse_passes([{"scale": 2}, {"scale": 0}])
    with pytest.raises(InputError, match="unknown keys"):
        parse_passes([{"scale": 2, "denoise": 0.5}])
    with pytest.raises(InputError, match="strength"):
        parse_passes([{"strength": 0}])
    with pytest.raises(InputError, match="pass 1 .*4160"):
        plan_sizes(2080, 1024, parse_passes([{"scale": 2}]))
    assert plan_sizes(1008, 608, parse_passes([{"scale": 1.5}, {"scale": 1.1}])) == [(1008, 608), (1504, 912),
                                                                                      (1648, 1008)]
