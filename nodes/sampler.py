"""Z-Image Sampler (text-to-image / image-to-image → LATENT in the raw VAE space) and Z-Image Schedule (SIGMAS).

The sampler keeps to what every run needs — model, prompt, size, steps, seed, shift, denoise, batch; guidance comes
attached to the model by the guidance nodes (NAG, SLG, DyPE, CFG, seed diversity). The LATENT holds raw Flux-AE
latents (what ComfyUI's native VAE Decode expects with ae.safetensors); zimage_core works in model space, so the
node converts with vae.to_vae_space / to_model_space at the edges.
"""

from __future__ import annotations

import logging

import torch

from zimage_core import vae as vae_ops
from zimage_core.encode import Conditioning
from zimage_core.errors import InputError
from zimage_core.guidance import guided_denoiser
from zimage_core.lora import apply_loras, loaded_loras
from zimage_core.offload import dit_activation_bytes, vae_decode_bytes
from zimage_core.sample import StepInfo, sample
from zimage_core.schedule import flow_sigmas, img2img_start
from zimage_core.settings import GenerationSettings, InpaintSettings

from . import host
from .control import prepare_sampling
from .encode import COND
from .loaders import MODEL, ZImageModel

log = logging.getLogger(__name__)

LATENT_CHANNELS = 16  # Z-Image uses the Flux VAE (ae.safetensors): 16 latent channels
WIDGETS = {"width": "width", "height": "height", "steps": "steps", "seed": "seed", "shift": "shift",
           "denoise": "strength", "batch_size": "batch"}  # node input -> option (ComfyUI's usual input names)


INPAINT = {o.name: o for o in InpaintSettings.options()}


def _options() -> dict:
    return {o.name: o for o in GenerationSettings.options()}


class ZImageSampler:
    """Flow-match Euler sampling for Z-Image-Turbo; guidance comes with the model."""

    DESCRIPTION = ("Samples Z-Image-Turbo (8-9 steps, no CFG). Text-to-image at width×height, or image-to-image "
                   "from an optional LATENT or IMAGE with denoise < 1. Guidance (NAG for the negative prompt, SLG, "
                   "DyPE, CFG, seed diversity) is attached to the model by the Z-Image guidance nodes; a connected "
                   "negative acts through NAG (default settings) unless CFG is on. Output is a LATENT in the raw VAE "
                   "space, so native VAE Decode (ae.safetensors) and the Z-Image decode nodes both decode it.")
    CATEGORY = "Z-Image/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Denoised latents (raw Flux-AE space, ComfyUI's LATENT convention).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        o = _options()
        size_note = " Ignored when a latent or image is connected (its size is used)."
        required = {
            "model": (MODEL, {"tooltip": "Z-Image model from Z-Image Loader (through LoRA / guidance nodes)."}),
            "positive": (COND, {"tooltip": "Prompt conditioning from Qwen3 Encode."}),
            "width": o["width"].widget(tooltip=o["width"].describe() + size_note),
            "height": o["height"].widget(tooltip=o["height"].describe() + size_note),
            "steps": o["steps"].widget(),
            "seed": o["seed"].widget(control_after_generate=True),
            "shift": o["shift"].widget(),
            "denoise": o["strength"].widget(),
            "batch_size": o["batch"].widget(tooltip=o["batch"].describe() + " A batched start latent sets the batch "
                                                                           "itself."),
        }
        optional = {
            "negative": (COND, {"tooltip": "Negative prompt (Qwen3 Encode): acts through NAG (or CFG when a CFG node "
                                           "is attached). A negative on the NAG node takes precedence."}),
            "latent": ("LATENT", {"tooltip": "Start latent for image-to-image (e.g. from VAE Encode); its size sets "
                                             "the output size."}),
            "image": ("IMAGE", {"tooltip": "Start image for image-to-image (encoded with the Z-Image VAE; sides must "
                                           "be multiples of 16). Used when no latent is connected."}),
            "mask": ("MASK", {"tooltip": "Inpaint mask for the start image or latent: 1 (white) = repaint, 0 = keep "
                                         "(resized to the start's size). The kept area is restored after every "
                                         "step; composite the decoded image onto the original with the same mask "
                                         "to keep its pixels exactly. Use denoise 1 to repaint from scratch."}),
            "mask_grow": INPAINT["mask_grow"].widget(),
            "mask_feather": INPAINT["mask_feather"].widget(),
        }
        return {"required": required, "optional": optional}

    def sample(self, model: ZImageModel, positive: Conditioning, width: int, height: int, steps: int, seed: int,
               shift: float, denoise: float, batch_size: int = 1, negative: Conditioning | None = None,
               latent: dict | None = None, image: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               mask_grow: int = 0, mask_feather: int = 0) -> tuple:
        if not isinstance(model, ZImageModel):
            raise InputError("the Z-Image Sampler runs models from the Z-Image Loader; a ComfyUI MODEL (UNETLoader, "
                             "GGUF loader) goes to KSampler — the Z-Image guidance nodes work there too.")
        bundle = model.bundle
        with host.timed("denoise"), host.interruptible():
            vae = bundle.vae  # only its scale/shift config is needed unless an IMAGE must be encoded
            init = self._start_latents(vae, latent, image)
            if init is not None:
                height, width = int(init.shape[-2]) * 8, int(init.shape[-1]) * 8
                if init.shape[0] > 1:
                    batch_size = int(init.shape[0])
                if denoise <= 0.0:  # nothing to denoise: the input comes back unchanged
                    raw = latent["samples"] if latent is not None else vae_ops.to_vae_space(init, vae)
                    return ({"samples": raw.cpu()},)
            elif denoise < 1.0:
                log.warning("Z-Image Sampler: denoise %.2f without a latent or image; generating from noise.", denoise)
                denoise = 1.0
            extra = prepare_sampling(model, vae, width, height, batch_size, image if latent is None else None, mask,
                                     mask_grow, mask_feather, has_start=init is not None)

            transformer = bundle.transformer
            if model.loras or loaded_loras(transformer):
                apply_loras(transformer, list(model.loras))
            options = model.guidance.options_for(width=width, height=height, seed=seed,
                                                 negative=model.nag_negative or negative,
                                                 n_layers=len(transformer.layers))
            progress = host.Progress(steps)
            preview = host.latent_previewer()

            def on_step(info: StepInfo) -> None:
                progress.update(info.step, info.total, preview(info.denoised) if preview is not None else None)

            forwards = batch_size * (2 if options.cfg_on else 1)
            with host.models_ready(transformer, extra_bytes=dit_activation_bytes(width, height, forwards=forwards)), \
                    extra.context:
                latents = sample(transformer, positive, width=width, height=height, steps=steps, seed=seed,
                                 shift=shift, images_per_prompt=batch_size, init_latents=init,
                                 strength=denoise if init is not None else 1.0,
                                 make_denoiser=guided_denoiser(options), callback=on_step,
                                 should_stop=host.should_stop, inpaint_mask=extra.latent_mask)
            raw = vae_ops.to_vae_space(latents, vae)
        return ({"samples": raw.cpu()},)

    @staticmethod
    def _start_latents(vae, latent: dict | None, image: torch.Tensor | None) -> torch.Tensor | None:
        """Model-space start latents from a LATENT or an IMAGE (None for text-to-image)."""
        if latent is not None:
            channels = int(latent["samples"].shape[1]) if latent["samples"].ndim > 1 else 0
            if channels != LATENT_CHANNELS:
                raise InputError(f"this LATENT has {channels} channels; Z-Image needs a {LATENT_CHANNELS}-channel "
                                 "Flux latent (EmptySD3LatentImage, or VAE Encode with ae.safetensors).")
            return vae_ops.to_model_space(latent["samples"].float(), vae)
        if image is not None:
            with host.models_ready(vae, extra_bytes=vae_decode_bytes(image.shape[2], image.shape[1])):
                return vae_ops.encode(vae, image)
        return None


class ZImageSchedule:
    """Z-Image's flow-match schedule as SIGMAS, for SamplerCustom / SamplerCustomAdvanced."""

    DESCRIPTION = ("The Z-Image-Turbo schedule (flow-match, shift 3) as SIGMAS: σ = shift·s/(1+(shift−1)·s) over "
                   "s = linspace(1, 1/N, N), then 0. KSampler's 'simple' scheduler gives the same sigmas only when "
                   "1000/steps is a whole number (8 steps yes, 9 no); with SamplerCustom and this node a native "
                   "graph samples exactly like the Z-Image Sampler at any step count.")
    CATEGORY = "Z-Image/sampling"
    FUNCTION = "schedule"
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("Noise levels for SamplerCustom (steps + 1 values, ending at 0).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        o = _options()
        return {"required": {"steps": o["steps"].widget(), "shift": o["shift"].widget(),
                             "denoise": o["strength"].widget()}}

    def schedule(self, steps: int, shift: float, denoise: float) -> tuple:
        sigmas = flow_sigmas(steps, shift)
        if denoise <= 0.0:  # nothing to denoise (like ComfyUI's BasicScheduler)
            return (sigmas[-1:],)
        if denoise < 1.0:
            sigmas = sigmas[img2img_start(steps, denoise):]
        return (sigmas,)


NODES = {"ZImageSampler": ZImageSampler, "ZImageSchedule": ZImageSchedule}
NAMES = {"ZImageSampler": "Z-Image Sampler", "ZImageSchedule": "Z-Image Schedule"}
