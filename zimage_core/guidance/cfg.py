"""Classic CFG for non-distilled Z-Image checkpoints (Base, de-distilled models), with diffusers' ZImagePipeline
semantics exactly, so the same settings give the same image as diffusers.

    scale_t = 0 when (1 − σ) > cfg_truncation (cfg_truncation ≤ 1; 1 = never truncate), else guidance_scale
    pred    = pos + scale_t·(pos − neg)            (one batched forward: [positives…, negatives…])
    if cfg_normalization > 0 and ‖pred‖ > ‖pos‖·cfg_normalization (per image, whole tensor):
        pred *= ‖pos‖·cfg_normalization / ‖pred‖
Steps with scale_t = 0 run a single positive forward, as diffusers does. Turbo is distilled: keep CFG off (0).
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..sample import transformer_velocity

NUM_TRAIN_TIMESTEPS = 1000


def check_cfg(scale: float, normalization: float, truncation: float) -> None:
    if scale < 0:
        raise InputError(f"CFG scale must be ≥ 0 (0 = off, the Turbo default; Base models use ~3-5); got {scale}.")
    if normalization < 0:
        raise InputError(f"CFG normalization must be ≥ 0 (0 = off; e.g. 1.0 caps ‖pred‖ at ‖positive‖); got "
                         f"{normalization}.")
    if truncation < 0:
        raise InputError(f"CFG truncation must be ≥ 0 (1 = never truncate); got {truncation}.")


def cfg_scale_at(sigma: float, scale: float, truncation: float = 1.0) -> float:
    """The guidance scale for the step at σ. Truncation is evaluated the way diffusers does it, from the float32
    timestep t = σ·1000 as (1000 − t)/1000, so boundary steps fall on the same side."""
    if truncation is not None and float(truncation) <= 1:
        t = torch.tensor(float(sigma), dtype=torch.float32) * NUM_TRAIN_TIMESTEPS
        t_norm = float((NUM_TRAIN_TIMESTEPS - t) / NUM_TRAIN_TIMESTEPS)
        if t_norm > float(truncation):
            return 0.0
    return float(scale)


def cfg_combine(pos: torch.Tensor, neg: torch.Tensor, scale: float, normalization: float = 0.0) -> torch.Tensor:
    """pos + scale·(pos − neg), then the optional per-image norm cap (see module doc). Works on velocity or model
    output alike (the two differ by sign only)."""
    out = []
    for p, n in zip(pos.float(), neg.float()):
        pred = p + scale * (p - n)
        if normalization and float(normalization) > 0.0:
            pos_norm = torch.linalg.vector_norm(p)
            pred_norm = torch.linalg.vector_norm(pred)
            max_norm = pos_norm * float(normalization)
            if pred_norm > max_norm:
                pred = pred * (max_norm / pred_norm)
        out.append(pred)
    return torch.stack(out)


def cfg_velocities(transformer: torch.nn.Module, latents: torch.Tensor, sigma: float, pos_caps: list[torch.Tensor],
                   neg_caps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative velocities from ONE batched forward over [positives…, negatives…]."""
    b = latents.shape[0]
    v = transformer_velocity(transformer, latents.repeat(2, 1, 1, 1), sigma, list(pos_caps) + list(neg_caps))
    return v[:b], v[b:]
