"""Guidance for Z-Image behind sample()'s Denoiser seam: classic CFG, NAG, SLG (ours), DyPE and seed diversity
(guidance.dype / guidance.diversity), composed by guided_denoiser(GuidanceOptions(...))."""

from .cfg import cfg_combine, cfg_scale_at
from .denoiser import GuidanceOptions, GuidedDenoiser, guided_denoiser, match_negative
from .nag import NagAttnProcessor, nag_combine, nag_velocity
from .slg import SkippedLayer, parse_layers, skip_layers, slg_active

__all__ = ["GuidanceOptions", "GuidedDenoiser", "guided_denoiser", "match_negative", "cfg_combine", "cfg_scale_at",
           "NagAttnProcessor", "nag_combine", "nag_velocity", "SkippedLayer", "parse_layers", "skip_layers",
           "slg_active"]
