"""Composition: everything off is bit-identical to the plain denoiser; CFG wins over NAG (with a note); SLG composes
with CFG and with NAG as documented; the diversity hook and DyPE act on every forward, NAG passes included."""

from __future__ import annotations

import torch
from guidance_fixtures import conditioning, latents, run

from zimage_core.guidance import GuidanceOptions, guided_denoiser, nag_velocity, skip_layers
from zimage_core.guidance.cfg import cfg_combine, cfg_velocities
from zimage_core.guidance.dype import DyPE
from zimage_core.sample import TransformerDenoiser, transformer_velocity

LAYERS = (1, 2)
NAG = dict(nag_scale=3.0, nag_tau=2.5, nag_alpha=0.25)


def test_everything_off_is_bit_identical_to_the_plain_denoiser(dit):
    cond = conditioning(12, 40)
    plain = run(dit, cond, steps=3)
    assert torch.equal(run(dit, cond, TransformerDenoiser, steps=3), plain)
    assert torch.equal(run(dit, cond, guided_denoiser(), steps=3), plain)
    assert torch.equal(run(dit, cond, guided_denoiser(GuidanceOptions(negative=conditioning(7, seed=1))), steps=3),
                       plain)
    # the multiple-images-per-prompt path lines a single negative up with every image
    assert torch.equal(run(dit, cond, guided_denoiser(GuidanceOptions(negative=conditioning(7))), steps=1,
                           images_per_prompt=2), run(dit, cond, steps=1, images_per_prompt=2))


def test_cfg_wins_over_nag_with_a_note(dit):
    cond, neg, x = conditioning(12), conditioning(9, seed=1), latents(1)
    both = guided_denoiser(GuidanceOptions(negative=neg, cfg_scale=2.0, **NAG))(dit, cond)
    cfg = guided_denoiser(GuidanceOptions(negative=neg, cfg_scale=2.0))(dit, cond)
    with torch.no_grad():
        assert torch.equal(both(x, 0.9, 0), cfg(x, 0.9, 0))
    assert both.nag_steps == [] and any("ignored while CFG" in n for n in both.notes)


def test_slg_on_top_of_cfg_and_of_nag(dit):
    cond, neg, x = conditioning(12), conditioning(9, seed=1), latents(1)
    with torch.no_grad():
        # CFG: v = cfg(pos, neg) + s·(v_pos − v_pos_skip); the skip pass is positive-only
        v = guided_denoiser(GuidanceOptions(negative=neg, cfg_scale=2.0, slg_scale=1.5, slg_layers=LAYERS))(
            dit, cond)(x, 0.9, 2)
        v_pos, v_neg = cfg_velocities(dit, x, 0.9, cond.embeds, neg.embeds)
        with skip_layers(dit, LAYERS):
            v_skip = transformer_velocity(dit, x, 0.9, cond.embeds)
        torch.testing.assert_close(v, cfg_combine(v_pos, v_neg, 2.0) + 1.5 * (v_pos - v_skip), atol=1e-6, rtol=0)
        # NAG: v = v_nag + s·(v_nag − v_nag_skip); the skip pass is itself a NAG forward
        v = guided_denoiser(GuidanceOptions(negative=neg, slg_scale=1.5, slg_layers=LAYERS, **NAG))(dit, cond)(
            x, 0.9, 2)
        kw = dict(scale=3.0, tau=2.5, alpha=0.25)
        v_nag = nag_velocity(dit, x, 0.9, cond.embeds, neg.embeds, **kw)
        with skip_layers(dit, LAYERS):
            v_nag_skip = nag_velocity(dit, x, 0.9, cond.embeds, neg.embeds, **kw)
        torch.testing.assert_close(v, v_nag + 1.5 * (v_nag - v_nag_skip), atol=1e-6, rtol=0)


def test_diversity_hook_sees_positive_captions_every_step(dit):
    cond, neg = conditioning(12, 40), conditioning(9, seed=1)
    seen = []

    def identity(embeds, sigma, step):
        seen.append(([e.shape[0] for e in embeds], round(sigma, 4), step))
        return embeds

    def jitter(embeds, sigma, step):
        return [e + 0.5 * sigma * torch.randn(e.shape, generator=torch.Generator().manual_seed(step)) for e in embeds]

    nag = dict(negative=neg, **NAG)
    base = run(dit, cond, guided_denoiser(GuidanceOptions(**nag)), steps=2)
    assert torch.equal(run(dit, cond, guided_denoiser(GuidanceOptions(diversity_fn=identity, **nag)), steps=2), base)
    assert seen == [([12, 40], 1.0, 0), ([12, 40], 0.75, 1)]  # positives only (negative is 9 tokens), per step
    moved = run(dit, cond, guided_denoiser(GuidanceOptions(diversity_fn=jitter, **nag)), steps=2)
    assert (moved - base).abs().max() > 1e-3


def test_dype_is_set_per_step_and_applied_to_every_forward_including_nag(dit):
    cond, neg, x = conditioning(12), conditioning(9, seed=1), latents(1, 8, 8)
    dype = DyPE(64, 64, base=32, patch_px=16)  # 2× the (tiny) base size, so DyPE is active
    assert dype.active
    original = dit.rope_embedder
    opts = GuidanceOptions(negative=neg, slg_scale=1.0, slg_layers=LAYERS, dype=dype, **NAG)
    with torch.no_grad():
        v = guided_denoiser(opts)(dit, cond)(x, 0.9, 2)
        assert dype.sigma == 0.9 and dit.rope_embedder is original  # σ set, embedder restored
        kw = dict(scale=3.0, tau=2.5, alpha=0.25)
        with dype.applied(dit):
            v_nag = nag_velocity(dit, x, 0.9, cond.embeds, neg.embeds, **kw)
            with skip_layers(dit, LAYERS):
                v_skip = nag_velocity(dit, x, 0.9, cond.embeds, neg.embeds, **kw)
        torch.testing.assert_close(v, v_nag + (v_nag - v_skip), atol=1e-6, rtol=0)
        without = guided_denoiser(GuidanceOptions(negative=neg, slg_scale=1.0, slg_layers=LAYERS, **NAG))(
            dit, cond)(x, 0.9, 2)
    assert (v - without).abs().max() > 1e-4  # DyPE changed the NAG passes
