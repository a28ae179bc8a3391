"""The guided denoiser: one place where CFG or NAG, SLG, DyPE and seed diversity compose behind sample()'s
`make_denoiser` seam.

Per step (σ, step):
  1. positive captions ← diversity_fn(positive, σ, step) when set (negatives are never perturbed);
  2. dype.set_sigma(σ) when DyPE is set, and every forward of this step runs inside `dype.applied(transformer)`;
  3. the guided velocity:  CFG (cfg_scale > 0, one batched [pos, neg] forward)  or else  NAG (nag_scale > 1, a
     negative given and σ ≥ nag_end_sigma; one extended forward)  or else the plain forward;
  4. SLG when slg_scale ≠ 0 and the step is in its σ window: one extra forward of the same kind as the one SLG
     compares against, with the chosen layers skipped: v ← v + s·(v_c − v_skip). v_c is the positive prediction
     under CFG (the skip pass is positive-only, as in SD3's SLG), the NAG prediction under NAG, else the plain one.
Everything off → exactly transformer_velocity with the positive captions (bit-identical to TransformerDenoiser).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import ContextManager

import torch

from ..encode import Conditioning
from ..errors import InputError
from ..sample import check_conditioning, transformer_velocity
from .cfg import cfg_combine, cfg_scale_at, cfg_velocities, check_cfg
from .diversity import SeedDiversity
from .nag import check_nag, nag_velocity
from .settings import DEFAULT_SLG_END, DEFAULT_SLG_LAYERS, DEFAULT_SLG_START, check_layers, check_window
from .slg import skip_layers, slg_active, slg_combine

log = logging.getLogger("zimage_core.guidance")

@dataclass
class GuidanceOptions:
    """All guidance settings. Defaults = everything off (Turbo: no CFG, no NAG, no SLG)."""

    negative: Conditioning | None = None  # 1 entry, one per prompt, or one per output image
    # classic CFG (non-distilled checkpoints): diffusers' guidance_scale / cfg_normalization / cfg_truncation
    cfg_scale: float = 0.0
    cfg_normalization: float = 0.0
    cfg_truncation: float = 1.0
    # NAG (only when CFG is off): scale 1 = off; on: 2-5 (NagSettings holds the values every interface starts from)
    nag_scale: float = 1.0
    nag_tau: float = 3.5
    nag_alpha: float = 0.5
    nag_end_sigma: float = 0.0  # NAG acts while σ ≥ this (0 = every step)
    # SLG: scale 0 = off; acts while slg_end ≤ σ ≤ slg_start (see slg.py)
    slg_scale: float = 0.0
    slg_layers: tuple[int, ...] | str = DEFAULT_SLG_LAYERS
    slg_start: float = DEFAULT_SLG_START
    slg_end: float = DEFAULT_SLG_END
    # hooks owned by other modules
    dype: object | None = None  # guidance.dype.DyPE: .set_sigma(σ), .applied(transformer) context manager
    diversity_fn: SeedDiversity | None = None  # (positive embeds, σ, step) -> embeds, applied before each forward

    @property
    def cfg_on(self) -> bool:
        return self.cfg_scale > 0

    @property
    def nag_on(self) -> bool:
        return self.nag_scale != 1.0 and self.negative is not None and not self.cfg_on

    @property
    def slg_on(self) -> bool:
        return self.slg_scale != 0.0


def match_negative(negative: Conditioning, batch: int) -> list[torch.Tensor]:
    """Negative embeddings lined up with the (already images-per-prompt-repeated) positive batch."""
    n = len(negative)
    if n == batch:
        return list(negative.embeds)
    if n == 1:
        return [negative.embeds[0]] * batch
    if n and batch % n == 0:
        return [e for e in negative.embeds for _ in range(batch // n)]
    raise InputError(f"{n} negative prompts do not match {batch} image(s): give one negative prompt, one per prompt, "
                     "or one per image.")


class GuidedDenoiser:
    """Denoiser(latents, σ, step) -> velocity composing the features in GuidanceOptions (see module doc).

    `notes` lists user-facing remarks (features that cannot act); `nag_steps` / `slg_steps` / `cfg_steps` record the
    step indices where each feature acted, so callers and tests can see what really happened."""

    def __init__(self, transformer: torch.nn.Module, cond: Conditioning, options: GuidanceOptions):
        o = options
        self.transformer = transformer
        self.cond = cond
        self.options = o
        self.notes: list[str] = []
        self.nag_steps: list[int] = []
        self.slg_steps: list[int] = []
        self.cfg_steps: list[int] = []
        check_cfg(o.cfg_scale, o.cfg_normalization, o.cfg_truncation)
        check_nag(o.nag_scale, o.nag_tau, o.nag_alpha, o.nag_end_sigma)
        self.slg_layers: tuple[int, ...] = ()
        if o.slg_on:
            self.slg_layers = check_layers(o.slg_layers, len(transformer.layers))
            check_window(o.slg_start, o.slg_end)
        self.negative: list[torch.Tensor] | None = None
        if o.negative is not None and (o.cfg_on or o.nag_scale != 1.0):
            check_conditioning(o.negative, transformer, "negative prompt")
            self.negative = match_negative(o.negative, len(cond))
        if o.cfg_on and o.negative is None:
            raise InputError("CFG needs negative conditioning: encode a negative prompt (an empty prompt '' gives the "
                             "usual unconditional branch), or set the CFG scale to 0.")
        if o.nag_scale != 1.0 and o.negative is None:
            self._note(f"NAG scale {o.nag_scale:g} has no effect: no negative prompt was given.")
        elif o.nag_scale != 1.0 and o.cfg_on:
            self._note("NAG is ignored while CFG is on (scale > 0): NAG is the negative prompt for CFG-free models.")

    def _note(self, text: str) -> None:
        """Guidance that will not act (NAG's defaults are on values, so this is usual, not a warning)."""
        self.notes.append(text)
        log.info(text)

    def _context(self) -> ContextManager:
        dype = self.options.dype
        return dype.applied(self.transformer) if dype is not None else nullcontext()

    def _plain(self, latents: torch.Tensor, sigma: float, pos: list[torch.Tensor]) -> torch.Tensor:
        with self._context():
            return transformer_velocity(self.transformer, latents, sigma, pos)

    def _nag(self, latents: torch.Tensor, sigma: float, pos: list[torch.Tensor]) -> torch.Tensor:
        o = self.options
        with self._context():
            return nag_velocity(self.transformer, latents, sigma, pos, self.negative, scale=o.nag_scale,
                                tau=o.nag_tau, alpha=o.nag_alpha)

    def __call__(self, latents: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        o = self.options
        pos = list(self.cond.embeds)
        if o.diversity_fn is not None:
            pos = list(o.diversity_fn(pos, sigma, step))
        if o.dype is not None:
            o.dype.set_sigma(sigma)

        base = self._plain  # the kind of forward v_c comes from (SLG's skip pass repeats it)
        scale = cfg_scale_at(sigma, o.cfg_scale, o.cfg_truncation) if o.cfg_on else 0.0
        if scale > 0:
            with self._context():
                v_pos, v_neg = cfg_velocities(self.transformer, latents, sigma, pos, self.negative)
            v_cond, v = v_pos, cfg_combine(v_pos, v_neg, scale, o.cfg_normalization)
            self.cfg_steps.append(step)
        elif o.nag_on and sigma >= o.nag_end_sigma:
            base = self._nag
            v = v_cond = base(latents, sigma, pos)
            self.nag_steps.append(step)
        else:
            v = v_cond = base(latents, sigma, pos)

        if o.slg_on and slg_active(sigma, o.slg_start, o.slg_end):
            with skip_layers(self.transformer, self.slg_layers):
                v_skip = base(latents, sigma, pos)
            v = slg_combine(v_cond, v_skip, o.slg_scale, v_guided=v)
            self.slg_steps.append(step)
        return v


class GuidedFactory:
    """make_denoiser for sample()/generate(): (transformer, cond) -> GuidedDenoiser with these options.

    `for_item(index, count)` narrows the options to image `index` of a `count`-image batch (its own negative and
    diversity seed), so generate() can compute images one at a time and get the same result as in the batch."""

    def __init__(self, options: GuidanceOptions):
        self.options = options

    def __call__(self, transformer: torch.nn.Module, cond: Conditioning) -> GuidedDenoiser:
        return GuidedDenoiser(transformer, cond, self.options)

    def for_item(self, index: int, count: int) -> "GuidedFactory":
        o = self.options
        negative = o.negative
        if negative is not None:
            embeds = match_negative(negative, count)
            negative = Conditioning([embeds[index]], [negative.prompts[min(index, len(negative.prompts) - 1)]]
                                    if negative.prompts else [], dict(negative.info))
        diversity = o.diversity_fn.shifted(index) if o.diversity_fn is not None else None
        return GuidedFactory(replace(o, negative=negative, diversity_fn=diversity))


def guided_denoiser(options: GuidanceOptions | None = None) -> GuidedFactory:
    """make_denoiser for sample()/generate() with these options (all off by default)."""
    return GuidedFactory(options or GuidanceOptions())
