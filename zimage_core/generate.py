"""Text (or image) to image in one call: encode → sample → decode, with a per-stage timing report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import vae as vae_ops
from .encode import MAX_CAPTION_TOKENS, Conditioning, PromptEncoder
from .images import as_image_batch
from .models import ModelBundle
from .sample import Denoiser, StepCallback, StepInfo, sample
from .schedule import DEFAULT_SHIFT


@dataclass
class GenerationResult:
    images: torch.Tensor  # (B, H, W, 3) 0-1
    latents: torch.Tensor  # model space
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def prompt_encoder(bundle: ModelBundle) -> PromptEncoder:
    """One cached PromptEncoder per bundle, so the LRU embedding cache survives between calls. The text encoder is
    made ready on the device only when a prompt really has to be encoded (not on cache hits)."""
    enc = getattr(bundle, "_prompt_encoder", None)
    if enc is None or enc.model is not bundle.text_encoder:
        enc = PromptEncoder(bundle.text_encoder, bundle.tokenizer, on_use=lambda: bundle.activate("text_encoder"))
        bundle._prompt_encoder = enc
    return enc


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
    hidden_layer: int = -2,
    max_tokens: int = MAX_CAPTION_TOKENS,
    long_mode: str = "truncate",
    make_denoiser: Callable[[torch.nn.Module, Conditioning], Denoiser] | None = None,
    callback: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    tiled_decode: bool | None = None,
    batch_invariant: bool | None = None,
    on_decode_tile: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Generate images. `batch_invariant` (default: on for CPU) computes every image on its own, so an image is
    byte-identical whatever its position in the batch; batched kernels otherwise differ in the last float bits.
    `on_decode_tile(done, total)` reports a tiled VAE decode's progress."""
    if batch_invariant is None:
        batch_invariant = bundle.device.type == "cpu"
    items = _batch_items(prompts, images_per_prompt)
    if batch_invariant and len(items) > 1:
        return _generate_each(bundle, items, locals())
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = all(bundle.is_loaded(p) for p in ("transformer", "text_encoder", "vae"))
    plan = bundle.prepare(width, height, forwards=len(items))  # the batch runs through the model together
    if not loaded:
        timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if isinstance(prompts, Conditioning):
        cond = prompts
    else:
        cond = prompt_encoder(bundle).encode(prompts, hidden_layer=hidden_layer, max_tokens=max_tokens,
                                             long_mode=long_mode)
    timings["text_encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    init_latents = None
    if init_image is not None:
        init_latents = vae_ops.encode(bundle.activate("vae"), as_image_batch(init_image))
    latents = sample(bundle.activate("transformer"), cond, width=width, height=height, steps=steps, seed=seed,
                     shift=bundle.shift if shift is None else shift, images_per_prompt=images_per_prompt,
                     init_latents=init_latents, strength=strength, make_denoiser=make_denoiser, callback=callback,
                     should_stop=should_stop)
    synchronize(latents)
    timings["denoise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    images = vae_ops.decode(bundle.activate("vae"), latents, tiled=tiled_decode, on_tile=on_decode_tile)
    timings["decode"] = time.perf_counter() - t0
    timings["total"] = sum(timings.values())
    return GenerationResult(images, latents, [seed + i for i in range(latents.shape[0])], timings, [plan.describe()])


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


def _for_item(make_denoiser, index: int, count: int):
    """The denoiser factory narrowed to one image of the batch (its negative prompt, its diversity seed)."""
    narrow = getattr(make_denoiser, "for_item", None)
    return narrow(index, count) if narrow is not None else make_denoiser


def _generate_each(bundle: ModelBundle, items: list[tuple[object, int]], kw: dict) -> GenerationResult:
    """One image at a time, with seed + index and progress counted over the whole batch."""
    n, results = len(items), []
    callback, init = kw["callback"], kw["init_image"]
    init = as_image_batch(init) if init is not None else None
    for index, (one, prompt_index) in enumerate(items):
        cb = None if callback is None else _offset_progress(callback, index, n)
        this_init = None
        if init is not None:
            this_init = init[index:index + 1] if init.shape[0] == n else init[min(prompt_index, init.shape[0] - 1):][:1]
        results.append(generate(
            bundle, one, width=kw["width"], height=kw["height"], steps=kw["steps"], seed=kw["seed"] + index,
            shift=kw["shift"], images_per_prompt=1, init_image=this_init, strength=kw["strength"],
            hidden_layer=kw["hidden_layer"], max_tokens=kw["max_tokens"], long_mode=kw["long_mode"],
            make_denoiser=_for_item(kw["make_denoiser"], index, n), callback=cb, should_stop=kw["should_stop"],
            tiled_decode=kw["tiled_decode"], batch_invariant=False, on_decode_tile=kw["on_decode_tile"]))
    timings = {k: sum(r.timings.get(k, 0.0) for r in results) for k in dict.fromkeys(k for r in results
                                                                                      for k in r.timings)}
    return GenerationResult(torch.cat([r.images for r in results]), torch.cat([r.latents for r in results]),
                            [kw["seed"] + i for i in range(n)], timings, list(results[0].notes))


def synchronize(t: torch.Tensor) -> None:
    """Wait for the GPU so stage timings measure the work, not the kernel launches."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


__all__ = ["GenerationResult", "generate", "prompt_encoder", "DEFAULT_SHIFT"]
