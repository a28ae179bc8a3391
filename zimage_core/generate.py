"""Text (or image) to image in one call: encode → sample → decode, with a per-stage timing report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from . import vae as vae_ops
from .encode import Conditioning, PromptEncoder
from .images import as_image_batch
from .control import Control, controls_applied, prepare_controls
from .inpaint import describe as describe_inpaint
from .inpaint import latent_mask, paste_back
from .models import ModelBundle
from .offload import MemoryPlan
from .sample import DenoiserFactory, PerImageFactory, StepCallback, StepInfo, sample
from .settings import DEFAULT_HIDDEN_LAYER, DEFAULT_LONG_MODE, DEFAULT_SHIFT, MAX_CAPTION_TOKENS
from .timing import StageTimer


@dataclass
class GenerationResult:
    images: torch.Tensor  # (B, H, W, 3) 0-1
    latents: torch.Tensor  # model space
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Generation:
    """Everything `generate` runs with besides the bundle and the prompts (one image of a batch gets a copy with its
    own seed, start image, denoiser factory and progress offset)."""

    width: int = 1024
    height: int = 1024
    steps: int = 9
    seed: int = 0
    shift: float | None = None
    images_per_prompt: int = 1
    init_image: torch.Tensor | None = None
    strength: float = 1.0
    hidden_layer: int = DEFAULT_HIDDEN_LAYER
    max_tokens: int = MAX_CAPTION_TOKENS
    long_mode: str = DEFAULT_LONG_MODE
    make_denoiser: DenoiserFactory | None = None
    callback: StepCallback | None = None
    should_stop: Callable[[], bool] | None = None
    tiled_decode: bool | None = None
    on_decode_tile: Callable[[int, int], None] | None = None
    mask: torch.Tensor | None = None  # (1 or B, H, W) pixels, 1 = repaint (inpaint.prepare_mask)
    controls: tuple[Control, ...] = ()
    seeds: tuple[int, ...] | None = None  # one per image instead of seed + i

    def image_seeds(self, count: int) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.seed + i for i in range(count)]


def prompt_encoder(bundle: ModelBundle) -> PromptEncoder:
    """One cached PromptEncoder per bundle, so the LRU embedding cache survives between calls. The text encoder is
    made ready on the device only when a prompt really has to be encoded (not on cache hits)."""
    enc = bundle.prompt_encoder
    if enc is None or enc.model is not bundle.text_encoder:
        enc = PromptEncoder(bundle.text_encoder, bundle.tokenizer, on_use=lambda: bundle.activate("text_encoder"))
        bundle.prompt_encoder = enc
    return enc


def load_and_encode(bundle: ModelBundle, prompts: str | list[str] | Conditioning, width: int, height: int,
                    forwards: int, timer: StageTimer, *, hidden_layer: int, max_tokens: int,
                    long_mode: str) -> tuple[MemoryPlan, Conditioning]:
    """Load what is not loaded yet (timed as 'load' only then), choose the memory mode for `forwards` images at
    width×height, and encode the prompts (given Conditioning passes through)."""
    if all(bundle.is_loaded(p) for p in ("transformer", "text_encoder", "vae")):
        plan = bundle.prepare(width, height, forwards=forwards)
    else:
        with timer.stage("load"):
            plan = bundle.prepare(width, height, forwards=forwards)
    with timer.stage("text_encode"):
        cond = prompts if isinstance(prompts, Conditioning) else prompt_encoder(bundle).encode(
            prompts, hidden_layer=hidden_layer, max_tokens=max_tokens, long_mode=long_mode)
    return plan, cond


def generate(
    bundle: ModelBundle,
    prompts: str | list[str] | Conditioning,
    *,
    width: int = 1024,
    height: int = 1024,
    steps: int = 9,
    seed: int = 0,
    shift: float | None = None,
    images_per_prompt: int = 1,
    init_image: torch.Tensor | None = None,
    strength: float = 1.0,
    hidden_layer: int = DEFAULT_HIDDEN_LAYER,
    max_tokens: int = MAX_CAPTION_TOKENS,
    long_mode: str = DEFAULT_LONG_MODE,
    make_denoiser: DenoiserFactory | None = None,
    callback: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    tiled_decode: bool | None = None,
    batch_invariant: bool | None = None,
    on_decode_tile: Callable[[int, int], None] | None = None,
    mask: torch.Tensor | None = None,
    controls: Sequence[Control] = (),
    seeds: Sequence[int] | None = None,
) -> GenerationResult:
    """Generate images. `batch_invariant` (default: on for CPU) computes every image on its own, so an image is
    byte-identical whatever its position in the batch; batched kernels otherwise differ in the last float bits.
    `on_decode_tile(done, total)` reports a tiled VAE decode's progress. `mask` (with init_image; pixels at
    width×height, 1 = repaint) inpaints; `controls` steer through Fun ControlNets (control.Control); `seeds`
    gives every image its own seed (default seed + i)."""
    run = Generation(width, height, steps, seed, shift, images_per_prompt, init_image, strength, hidden_layer,
                     max_tokens, long_mode, make_denoiser, callback, should_stop, tiled_decode, on_decode_tile, mask,
                     tuple(controls), tuple(seeds) if seeds is not None else None)
    if batch_invariant is None:
        batch_invariant = bundle.device.type == "cpu"
    items = _batch_items(prompts, images_per_prompt)
    if batch_invariant and len(items) > 1:
        return _generate_each(bundle, items, run)
    return _generate_batch(bundle, prompts, run, forwards=len(items))


def _generate_batch(bundle: ModelBundle, prompts: str | list[str] | Conditioning, run: Generation,
                    forwards: int) -> GenerationResult:
    """One batched pass: load (timed when it happens), encode, sample, decode."""
    timer = StageTimer(sync_cuda=bundle.device.type == "cuda")
    plan, cond = load_and_encode(bundle, prompts, run.width, run.height, forwards, timer,  # one batch, one pass
                                 hidden_layer=run.hidden_layer, max_tokens=run.max_tokens, long_mode=run.long_mode)
    notes = [plan.describe()]
    with timer.stage("denoise"):
        init = as_image_batch(run.init_image) if run.init_image is not None else None
        init_latents = vae_ops.encode(bundle.activate("vae"), init) if init is not None else None
        prepared, control_notes = prepare_controls(bundle.activate("vae"), list(run.controls), run.width, run.height,
                                                   forwards, inpaint_image=init, repaint_mask=run.mask)
        notes += control_notes
        transformer = bundle.activate("transformer")
        with controls_applied(transformer, prepared):
            latents = sample(transformer, cond, width=run.width, height=run.height, steps=run.steps, seed=run.seed,
                             shift=bundle.shift if run.shift is None else run.shift,
                             images_per_prompt=run.images_per_prompt, init_latents=init_latents,
                             strength=run.strength, make_denoiser=run.make_denoiser, callback=run.callback,
                             should_stop=run.should_stop, seeds=run.seeds and list(run.seeds),
                             inpaint_mask=latent_mask(run.mask) if run.mask is not None else None)
    with timer.stage("decode"):
        images = vae_ops.decode(bundle.activate("vae"), latents, tiled=run.tiled_decode, on_tile=run.on_decode_tile)
        if run.mask is not None:  # the kept area is the input itself, not its VAE round trip
            images = paste_back(images, init, run.mask)
            notes.append(describe_inpaint(run.mask))
    return GenerationResult(images, latents, run.image_seeds(latents.shape[0]), timer.report(), notes)


def _batch_items(prompts, images_per_prompt: int) -> list[tuple[object, int]]:
    """(single prompt or conditioning, prompt index) for every output image, in output order."""
    if isinstance(prompts, Conditioning):
        singles = [Conditioning([e], [p], dict(prompts.info)) for e, p in zip(prompts.embeds, prompts.prompts)]
    else:
        singles = [prompts] if isinstance(prompts, str) else list(prompts)
    return [(one, i) for i, one in enumerate(singles) for _ in range(max(1, images_per_prompt))]


def _offset_progress(callback: StepCallback, index: int, count: int) -> StepCallback:
    """Report image `index`'s steps as part of one progress run over all `count` images."""
    def report(info: StepInfo) -> None:
        callback(StepInfo(info.step + index * info.total, info.total * count, info.sigma, info.latents, info.denoised))
    return report


def _for_item(run: Generation, index: int, count: int, prompt_index: int) -> Generation:
    """The generation of image `index` of a `count`-image batch on its own: its seed, its start image, its denoiser
    factory (its negative prompt and diversity seed) and its share of the progress count."""
    init = run.init_image
    if init is not None:
        init = as_image_batch(init)
        init = init[index:index + 1] if init.shape[0] == count else init[min(prompt_index, init.shape[0] - 1):][:1]
    factory = run.make_denoiser
    if isinstance(factory, PerImageFactory):
        factory = factory.for_item(index, count)
    callback = None if run.callback is None else _offset_progress(run.callback, index, count)
    mask = run.mask
    if mask is not None and mask.shape[0] == count:
        mask = mask[index:index + 1]
    controls = tuple(replace(c, image=as_image_batch(c.image)[index:index + 1])
                     if as_image_batch(c.image).shape[0] == count else c for c in run.controls)
    return replace(run, seed=run.image_seeds(count)[index], seeds=None, images_per_prompt=1, init_image=init,
                   make_denoiser=factory, callback=callback, mask=mask, controls=controls)


def _generate_each(bundle: ModelBundle, items: list[tuple[object, int]], run: Generation) -> GenerationResult:
    """One image at a time, with seed + index and progress counted over the whole batch."""
    n = len(items)
    results = [_generate_batch(bundle, one, _for_item(run, index, n, prompt_index), forwards=1)
               for index, (one, prompt_index) in enumerate(items)]
    timer = StageTimer()
    for r in results:
        timer.merge(r.timings)
    return GenerationResult(torch.cat([r.images for r in results]), torch.cat([r.latents for r in results]),
                            run.image_seeds(n), timer.report(), list(results[0].notes))


__all__ = ["DEFAULT_SHIFT", "Generation", "GenerationResult", "generate", "load_and_encode", "prompt_encoder"]
