"""Shared pieces for the guidance tests: caption embeddings of chosen lengths and a sampling helper (the tiny
transformer, fixture `dit`, is in conftest.py).

Imported by tests/test_guidance_*.py (pytest puts tests/ on sys.path). Embeddings are random (tokens, cap_feat_dim)
tensors, which is all the transformer sees of a prompt; lengths are chosen to cross the 32-token caption padding so
batches need masks.
"""

from __future__ import annotations

import torch

from zimage_core.encode import Conditioning
from zimage_core.sample import make_noise, sample

CAP_DIM = 32  # zimage_core.testing.TINY_TRANSFORMER cap_feat_dim


def embeds(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, CAP_DIM, generator=g) for n in lengths]


def conditioning(*lengths: int, seed: int = 0) -> Conditioning:
    return Conditioning(embeds(*lengths, seed=seed), [f"prompt {i}" for i in range(len(lengths))])


def latents(batch: int, h: int = 8, w: int = 12, seed: int = 0) -> torch.Tensor:
    return make_noise((16, h, w), [seed + i for i in range(batch)])


def run(dit: torch.nn.Module, cond: Conditioning, make_denoiser=None, *, steps: int = 4, width: int = 96,
        height: int = 64, seed: int = 0, **kwargs) -> torch.Tensor:
    """The real sampler, small size."""
    return sample(dit, cond, width=width, height=height, steps=steps, seed=seed, make_denoiser=make_denoiser,
                  **kwargs)
