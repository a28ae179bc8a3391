"""The guidance settings users choose, declared once (see options.py): what the guidance nodes, the CLI flags and
the HTTP fields offer, with ranges, defaults and help. `GuidanceSettings.options_for(...)` turns them into the
runtime GuidanceOptions for one generation; the native-ComfyUI adapter reads the same objects.

Defaults: NAG's are its "on" values, and NAG acts whenever a negative prompt is given (Turbo has no CFG, so NAG is
how a negative prompt works); SLG, CFG, DyPE and seed diversity are off unless their scale / method is set (their
nodes start from a value that acts: node_default)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encode import Conditioning
from ..options import Settings, opt
from .diversity import DEFAULT_UNTIL_SIGMA, make_diversity_fn
from .dype import DEFAULT_METHOD, METHODS, DyPE
from .slg import DEFAULT_SLG_END, DEFAULT_SLG_LAYERS, DEFAULT_SLG_START, check_layers, check_window, parse_layers

DYPE_METHODS = ("off",) + METHODS
SLG_LAYERS = f"{DEFAULT_SLG_LAYERS[0]}-{DEFAULT_SLG_LAYERS[-1]}"


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

    def for_size(self, width: int, height: int) -> DyPE | None:
        if not self.on:
            return None
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

    def options_for(self, *, width: int, height: int, seed: int, negative: Conditioning | None = None,
                    n_layers: int | None = None):
        """The runtime GuidanceOptions for one generation at this size and seed."""
        from .denoiser import GuidanceOptions

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
           "SlgSettings", "DYPE_METHODS"]
