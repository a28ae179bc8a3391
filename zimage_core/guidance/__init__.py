"""Guidance for Z-Image behind sample()'s Denoiser seam: classic CFG, NAG, SLG (ours), DyPE and seed diversity
(guidance.dype / guidance.diversity), composed by guided_denoiser(GuidanceOptions(...)).

The names below load on first use: `guidance.settings` (the option declarations every interface parses) must
import without torch, so a bad command-line flag is refused at once rather than after torch loads."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "cfg_combine": "cfg", "cfg_scale_at": "cfg",
    "GuidanceOptions": "denoiser", "GuidedDenoiser": "denoiser", "guided_denoiser": "denoiser",
    "match_negative": "denoiser",
    "NagAttnProcessor": "nag", "nag_combine": "nag", "nag_velocity": "nag",
    "SkippedLayer": "slg", "skip_layers": "slg", "slg_active": "slg", "parse_layers": "settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


__all__ = sorted(_HOMES)
