"""The guidance settings users choose, declared once (see options.py): what the guidance nodes, the CLI flags and
the HTTP fields offer, with ranges, defaults and help. `GuidanceSettings.options_for(...)` turns them into the
runtime GuidanceOptions for one generation; the native-ComfyUI adapter reads the same objects.

Defaults: NAG's are its "on" values, and NAG acts whenever a negative prompt is given (Turbo has no CFG, so NAG is
how a negative prompt works); SLG, CFG, DyPE and seed diversity are off unless their scale / method is set (their
nodes start from a value that acts: node_default)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from ..errors import InputError
from ..options import Settings, opt

if TYPE_CHECKING:
    from ..encode import Conditioning
    from .dype import DyPE

# Declared here (not in the torch modules that use them) so options parse and check without importing torch.
DEFAULT_SLG_LAYERS = (7, 8, 9, 10, 11, 12)
DEFAULT_SLG_START = 0.99
DEFAULT_SLG_END = 0.80
METHODS = ("ntk", "yarn", "vision_yarn")
DEFAULT_METHOD = "vision_yarn"
DEFAULT_UNTIL_SIGMA = 0.8
DYPE_METHODS = ("off",) + METHODS
SLG_LAYERS = f"{DEFAULT_SLG_LAYERS[0]}-{DEFAULT_SLG_LAYERS[-1]}"


def parse_layers(spec: str | int | Iterable[int]) -> tuple[int, ...]:
    """'7-12', '7,9,11-12', 5 or [7, 8] → sorted unique layer indices (range ends inclusive)."""
    if isinstance(spec, int):
        return (spec,)
    if not isinstance(spec, str):
        return tuple(sorted({int(i) for i in spec}))
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if not m:
            raise InputError(f"Cannot read SLG layers '{spec}': use indices and ranges like '7-12' or '7,9,11'.")
        lo, hi = (int(m[1]), int(m[2])) if m[3] is None else (int(m[3]), int(m[3]))
        if lo > hi:
            raise InputError(f"SLG layer range '{part}' runs backwards; write it low-high, e.g. '7-12'.")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def check_layers(layers: str | int | Iterable[int], n_layers: int) -> tuple[int, ...]:
    """Valid layer indices for a model with n_layers main layers, or InputError naming the valid range."""
    idx = parse_layers(layers)
    if not idx:
        raise InputError(f"SLG needs at least one layer to skip (valid indices 0..{n_layers - 1}; Turbo default "
                         "7-12).", "slg_layers")
    bad = [i for i in idx if not 0 <= i < n_layers]
    if bad:
        raise InputError(f"SLG layer(s) {bad} out of range: this model has {n_layers} main layers, valid indices "
                         f"are 0..{n_layers - 1}.", "slg_layers")
    return idx


def check_window(start: float, end: float) -> None:
    if not (0.0 <= end <= start <= 1.0):
        raise InputError(f"SLG window must satisfy 0 ≤ end ≤ start ≤ 1 (σ values, 1 = pure noise); got start "
                         f"{start}, end {end}.")


@dataclass(frozen=True)
class NagSettings(Settings):
    PREFIX = "nag"
    scale: float = opt(3.0, "NAG strength (Normalized Attention Guidance, how a negative prompt acts at CFG 0): "
                       "1 = off, 2-5 = on", min=1.0, max=20.0, step=0.1)
    tau: float = opt(2.5, "NAG τ: cap on how far guidance may push the attention output", min=0.1, max=20.0,
                     step=0.05)
    alpha: float = opt(0.25, "NAG α: blend of the guided and the plain attention output", min=0.0, max=1.0,
                       step=0.01)
    end_sigma: float = opt(0.0, "NAG acts while the noise level σ ≥ this (0 = every step)", min=0.0, max=1.0,
                           step=0.01, advanced=True)


@dataclass(frozen=True)
class SlgSettings(Settings):
    PREFIX = "slg"
    scale: float = opt(0.0, "Skip-layer guidance strength: v + s·(v − v_skip); 0 = off. One extra model "
                       "evaluation per active step", min=-10.0, max=10.0, step=0.05, node_default=3.0)
    layers: str = opt(SLG_LAYERS, "Main transformer layers skipped for SLG, e.g. '7-12' or '7,9,11-12' "
                      "(0-29 on the full model)")
    start: float = opt(DEFAULT_SLG_START, "SLG acts while σ ≤ this (1 = pure noise)", min=0.0, max=1.0, step=0.01)
    end: float = opt(DEFAULT_SLG_END, "SLG acts while σ ≥ this (inclusive, so it fires at 8-9 steps)", min=0.0,
                     max=1.0, step=0.01)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_layers(self.layers)
        check_window(self.start, self.end)


@dataclass(frozen=True)
class DypeSettings(Settings):
    PREFIX = "dype"
    method: str = opt("off", "DyPE (dynamic RoPE extrapolation above 1024²; no effect at or below it): off, ntk, "
                      "yarn or vision_yarn. Each side is scaled on its own, so non-square images are not stretched",
                      choices=DYPE_METHODS, node_default=DEFAULT_METHOD)
    scale: float = opt(2.0, "DyPE λs: strength of the extrapolation at high noise", min=0.0, max=8.0, step=0.05)
    exponent: float = opt(2.0, "DyPE λt: how fast it fades to plain RoPE as noise drops (higher = sooner)",
                          min=0.0, max=8.0, step=0.05)
    base: int = opt(1024, "DyPE base size: the resolution the model was trained at", min=64, max=4096, step=16,
                    advanced=True)

    @property
    def on(self) -> bool:
        return self.method != "off"

    def for_size(self, width: int, height: int) -> "DyPE | None":
        if not self.on:
            return None
        from .dype import DyPE

        return DyPE(width, height, method=self.method, lambda_s=self.scale, lambda_t=self.exponent, base=self.base)


@dataclass(frozen=True)
class CfgSettings(Settings):
    PREFIX = "cfg"
    scale: float = opt(0.0, "Classic CFG for non-distilled Z-Image checkpoints (diffusers' convention: pos + "
                       "scale·(pos − neg)); 0 = off (Turbo). Doubles the cost. On ComfyUI's KSampler the scale is "
                       "KSampler's cfg − 1", min=0.0, max=20.0, step=0.1, node_default=5.0)
    normalization: float = opt(0.0, "CFG renormalisation: cap ‖guided‖ at this × ‖positive‖ (0 = off; ~1.0 tames "
                               "over-saturation)", min=0.0, max=10.0, step=0.05)
    truncation: float = opt(1.0, "CFG truncation: guidance stops once progress (1 − σ) exceeds this (1 = every "
                            "step)", min=0.0, max=1.0, step=0.01)


@dataclass(frozen=True)
class DiversitySettings(Settings):
    PREFIX = "diversity"
    strength: float = opt(0.0, "Seed diversity: seeded noise on the prompt embeddings during the early, high-noise "
                          "steps, so composition varies per seed (Turbo's images barely change with the seed). "
                          "0 = off; 0.25-0.5 is mild", min=0.0, max=2.0, step=0.05, node_default=0.3)
    until_sigma: float = opt(DEFAULT_UNTIL_SIGMA, "Seed diversity acts while σ > this", min=0.0, max=1.0,
                             step=0.01, advanced=True)


GROUPS = (NagSettings, SlgSettings, DypeSettings, CfgSettings, DiversitySettings)


@dataclass(frozen=True)
class GuidanceSettings:
    """Every guidance setting of one generation (each group at its default = what it does without being asked)."""

    nag: NagSettings = field(default_factory=NagSettings)
    slg: SlgSettings = field(default_factory=SlgSettings)
    dype: DypeSettings = field(default_factory=DypeSettings)
    cfg: CfgSettings = field(default_factory=CfgSettings)
    diversity: DiversitySettings = field(default_factory=DiversitySettings)

    @classmethod
    def from_values(cls, values: dict, spell=lambda name: name) -> "GuidanceSettings":
        """From {option name: value} (nag_scale, slg_layers, ...); unknown names are the caller's business."""
        return cls(*(group.from_values(values, spell) for group in GROUPS))

    def values(self) -> dict:
        return {k: v for group in (self.nag, self.slg, self.dype, self.cfg, self.diversity)
                for k, v in group.values().items()}

    def describe(self, negative: bool) -> list[str]:
        """One line per guidance that acts (for reports): what a request's options turned on."""
        lines = []
        if self.cfg.scale > 0:
            lines.append(f"CFG scale {self.cfg.scale:g} (renorm {self.cfg.normalization:g}, truncation "
                         f"{self.cfg.truncation:g}) with the {'negative' if negative else 'empty'} prompt")
        elif negative and self.nag.scale != 1.0:
            lines.append(f"negative prompt applied with NAG (scale {self.nag.scale:g}, tau {self.nag.tau:g}, alpha "
                         f"{self.nag.alpha:g})")
        if self.slg.scale != 0.0:
            lines.append(f"SLG scale {self.slg.scale:g} on layers {self.slg.layers} for σ in [{self.slg.end:g}, "
                         f"{self.slg.start:g}]")
        if self.dype.on:
            lines.append(f"DyPE {self.dype.method} (λs {self.dype.scale:g}, λt {self.dype.exponent:g}) above "
                         f"{self.dype.base}²")
        if self.diversity.strength > 0:
            lines.append(f"seed diversity {self.diversity.strength:g} while σ > {self.diversity.until_sigma:g}")
        return lines

    def options_for(self, *, width: int, height: int, seed: int, negative: "Conditioning | None" = None,
                    n_layers: int | None = None):
        """The runtime GuidanceOptions for one generation at this size and seed."""
        from .denoiser import GuidanceOptions
        from .diversity import make_diversity_fn

        if n_layers is not None and self.slg.scale != 0.0:
            check_layers(self.slg.layers, n_layers)
        return GuidanceOptions(
            negative=negative, cfg_scale=self.cfg.scale, cfg_normalization=self.cfg.normalization,
            cfg_truncation=self.cfg.truncation, nag_scale=self.nag.scale, nag_tau=self.nag.tau,
            nag_alpha=self.nag.alpha, nag_end_sigma=self.nag.end_sigma, slg_scale=self.slg.scale,
            slg_layers=self.slg.layers, slg_start=self.slg.start, slg_end=self.slg.end,
            dype=self.dype.for_size(width, height),
            diversity_fn=make_diversity_fn(self.diversity.strength, seed, self.diversity.until_sigma)
            if self.diversity.strength > 0 else None)


__all__ = ["CfgSettings", "DiversitySettings", "DypeSettings", "GROUPS", "GuidanceSettings", "NagSettings",
           "SlgSettings", "DEFAULT_METHOD", "DEFAULT_SLG_END", "DEFAULT_SLG_LAYERS",
           "DEFAULT_SLG_START", "DEFAULT_UNTIL_SIGMA", "DYPE_METHODS", "METHODS", "check_layers", "check_window",
           "parse_layers"]
