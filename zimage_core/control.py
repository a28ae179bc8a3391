"""Control images through a Fun ControlNet while sampling: the control image is VAE-encoded (the posterior mode, in
model space) into the ControlNet's context, and a forward pre-hook we own on the transformer adds the ControlNet's
hints (`controlnet_block_samples`) to every model call whose σ lies inside the control's window — so it composes with
every guidance (NAG's attention processors, SLG's skip pass, CFG's doubled batch, DyPE) and leaves the transformer
untouched once sampling ends. Several controls add their hints.

2.x ControlNets take 33 context channels: control latents (16), a keep-mask (1 = keep) and the latents of the image
with the repaint area grey (16); without inpainting the last 17 are zero, as in diffusers' and the reference
(VideoX-Fun) pipelines. Hints follow diffusers' ZImageControlNetModel: the 2.x refiner hints stay inside the ControlNet
(VideoX-Fun and ComfyUI also add them to the main noise refiner).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from . import vae as vae_ops
from .errors import InputError
from .fp8 import compute_dtype
from .images import as_image_batch

WINDOW_TOLERANCE = 1e-6
# the transformer parts diffusers' ControlNet borrows (ZImageControlNetModel.from_transformer)
SHARED = ("t_embedder", "all_x_embedder", "cap_embedder", "rope_embedder", "noise_refiner", "context_refiner",
          "x_pad_token", "cap_pad_token")


def _lend(controlnet: torch.nn.Module, transformer: torch.nn.Module | None) -> None:
    """Give the ControlNet the transformer's shared parts for a call (from_transformer), or take them back (None),
    so moving or caching the ControlNet never moves or keeps the transformer's modules."""
    if transformer is not None:
        type(controlnet).from_transformer(controlnet, transformer)
        return
    for name in SHARED:
        setattr(controlnet, name, None)


@dataclass(frozen=True)
class Control:
    """One control a user attached: a loaded Fun ControlNet, its image (any size: resized to the output), how
    strongly it acts and while which noise levels (start ≥ σ ≥ end; 1 → 0 = every step)."""

    controlnet: torch.nn.Module
    image: torch.Tensor
    scale: float = 0.75
    start: float = 1.0
    end: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.end <= self.start <= 1.0:
            raise InputError(f"control window must satisfy 0 ≤ end ≤ start ≤ 1 (σ, 1 = pure noise); got start "
                             f"{self.start}, end {self.end}.", "control_start")


@dataclass
class PreparedControl:
    controlnet: torch.nn.Module
    context: torch.Tensor  # (B, C, 1, h, w) float32 on the CPU (moved to the model call's device and dtype)
    scale: float
    start: float
    end: float

    def acts_at(self, sigma: float) -> bool:
        return self.scale != 0.0 and self.end - WINDOW_TOLERANCE <= sigma <= self.start + WINDOW_TOLERANCE


def _at_size(image: torch.Tensor, width: int, height: int, notes: list[str], what: str) -> torch.Tensor:
    from .blocks import lanczos_resize

    image = as_image_batch(image)
    if tuple(image.shape[1:3]) != (height, width):
        notes.append(f"{what} {image.shape[2]}×{image.shape[1]} resized to {width}×{height} (LANCZOS)")
        image = lanczos_resize(image, (height, width)).clamp(0, 1)
    return image


def _batched(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    raise InputError(f"{what} has {t.shape[0]} images for a batch of {batch}; give one, or one per image.")


def prepare_controls(vae, controls: list[Control], width: int, height: int, batch: int, *,
                     inpaint_image: torch.Tensor | None = None,
                     repaint_mask: torch.Tensor | None = None) -> tuple[list[PreparedControl], list[str]]:
    """Encode every control's context at width×height for `batch` images (notes say what was resized).
    inpaint_image / repaint_mask (pixels, 1 = repaint): the 2.x inpaint channels."""
    notes: list[str] = []
    prepared = []
    inpaint_extra: dict[int, torch.Tensor] = {}  # the inpaint channels are the same for every control: encoded once
    for c in controls:
        image = _at_size(c.image, width, height, notes, "control image")
        context = vae_ops.encode(vae, image)
        in_dim = int(c.controlnet.config.control_in_dim)
        if in_dim > context.shape[1]:
            n = context.shape[0]
            if inpaint_image is not None and repaint_mask is not None:
                if n not in inpaint_extra:
                    inpaint_extra[n] = _inpaint_channels(vae, inpaint_image, repaint_mask, n)
                extra = inpaint_extra[n]
            else:
                extra = torch.zeros(n, in_dim - context.shape[1], *context.shape[2:])
            context = torch.cat([context, _batched(extra, context.shape[0], "the inpaint image")], dim=1)
        context = _batched(context, batch, "the control image").unsqueeze(2)
        prepared.append(PreparedControl(c.controlnet, context, float(c.scale), float(c.start), float(c.end)))
        notes.append(f"control: {getattr(c.controlnet, 'zimage_name', 'ControlNet')} "
                     f"({getattr(c.controlnet, 'zimage_version', '?')}), scale {c.scale:g}, σ {c.start:g} → {c.end:g}")
    return prepared, notes


def _inpaint_channels(vae, image: torch.Tensor, repaint: torch.Tensor, batch: int) -> torch.Tensor:
    """[keep-mask, latents of the image with the repaint area mid-grey]: what 2.x ControlNets were trained with."""
    hard = (repaint >= 0.5).float()[:, None]  # (B, 1, H, W)
    grey = image.permute(0, 3, 1, 2) * (1 - hard) + 0.5 * hard
    latents = vae_ops.encode(vae, grey.permute(0, 2, 3, 1))
    keep = F.interpolate(1 - hard, size=latents.shape[-2:], mode="nearest")
    return _batched(torch.cat([keep, latents], dim=1), batch, "the inpaint image")


@contextlib.contextmanager
def controls_applied(transformer: torch.nn.Module, prepared: list[PreparedControl]) -> Iterator[None]:
    """While inside, every transformer call gets the hints of the controls acting at its σ."""
    if not prepared:
        yield
        return

    def add_hints(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x, t, caps = args[0], args[1], args[2]
        sigma = 1.0 - float(t.flatten()[0])
        hints: dict[int, torch.Tensor] = dict(kwargs.get("controlnet_block_samples") or {})
        for p in prepared:
            if not p.acts_at(sigma):
                continue
            device, dtype = x[0].device, compute_dtype(module)
            if next(p.controlnet.parameters()).device != device:
                _lend(p.controlnet, None)  # move the ControlNet alone, never the transformer parts it borrows
                p.controlnet.to(device)
            _lend(p.controlnet, module)  # now: the RoPE embedder DyPE may have swapped in is the one to use
            context = [p.context[i % p.context.shape[0]].to(device=device, dtype=dtype)
                       for i in range(len(x))]  # CFG runs cond + uncond
            for layer, hint in p.controlnet(x, t, caps, context, conditioning_scale=p.scale).items():
                hints[layer] = hints[layer] + hint if layer in hints else hint
        if hints:
            kwargs = {**kwargs, "controlnet_block_samples": hints}
        return args, kwargs

    handle = transformer.register_forward_pre_hook(add_hints, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for p in prepared:
            _lend(p.controlnet, None)


__all__ = ["Control", "PreparedControl", "controls_applied", "prepare_controls"]
