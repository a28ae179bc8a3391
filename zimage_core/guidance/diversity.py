"""Seed diversity for Turbo: seeded noise on the caption embeddings during the early, high-σ steps only.

Why: the distilled Turbo model maps almost every starting noise to the same composition for a given prompt, so
changing the seed barely changes the image (users' top complaint). The layout is decided in the first, high-noise
steps, and it is decided mostly by the conditioning. Perturbing the caption embeddings there, differently per
seed, moves the layout; leaving them untouched afterwards lets the model render the real prompt cleanly. (Same idea
as CADS, "condition-annealed diffusion sampling", in its simplest form: additive noise, switched off rather than
annealed, no re-normalisation.)

What it does exactly, for caption embedding e (tokens × dim) of image i in the batch at noise level σ:
    e' = e + strength · std(e) · n_i     if σ > until_sigma       (n_i ~ N(0, 1), same shape as e)
    e' = e                               otherwise, and always when strength = 0
n_i is drawn from a CPU generator seeded with (seed + i) mixed with a fixed salt, so it is fixed for the whole
generation (the same perturbed prompt at every early step), reproducible per seed, independent of the device, and
uncorrelated with the image noise drawn from the same seed. std(e) is the embedding's own standard deviation, so
`strength` is relative (0.1-0.5 is a useful range; 1 drowns the prompt at the start).
With the Turbo schedule (shift 3) and until_sigma = 0.8, 8-9 steps perturb the first 4.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .settings import DEFAULT_UNTIL_SIGMA

_SALT = 0x5EED_D1CE  # keeps the caption noise independent of the image noise drawn from the same seed


def caption_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Deterministic float32 N(0, 1) noise for one caption, drawn on the CPU."""
    g = torch.Generator("cpu").manual_seed((int(seed) ^ _SALT) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(shape, generator=g, dtype=torch.float32)


class SeedDiversity:
    """fn(cond_embeds, sigma, step) → embeds: perturbed while σ > until_sigma, the same list object otherwise.

    Element i of cond_embeds (one per output image, as `sample` orders them) uses seed + i, matching the per-image
    latent noise seeds, so image k of a batch equals the same image generated alone with seed + k (`shifted(k)`)."""

    def __init__(self, strength: float, seed: int, until_sigma: float = DEFAULT_UNTIL_SIGMA):
        self.strength, self.seed, self.until_sigma = float(strength), int(seed), float(until_sigma)
        if self.strength < 0:
            raise InputError(f"seed-diversity strength must be ≥ 0; got {strength}.")
        if not 0.0 <= self.until_sigma <= 1.0:
            raise InputError(f"seed-diversity until_sigma must be in 0-1; got {until_sigma}.")
        self._noise: dict[tuple, torch.Tensor] = {}

    def __call__(self, cond_embeds: list[torch.Tensor], sigma: float, step: int) -> list[torch.Tensor]:
        if self.strength == 0.0 or float(sigma) <= self.until_sigma:
            return cond_embeds
        out = []
        for i, e in enumerate(cond_embeds):
            key = (i, tuple(e.shape))
            if key not in self._noise:
                self._noise[key] = caption_noise(tuple(e.shape), self.seed + i)
            x = e.float()
            out.append((x + self.strength * x.std() * self._noise[key].to(device=e.device)).to(e.dtype))
        return out

    def shifted(self, offset: int) -> "SeedDiversity":
        """The perturbation of image `offset` of a batch, for that image computed on its own."""
        return SeedDiversity(self.strength, self.seed + offset, self.until_sigma)


DiversityFn = SeedDiversity


def make_diversity_fn(strength: float, seed: int, until_sigma: float = DEFAULT_UNTIL_SIGMA) -> SeedDiversity:
    """The seed-diversity hook for a generation at `seed` (see SeedDiversity)."""
    return SeedDiversity(strength, seed, until_sigma)


__all__ = ["DEFAULT_UNTIL_SIGMA", "DiversityFn", "SeedDiversity", "caption_noise", "make_diversity_fn"]
