"""The sampler: schedule, equivalence with diffusers, seeds, img2img, callbacks, interrupt, bad input."""

from __future__ import annotations

import pytest
import torch

from zimage_core.errors import InputError, Interrupted
from zimage_core.generate import generate, prompt_encoder
from zimage_core.sample import make_noise, sample
from zimage_core.schedule import flow_sigmas, img2img_start


def test_sigmas_match_the_design_table():
    expected = torch.tensor([1, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3, 0])
    torch.testing.assert_close(flow_sigmas(8, 3.0), expected, atol=1e-4, rtol=0)
    assert len(flow_sigmas(9)) == 10 and flow_sigmas(9)[-1] == 0


def test_img2img_start_rule():
    assert img2img_start(8, 1.0) == 0
    assert img2img_start(8, 0.5) == 4
    assert img2img_start(9, 0.3) == 6
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="strength"):
            img2img_start(8, bad)


def test_reproduces_diffusers_zimage_pipeline(tiny_bundle):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    from zimage_core.checkpoints import shipped_config

    b = tiny_bundle
    cond = prompt_encoder(b).encode(["a cat", "a photo of a dog on a red chair"])
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(shipped_config("scheduler")),
                          vae=b.vae, text_encoder=b.text_encoder, tokenizer=b.tokenizer, transformer=b.transformer)
    pipe.set_progress_bar_config(disable=True)
    for steps in (8, 9):
        noise = make_noise((16, 12, 8), [3, 4])
        ours = sample(b.transformer, cond, width=64, height=96, steps=steps, noise=noise)
        ref = pipe(prompt_embeds=cond.embeds, height=96, width=64, num_inference_steps=steps, guidance_scale=0.0,
                   latents=noise.clone(), output_type="latent").images
        assert (ours - ref).abs().max().item() <= 1e-5


def test_noise_is_per_image_and_batch_position_independent(tiny_bundle):
    batch = generate(tiny_bundle, ["one", "two"], width=64, height=64, steps=2, seed=5).images
    single = generate(tiny_bundle, "two", width=64, height=64, steps=2, seed=6).images
    torch.testing.assert_close(batch[1:], single, atol=1e-5, rtol=0)
    assert not torch.allclose(make_noise((16, 8, 8), [1]), make_noise((16, 8, 8), [2]))


def test_images_per_prompt_and_seeds(tiny_bundle):
    r = generate(tiny_bundle, ["a", "b"], width=64, height=64, steps=1, seed=10, images_per_prompt=2)
    assert r.images.shape == (4, 64, 64, 3) and r.seeds == [10, 11, 12, 13]
    assert not torch.allclose(r.images[0], r.images[1])


def test_img2img_strength_controls_distance_from_init(tiny_bundle):
    init = generate(tiny_bundle, "x", width=64, height=64, steps=4, seed=1).images
    far = generate(tiny_bundle, "y", width=64, height=64, steps=8, seed=2, init_image=init, strength=1.0).images
    near = generate(tiny_bundle, "y", width=64, height=64, steps=8, seed=2, init_image=init, strength=0.25).images
    assert (near - init).abs().mean() < (far - init).abs().mean()


def test_callbacks_report_each_step_and_interrupt_stops(tiny_bundle):
    seen = []
    generate(tiny_bundle, "x", width=64, height=64, steps=4, seed=1, callback=lambda s: seen.append((s.step, s.total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Interrupted, match="step 3/4"):
        generate(tiny_bundle, "x", width=64, height=64, steps=4, seed=1, should_stop=stop_after_two)
    # the process stays healthy: the next run is correct
    again = generate(tiny_bundle, "x", width=64, height=64, steps=4, seed=1).images
    assert torch.isfinite(again).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100, height=64), "nearest valid sizes are 96 and 112"),
    (dict(width=64, height=8), "out of range"),
    (dict(width=64, height=64, steps=0), "steps must be"),
    (dict(width=64, height=64, strength=0.5), "needs an init image"),
])
def test_bad_input_is_refused_clearly(tiny_bundle, kwargs, message):
    with pytest.raises(InputError, match=message):
        generate(tiny_bundle, "x", **{"steps": 2, **kwargs})


def test_conditioning_from_another_encoder_is_refused_clearly(tiny_bundle):
    from zimage_core.encode import Conditioning

    wrong_width = Conditioning([torch.randn(5, 48)], ["x"])
    from zimage_core.errors import ModelFileError

    # files that do not belong together: a model-file error (a server answers 500, not a client 400)
    with pytest.raises(ModelFileError, match=r"expects \(tokens, 32\).*Qwen3-4B"):
        sample(tiny_bundle.transformer, wrong_width, width=64, height=64, steps=1)
    too_long = Conditioning([torch.randn(1600, 32)], ["x"])
    with pytest.raises(InputError, match="1600 tokens"):
        sample(tiny_bundle.transformer, too_long, width=64, height=64, steps=1)
