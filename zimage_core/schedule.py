"""The Turbo flow-match Euler schedule (diffusers ≥ 0.39 semantics), written out so every step is explicit.

"steps" means the number of model evaluations: N steps → N+1 sigmas, the last one 0.
"""

from __future__ import annotations

import math

import torch

from .errors import InputError
from .settings import DEFAULT_SHIFT



def flow_sigmas(steps: int, shift: float = DEFAULT_SHIFT) -> torch.Tensor:
    """σ_i = shift·s/(1+(shift−1)·s) over s = linspace(1, 1/N, N), then σ_N = 0. float32, length N+1.

    N = 8, shift 3 → [1, .9545, .9, .8333, .75, .6429, .5, .3, 0].
    """
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer ≥ 1 (the number of model evaluations); got {steps!r}.")
    if not math.isfinite(shift) or shift <= 0:
        raise InputError(f"shift must be a finite number > 0 (3.0 for Turbo); got {shift}.")
    s = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float32)
    sigmas = shift * s / (1 + (shift - 1) * s)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def img2img_start(steps: int, strength: float) -> int:
    """Index of the first step for img2img: N − min(N·strength, N) (diffusers' rule), so strength 1 = all steps."""
    if not 0.0 < strength <= 1.0:
        raise InputError(f"strength (denoise) must be in (0, 1]; got {strength}. Use 1 for text-to-image.")
    return int(max(steps - min(steps * strength, steps), 0))
