"""Loading the files users have, through the real loaders, from both layouts; and the errors for bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zimage_core.errors import InputError, ModelFileError
from zimage_core.generate import generate
from zimage_core.models import clear_cache, find_model_files, load_models


DIT = "diffusion_models/z_image_turbo_tiny.safetensors"
TEXT_ENCODER = "text_encoders/qwen_3_4b_tiny.safetensors"


def _copy_with_edited(tiny_dirs, tmp_path, relpath: str, edit) -> Path:
    """A copy of the tiny ComfyUI tree whose file `relpath` has its state dict replaced by edit(state_dict)."""
    root = tmp_path / "models"
    shutil.copytree(tiny_dirs["comfy"], root)
    target = root / relpath
    save_file(edit(load_file(str(target))), str(target))
    return root


def test_both_layouts_load_identical_weights_and_give_the_same_image(tiny_dirs):
    comfy = load_models(tiny_dirs["comfy"], device="cpu")
    diff = load_models(tiny_dirs["diffusers"], device="cpu")
    assert comfy.files.layout == "comfy" and diff.files.layout == "diffusers"
    for part in ("transformer", "text_encoder", "vae"):
        a, b = getattr(comfy, part).state_dict(), getattr(diff, part).state_dict()
        assert set(a) == set(b), part
        assert all(torch.equal(a[k], b[k]) for k in a), part
    kw = dict(width=64, height=64, steps=3, seed=11)
    img_a = generate(comfy, "a red chair", **kw).images
    img_b = generate(diff, "a red chair", **kw).images
    assert img_a.shape == (1, 64, 64, 3)
    torch.testing.assert_close(img_a, img_b, atol=1e-5, rtol=0)  # same weights; kernels may differ by layout


def test_loading_is_lazy_and_found_again_while_in_use(tiny_dirs):
    clear_cache()
    bundle = load_models(tiny_dirs["comfy"], device="cpu")
    assert not bundle.is_loaded("transformer")
    assert load_models(tiny_dirs["comfy"], device="cpu") is bundle
    t = bundle.transformer
    assert bundle.is_loaded("transformer") and bundle.transformer is t
    bundle.release("transformer")
    assert not bundle.is_loaded("transformer")


def test_prefixed_original_keys_load(tiny_dirs, tmp_path):
    """ComfyUI checkpoints often carry 'model.diffusion_model.'; the loader strips it."""
    root = _copy_with_edited(tiny_dirs, tmp_path, DIT,
                             lambda sd: {"model.diffusion_model." + k: v for k, v in sd.items()})
    ref = load_models(tiny_dirs["comfy"], device="cpu").transformer.state_dict()
    got = load_models(root, device="cpu").transformer.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_missing_folder_and_files_list_what_was_searched(tmp_path):
    with pytest.raises(ModelFileError, match="Model folder not found"):
        find_model_files(tmp_path / "nope")
    (tmp_path / "diffusion_models").mkdir()
    with pytest.raises(ModelFileError) as err:
        find_model_files(tmp_path)
    msg = str(err.value)
    assert "qwen_3_4b.safetensors" in msg and "ae.safetensors" in msg and str(tmp_path / "text_encoders") in msg


def test_wrong_architecture_names_the_file(tiny_dirs, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_dirs["comfy"], root)
    dit = root / "diffusion_models" / "z_image_turbo_tiny.safetensors"
    shutil.copy(root / "vae" / "ae_tiny.safetensors", dit)  # a VAE in the diffusion-model slot
    bundle = load_models(root, device="cpu")
    with pytest.raises(ModelFileError, match=r"z_image_turbo_tiny.safetensors is not a Z-Image transformer.*VAE"):
        bundle.transformer


def test_unsupported_formats_are_refused_by_name(tiny_dirs, tmp_path):
    root = _copy_with_edited(tiny_dirs, tmp_path, DIT,
                             lambda sd: {k: (v.to(torch.uint8) if k == "layers.0.attention.qkv.weight" else v)
                                         for k, v in sd.items()})
    dit = root / DIT
    with pytest.raises(ModelFileError, match="nvfp4/int8 packed"):
        load_models(root, device="cpu").transformer
    dit.unlink()
    (root / "diffusion_models" / "z_image_turbo-Q4_K.gguf").write_bytes(b"GGUF\x03\x00")
    with pytest.raises(ModelFileError, match="not a readable GGUF file"):
        load_models(root, device="cpu").transformer


def test_truncated_file_gives_clear_error(tiny_dirs, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_dirs["comfy"], root)
    vae = root / "vae" / "ae_tiny.safetensors"
    vae.write_bytes(vae.read_bytes()[: vae.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="ae_tiny.safetensors"):
        load_models(root, device="cpu").vae


def test_missing_tokenizer_says_where_to_put_it(tiny_dirs, tmp_path, monkeypatch):
    root = tmp_path / "models"
    shutil.copytree(tiny_dirs["comfy"], root)
    shutil.rmtree(root / "tokenizer")
    monkeypatch.delenv("ZIMAGE_TOKENIZER", raising=False)
    with pytest.raises(ModelFileError, match="tokenizer"):
        find_model_files(root)
    files = find_model_files(root, tokenizer=tiny_dirs["comfy"] / "tokenizer")
    assert files.tokenizer == tiny_dirs["comfy"] / "tokenizer"


def test_unknown_dtype_is_an_input_error(tiny_dirs):
    with pytest.raises(InputError, match="dtype"):
        load_models(tiny_dirs["comfy"], device="cpu", dtype="fp7")


def test_text_encoder_with_missing_or_extra_weights_is_refused(tiny_dirs, tmp_path):
    """transformers would silently fill missing weights with random values; we refuse the file instead."""
    root = _copy_with_edited(tiny_dirs, tmp_path, TEXT_ENCODER,
                             lambda sd: {k: v for k, v in sd.items() if k != "model.layers.1.mlp.down_proj.weight"})
    with pytest.raises(ModelFileError, match="1 missing keys"):
        load_models(root, device="cpu").text_encoder


def test_release_frees_the_text_encoder(tiny_dirs):
    import gc
    import weakref

    from zimage_core.generate import prompt_encoder

    bundle = load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32")
    prompt_encoder(bundle).encode("x")
    ref = weakref.ref(bundle.text_encoder)
    bundle.release("text_encoder")
    gc.collect()
    assert ref() is None


def test_vae_auto_pick_prefers_the_flux_ae_over_other_vaes(tmp_path):
    from zimage_core.models import _pick

    folder = tmp_path / "vae"
    folder.mkdir()
    for name in ("Wan2.1_VAE.safetensors", "flux_vae.safetensors", "sdxl_vae.safetensors"):
        (folder / name).write_bytes(b"x")
    pick = lambda: _pick(folder, None, ("flux", "z_image"), "VAE", [], exact=("ae.safetensors",))  # noqa: E731
    assert pick().name == "flux_vae.safetensors"
    (folder / "ae.safetensors").write_bytes(b"x")
    assert pick().name == "ae.safetensors"
