"""Classic CFG: scale 0 is the plain sampler, one batched forward per guided step, the truncation and renorm rules,
and equality with diffusers' ZImagePipeline under the same guidance settings."""

from __future__ import annotations

import pytest
import torch
from guidance_fixtures import conditioning, run

from zimage_core.errors import InputError
from zimage_core.guidance import GuidanceOptions, cfg_combine, cfg_scale_at, guided_denoiser
from zimage_core.sample import make_noise, sample
from zimage_core.schedule import flow_sigmas


def test_scale_zero_is_exactly_the_plain_sampler(dit):
    cond, neg = conditioning(12, 40), conditioning(5, seed=1)
    assert torch.equal(run(dit, cond, guided_denoiser(GuidanceOptions(negative=neg, cfg_scale=0.0)), steps=3),
                       run(dit, cond, steps=3))


def test_truncation_and_renormalisation_rules():
    sig = flow_sigmas(8)[:-1].tolist()  # 1 .9545 .9 .8333 .75 .6429 .5 .3 → 1 − σ = 0 .045 .1 .167 .25 .357 .5 .7
    assert [cfg_scale_at(s, 4.0, 0.25) for s in sig] == [4.0] * 5 + [0.0] * 3  # off once 1 − σ > 0.25
    assert [cfg_scale_at(s, 4.0, 1.0) for s in sig] == [4.0] * 8  # 1 = never truncate
    pos, neg = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(cfg_combine(pos, neg, 1.0), torch.tensor([[6.0, 8.0]]))  # pos + s·(pos − neg)
    # ‖pred‖ = 10 > 1.2·‖pos‖ = 6 → rescaled to norm 6; a cap above ‖pred‖ leaves it alone
    torch.testing.assert_close(cfg_combine(pos, neg, 1.0, 1.2), torch.tensor([[3.6, 4.8]]))
    torch.testing.assert_close(cfg_combine(pos, neg, 1.0, 3.0), torch.tensor([[6.0, 8.0]]))


def test_one_batched_forward_per_guided_step(dit):
    calls = []
    handle = dit.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    try:
        run(dit, conditioning(12, 40), guided_denoiser(GuidanceOptions(negative=conditioning(5, seed=1),
                                                                       cfg_scale=3.0, cfg_truncation=0.2)), steps=4)
    finally:
        handle.remove()
    # N = 4: σ 1 .9 .75 .5 → 1 − σ = 0 .1 .25 .5; truncation 0.2 leaves two guided steps ([pos, neg] = 4 images)
    assert calls == [4, 4, 2, 2]


def test_bad_input(dit):
    with pytest.raises(InputError, match="negative"):
        guided_denoiser(GuidanceOptions(cfg_scale=3.0))(dit, conditioning(5))
    with pytest.raises(InputError, match="3 negative prompts do not match 2"):
        guided_denoiser(GuidanceOptions(negative=conditioning(4, 4, 4), cfg_scale=3.0))(dit, conditioning(5, 6))
    with pytest.raises(InputError, match="CFG scale"):
        guided_denoiser(GuidanceOptions(negative=conditioning(4), cfg_scale=-1.0))(dit, conditioning(5))


@pytest.fixture(scope="module")
def pipeline(dit, tmp_path_factory):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
    from transformers import AutoTokenizer

    from zimage_core.checkpoints import shipped_config
    from zimage_core.testing import tiny_text_encoder, tiny_tokenizer, tiny_vae

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(shipped_config("scheduler")),
                          vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tokenizer, transformer=dit)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scale, normalization, truncation", [(2.5, 0.0, 1.0), (4.0, 1.05, 0.4)])
def test_equals_diffusers_zimage_pipeline(dit, pipeline, scale, normalization, truncation):
    # two prompts and two negatives of different lengths (masks in the batched forward), N = 8, 96×64
    cond, neg = conditioning(12, 40), conditioning(30, 5, seed=1)
    noise = make_noise((16, 8, 12), [3, 4])
    made = []

    def make(t, c):
        made.append(guided_denoiser(GuidanceOptions(negative=neg, cfg_scale=scale, cfg_normalization=normalization,
                                                    cfg_truncation=truncation))(t, c))
        return made[-1]

    ours = sample(dit, cond, width=96, height=64, steps=8, noise=noise, make_denoiser=make)
    ref = pipeline(prompt_embeds=cond.embeds, negative_prompt_embeds=neg.embeds, height=64, width=96,
                   num_inference_steps=8, guidance_scale=scale, cfg_normalization=normalization,
                   cfg_truncation=truncation, latents=noise.clone(), output_type="latent").images
    diff = (ours - ref).abs().max().item()
    print(f"CFG {scale}/{normalization}/{truncation}: max abs diff to diffusers {diff:.2e}, guided steps "
          f"{made[0].cfg_steps}")
    assert diff <= 1e-5
    assert (ours - run(dit, cond, steps=8, width=96, height=64, noise=noise)).abs().max() > 1e-3  # CFG acted
    if truncation < 1:
        assert made[0].cfg_steps == [0, 1, 2, 3, 4, 5]  # 1 − σ ≤ 0.4 for σ ≥ .6429; off at σ .5 and .3
        # renormalisation engaged: without it the result differs
        plain_norm = sample(dit, cond, width=96, height=64, steps=8, noise=noise, make_denoiser=guided_denoiser(
            GuidanceOptions(negative=neg, cfg_scale=scale, cfg_truncation=truncation)))
        assert (plain_norm - ours).abs().max() > 1e-4
