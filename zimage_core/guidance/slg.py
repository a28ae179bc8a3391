"""SLG (skip layer guidance): v = v_c + s·(v_c − v_skip), where v_skip is one extra forward with chosen main layers
replaced by identity.

Why a module swap and not a forward hook: a hook runs after the block has computed (and diffusers' own layer-skip
hook errors on Z-Image); `skip_layers` puts a `SkippedLayer` of ours in `transformer.layers[i]` for the skip pass
only — it returns its input untouched and computes nothing — and always puts the original block back.

Window rule (on σ, not on the step index, because a denoiser sees σ but not the step count, and so the same setting
means the same noise range for 8 or 9 steps, img2img and hi-res refine passes):
    SLG acts at a step when  slg_end ≤ σ ≤ slg_start  (σ of that step, 1 = pure noise; both ends inclusive,
    with a 1e-6 tolerance so a bound typed from a printed schedule still matches).
Defaults 0.99 / 0.80 skip the pure-noise first step (σ = 1) and act on the early structure steps: with shift 3 that
is steps 2-4 (indices 1, 2, 3: σ .9545 .9 .8333) at N = 8 and steps 2-4 (σ .96 .913 .857) at N = 9 — 3 extra
forwards either way.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch

from .settings import DEFAULT_SLG_END, DEFAULT_SLG_START, check_layers

WINDOW_TOLERANCE = 1e-6


class SkippedLayer(torch.nn.Module):
    """Stands in for a main block during the skip pass: returns its input (a true skip). Counts its calls."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index
        self.calls = 0

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        return x


def slg_active(sigma: float, start: float = DEFAULT_SLG_START, end: float = DEFAULT_SLG_END) -> bool:
    """True when the step at noise level σ is inside the SLG window: end ≤ σ ≤ start (inclusive, see module doc)."""
    return end - WINDOW_TOLERANCE <= float(sigma) <= start + WINDOW_TOLERANCE


def slg_combine(v_cond: torch.Tensor, v_skip: torch.Tensor, scale: float, v_guided: torch.Tensor | None = None
                ) -> torch.Tensor:
    """v = v_guided + s·(v_cond − v_skip); v_guided defaults to v_cond (then v = v_c + s·(v_c − v_skip))."""
    base = v_cond if v_guided is None else v_guided
    return base + scale * (v_cond - v_skip)


@contextmanager
def skip_layers(transformer: torch.nn.Module, layers: str | int | Iterable[int]) -> Iterator[list[SkippedLayer]]:
    """Replace transformer.layers[i] by SkippedLayer for i in layers while inside; always restore the originals."""
    idx = check_layers(layers, len(transformer.layers))
    originals: dict[int, torch.nn.Module] = {}
    try:
        for i in idx:
            originals[i] = transformer.layers[i]
            transformer.layers[i] = SkippedLayer(i)
        yield [transformer.layers[i] for i in idx]
    finally:
        for i, block in originals.items():
            transformer.layers[i] = block
