"""Our own flow-match Euler loop over ZImageTransformer2DModel.

Conventions (those of diffusers' ZImagePipeline, so results match it): the model is called with t = 1 − σ and
returns −velocity; x ← x + (σ_{i+1} − σ_i)·v.
Latents here are in the *model* space ((raw − shift)·scale, see vae.py). Noise is drawn on the CPU from one
generator per image (seed + index), so the same seed gives the same image on CPU and GPU and at any batch position.

Guidance plugs in through the `Denoiser` seam: anything callable as denoiser(latents, sigma, step) -> velocity.
`TransformerDenoiser` is the plain one; zimage_core.guidance builds guided ones (NAG, SLG, CFG, DyPE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

from .encode import Conditioning
from .errors import InputError, Interrupted, ModelFileError
from .fp8 import compute_dtype
from .offload import execution_device
from .schedule import DEFAULT_SHIFT, flow_sigmas, img2img_start
from .sizes import check_size

LATENT_CHANNELS = 16
VAE_SCALE = 8


class Denoiser(Protocol):
    def __call__(self, latents: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        """Velocity (float32, same shape as latents) for fp32 latents at noise level sigma."""


@dataclass
class StepInfo:
    """What a progress callback gets after each step."""

    step: int  # 1-based number of finished model evaluations
    total: int
    sigma: float
    latents: torch.Tensor  # current x
    denoised: torch.Tensor  # x0 estimate (x − σ·v): what a preview should show


StepCallback = Callable[[StepInfo], None]
DenoiserFactory = Callable[[torch.nn.Module, Conditioning], "Denoiser"]


@runtime_checkable
class PerImageFactory(Protocol):
    """A denoiser factory whose settings differ per image of a batch (a negative prompt per image, seed diversity
    seeded per image): `for_item(index, count)` gives the factory for image `index` of `count` computed alone, so
    generating one image at a time gives the batch's result."""

    def __call__(self, transformer: torch.nn.Module, cond: Conditioning) -> "Denoiser": ...

    def for_item(self, index: int, count: int) -> DenoiserFactory: ...


def transformer_velocity(transformer: torch.nn.Module, latents: torch.Tensor, sigma: float | torch.Tensor,
                         cap_feats: list[torch.Tensor], **forward_kwargs) -> torch.Tensor:
    """One batched model evaluation → velocity in float32."""
    dtype = compute_dtype(transformer)
    b = latents.shape[0]
    sig = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device)
    t = (1.0 - sig).expand(b) if sig.ndim == 0 else 1.0 - sig
    x = list(latents.to(dtype).unsqueeze(2).unbind(0))
    caps = [c.to(device=latents.device, dtype=dtype) for c in cap_feats]
    out = transformer(x, t, caps, return_dict=False, **forward_kwargs)[0]
    return -torch.stack([o.float() for o in out]).squeeze(2)


class TransformerDenoiser:
    """The plain (unguided) denoiser: one forward per step with the positive captions."""

    def __init__(self, transformer: torch.nn.Module, cond: Conditioning):
        self.transformer = transformer
        self.cond = cond

    def __call__(self, latents: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        return transformer_velocity(self.transformer, latents, sigma, self.cond.embeds)


def check_conditioning(cond: Conditioning, transformer: torch.nn.Module, what: str = "prompt") -> None:
    """Caption embeddings must match the DiT's caption width and fit the 1504-token RoPE table; say which file is
    likely wrong instead of failing deep inside the model."""
    from .encode import MAX_CAPTION_TOKENS

    width = int(transformer.config.cap_feat_dim)
    for i, e in enumerate(cond.embeds):
        if e.ndim != 2 or e.shape[-1] != width:  # the files do not belong together: a model-file problem
            raise ModelFileError(
                f"{what} embedding {i} has shape {tuple(e.shape)}, but this Z-Image transformer expects "
                f"(tokens, {width}). Were the embeddings made by another text encoder (Z-Image-Turbo needs Qwen3-4B, "
                "qwen_3_4b.safetensors) or saved from another model?")
        if not 1 <= e.shape[0] <= MAX_CAPTION_TOKENS:
            raise InputError(f"{what} embedding {i} has {e.shape[0]} tokens; Z-Image takes 1-{MAX_CAPTION_TOKENS}. "
                             "Re-encode with a long-prompt mode (truncate / interpolate / pool / attention_pool).")


def make_noise(shape: tuple[int, int, int], seeds: list[int]) -> torch.Tensor:
    """(len(seeds), C, H, W) float32 noise, one CPU generator per image so results do not depend on batch position
    or device."""
    out = []
    for s in seeds:
        g = torch.Generator("cpu").manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
        out.append(torch.randn((1, *shape), generator=g, dtype=torch.float32))
    return torch.cat(out)


@torch.no_grad()
def denoise(denoiser: Denoiser, latents: torch.Tensor, sigmas: torch.Tensor, *, start: int = 0,
            callback: StepCallback | None = None, should_stop: Callable[[], bool] | None = None,
            after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> torch.Tensor:
    """Euler steps from sigmas[start] down to sigmas[-1] (= 0). Raises Interrupted between steps when asked.
    `after_step(x, i)` may replace the latents after step i (inpainting keeps the unmasked area there)."""
    x = latents.float()
    total = len(sigmas) - 1
    for i in range(start, total):
        if should_stop is not None and should_stop():
            raise Interrupted(f"Stopped by the user before step {i + 1}/{total}.")
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        v = denoiser(x, sigma, i)
        denoised = x - sigma * v
        x = x + (sigma_next - sigma) * v
        if after_step is not None:
            x = after_step(x, i)
        if callback is not None:
            callback(StepInfo(i + 1, total, sigma_next, x, denoised))
    return x


def sample(
    transformer: torch.nn.Module,
    cond: Conditioning,
    *,
    width: int = 1024,
    height: int = 1024,
    steps: int = 9,
    seed: int = 0,
    shift: float = DEFAULT_SHIFT,
    images_per_prompt: int = 1,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    sigmas: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    inpaint_mask: torch.Tensor | None = None,
    seeds: list[int] | None = None,
    make_denoiser: Callable[[torch.nn.Module, Conditioning], Denoiser] | None = None,
    callback: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Generate model-space latents (B = prompts × images_per_prompt, 16, H/8, W/8).

    img2img: pass `init_latents` (model space, one per prompt or per output image) and strength in (0, 1]; the loop
    starts at index N − N·strength with x = σ·noise + (1 − σ)·x0. `make_denoiser(transformer, cond)` builds the
    denoiser for the repeated conditioning (guidance hooks in here); default is the plain transformer.
    inpaint_mask: (1 or B, 1, H/8, W/8), 1 = repaint; with init_latents the rest is kept (inpaint.LatentBlend).
    seeds: one per output image instead of seed + i (requests batched together keep their own seeds).
    """
    check_size(width, height)
    if images_per_prompt < 1:
        raise InputError(f"images_per_prompt must be ≥ 1; got {images_per_prompt}.")
    sigmas = flow_sigmas(steps, shift) if sigmas is None else sigmas.float().cpu()
    steps = len(sigmas) - 1
    check_conditioning(cond, transformer)
    cond = cond.repeat_each(images_per_prompt)
    batch = len(cond)
    device = execution_device(transformer)
    shape = (LATENT_CHANNELS, height // VAE_SCALE, width // VAE_SCALE)
    if seeds is not None and len(seeds) != batch:
        raise InputError(f"{len(seeds)} seeds for {batch} images.")
    if noise is None:
        noise = make_noise(shape, list(seeds) if seeds is not None else [seed + i for i in range(batch)])
    elif tuple(noise.shape) != (batch, *shape):
        raise InputError(f"noise has shape {tuple(noise.shape)}, expected {(batch, *shape)}.")
    noise = noise.to(device)

    start = 0
    if init_latents is not None:
        start = img2img_start(steps, strength)
        x0 = init_latents.to(device=device, dtype=torch.float32)
        if x0.shape[0] * images_per_prompt == batch and images_per_prompt > 1:
            x0 = x0.repeat_interleave(images_per_prompt, dim=0)
        if x0.shape[0] == 1 and batch > 1:
            x0 = x0.expand(batch, -1, -1, -1)
        if tuple(x0.shape) != (batch, *shape):
            raise InputError(f"init image latents {tuple(init_latents.shape)} do not match the requested "
                             f"{width}×{height} for {batch} image(s); resize the image to {width}×{height}.")
        s = float(sigmas[start])
        latents = s * noise + (1.0 - s) * x0
    elif strength != 1.0:
        raise InputError("strength < 1 needs an init image (img2img); for text-to-image use strength 1.")
    else:
        latents = noise

    blend = None
    if inpaint_mask is not None:
        from .inpaint import LatentBlend

        if init_latents is None:
            raise InputError("a mask needs the image to inpaint (init image).", "mask")
        if tuple(inpaint_mask.shape[-2:]) != shape[1:]:
            raise InputError(f"the latent mask is {tuple(inpaint_mask.shape[-2:])}, the latents {shape[1:]}.", "mask")
        blend = LatentBlend(x0, noise, inpaint_mask.to(device=device, dtype=torch.float32), sigmas)
    denoiser = (make_denoiser or TransformerDenoiser)(transformer, cond)
    return denoise(denoiser, latents, sigmas, start=start, callback=callback, should_stop=should_stop,
                   after_step=blend)
