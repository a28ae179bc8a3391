"""Every node runs on tiny random models through the plain-torch fallbacks (no ComfyUI): the loader finds files in a
ComfyUI-style models folder via $ZIMAGE_MODELS_DIR, and each node's outputs have the ComfyUI types and shapes. The
sampler's LATENT equals zimage_core's own result, guidance options act, interrupts stop a run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pack_import import REPO, load_pack

SIZE = 64


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_dirs) -> Path:
    """A ComfyUI-style models/ tree: the tiny Z-Image files (linked), plus a LoRA, an upscaler and a GFPGAN."""
    from zimage_core.testing.upscalers import save_tiny_esrgan

    root = tmp_path_factory.mktemp("comfy_models")
    src = tiny_dirs["comfy"]
    for sub in ("diffusion_models", "text_encoders", "vae", "tokenizer"):
        (root / sub).symlink_to(src / sub, target_is_directory=True)
    save_tiny_esrgan(root / "upscale_models" / "tiny_esrgan_x4.safetensors", scale=4)
    return root


@pytest.fixture(autouse=True)
def _models_env(models_dir, monkeypatch):
    monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(models_dir))


def call(pack, name: str, **inputs):
    """Run a node like ComfyUI's executor and check the result against its RETURN_TYPES."""
    cls = pack.NODE_CLASS_MAPPINGS[name]
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    result = out["result"] if isinstance(out, dict) else out
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES), name
    for value, kind in zip(result, cls.RETURN_TYPES):
        if kind == "IMAGE":
            assert value.ndim == 4 and value.shape[-1] == 3 and value.dtype == torch.float32
            assert 0.0 <= float(value.min()) and float(value.max()) <= 1.0
        elif kind == "MASK":
            assert value.ndim == 3 and value.dtype == torch.float32
        elif kind == "LATENT":
            assert isinstance(value, dict) and value["samples"].ndim == 4 and value["samples"].shape[1] == 16
    return result


def widget_defaults(pack, name: str, section: str = "required") -> dict:
    spec = pack.NODE_CLASS_MAPPINGS[name].INPUT_TYPES()[section]
    return {k: v[1]["default"] for k, v in spec.items() if len(v) > 1 and "default" in v[1]}


@pytest.fixture(scope="module")
def loaded(pack, models_dir):
    os.environ["ZIMAGE_MODELS_DIR"] = str(models_dir)  # module fixtures run before the autouse env fixture
    try:
        d = widget_defaults(pack, "ZImageLoader")
        assert d["diffusion_model"] == "z_image_turbo_tiny.safetensors"
        assert d["text_encoder"] == "qwen_3_4b_tiny.safetensors" and d["vae"] == "ae_tiny.safetensors"
        model, te, vae = call(pack, "ZImageLoader", diffusion_model=d["diffusion_model"],
                              text_encoder=d["text_encoder"], vae=d["vae"], weight_dtype="fp32")
    finally:
        os.environ.pop("ZIMAGE_MODELS_DIR", None)
    return model, te, vae


@pytest.fixture(scope="module")
def conds(pack, loaded):
    _, te, _ = loaded
    pos = call(pack, "ZImageEncode", text_encoder=te, text="a red apple on a table", hidden_layer=-2,
               long_prompt_mode="truncate", max_tokens=1504)[0]
    neg = call(pack, "ZImageEncode", text_encoder=te, text="blurry, ugly", hidden_layer=-2,
               long_prompt_mode="truncate", max_tokens=1504)[0]
    return pos, neg


def sampler(pack, model, pos, **kw):
    args = dict(model=model, positive=pos, width=SIZE, height=SIZE, steps=2, seed=7, shift=3.0, denoise=1.0)
    args.update(kw)
    return call(pack, "ZImageSampler", **args)[0]


@pytest.fixture(scope="module")
def t2i(pack, loaded, conds):
    return sampler(pack, loaded[0], conds[0])


def test_loader_lists_comfy_folders(pack, models_dir):
    from zimage_turbo_pack.nodes import host

    assert host.models_dir() == models_dir
    assert host.list_files("upscale_models") == ["tiny_esrgan_x4.safetensors"]
    spec = pack.NODE_CLASS_MAPPINGS["ZImageBlockUpscaler"].INPUT_TYPES()["required"]["heavy_model"][0]
    assert spec == ["auto", "none (LANCZOS only)", "tiny_esrgan_x4.safetensors"]


def test_loader_gives_lazy_handles(loaded):
    model, te, vae = loaded
    assert model.bundle is te.bundle is vae.bundle
    assert model.bundle.dtype == torch.float32 and model.bundle.files.layout == "comfy"


def test_encode_conditioning(conds):
    pos, neg = conds
    assert len(pos) == 1 and pos.embeds[0].ndim == 2 and pos.embeds[0].shape[1] == 32
    assert pos.embeds[0].device.type == "cpu" and pos.prompts == ["a red apple on a table"]


def test_sampler_latent_is_raw_vae_space_and_matches_core(loaded, conds, t2i):
    from zimage_core.sample import sample
    from zimage_core.vae import to_model_space

    model, _, vae = loaded
    assert t2i["samples"].shape == (1, 16, SIZE // 8, SIZE // 8)
    ref = sample(model.bundle.transformer, conds[0], width=SIZE, height=SIZE, steps=2, seed=7, shift=3.0)
    torch.testing.assert_close(to_model_space(t2i["samples"], vae.module), ref, rtol=1e-5, atol=1e-5)


def test_decode_nodes_match_core_decode(pack, loaded, t2i):
    from zimage_core import vae as vae_ops

    _, _, vae = loaded
    image = call(pack, "ZImageVAEDecode", vae=vae, samples=t2i)[0]
    ref = vae_ops.decode(vae.module, vae_ops.to_model_space(t2i["samples"], vae.module))
    assert image.shape == (1, SIZE, SIZE, 3)
    torch.testing.assert_close(image, ref, rtol=0, atol=0)
    tiled = call(pack, "ZImageTiledVAEDecode", vae=vae, samples=t2i, tile_size=64, overlap=16)[0]
    assert tiled.shape == image.shape
    assert float((tiled - image).abs().mean()) < 0.05


def test_sampler_validates_size(pack, loaded, conds):
    from zimage_core.errors import ZImageError

    with pytest.raises(ZImageError, match="multiple of 16"):
        sampler(pack, loaded[0], conds[0], width=72)


def test_sampler_rejects_non_flux_latent(pack, loaded, conds):
    from zimage_core.errors import InputError

    with pytest.raises(InputError, match="this LATENT has 4 channels; Z-Image needs a 16-channel Flux latent"):
        sampler(pack, loaded[0], conds[0], latent={"samples": torch.zeros(1, 4, 8, 8)}, denoise=0.5)


def test_img2img_from_latent_and_image(pack, loaded, conds, t2i):
    model, _, vae = loaded
    img = call(pack, "ZImageVAEDecode", vae=vae, samples=t2i)[0]
    # size comes from the input, not the widgets; denoise 0 returns the input latent unchanged
    same = sampler(pack, model, conds[0], width=1024, height=1024, latent=t2i, denoise=0.0)
    assert torch.equal(same["samples"], t2i["samples"])
    half = sampler(pack, model, conds[0], latent=t2i, denoise=0.5, seed=99)
    assert half["samples"].shape == t2i["samples"].shape
    assert not torch.allclose(half["samples"], t2i["samples"])
    from_image = sampler(pack, model, conds[0], image=img, denoise=0.5, seed=99, batch_size=2)
    assert from_image["samples"].shape == (2, 16, SIZE // 8, SIZE // 8)


def guided(pack, model, node: str, **widgets):
    return call(pack, node, model=model, **widgets)[0]


def test_guidance_nodes_switched_off_are_bit_identical(pack, loaded, conds, t2i):
    """Each guidance node at its 'off' setting leaves the sampler's output exactly as without the node."""
    model, _, _ = loaded
    pos, neg = conds
    off = guided(pack, model, "ZImageNAG", scale=1.0, tau=2.5, alpha=0.25)  # NAG off: the negative does nothing
    off = guided(pack, off, "ZImageSLG", scale=0.0, layers="1-2", start=1.0, end=0.0)
    off = guided(pack, off, "ZImageDyPE", method="off", scale=2.0, exponent=2.0)
    off = guided(pack, off, "ZImageCFG", scale=0.0, normalization=1.0, truncation=0.5)
    off = guided(pack, off, "ZImageSeedDiversity", strength=0.0)
    assert off.bundle is model.bundle and off.guidance.slg.layers == "1-2"  # chained, nothing reloaded
    torch.testing.assert_close(sampler(pack, off, pos, negative=neg)["samples"], t2i["samples"], rtol=0, atol=0)
    small = guided(pack, model, "ZImageDyPE", method="vision_yarn", scale=2.0, exponent=2.0)  # ≤ 1024 px: off
    torch.testing.assert_close(sampler(pack, small, pos)["samples"], t2i["samples"], rtol=0, atol=0)


def test_guidance_nodes_act(pack, loaded, conds, t2i):
    from zimage_core.errors import ZImageError

    model, _, _ = loaded
    pos, neg = conds
    moved = lambda out: (out["samples"] - t2i["samples"]).abs().max() > 1e-4  # noqa: E731
    assert moved(sampler(pack, model, pos, negative=neg))  # a connected negative acts through NAG by default
    nag = guided(pack, model, "ZImageNAG", scale=4.0, tau=2.5, alpha=0.25, negative=neg)  # negative on the node
    assert moved(sampler(pack, nag, pos))
    slg = guided(pack, model, "ZImageSLG", scale=2.0, layers="1-2", start=1.0, end=0.0)
    assert moved(sampler(pack, slg, pos))
    assert moved(sampler(pack, guided(pack, model, "ZImageSeedDiversity", strength=1.0), pos))
    cfg = guided(pack, model, "ZImageCFG", scale=3.0, normalization=1.0, truncation=1.0)
    assert moved(sampler(pack, cfg, pos, negative=neg))
    with pytest.raises(ZImageError, match="negative"):
        sampler(pack, cfg, pos)
    wide = guided(pack, model, "ZImageDyPE", method="yarn", scale=2.0, exponent=2.0)
    wide_plain = sampler(pack, model, pos, width=1280, height=64, steps=1)
    wide_dype = sampler(pack, wide, pos, width=1280, height=64, steps=1)
    assert wide_dype["samples"].shape == (1, 16, 8, 160)
    assert (wide_dype["samples"] - wide_plain["samples"]).abs().max() > 1e-4


def test_guidance_node_settings_are_checked(pack, loaded):
    from zimage_core.errors import InputError

    with pytest.raises(InputError, match="backwards"):
        guided(pack, loaded[0], "ZImageSLG", scale=2.0, layers="12-7", start=1.0, end=0.0)
    with pytest.raises(InputError, match="window"):
        guided(pack, loaded[0], "ZImageSLG", scale=2.0, layers="1", start=0.5, end=0.9)


def test_sampler_explains_a_native_model(pack, conds):
    from zimage_core.errors import InputError

    with pytest.raises(InputError, match="KSampler"):
        sampler(pack, object(), conds[0])


def test_schedule_node_is_the_sampler_schedule(pack):
    from zimage_core.schedule import flow_sigmas

    (sigmas,) = call(pack, "ZImageSchedule", steps=9, shift=3.0, denoise=1.0)
    assert torch.equal(sigmas, flow_sigmas(9, 3.0))
    assert len(call(pack, "ZImageSchedule", steps=8, shift=3.0, denoise=0.5)[0]) == 5


def test_conditioning_bridges_round_trip(pack, conds):
    native = call(pack, "ZImageToConditioning", conditioning=conds[0])[0]
    assert native[0][0].shape == (1, *conds[0].embeds[0].shape) and native[0][0].dtype == torch.float32
    back = call(pack, "ZImageFromConditioning", conditioning=native)[0]
    torch.testing.assert_close(back.embeds[0], conds[0].embeds[0].float())
    padded = [[torch.cat([native[0][0], torch.zeros(1, 3, native[0][0].shape[-1])], 1),
               {"attention_mask": torch.cat([torch.ones(1, native[0][0].shape[1]), torch.zeros(1, 3)], 1)}]]
    assert call(pack, "ZImageFromConditioning", conditioning=padded)[0].embeds[0].shape == conds[0].embeds[0].shape


def test_lora_chain_applies_and_unloads(pack, loaded, conds, t2i, models_dir):
    from zimage_core.testing.lora import save_tiny_lora

    model, _, _ = loaded
    save_tiny_lora(models_dir / "loras" / "tiny_lora.safetensors", model.bundle.transformer, rank=4)
    with_lora = call(pack, "ZImageLoraLoader", model=model, lora_name="tiny_lora.safetensors", strength=1.0)[0]
    assert len(with_lora.loras) == 1 and not model.loras
    out = sampler(pack, with_lora, conds[0])
    assert (out["samples"] - t2i["samples"]).abs().max() > 1e-4
    back = sampler(pack, model, conds[0])  # the model without LoRAs gives the base image again
    torch.testing.assert_close(back["samples"], t2i["samples"], rtol=1e-6, atol=1e-6)


def test_embeddings_round_trip(pack, conds, models_dir):
    name = call(pack, "ZImageSaveEmbeddings", conditioning=conds[0], filename_prefix="my prompt/../x")[0]
    assert name.endswith(".safetensors") and "/" not in name
    assert (models_dir / "zimage_embeddings" / name).is_file()
    listed = pack.NODE_CLASS_MAPPINGS["ZImageLoadEmbeddings"].INPUT_TYPES()["required"]["embeddings"][0]
    assert name in listed
    loaded_cond = call(pack, "ZImageLoadEmbeddings", embeddings=name)[0]
    torch.testing.assert_close(loaded_cond.embeds[0], conds[0].embeds[0])
    assert loaded_cond.prompts == conds[0].prompts


def test_interrupt_mid_run_raises_host_exception(pack, loaded, conds, monkeypatch):
    from zimage_turbo_pack.nodes import host

    seen = []

    def update(self, done, total=None, preview=None):
        seen.append(done)
        host.request_interrupt()  # the user presses "cancel" after the first step

    monkeypatch.setattr(host.Progress, "update", update)
    with pytest.raises(host.interrupt_exception()):
        sampler(pack, loaded[0], conds[0], steps=4)
    assert seen == [1]
    assert not host.should_stop()  # the flag is cleared, the next run goes through


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    from zimage_core.images import load_image

    return load_image(REPO / "examples" / "astronaut.png")[:, :128, 96:224].contiguous()


def test_block_nodes_chain(pack, photo, models_dir):
    from zimage_core.blocks import upscale_chain

    sal, heat = call(pack, "ZImageSaliencyMap", image=photo)
    assert sal.shape == (1, 128, 128) and heat.shape == (1, 128, 128, 3)
    blocks = call(pack, "ZImageBlockSlicer", image=photo, block_size=64, overlap=16)[0]
    assert len(blocks.blocks) == 9
    out = pack.NODE_CLASS_MAPPINGS["ZImageBlockClassifier"]().run(blocks=blocks, saliency=sal, heavy_ratio=-1.0)
    assert set(out) == {"ui", "result"} and out["ui"]["images"] == []  # no ComfyUI: no preview files written
    classified, preview = call(pack, "ZImageBlockClassifier", blocks=blocks, saliency=sal, heavy_ratio=0.5)
    assert preview.shape == photo.shape and int(classified.classification.heavy.sum()) >= 4

    light = call(pack, "ZImageBlockUpscaler", blocks=classified, heavy_model="none (LANCZOS only)", scale=2)[0]
    assert light.upscaled.shape == (9, 3, 128, 128) and not bool(light.heavy.any())
    stitched = call(pack, "ZImageFeatherStitch", blocks=light)[0]
    assert stitched.shape == (1, 256, 256, 3)
    ref = upscale_chain(photo, scale=2, block=64, overlap=16, previews=False).image
    torch.testing.assert_close(stitched, ref, rtol=0, atol=1e-3)  # same blocks; only the blend order differs

    heavy = call(pack, "ZImageBlockUpscaler", blocks=classified, heavy_model="tiny_esrgan_x4.safetensors", scale=2,
                 batch_size=3)[0]
    assert heavy.heavy_name and torch.equal(heavy.heavy, classified.classification.heavy)
    assert heavy.upscaled.shape == (9, 3, 128, 128)
    hv = heavy.heavy
    torch.testing.assert_close(heavy.upscaled[~hv], light.upscaled[~hv])  # light blocks identical
    assert (heavy.upscaled[hv] - light.upscaled[hv]).abs().max() > 1e-3  # heavy blocks from the model

    from zimage_core.blocks import load_spandrel

    descriptor = load_spandrel(models_dir / "upscale_models" / "tiny_esrgan_x4.safetensors")  # = UPSCALE_MODEL
    native = call(pack, "ZImageBlockUpscaler", blocks=blocks, heavy_model="none (LANCZOS only)", scale=4,
                  upscale_model=descriptor)[0]
    assert bool(native.heavy.all())  # unclassified blocks: all heavy when a model is given
    image = call(pack, "ZImageFeatherStitch", blocks=native)[0]
    assert image.shape == (1, 512, 512, 3)
    resized = call(pack, "ZImageResize", image=image, width=300, height=0)[0]
    assert resized.shape == (1, 300, 300, 3)


def test_block_upscaler_interrupt(pack, photo, monkeypatch):
    from zimage_turbo_pack.nodes import host

    blocks = call(pack, "ZImageBlockSlicer", image=photo, block_size=32, overlap=8)[0]
    host.request_interrupt()
    with pytest.raises(host.interrupt_exception()):
        call(pack, "ZImageBlockUpscaler", blocks=blocks, heavy_model="none (LANCZOS only)", scale=2)
    assert not host.should_stop()


def test_face_restore_nodes(pack, models_dir):
    from zimage_core.images import load_image
    from zimage_core.testing.faces import save_random_gfpgan

    photo = load_image(REPO / "examples" / "astronaut.png")
    run = dict(image=photo, fidelity=1.0, detector="auto", min_confidence=0.5, max_faces=0)
    (nothing,) = call(pack, "ZImageFaceRestoreModelLoader", model_name="auto")  # no GFPGAN file installed yet
    assert nothing is None
    out, report = call(pack, "ZImageFaceRestore", face_model=None, **run)
    assert torch.equal(out, photo) and report.startswith("1 face found by") and "not restored" in report

    save_random_gfpgan(models_dir / "facerestore_models", formats=("safetensors",))
    names = pack.NODE_CLASS_MAPPINGS["ZImageFaceRestoreModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert names == ["auto", "none", "GFPGANv1.4-random.safetensors"]
    assert call(pack, "ZImageFaceRestoreModelLoader", model_name="none")[0] is None
    face_model = call(pack, "ZImageFaceRestoreModelLoader", model_name="auto")[0]  # now picks the GFPGAN file
    out, report = call(pack, "ZImageFaceRestore", face_model=face_model, **run)
    assert out.shape == photo.shape and "1 face(s) restored" in report
    assert (out - photo).abs().max() > 0.05  # the (random) GFPGAN really replaced the face


def test_heavy_cache_keeps_sd_pipeline_across_option_changes(tmp_path, monkeypatch):
    """Changing SD x4 options (prompt, seed, steps, guidance, noise level) reuses the loaded pipeline and applies the
    new options to it; only another folder (or a changed one) loads again."""
    from types import SimpleNamespace

    from zimage_core.blocks import SDUpscaler
    from zimage_core.errors import InputError
    from zimage_turbo_pack.nodes import blocks

    loads = []

    def fake_load(spec, *, device=None, **options):
        loads.append((spec, options))
        pipe = SimpleNamespace(config=SimpleNamespace(max_noise_level=350),
                               unet=SimpleNamespace(config=SimpleNamespace(block_out_channels=(1, 2, 3, 4))))
        return SDUpscaler(pipe, device="cpu", **options)

    monkeypatch.setattr(blocks, "load_heavy_upscaler", fake_load)
    monkeypatch.setattr(blocks, "_HEAVY_CACHE", {})
    folder = tmp_path / "sdx4"
    folder.mkdir()
    opts = {"prompt": "sharp", "noise_level": 20, "steps": 20, "guidance_scale": 9.0, "seed": 0}
    first = blocks._load_heavy(folder, opts)
    first._calls = 5
    second = blocks._load_heavy(folder, {"prompt": "crisp", "noise_level": 40, "steps": 7, "guidance_scale": 4.5,
                                         "seed": 11})
    assert second is first and len(loads) == 1
    assert (second.prompt, second.noise_level, second.steps, second.guidance_scale, second.seed) == (
        "crisp", 40, 7, 4.5, 11)
    assert second._calls == 0  # a run restarts the per-call seed offset: same seed, same result
    with pytest.raises(InputError, match="noise_level must be 0-350"):
        blocks._load_heavy(folder, {**opts, "noise_level": 999})
    other = tmp_path / "other"
    other.mkdir()
    assert blocks._load_heavy(other, opts) is not first and len(loads) == 2
