"""Our guidance on ComfyUI's own Z-Image model (nodes/native.py) against our sampler, with ComfyUI's own code.

Runs only where ComfyUI is importable (skipped in the normal CI):
    PYTHONPATH=/path/to/ComfyUI python -m pytest -q tests/test_native_comfy.py

The same small random weights go into diffusers' ZImageTransformer2DModel (our sampler) and ComfyUI's NextDiT
(dim 1024 so both timestep embedders have the same shape, 8 heads of 128 for Z-Image's 32/48/48 RoPE split). ComfyUI
samples with its KSampler path (euler, simple, shift 3); at 4 steps its sigmas equal ours exactly (1000/steps is an
integer). Latents are compared in model space.
"""

from __future__ import annotations

import logging

import pytest
import torch

cli_args = pytest.importorskip("comfy.cli_args", reason="ComfyUI is not importable (put it on PYTHONPATH)")
cli_args.args.cpu = True  # before comfy.model_management is first imported: tests run on the CPU

import comfy.model_patcher  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.supported_models_base  # noqa: E402
import comfy.text_encoders.z_image  # noqa: E402
import comfy.utils  # noqa: E402

from nodes import native  # noqa: E402
from zimage_core.encode import Conditioning, PromptEncoder, format_prompt  # noqa: E402
from zimage_core.errors import InputError, ZImageError  # noqa: E402
from zimage_core.guidance.denoiser import guided_denoiser  # noqa: E402
from zimage_core.guidance.settings import (CfgSettings, DiversitySettings, DypeSettings, GuidanceSettings,  # noqa: E402
                                           NagSettings, SlgSettings)
from zimage_core.sample import sample  # noqa: E402

DIM, HEADS, N_LAYERS, CAP = 1024, 8, 2, 64
STEPS, SEED = 4, 7
SIZE, DYPE_SIZE = (64, 64), (96, 64)  # (width, height); DyPE acts above its base (64 here)
TOL = 1e-4

NAG = NagSettings(scale=3.0, tau=2.5, alpha=0.25)
SLG = SlgSettings(scale=2.0, layers="1", start=1.0, end=0.7)  # σ 1, .9, .75 of the 4-step schedule
DYPE = DypeSettings(method="vision_yarn", base=64)
CFG = CfgSettings(scale=2.0, normalization=1.0, truncation=0.3)  # step at σ .5 truncated
DIVERSITY = DiversitySettings(strength=0.3, until_sigma=0.8)
OFF = dict(nag=NagSettings(scale=1.0), slg=SlgSettings(), dype=DypeSettings(), cfg=CfgSettings(),
           diversity=DiversitySettings())
UNET_CONFIG = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=DIM, cap_feat_dim=CAP, n_layers=N_LAYERS,
                   n_refiner_layers=1, n_heads=HEADS, n_kv_heads=HEADS, qk_norm=True, axes_dims=[32, 48, 48],
                   axes_lens=[1536, 512, 512], rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, multiple_of=1,
                   z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32)


# ------------------------------------------------------------------------------------------------- the two models


def _comfy_state_dict(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers keys → ComfyUI's, with ComfyUI's own key map (q, k, v fused into one qkv weight)."""
    key_map = comfy.utils.z_image_to_diffusers({"n_layers": N_LAYERS, "dim": DIM, "n_refiner_layers": 1})
    out: dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        target = key_map[key]
        if isinstance(target, tuple):
            name, (dim, offset, size) = target
            out.setdefault(name, torch.zeros(3 * DIM, *value.shape[1:])).narrow(dim, offset, size).copy_(value)
        else:
            out[target] = value.clone()
    return out


def _shift3(patcher):
    """What ComfyUI's ModelSamplingAuraFlow node does with shift 3: an object patch of model_sampling."""
    class Sampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    out = patcher.clone()
    sampling = Sampling(patcher.model.model_config)
    sampling.set_parameters(shift=3.0, multiplier=1.0)
    out.add_object_patch("model_sampling", sampling)
    return out


@pytest.fixture(scope="module")
def models():
    """(our diffusers DiT, ComfyUI's MODEL) holding the same weights."""
    from zimage_core.testing import tiny_transformer

    ours = tiny_transformer(0, dim=DIM, n_heads=HEADS, n_kv_heads=HEADS, n_layers=N_LAYERS, n_refiner_layers=1,
                            cap_feat_dim=CAP, axes_dims=[32, 48, 48]).float()
    config = comfy.supported_models.ZImage(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    base_model = config.get_model({})
    base_model.diffusion_model.load_state_dict(_comfy_state_dict(ours.state_dict()), strict=True)
    base_model.diffusion_model.float().eval()
    cpu = torch.device("cpu")
    return ours, _shift3(comfy.model_patcher.ModelPatcher(base_model, load_device=cpu, offload_device=cpu))


g = torch.Generator().manual_seed(3)
POS, NEG, NEG_LONG, NEG_SAME = (torch.randn(n, CAP, generator=g) for n in (20, 12, 40, 20))


def native_cond(embeds: torch.Tensor) -> list:
    """A CONDITIONING as CLIPTextEncode makes it for one prompt."""
    return [[embeds[None], {"pooled_output": None, "attention_mask": torch.ones(1, embeds.shape[0], dtype=torch.long)}]]


def comfy_run(model, *, neg: torch.Tensor = NEG, cfg: float = 1.0, size=SIZE) -> torch.Tensor:
    width, height = size
    latent = torch.zeros(1, 16, height // 8, width // 8)
    noise = comfy.sample.prepare_noise(latent, SEED)
    out = comfy.sample.sample(model, noise, STEPS, cfg, "euler", "simple", native_cond(POS), native_cond(neg),
                              latent, seed=SEED, disable_pbar=True)
    return model.model.process_latent_in(out)  # KSampler's latent → model space, as our sampler returns


def our_run(dit, *, neg: torch.Tensor | None = None, size=SIZE, **groups) -> torch.Tensor:
    width, height = size
    settings = GuidanceSettings(**{"nag": NagSettings(scale=1.0), **groups})
    options = settings.options_for(width=width, height=height, seed=SEED,
                                   negative=None if neg is None else Conditioning([neg], ["negative"]))
    with torch.no_grad():
        return sample(dit, Conditioning([POS], ["positive"]), width=width, height=height, steps=STEPS, seed=SEED,
                      make_denoiser=guided_denoiser(options))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="module")
def unpatched(models):
    """ComfyUI's result without our guidance, per (size, cfg); both sizes at cfg 1 are made before any patched run
    touched the model."""
    done = {(size, 1.0): comfy_run(models[1], size=size) for size in (SIZE, DYPE_SIZE)}

    def result(size=SIZE, cfg: float = 1.0) -> torch.Tensor:
        if (size, cfg) not in done:
            done[size, cfg] = comfy_run(models[1], size=size, cfg=cfg)
        return done[size, cfg]

    return result


# ------------------------------------------------------------------------------------------------- detection


def test_recognises_zimage_and_names_other_models(models):
    assert native.is_native_zimage(models[1])
    lumina = comfy.supported_models.Lumina2(dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64,
                                                 cap_feat_dim=32, n_layers=1, n_refiner_layers=1, n_heads=2,
                                                 n_kv_heads=2, qk_norm=True, axes_dims=[16, 8, 8],
                                                 axes_lens=[300, 512, 512]))
    lumina.set_inference_dtype(torch.float32, None)
    lumina_patcher = comfy.model_patcher.ModelPatcher(lumina.get_model({}), torch.device("cpu"), torch.device("cpu"))

    class Unet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(2, 2)
            self.model_config = type("SDXL", (), {})()

    sdxl = comfy.model_patcher.ModelPatcher(Unet(), torch.device("cpu"), torch.device("cpu"))
    for model, name in ((lumina_patcher, "Lumina-Image 2.0"), (sdxl, "SDXL"), ("a string", "not a ComfyUI MODEL")):
        assert not native.is_native_zimage(model)
        with pytest.raises(InputError, match=name):
            native.attach(model, nag=NAG)


def test_bad_settings_are_refused(models):
    with pytest.raises(InputError, match="2 main layers"):
        native.attach(models[1], slg=SlgSettings(scale=2.0, layers="1-5"))
    with pytest.raises(InputError, match="64"):
        native.attach(models[1], nag=NAG, negative=native_cond(torch.zeros(5, 32)))


def test_a_changed_comfyui_is_named(models):
    dm = models[1].model.diffusion_model

    class Changed(type(dm)):
        def embed_cap(self, cap_feats, offset=0):  # a different signature than the one _forward calls
            raise AssertionError

    changed = Changed.__new__(Changed)
    torch.nn.Module.__init__(changed)
    changed.layers, changed.final_layer, changed.rope_embedder = dm.layers, dm.final_layer, dm.rope_embedder
    with pytest.raises(ZImageError, match=r"0\.18\.1.*embed_cap"):
        native.check_comfy_api(changed)


# ------------------------------------------------------------------------------------------------- (a) off


def test_every_group_off_is_the_unpatched_model(models, unpatched):
    off = native.attach(models[1], **OFF)
    assert torch.equal(comfy_run(off), unpatched())
    assert torch.equal(comfy_run(off, cfg=3.0), unpatched(cfg=3.0))
    kinds = ("diffusion_model", "outer_sample")
    assert all(not off.get_wrappers(kind, native.KEY) for kind in kinds)
    assert "sampler_cfg_function" not in off.model_options and not off.model_options.get("sampler_post_cfg_function")


# ------------------------------------------------------------------------------------------------- (b) vs our sampler

CASES = {
    "nag": (dict(nag=NAG), {}),
    "nag long negative, end σ .6": (dict(nag=NagSettings(scale=3.0, tau=2.5, alpha=0.25, end_sigma=0.6)),
                                    dict(neg=NEG_LONG)),
    "slg": (dict(slg=SLG), {}),
    "dype": (dict(dype=DYPE), dict(size=DYPE_SIZE)),
    "nag + slg + dype + diversity": (dict(nag=NAG, slg=SLG, dype=DYPE, diversity=DIVERSITY), dict(size=DYPE_SIZE)),
    "cfg renorm + truncation": (dict(cfg=CFG), dict(cfg=3.0)),
    "cfg + slg": (dict(cfg=CFG, slg=SLG), dict(cfg=3.0)),
    "seed diversity": (dict(diversity=DIVERSITY), {}),
    # equal caption lengths: ComfyUI batches [negative, positive] into one call; diversity must skip the negative row
    "cfg + seed diversity, batched": (dict(cfg=CFG, diversity=DIVERSITY), dict(cfg=3.0, neg=NEG_SAME)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_native_guidance_matches_our_sampler(models, unpatched, name):
    dit, base = models
    groups, run = CASES[name]
    size, neg, cfg = run.get("size", SIZE), run.get("neg", NEG), run.get("cfg", 1.0)
    theirs = comfy_run(native.attach(base, **groups), neg=neg, cfg=cfg, size=size)
    uses_negative = "nag" in groups or "cfg" in groups
    ours = our_run(dit, neg=neg if uses_negative else None, size=size, **groups)
    assert max_diff(theirs, ours) <= TOL
    assert max_diff(theirs, unpatched(size, cfg)) > 10 * TOL  # the guidance really acted


def test_nag_with_its_own_negative(models):
    dit, base = models
    theirs = comfy_run(native.attach(base, nag=NAG, negative=native_cond(NEG_LONG)), neg=torch.zeros(5, CAP))
    assert max_diff(theirs, our_run(dit, neg=NEG_LONG, nag=NAG)) <= TOL


def test_nag_is_off_when_cfg_is_on(models, unpatched):
    """As in our sampler: with CFG on, the negative prompt acts through CFG and NAG stays off."""
    assert torch.equal(comfy_run(native.attach(models[1], nag=NAG), cfg=3.0), unpatched(cfg=3.0))


# ------------------------------------------------------------------------------------------------- (c) base untouched


def test_the_base_model_is_left_unpatched(models, unpatched):
    _, base = models
    dm = base.model.diffusion_model
    before = (dict(base.object_patches), dict(base.wrappers), set(base.model_options["transformer_options"]))
    patched = native.attach(base, nag=NAG, slg=SLG, dype=DYPE, cfg=CFG, diversity=DIVERSITY)
    comfy_run(patched, size=DYPE_SIZE)
    assert (dict(base.object_patches), dict(base.wrappers), set(base.model_options["transformer_options"])) == before
    embedder = dm.rope_embedder  # ours may linger on the shared module until ComfyUI loads another patcher ...
    if isinstance(embedder, native.DyPEEmbedND):
        assert embedder.armed is None  # ... disarmed, so it passes the original through
        ids = torch.rand(1, 50, 3) * 40
        assert torch.equal(embedder(ids), embedder.original(ids))
    assert torch.equal(comfy_run(base, size=DYPE_SIZE), unpatched(DYPE_SIZE))
    assert not isinstance(dm.rope_embedder, native.DyPEEmbedND)


# ------------------------------------------------------------------------------------------------- (d) chaining


def test_attach_is_chainable(models):
    dit, base = models
    both = native.attach(native.attach(base, nag=NAG), slg=SLG)
    guidance = both.model_options["transformer_options"][native.KEY]
    assert guidance.nag == NAG and guidance.slg == SLG
    assert len(both.get_wrappers("diffusion_model", native.KEY)) == 1
    assert max_diff(comfy_run(both), our_run(dit, neg=NEG, nag=NAG, slg=SLG)) <= TOL
    # a later group replaces the earlier one: SLG switched off again leaves NAG alone on the model
    nag_only = native.attach(both, slg=SlgSettings())
    assert nag_only.model_options["transformer_options"][native.KEY].nag == NAG
    assert not nag_only.model_options["sampler_post_cfg_function"]
    assert len(both.model_options["sampler_post_cfg_function"]) == 1  # the earlier clone keeps its own
    twice = native.attach(native.attach(base, dype=DYPE), dype=DYPE)
    assert not isinstance(twice.object_patches[native.ROPE].original, native.DyPEEmbedND)
    undone = native.attach(twice, dype=DypeSettings())
    assert not isinstance(undone.get_model_object(native.ROPE), native.DyPEEmbedND)


# ------------------------------------------------------------------------------------------------- fallback


def test_inputs_the_driver_does_not_cover_use_the_stock_forward(models, caplog):
    _, base = models
    patched = native.attach(base, nag=NAG, slg=SLG)
    dm = base.model.diffusion_model
    x, sigma = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0.9])
    ref = [torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(2))]
    run = native._Run(seed=0, cfg=1.0, negative=NEG[None])

    def forward(options: dict) -> torch.Tensor:
        to = {**options, "sigmas": sigma, native.SKIP_KEY: (1,), native.RUN_KEY: run}
        with torch.no_grad():
            return dm(x, sigma, POS[None], POS.shape[0], ref_latents=ref, transformer_options=to)

    caplog.set_level(logging.WARNING, logger=native.__name__)
    native._warned.clear()
    to = {**patched.model_options["transformer_options"], "wrappers": patched.wrappers}
    assert torch.equal(forward(to), forward({}))
    assert "NAG and SLG not applied" in caplog.text and "ref_latents" in caplog.text


# ------------------------------------------------------------------------------------------------- text bridge

TE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1)
PROMPT = "a photo of a cat on a red chair"


@pytest.fixture(scope="module")
def text_encoders(qwen_tokenizer_dir):
    """(ComfyUI's CLIP for Z-Image, our PromptEncoder) around the same tiny Qwen3 weights (head_dim 128: ComfyUI's
    Qwen3-4B config fixes it; 3 layers: ComfyUI reads the second-to-last)."""
    from transformers import Qwen3Config, Qwen3Model

    from zimage_core.models import load_tokenizer

    torch.manual_seed(0)
    hf = Qwen3Model(Qwen3Config(vocab_size=151936, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                                max_position_embeddings=4096, **TE)).eval()
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.z_image.ZImageTokenizer,
                                                    comfy.text_encoders.z_image.te())
    clip = comfy.sd.CLIP(target, state_dict=[{"model." + k: v for k, v in hf.state_dict().items()}],
                         model_options={"qwen3_4b_model_config": TE, "dtype": torch.float32})
    return clip, PromptEncoder(hf, load_tokenizer(qwen_tokenizer_dir))


def test_comfyui_text_encoding_matches_ours(text_encoders):
    clip, encoder = text_encoders
    tokens = clip.tokenize(PROMPT)
    ours = encoder.encode(PROMPT).embeds[0]
    assert [t for t, _ in tokens["qwen3_4b"][0]] == encoder.tokenizer(format_prompt(PROMPT),
                                                                       add_special_tokens=False)["input_ids"]
    theirs = clip.encode_from_tokens_scheduled(tokens)[0][0][0]
    assert theirs.shape == ours.shape and max_diff(theirs, ours) <= 1e-5


def test_a_comfyui_conditioning_drives_our_sampler(text_encoders):
    bridges = pytest.importorskip("nodes.bridges", reason="nodes/bridges.py (native_to_ours) is not written yet")
    from zimage_core.testing import tiny_transformer

    clip, encoder = text_encoders
    dit = tiny_transformer(0)  # caption width 32, as the tiny text encoder
    converted = bridges.native_to_ours(clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT)))
    with torch.no_grad():
        via_comfy = sample(dit, converted, width=64, height=64, steps=2, seed=SEED)
        direct = sample(dit, encoder.encode(PROMPT), width=64, height=64, steps=2, seed=SEED)
    assert max_diff(via_comfy, direct) <= TOL
