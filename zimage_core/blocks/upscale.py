"""The two block upscalers: LANCZOS for the light path, a model for the heavy path.

Light: batched PIL-geometry LANCZOS-3 (`resample.py`), all blocks of a chunk in two matrix products.
Heavy: any upscale model file spandrel recognises (ESRGAN/RealESRGAN/4x-UltraSharp/Compact/…; also an
already-loaded spandrel ModelDescriptor, which is what ComfyUI's UPSCALE_MODEL is), or the Stable Diffusion x4
upscaler from a local diffusers folder. Heavy blocks go through the model in batches (one call per batch); on
out-of-memory the batch is halved and retried. A model whose native scale differs from the requested factor has its
output resampled with LANCZOS. Progress is reported and interrupts honoured between batches.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..errors import InputError, Interrupted, ModelFileError
from ..weights import load_state_dict
from .resample import lanczos_resize_nchw

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


@runtime_checkable
class HeavyUpscaler(Protocol):
    """What the chain needs from a heavy upscaler: a name, a native whole-number scale, and a batched call
    (n, 3, h, w) in 0-1 → (n, 3, h·scale, w·scale) in 0-1."""

    name: str
    scale: int

    def __call__(self, blocks: torch.Tensor) -> torch.Tensor: ...


def default_device() -> torch.device:
    """CUDA when present (the heavy path is meant for the GPU), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def lanczos_upscale_blocks(blocks: torch.Tensor, scale: int) -> torch.Tensor:
    """Light path: (n, 3, h, w) → (n, 3, h·scale, w·scale) LANCZOS, clipped like PIL's 8-bit output."""
    h, w = blocks.shape[-2:]
    return lanczos_resize_nchw(blocks, (h * scale, w * scale), clamp=True)


# ---------------------------------------------------------------------------------------------------------- spandrel
class SpandrelUpscaler:
    """Heavy path through a spandrel ImageModelDescriptor (ESRGAN family and every other SR architecture it knows).

    The descriptor is moved to `device` for the calls and back to where it was by `release()` (ComfyUI keeps
    UPSCALE_MODEL on the CPU between runs). On CUDA it runs in fp16/bf16 when the architecture supports it.
    """

    def __init__(self, descriptor, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 name: str | None = None) -> None:
        from spandrel import ImageModelDescriptor

        if not isinstance(descriptor, ImageModelDescriptor):
            raise ModelFileError(
                f"{name or 'The model'} is a {type(descriptor).__name__}, not an image-to-image upscale model; "
                "pick an upscale model (ESRGAN, RealESRGAN, 4x-UltraSharp, …)."
            )
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise ModelFileError(
                f"{name or descriptor.architecture.name} takes {descriptor.input_channels} and gives "
                f"{descriptor.output_channels} channels; the block upscaler needs an RGB → RGB model."
            )
        if descriptor.purpose == "FaceSR":
            raise ModelFileError(
                f"{name or descriptor.architecture.name} is a face restoration model ({descriptor.architecture.name}); "
                "use it in the face step, and pick an upscale model for the heavy block path."
            )
        self.descriptor = descriptor
        self.name = name or f"{descriptor.architecture.name} {descriptor.scale}x"
        self.scale = int(descriptor.scale)
        self.device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = torch.float32
            if self.device.type == "cuda":
                if descriptor.supports_half:
                    dtype = torch.float16
                elif descriptor.supports_bfloat16:
                    dtype = torch.bfloat16
        self.dtype = dtype
        self._home = next(iter(descriptor.model.parameters()), torch.empty(0)).device

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> "SpandrelUpscaler":
        """Load an upscale model file safely (safetensors, or .pth through weights_only)."""
        return cls(load_spandrel(path), name=Path(path).name, **kwargs)

    def __call__(self, blocks: torch.Tensor) -> torch.Tensor:
        d = self.descriptor
        d.to(self.device)
        d.eval()
        if self.dtype == torch.float16:
            d.half()
        elif self.dtype == torch.bfloat16:
            d.bfloat16()
        else:
            d.float()
        h, w = blocks.shape[-2:]
        pad_w, pad_h = d.size_requirements.get_padding(w, h)
        x = blocks.to(device=self.device, dtype=self.dtype)
        if pad_w or pad_h:  # replicate-pad to the model's size rule, crop the padding off the output
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            y = d(x)
        y = y[..., : h * self.scale, : w * self.scale]
        return torch.nan_to_num(y.float(), nan=0.0).clamp_(0.0, 1.0)

    def release(self) -> None:
        """Give the accelerator memory back: model back to where it came from, in float32."""
        self.descriptor.to(self._home)
        self.descriptor.float()


def load_spandrel(path: str | os.PathLike):
    """Read an upscale model file into a spandrel descriptor, with errors that name the file."""
    from spandrel import ModelLoader, UnsupportedModelError

    path = Path(path)
    state_dict = load_state_dict(path)
    try:
        return ModelLoader().load_from_state_dict(state_dict)
    except UnsupportedModelError as err:
        raise ModelFileError(
            f"{path.name}: not a model architecture spandrel recognises ({err}). Use an upscale model such as "
            "RealESRGAN_x4plus, 4x-UltraSharp or another ESRGAN-family file."
        ) from err
    except Exception as err:  # noqa: BLE001 - recognised keys but inconsistent shapes: a damaged or edited file
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelFileError(
            f"{path.name}: looks like an upscale model but could not be built ({type(err).__name__}: {detail}). "
            "The file may be damaged; download it again."
        ) from None


# -------------------------------------------------------------------------------------------------------- SD x4
class SDUpscaler:
    """Heavy path through diffusers' StableDiffusionUpscalePipeline (stabilityai/stable-diffusion-x4-upscaler layout).

    The prompt applies to every block, so keep it generic (quality words); a subject prompt makes tiles hallucinate
    the subject. noise_level (0-350) is how much noise is added to the low-res input (more = more invented detail);
    steps = denoising steps (75 is the model card default, 20 is about 3× faster); guidance_scale = CFG scale.
    """

    scale = 4

    def __init__(self, pipe, *, prompt: str = "", negative_prompt: str = "", noise_level: int = 20, steps: int = 20,
                 guidance_scale: float = 9.0, seed: int = 0, device: torch.device | str | None = None,
                 name: str = "SD x4 upscaler") -> None:
        self.pipe = pipe
        self.negative_prompt = negative_prompt
        self.configure(prompt=prompt, noise_level=noise_level, steps=steps, guidance_scale=guidance_scale, seed=seed)
        self.device = torch.device(device) if device is not None else default_device()
        self.name = name
        self.multiple_of = 2 ** (len(pipe.unet.config.block_out_channels) - 1)

    def configure(self, *, prompt: str, noise_level: int, steps: int, guidance_scale: float, seed: int) -> None:
        """Set the options of the next run (a cached pipeline takes new options without reloading) and restart the
        per-call seed offset, so a run is reproducible for a given seed."""
        max_noise = int(getattr(self.pipe.config, "max_noise_level", 350))
        if not 0 <= int(noise_level) <= max_noise:
            raise InputError(f"noise_level must be 0-{max_noise}; got {noise_level}.")
        if int(steps) < 1:
            raise InputError(f"steps must be at least 1; got {steps}.")
        self.prompt, self.noise_level, self.steps = prompt, int(noise_level), int(steps)
        self.guidance_scale, self.seed = float(guidance_scale), int(seed)
        self._calls = 0

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, **options) -> "SDUpscaler":
        """Load the pipeline from a local diffusers folder (never the hub)."""
        folder = Path(folder)
        if not (folder / "model_index.json").is_file():
            raise ModelFileError(
                f"{folder} is not a diffusers folder (no model_index.json); give the stable-diffusion-x4-upscaler "
                "folder, or an upscale model file."
            )
        from diffusers import StableDiffusionUpscalePipeline

        device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            pipe = StableDiffusionUpscalePipeline.from_pretrained(str(folder), dtype=dtype,
                                                                  local_files_only=True)
        except Exception as err:
            raise ModelFileError(
                f"Could not load the SD x4 upscaler from {folder} ({type(err).__name__}: {err}). It must be a "
                "complete stable-diffusion-x4-upscaler diffusers folder (unet, vae, text_encoder, tokenizer, "
                "scheduler, low_res_scheduler)."
            ) from err
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device=device, name=f"SD x4 upscaler ({folder.name})", **options)

    def __call__(self, blocks: torch.Tensor) -> torch.Tensor:
        self.pipe.to(self.device)
        n = blocks.shape[0]
        # One generator per call, offset by the call count: reproducible for a given seed and batch layout.
        gen = torch.Generator(device=self.device).manual_seed(self.seed + self._calls)
        self._calls += 1
        h, w = blocks.shape[-2:]
        x = blocks.to(device=self.device, dtype=torch.float32)
        pad_h, pad_w = (-h) % self.multiple_of, (-w) % self.multiple_of
        if pad_h or pad_w:  # the UNet needs sizes divisible by its downsampling factor
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            out = self.pipe(
                prompt=[self.prompt] * n,
                negative_prompt=[self.negative_prompt] * n if self.guidance_scale > 1 else None,
                image=x,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                noise_level=self.noise_level,
                generator=gen,
                output_type="pt",
            ).images[..., : h * self.scale, : w * self.scale]
        return torch.nan_to_num(out.float(), nan=0.0).clamp_(0.0, 1.0)

    def release(self) -> None:
        """Move the pipeline off the accelerator."""
        self.pipe.to("cpu")


def load_heavy_upscaler(spec, *, device: torch.device | str | None = None, **options) -> HeavyUpscaler | None:
    """Turn what a user gives into a heavy upscaler: None; a HeavyUpscaler; a spandrel descriptor (ComfyUI's
    UPSCALE_MODEL); a path to an upscale model file; or a path to a diffusers SD x4 upscaler folder.

    `options` go to the SD x4 upscaler (prompt, negative_prompt, noise_level, steps, guidance_scale, seed).
    """
    if spec is None:
        return None
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return SDUpscaler.from_folder(path, device=device, **options)
        if options:
            log.warning("Options %s only apply to the SD x4 upscaler; ignored for %s.", sorted(options), path.name)
        return SpandrelUpscaler.from_file(path, device=device)
    if "spandrel" in sys.modules:  # a loaded descriptor implies spandrel is imported; skip the slow import otherwise
        from spandrel import ImageModelDescriptor, MaskedImageModelDescriptor

        if isinstance(spec, (ImageModelDescriptor, MaskedImageModelDescriptor)):
            return SpandrelUpscaler(spec, device=device)
    if (callable(spec) and isinstance(getattr(spec, "scale", None), int)
            and isinstance(getattr(spec, "name", None), str)):
        return spec
    raise InputError(
        f"heavy must be an upscale model file, a diffusers SD x4 upscaler folder or a loaded upscale model; "
        f"got {type(spec).__name__}."
    )


# ------------------------------------------------------------------------------------------------------- batching
def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocator out-of-memory errors."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], blocks: torch.Tensor, batch_size: int, *,
                should_stop: StopFn | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (index slice, output) for consecutive batches of `blocks`, halving the batch on out-of-memory.

    Raises errors.Interrupted between batches when should_stop() says so.
    """
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1; got {batch_size}.")
    bs, i, n = int(batch_size), 0, blocks.shape[0]
    while i < n:
        if should_stop is not None and should_stop():
            raise Interrupted("Upscaling interrupted by the user.")
        chunk = blocks[i:i + bs]
        try:
            out = fn(chunk)
        except Exception as err:
            if not is_out_of_memory(err) or bs == 1:
                raise
            del err
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            log.warning("Out of memory on the heavy upscaler; retrying with batch size %d.", bs)
            continue
        yield slice(i, i + chunk.shape[0]), out
        i += chunk.shape[0]


def heavy_upscale_blocks(upscaler: HeavyUpscaler, blocks: torch.Tensor, scale: int, *, batch_size: int = 8,
                         should_stop: StopFn | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Run the heavy upscaler over (n,3,h,w) blocks in batches, resampling to `scale` when the model's differs."""
    h, w = blocks.shape[-2:]
    target = (h * scale, w * scale)
    for sl, out in run_batched(upscaler, blocks, batch_size, should_stop=should_stop):
        if out.ndim != 4 or out.shape[0] != sl.stop - sl.start or out.shape[1] != 3:
            raise ModelFileError(f"{upscaler.name} returned shape {tuple(out.shape)} for {sl.stop - sl.start} blocks.")
        if tuple(out.shape[-2:]) != target:
            out = lanczos_resize_nchw(out.float(), target, clamp=True)
        yield sl, out


def heavy_routes(n: int, planned: torch.Tensor | None, upscaler: HeavyUpscaler | None, scale: float) -> torch.Tensor:
    """Which of n blocks take the heavy path, (n,) bool on the CPU: the planned ones (every block when nothing was
    planned) — none without a heavy model, or when the blocks are not enlarged (the heavy model would only be
    downscaled again)."""
    if upscaler is None:
        log.info("No heavy upscaler given: all %d blocks use LANCZOS (pass an upscale model or an SD x4 folder to "
                 "enhance subject and detail blocks).", n)
        return torch.zeros(n, dtype=torch.bool)
    if scale < 1:
        log.warning("scale %.3g < 1: the heavy model would only be downscaled again; using LANCZOS.", scale)
        return torch.zeros(n, dtype=torch.bool)
    return planned.cpu().clone() if planned is not None else torch.ones(n, dtype=torch.bool)


def upscale_heavy_route(upscaler: HeavyUpscaler | None, blocks: torch.Tensor, route: torch.Tensor, scale: int, *,
                        on_batch: Callable[[torch.Tensor, torch.Tensor], None], batch_size: int = 8,
                        should_stop: StopFn | None = None) -> None:
    """The heavy path of a block set, shared by the chain and the Block Upscaler node: the (n,3,h,w) blocks whose
    `route` is True go through the upscaler in batches (halved on out-of-memory); `on_batch(indices, upscaled)` gets
    each batch; the upscaler is released afterwards, also on error or interrupt."""
    idx = torch.nonzero(route).flatten()
    try:
        if idx.numel():
            log.info("Heavy path (%s): %d of %d blocks, batch size %d.", upscaler.name, idx.numel(), len(route),
                     batch_size)
            for sl, out in heavy_upscale_blocks(upscaler, blocks[idx.to(blocks.device)], scale,
                                                batch_size=batch_size, should_stop=should_stop):
                on_batch(idx[sl], out)
    finally:
        release_upscaler(upscaler)


def release_upscaler(upscaler: HeavyUpscaler | None) -> None:
    """Move a heavy model off the accelerator (a no-op for upscalers that keep nothing there)."""
    release = getattr(upscaler, "release", None)
    if callable(release):
        release()


__all__ = ["HeavyUpscaler", "SpandrelUpscaler", "SDUpscaler", "load_heavy_upscaler", "load_spandrel",
           "lanczos_upscale_blocks", "heavy_routes", "heavy_upscale_blocks", "release_upscaler", "upscale_heavy_route",
           "run_batched",
           "is_out_of_memory", "default_device"]
