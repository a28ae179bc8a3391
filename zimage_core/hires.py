"""Multi-pass hi-res ("hires fix") in one call: generate at a base size, then for each pass upscale and img2img-refine
at the larger size, with DyPE on whenever the pass is larger than the model's 1024² training size.

Why: Turbo composes well near 1024² and falls apart (repeated subjects) when asked for 2048² directly. Generating
the layout small and refining it big keeps the composition; DyPE keeps the refine pass from breaking it again.

Pass rules: `scale` is relative to the previous pass's size (so passes [2, 1.5] on 768² give 1536² then 2304²);
sizes are snapped to multiples of 16 and checked. `steps` is the length of that pass's schedule and `strength`
(0-1] the share of it that runs (img2img: N − N·strength is the first step, as in sample), so a pass runs
steps − int(steps − steps·strength) model evaluations. Upscale 'latent' resizes the model-space latents
(bicubic, bilinear or bislerp); 'pixel' decodes, resizes with LANCZOS and encodes again (sharper, costs two VAE
passes). Each pass gets its own noise: seed + PASS_SEED_STRIDE·pass for image 0, +1 per image, as in `sample`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from . import vae as vae_ops
from .encode import MAX_CAPTION_TOKENS, Conditioning
from .errors import InputError
from .generate import GenerationResult, load_and_encode
from .guidance.dype import DEFAULT_METHOD, DyPE, DyPEDenoiser
from .guidance.settings import DypeSettings
from .models import ModelBundle
from .sample import DenoiserFactory, StepCallback, StepInfo, TransformerDenoiser, sample
from .schedule import img2img_start
from .settings import (DEFAULT_HIDDEN_LAYER, DEFAULT_LONG_MODE, LATENT_RESAMPLERS, UPSCALE_MODES, HiresPass,
                       parse_passes, plan_sizes)
from .timing import StageTimer

PASS_SEED_STRIDE = 1_000_003
DEFAULT_PASSES = ({"scale": 2.0, "steps": 6, "strength": 0.45},)


@dataclass
class HiresResult(GenerationResult):
    passes: list[dict] = field(default_factory=list)  # per stage: width, height, evaluations, dype, seconds


# --------------------------------------------------------------------------------------------- resampling


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), magnitudes interpolated linearly."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    dot = (ua * ub).sum(1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    lin = (1 - t) * ua + t * ub
    sph = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so.clamp_min(1e-8)
    direction = torch.where(so > 1e-4, sph, lin)
    return direction * ((1 - t) * na + t * nb)


def _bislerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    pos = ((torch.arange(size, dtype=torch.float32, device=x.device) + 0.5) * n / size - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    t = (pos - lo.float())
    shape = [1] * x.ndim
    shape[dim] = size
    t = t.view(shape)
    return _slerp(x.index_select(dim, lo), x.index_select(dim, hi), t)


def bislerp(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize whose two 1-D blends are slerps of the per-pixel channel vectors (keeps latent magnitudes
    from collapsing where neighbours disagree, which plain bilinear does)."""
    return _bislerp_axis(_bislerp_axis(latents.float(), width, 3), height, 2)


def upscale_latents(latents: torch.Tensor, width: int, height: int, mode: str = "bicubic") -> torch.Tensor:
    """Model-space latents (B, 16, h, w) → (B, 16, height/8, width/8)."""
    size = (height // vae_ops.VAE_SCALE, width // vae_ops.VAE_SCALE)
    if mode == "bislerp":
        return bislerp(latents, *size)
    if mode not in ("bicubic", "bilinear"):
        raise InputError(f"Unknown latent upscale '{mode}'; choose one of {', '.join(LATENT_RESAMPLERS)}.")
    return F.interpolate(latents.float(), size=size, mode=mode, align_corners=False)


def upscale_pixels(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(B, H, W, 3) 0-1 → (B, height, width, 3) with PIL-quality LANCZOS (in float, on the images' device)."""
    from .blocks import lanczos_resize

    return lanczos_resize(images, (height, width)).clamp(0, 1)


# --------------------------------------------------------------------------------------------- the route


def _with_dype(factory: DenoiserFactory | None, dype: DyPE | None) -> DenoiserFactory:
    base = factory or TransformerDenoiser
    if dype is None or not dype.active:
        return base
    return lambda transformer, cond: DyPEDenoiser(base(transformer, cond), transformer, dype)


HIRES_DYPE = DypeSettings(method=DEFAULT_METHOD)  # passes above the base size get DyPE unless told otherwise


def generate_hires(
    bundle: ModelBundle,
    prompts: str | list[str] | Conditioning,
    *,
    width: int = 1024,
    height: int = 1024,
    steps: int = 9,
    seed: int = 0,
    passes: Sequence[dict | HiresPass] = DEFAULT_PASSES,
    upscale: str = "latent",
    latent_resampler: str = "bicubic",
    dype: DypeSettings | None = HIRES_DYPE,
    shift: float | None = None,
    images_per_prompt: int = 1,
    hidden_layer: int = DEFAULT_HIDDEN_LAYER,
    max_tokens: int = MAX_CAPTION_TOKENS,
    long_mode: str = DEFAULT_LONG_MODE,
    make_denoiser_for: Callable[[int, int], DenoiserFactory | None] | None = None,
    callback: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    tiled_decode: bool | None = None,
    on_decode_tile: Callable[[int, int], None] | None = None,
) -> HiresResult:
    """Generate at width×height, then run every pass (upscale → img2img refine); returns the final images.

    `make_denoiser_for(width, height)` returns the caller's denoiser factory for that pass size (guidance options
    rebuilt per pass, e.g. the composition's guided_denoiser(options)); it must not add DyPE itself — this function
    wraps every pass larger than the DyPE base size with `dype` (None or method 'off' turns that off). The callback
    sees one continuous step count over all passes.
    """
    if upscale not in UPSCALE_MODES:
        raise InputError(f"Unknown hi-res upscale '{upscale}'; choose 'latent' or 'pixel'.")
    if latent_resampler not in LATENT_RESAMPLERS:
        raise InputError(f"Unknown latent upscale '{latent_resampler}'; choose one of {', '.join(LATENT_RESAMPLERS)}.")
    plan = parse_passes(passes)
    sizes = plan_sizes(width, height, plan)
    evals = [steps] + [p.steps - img2img_start(p.steps, p.strength) for p in plan]
    timer = StageTimer(sync_cuda=bundle.device.type == "cuda")
    big_w, big_h = max(sizes, key=lambda wh: wh[0] * wh[1])  # the largest pass decides the memory mode
    plan_memory, cond = load_and_encode(bundle, prompts, big_w, big_h, images_per_prompt, timer,
                                        hidden_layer=hidden_layer, max_tokens=max_tokens, long_mode=long_mode)
    run = _Passes(bundle.activate("transformer"), seed, bundle.shift if shift is None else shift, images_per_prompt,
                  evals, dype, make_denoiser_for, callback, should_stop, timer)
    latents = run.sample(cond, 0, width, height, steps, None, 1.0)
    if images_per_prompt > 1:
        cond = cond.repeat_each(images_per_prompt)  # refine passes get one init latent per output image
    for i, p in enumerate(plan, 1):
        w, h = sizes[i]
        with timer.stage(f"pass{i}_upscale"):
            if upscale == "latent":
                init = upscale_latents(latents, w, h, latent_resampler)
            else:
                vae = bundle.activate("vae")
                init = vae_ops.encode(vae, upscale_pixels(vae_ops.decode(vae, latents, tiled=tiled_decode), w, h))
                bundle.activate("transformer")
        latents = run.sample(cond, i, w, h, p.steps, init, p.strength)
        run.stages[-1]["upscale_seconds"] = timer.seconds[f"pass{i}_upscale"]
    with timer.stage("decode"):
        images = vae_ops.decode(bundle.activate("vae"), latents, tiled=tiled_decode, on_tile=on_decode_tile)
    seeds = [seed + i for i in range(latents.shape[0])]
    return HiresResult(images, latents, seeds, timer.report(), [plan_memory.describe()], passes=run.stages)


@dataclass
class _Passes:
    """What every sampling pass of one hi-res generation shares; `sample` runs one pass and records it."""

    transformer: torch.nn.Module
    seed: int
    shift: float
    images_per_prompt: int
    evals: list[int]  # model evaluations per pass (base first)
    dype: DypeSettings | None
    make_denoiser_for: Callable[[int, int], DenoiserFactory | None] | None
    callback: StepCallback | None
    should_stop: Callable[[], bool] | None
    timer: StageTimer
    stages: list[dict] = field(default_factory=list)

    def _progress(self, stage: int) -> StepCallback | None:
        """The pass's steps as part of one continuous count over all passes."""
        if self.callback is None:
            return None
        offset, total, mine = sum(self.evals[:stage]), sum(self.evals), self.evals[stage]

        def report(info: StepInfo) -> None:
            self.callback(StepInfo(offset + info.step - (info.total - mine), total, info.sigma, info.latents,
                                   info.denoised))
        return report

    def sample(self, cond: Conditioning, stage: int, w: int, h: int, n_steps: int, init: torch.Tensor | None,
               strength: float) -> torch.Tensor:
        name = "base" if stage == 0 else f"pass{stage}"
        dype = self.dype.for_size(w, h) if self.dype is not None else None
        factory = self.make_denoiser_for(w, h) if self.make_denoiser_for is not None else None
        with self.timer.stage(f"{name}_denoise"):
            latents = sample(self.transformer, cond, width=w, height=h, steps=n_steps,
                             seed=self.seed + PASS_SEED_STRIDE * stage, shift=self.shift,
                             images_per_prompt=self.images_per_prompt if init is None else 1, init_latents=init,
                             strength=strength, make_denoiser=_with_dype(factory, dype),
                             callback=self._progress(stage), should_stop=self.should_stop)
        self.stages.append({"stage": name, "width": w, "height": h, "evaluations": self.evals[stage],
                            "strength": strength, "dype": dype is not None and dype.active,
                            "dype_info": dype.describe() if dype is not None else "off",
                            "seconds": self.timer.seconds[f"{name}_denoise"]})
        return latents


__all__ = ["DEFAULT_PASSES", "HiresPass", "HiresResult", "LATENT_RESAMPLERS", "UPSCALE_MODES", "bislerp",
           "generate_hires", "parse_passes", "plan_sizes", "upscale_latents", "upscale_pixels"]
