"""Z-Image Sampler: text-to-image / image-to-image with NAG, SLG and DyPE → ComfyUI LATENT (raw VAE space).

The LATENT holds raw Flux-AE latents (what ComfyUI's native VAE Decode expects with ae.safetensors); zimage_core
works in model space, so the node converts with vae.to_vae_space / to_model_space at the edges.
"""

from __future__ import annotations

import logging

import torch

from zimage_core import vae as vae_ops
from zimage_core.encode import Conditioning
from zimage_core.errors import InputError
from zimage_core.guidance import GuidanceOptions, guided_denoiser
from zimage_core.guidance.diversity import make_diversity_fn
from zimage_core.guidance.dype import DEFAULT_METHOD, METHODS, DyPE
from zimage_core.guidance.slg import DEFAULT_SLG_END, DEFAULT_SLG_LAYERS, DEFAULT_SLG_START
from zimage_core.lora import apply_loras, loaded_loras
from zimage_core.offload import dit_activation_bytes, vae_decode_bytes
from zimage_core.sample import StepInfo, sample
from zimage_core.schedule import DEFAULT_SHIFT

from . import host
from .encode import COND
from .loaders import MODEL, ZImageModel

log = logging.getLogger(__name__)

LATENT_CHANNELS = 16  # Z-Image uses the Flux VAE (ae.safetensors): 16 latent channels
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
SLG_LAYERS_DEFAULT = f"{DEFAULT_SLG_LAYERS[0]}-{DEFAULT_SLG_LAYERS[-1]}"


class ZImageSampler:
    """Flow-match Euler sampling for Z-Image-Turbo with working negative prompts (NAG), SLG and DyPE."""

    DESCRIPTION = ("Samples Z-Image-Turbo (8-9 steps, no CFG). Text-to-image at width×height, or image-to-image "
                   "from an optional LATENT or IMAGE with denoise < 1. A negative prompt acts through NAG "
                   "(Normalized Attention Guidance, scale > 1); SLG (skip-layer guidance) sharpens structure; DyPE "
                   "keeps composition intact above 1024² (2K images). Output is a LATENT in the raw VAE space, so "
                   "native VAE Decode (ae.safetensors) and the Z-Image decode nodes both decode it.")
    CATEGORY = "Z-Image/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Denoised latents (raw Flux-AE space, ComfyUI's LATENT convention).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (MODEL, {"tooltip": "Z-Image model from Z-Image Loader (or a LoRA loader)."}),
                "positive": (COND, {"tooltip": "Prompt conditioning from Qwen3 Encode."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 16,
                                  "tooltip": "Image width in pixels, a multiple of 16. Ignored when a latent or "
                                             "image is connected (its size is used)."}),
                "height": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 16,
                                   "tooltip": "Image height in pixels, a multiple of 16. Ignored when a latent or "
                                              "image is connected."}),
                "steps": ("INT", {"default": 9, "min": 1, "max": 100,
                                  "tooltip": "Number of model evaluations. Turbo is distilled for 8-9."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Noise seed; image i of a batch uses seed + i (same image at any batch "
                                            "position, on CPU or GPU)."}),
                "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 0.1, "max": 20.0, "step": 0.05,
                                    "tooltip": "Flow-match schedule shift (3.0 for Turbo). Higher spends more steps "
                                               "at high noise (composition), lower on detail."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 = generate from pure noise. Below 1 (image-to-image, needs a "
                                                 "latent or image): how much of the input is replaced."}),
            },
            "optional": {
                "negative": (COND, {"tooltip": "Negative prompt (Qwen3 Encode). Acts through NAG when NAG scale > 1; "
                                               "Turbo has no CFG, so without NAG it is ignored (with a warning)."}),
                "latent": ("LATENT", {"tooltip": "Start latent for image-to-image (e.g. from VAE Encode); its size "
                                                 "sets the output size."}),
                "image": ("IMAGE", {"tooltip": "Start image for image-to-image (encoded with the Z-Image VAE; sides "
                                               "must be multiples of 16). Used when no latent is connected."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                       "tooltip": "Images to generate (seeds seed … seed+n-1). A batched start latent "
                                                  "sets the batch itself."}),
                "nag_scale": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "NAG strength: 1 = off; 2-5 makes the negative prompt act."}),
                "nag_tau": ("FLOAT", {"default": 3.5, "min": 0.1, "max": 20.0, "step": 0.05,
                                      "tooltip": "NAG τ: cap on how far guidance may push the attention output "
                                                 "(2.5 is a good 'on' value)."}),
                "nag_alpha": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "NAG α: blend of the guided and the plain attention output "
                                                   "(0.25 is a good 'on' value)."}),
                "slg_scale": ("FLOAT", {"default": 0.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                        "tooltip": "Skip-layer guidance strength: 0 = off (exactly the plain "
                                                   "output). Costs one extra model evaluation per active step."}),
                "slg_layers": ("STRING", {"default": SLG_LAYERS_DEFAULT,
                                          "tooltip": "Transformer layers skipped for SLG, e.g. '7-12' or "
                                                     "'7,9,11-12' (0-29 on the full model)."}),
                "slg_start": ("FLOAT", {"default": DEFAULT_SLG_START, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "SLG acts while noise σ ≤ this (1 = pure noise)."}),
                "slg_end": ("FLOAT", {"default": DEFAULT_SLG_END, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "SLG acts while noise σ ≥ this (the window is inclusive, so it "
                                                 "fires at 8-9 steps)."}),
                "dype": ("BOOLEAN", {"default": False,
                                     "tooltip": "DyPE: dynamic RoPE extrapolation for images larger than 1024² (no "
                                                "effect at or below 1024 per side). Each side is scaled on its own, "
                                                "so non-square images are not stretched."}),
                "dype_method": (list(METHODS), {"default": DEFAULT_METHOD,
                                                "tooltip": "How RoPE frequencies are extrapolated: vision_yarn "
                                                           "(default), yarn or ntk."}),
                "dype_scale": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 8.0, "step": 0.05,
                                         "tooltip": "DyPE λs: strength of the extrapolation at high noise."}),
                "dype_exponent": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 8.0, "step": 0.05,
                                            "tooltip": "DyPE λt: how fast it fades to plain RoPE as noise drops "
                                                       "(higher = fades sooner)."}),
                "seed_diversity": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                             "tooltip": "Turbo's images barely change with the seed. > 0 adds "
                                                        "seeded noise (× the embedding's spread) to the prompt "
                                                        "embeddings during the early, high-noise steps only, so "
                                                        "composition varies per seed while details follow the "
                                                        "prompt. 0 = off (identical output); 0.25-0.5 is mild."}),
                "cfg_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Classic CFG for non-distilled Z-Image checkpoints (Base, "
                                                   "de-distilled models), diffusers' convention: pred = pos + "
                                                   "scale·(pos − neg). 0 = off (Turbo). Needs a negative (encode an "
                                                   "empty prompt for the unconditional branch); doubles the cost."}),
                "cfg_normalization": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.05,
                                                "tooltip": "CFG renormalisation: cap ‖guided‖ at this × ‖positive‖ "
                                                           "(0 = off; ~1.0 tames over-saturation)."}),
                "cfg_truncation": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "CFG truncation: guidance stops once progress (1 − σ) "
                                                        "exceeds this (1 = guide every step)."}),
            },
        }

    def sample(self, model: ZImageModel, positive: Conditioning, width: int, height: int, steps: int, seed: int,
               shift: float, denoise: float, negative: Conditioning | None = None, latent: dict | None = None,
               image: torch.Tensor | None = None, batch_size: int = 1, nag_scale: float = 1.0, nag_tau: float = 3.5,
               nag_alpha: float = 0.5, slg_scale: float = 0.0, slg_layers: str = SLG_LAYERS_DEFAULT,
               slg_start: float = DEFAULT_SLG_START, slg_end: float = DEFAULT_SLG_END, dype: bool = False,
               dype_method: str = DEFAULT_METHOD, dype_scale: float = 2.0, dype_exponent: float = 2.0,
               seed_diversity: float = 0.0, cfg_scale: float = 0.0, cfg_normalization: float = 0.0,
               cfg_truncation: float = 1.0) -> tuple:
        bundle = model.bundle
        with host.timed("generation"), host.interruptible():
            vae = bundle.vae  # only its scale/shift config is needed unless an IMAGE must be encoded
            init = None
            if latent is not None:
                channels = int(latent["samples"].shape[1]) if latent["samples"].ndim > 1 else 0
                if channels != LATENT_CHANNELS:
                    raise InputError(f"this LATENT has {channels} channels; Z-Image needs a {LATENT_CHANNELS}-channel "
                                     "Flux latent (EmptySD3LatentImage, or VAE Encode with ae.safetensors).")
                init = vae_ops.to_model_space(latent["samples"].float(), vae)
            elif image is not None:
                with host.models_ready(vae, extra_bytes=vae_decode_bytes(image.shape[2], image.shape[1])):
                    init = vae_ops.encode(vae, image)
            if init is not None:
                height, width = int(init.shape[-2]) * 8, int(init.shape[-1]) * 8
                if init.shape[0] > 1:
                    batch_size = int(init.shape[0])
            if init is not None and denoise <= 0.0:  # nothing to denoise: the input comes back unchanged
                raw = latent["samples"] if latent is not None else vae_ops.to_vae_space(init, vae)
                return ({"samples": raw.cpu()},)
            if init is None and denoise < 1.0:
                log.warning("Z-Image Sampler: denoise %.2f without a latent or image; generating from noise.", denoise)
                denoise = 1.0

            transformer = bundle.transformer
            if model.loras or loaded_loras(transformer):
                apply_loras(transformer, list(model.loras))

            options = GuidanceOptions(
                negative=negative, nag_scale=nag_scale, nag_tau=nag_tau, nag_alpha=nag_alpha,
                slg_scale=slg_scale, slg_layers=slg_layers, slg_start=slg_start, slg_end=slg_end,
                dype=DyPE(width, height, method=dype_method, lambda_s=dype_scale, lambda_t=dype_exponent)
                if dype else None,
                diversity_fn=make_diversity_fn(seed_diversity, seed) if seed_diversity > 0 else None,
                cfg_scale=cfg_scale, cfg_normalization=cfg_normalization, cfg_truncation=cfg_truncation,
            )
            if negative is not None and nag_scale == 1.0 and cfg_scale == 0.0:
                log.warning("Z-Image Sampler: a negative prompt is connected but NAG scale is 1 (off); it has no "
                            "effect. Set NAG scale to 2-5 to use it.")

            progress = host.Progress(steps)
            preview = host.latent_previewer()

            def on_step(info: StepInfo) -> None:
                progress.update(info.step, info.total, preview(info.denoised) if preview is not None else None)

            working = dit_activation_bytes(width, height, forwards=batch_size * (2 if cfg_scale > 0 else 1))
            with host.models_ready(transformer, extra_bytes=working):
                latents = sample(transformer, positive, width=width, height=height, steps=steps, seed=seed,
                                 shift=shift, images_per_prompt=batch_size, init_latents=init,
                                 strength=denoise if init is not None else 1.0, make_denoiser=guided_denoiser(options),
                                 callback=on_step, should_stop=host.should_stop)
            raw = vae_ops.to_vae_space(latents, vae)
        return ({"samples": raw.cpu()},)


NODES = {"ZImageSampler": ZImageSampler}
NAMES = {"ZImageSampler": "Z-Image Sampler"}
