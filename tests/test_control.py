"""Control (Fun ControlNet) and inpainting on tiny models with the real architectures: our sampler against diffusers'
ZImageControlNetPipeline and ZImageInpaintPipeline on the same weights, noise and embeddings; the files as users have
them; what bad input gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zimage_core.control import Control, controls_applied, prepare_controls
from zimage_core.controlnet import load_controlnet_file
from zimage_core.encode import Conditioning
from zimage_core.errors import InputError, ModelFileError
from zimage_core.generate import generate
from zimage_core.inpaint import latent_mask, prepare_mask
from zimage_core.sample import sample
from zimage_core.testing import tiny_transformer, tiny_vae
from zimage_core.testing.controlnet import save_tiny_controlnet, tiny_controlnet

SIZE, STEPS = 64, 4
torch.set_grad_enabled(False)


@pytest.fixture(scope="module")
def models():
    return tiny_transformer(), tiny_vae()


@pytest.fixture(scope="module")
def caption() -> Conditioning:
    torch.manual_seed(7)
    return Conditioning([torch.randn(13, 32)], ["a prompt"], {})


def picture(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def as_batch(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255.0)[None]


def pipeline(cls, transformer, vae, **extra):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from zimage_core.checkpoints import shipped_config

    # the prompt is given as embeddings: the pipelines never run a text encoder here
    return cls(scheduler=FlowMatchEulerDiscreteScheduler.from_config(shipped_config("scheduler")), vae=vae,
               text_encoder=None, tokenizer=None, transformer=transformer, **extra)


@pytest.mark.parametrize("version", ["1.0", "2.0", "2.1"])
def test_control_matches_diffusers_and_scale_zero_is_no_control(version, models, caption, tmp_path):
    from diffusers import ZImageControlNetPipeline

    transformer, vae = models
    path = save_tiny_controlnet(tmp_path / f"fun_controlnet_{version}.safetensors", version)
    ours_cn = load_controlnet_file(path, transformer, torch.float32)  # the published file layout, our loader
    assert ours_cn.zimage_version.startswith(version)
    control = picture(3)
    noise = torch.randn((1, 16, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(42))
    pipe = pipeline(ZImageControlNetPipeline, transformer, vae, controlnet=tiny_controlnet(version))
    ref = pipe(prompt_embeds=list(caption.embeds), control_image=Image.fromarray(control), height=SIZE, width=SIZE,
               num_inference_steps=STEPS, guidance_scale=0.0, controlnet_conditioning_scale=0.75,
               latents=noise.clone(), output_type="latent").images

    def run(scale: float | None) -> torch.Tensor:
        controls = [] if scale is None else [Control(ours_cn, as_batch(control), scale)]
        prepared, _ = prepare_controls(vae, controls, SIZE, SIZE, 1)
        with controls_applied(transformer, prepared):
            return sample(transformer, caption, width=SIZE, height=SIZE, steps=STEPS, noise=noise.clone())

    ours, plain = run(0.75), run(None)
    assert (ours - ref).abs().max() <= 1e-5, float((ours - ref).abs().max())
    assert (ours - plain).abs().max() > 0.1  # the control acts
    assert torch.equal(run(0.0), plain)
    assert not transformer._forward_pre_hooks  # nothing left on the transformer


@pytest.mark.parametrize("strength", [1.0, 0.75])
def test_inpaint_matches_diffusers(strength, models, caption):
    from diffusers import ZImageInpaintPipeline

    transformer, vae = models
    image = picture(11)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:45, 20:60] = 255
    mask[50:53, 3:30] = 140  # below 0.5: binarised to keep, as diffusers does
    pipe = pipeline(ZImageInpaintPipeline, transformer, vae)
    ref = pipe(prompt_embeds=list(caption.embeds), image=Image.fromarray(image), mask_image=Image.fromarray(mask),
               strength=strength, num_inference_steps=STEPS, guidance_scale=0.0,
               generator=torch.Generator().manual_seed(42), output_type="latent").images
    # diffusers draws the start latents from the VAE posterior, then the noise, from one generator: give ours the same
    g = torch.Generator().manual_seed(42)
    pixels = torch.from_numpy(image.transpose(2, 0, 1).copy()[None].astype(np.float32) / 255.0) * 2 - 1
    x0 = (vae.encode(pixels).latent_dist.sample(g) - vae.config.shift_factor) * vae.config.scaling_factor
    noise = torch.randn(x0.shape, generator=g)
    pixel_mask = prepare_mask(torch.from_numpy(mask.astype(np.float32) / 255.0)[None], SIZE, SIZE)
    ours = sample(transformer, caption, width=SIZE, height=SIZE, steps=STEPS, init_latents=x0, strength=strength,
                  noise=noise, inpaint_mask=latent_mask(pixel_mask))
    assert (ours - ref).abs().max() <= 1e-5, float((ours - ref).abs().max())


def test_a_hard_mask_keeps_the_outside_and_repaints_the_inside(tiny_bundle):
    image = as_batch(picture(5))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 16:48, 16:48] = 1
    out = generate(tiny_bundle, "a red fox", width=SIZE, height=SIZE, steps=3, seed=2, init_image=image,
                   strength=1.0, mask=prepare_mask(mask, SIZE, SIZE))
    outside = mask[0] == 0
    assert (out.images[0][outside] - image[0][outside]).abs().max() * 255 <= 2
    assert (out.images[0][~outside] - image[0][~outside]).abs().mean() > 0.05
    assert any("inpainting 25%" in n for n in out.notes)


def test_control_composes_with_guidance_and_says_what_it_resized(tiny_bundle, tmp_path):
    from zimage_core.generate import prompt_encoder
    from zimage_core.guidance import GuidanceOptions, guided_denoiser

    path = save_tiny_controlnet(tmp_path / "cn.safetensors", "2.1")
    cn = tiny_bundle.controlnet(path)
    assert tiny_bundle.controlnet(path) is cn  # kept for the next run
    control = Control(cn, as_batch(picture(9, 96)), 0.8, start=1.0, end=0.5)
    negative = prompt_encoder(tiny_bundle).encode(["blurry"])
    kw = dict(width=SIZE, height=SIZE, steps=3, seed=4, controls=[control])
    alone = generate(tiny_bundle, "a cat", **kw)
    cfg = generate(tiny_bundle, "a cat", make_denoiser=guided_denoiser(GuidanceOptions(negative=negative,
                                                                                       cfg_scale=2.0)), **kw)
    nag = generate(tiny_bundle, "a cat", make_denoiser=guided_denoiser(GuidanceOptions(negative=negative,
                                                                                       nag_scale=4.0)), **kw)
    assert (cfg.images - alone.images).abs().max() > 1e-3 and (nag.images - alone.images).abs().max() > 1e-3
    assert any("control image 96×96 resized to 64×64" in n for n in alone.notes)


def test_bad_masks_and_other_models_are_refused_by_name(models, tmp_path):
    from safetensors.torch import save_file

    transformer, _ = models
    with pytest.raises(InputError, match="within 0-1"):
        prepare_mask(torch.full((1, SIZE, SIZE), 2.0), SIZE, SIZE)
    notes: list[str] = []
    resized = prepare_mask(torch.ones(1, 32, 48), SIZE, SIZE, notes=notes)
    assert resized.shape == (1, SIZE, SIZE) and notes == ["mask 48×32 resized to 64×64"]
    save_file({"input_hint_block.0.weight": torch.zeros(4, 3, 3, 3)}, str(tmp_path / "sdxl_cn.safetensors"))
    with pytest.raises(ModelFileError, match="SD1.x / SDXL ControlNet"):
        load_controlnet_file(tmp_path / "sdxl_cn.safetensors", transformer, torch.float32)
    wide = tiny_transformer(dim=128, n_heads=4, n_kv_heads=4)
    with pytest.raises(ModelFileError, match="64-wide model; this Z-Image transformer is 128"):
        load_controlnet_file(save_tiny_controlnet(tmp_path / "cn.safetensors", "1.0"), wide, torch.float32)
    with pytest.raises(InputError, match="end ≤ start"):
        Control(None, torch.zeros(1, 8, 8, 3), start=0.3, end=0.6)


def test_http_control_and_inpaint(tiny_dirs, tmp_path):
    import base64
    import io
    import json
    import shutil
    import urllib.error
    import urllib.request

    from zimage_core.service.app import create_app
    from zimage_core.testing.http import BackgroundServer

    save_tiny_controlnet(tmp_path / "fun_cn.safetensors", "2.1")
    shutil.copy(next((tiny_dirs["comfy"] / "vae").glob("*.safetensors")), tmp_path / "not_a_controlnet.safetensors")

    def png(arr: np.ndarray) -> str:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    def post(url: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(url + "/generate", json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask[16:48, 16:48] = 255
    base = {"prompts": ["a cat"], "width": SIZE, "height": SIZE, "steps": 2, "seed": 1}
    app = create_app(tiny_dirs["comfy"], device="cpu", queue_size=2, timeout_s=120, control_dirs=[tmp_path])
    with BackgroundServer(app) as srv:
        status, out = post(srv.url, {**base, "control_image": png(picture(3)), "control_model": "fun_cn.safetensors",
                                     "control_scale": 0.9, "control_end": 0.4})
        assert status == 200 and any(n.startswith("control: fun_cn.safetensors") for n in out["notes"]), out
        assert out["options"]["control_scale"] == 0.9 and out["options"]["control_model"] == "fun_cn.safetensors"
        status, out = post(srv.url, {**base, "init_image": png(picture(4)), "mask": png(mask)})
        assert status == 200 and any("inpainting 25%" in n for n in out["notes"]), out
        for body, field in (({"control_image": png(picture(3))}, "control_model"),
                            ({"control_image": png(picture(3)), "control_model": "not_a_controlnet.safetensors"},
                             "control_model"),
                            ({"mask": png(mask)}, "mask"),
                            ({"init_image": png(picture(4)), "mask": "not base64!"}, "mask")):
            status, out = post(srv.url, {**base, **body})
            assert status == 400 and out["field"] == field, (body.keys(), out)


def test_canny_agrees_with_opencv():
    cv2 = pytest.importorskip("cv2")
    from pathlib import Path

    from zimage_core.images import load_image
    from zimage_core.preprocess import canny

    image = load_image(Path(__file__).resolve().parents[1] / "examples" / "astronaut.png")
    gray = cv2.cvtColor((image[0].numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
    for low, high in ((100, 200), (20, 60)):
        ours = canny(image, low, high)[0, ..., 0].numpy()
        assert set(np.unique(ours)) <= {0.0, 1.0}
        agree = float((ours == cv2.Canny(gray, low, high) / 255.0).mean())
        print(f"canny {low}/{high}: {agree:.4%} of pixels as cv2.Canny")
        assert agree > 0.995
