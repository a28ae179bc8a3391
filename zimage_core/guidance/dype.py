"""DyPE (Dynamic Position Extrapolation, arXiv 2510.20766) for Z-Image above its 1024² training size.

Why: past the training size the spatial RoPE positions leave the range the model saw, which shows as repeated
subjects and broken composition. DyPE rescales the two spatial RoPE axes' frequencies as a function of the noise
level: strongly at high σ (where the low-frequency layout is decided) and not at all as σ → 0 (where the fine detail
is drawn and plain RoPE is best).

Formulas (ours; t = σ ∈ [0, 1], 1 = pure noise). Per spatial axis a ∈ {height, width}, d = that axis' RoPE dims,
ω_i = θ^(−2i/d) (i = 0 … d/2−1) are the plain frequencies, L = base/patch_px the base length in tokens (64):

    s_a   = max(1, size_a / base)                    per-axis scale (2048×1152 → s_w = 2, s_h = 1.125)
    κ(t)  = λs · t^λt                                 DyPE schedule (defaults λs = 2, λt = 2)
    s_t   = s_a^κ(t)                                  effective scale: s_a² at σ = 1, s_a at κ = 1, 1 at σ = 0
    r_i   = L·ω_i / 2π                                rotations of dim i over the base length
    ramp(r; lo, hi) = clamp(ln(r/lo) / ln(hi/lo), 0, 1)   (linear in the dim index, like YaRN's ramp)

    ntk          ω'_i = (θ · s_t^(d/(d−2)))^(−2i/d)                        (NTK-aware base change)
    yarn         ω'_i = g·ω_i + (1−g)·ω_i/s_t,  g = ramp(r_i; 1, 32)        (NTK-by-parts: interpolate only
                                                                            the slow dims)
    vision_yarn  ω'_i = g·ω_i + (1−g)·[h·ω^ntk_i + (1−h)·ω_i/s_t],
                 g = ramp(r_i; 2, 16), h = ramp(r_i; 0.75, 1.25)          (three bands: fast dims keep RoPE,
                                                                            middle dims NTK, slow dims PI)

An axis with s_a ≤ 1, and every axis at s_t = 1 (σ = 0), uses the untouched plain table, bit for bit.
Axis 0 (the caption / frame axis) never changes frequency.

Attention amplitude (yarn, vision_yarn; none for ntk, as in NTK-aware scaling):
    s̄ = sqrt(s_h · s_w)  (linear image scale),   mscale(t) = 1 + 0.1 · ln(s̄) · t^λt
applied as sqrt(mscale(t)) on the magnitude of every rotary factor (all three axes, angles unchanged). RoPE
multiplies both q and k, so every attention logit q·k is scaled by exactly mscale(t): a uniform softmax temperature
that offsets the entropy growth of attending over more tokens, fading to 1 at σ = 0. (YaRN's own code scales each
side by mscale, i.e. logits by mscale²; we use the milder form.)

Non-square images: each axis gets its own s_a, so a 2048×1152 image interpolates width by 2 and height by 1.125
instead of stretching both by the larger factor (the ComfyUI-DyPE distortion).

Hook point: `DyPE.applied(transformer)` swaps `transformer.rope_embedder` on the instance for a `DyPERopeEmbedder`
(same call: ids (N, 3) → complex64 (N, head_dim/2)) and restores the original on exit, even on exceptions.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from ..errors import InputError
from .settings import DEFAULT_METHOD, METHODS

YARN_BAND = (1.0, 32.0)  # rotations over the base length: ≤ lo fully interpolated, ≥ hi untouched
VISION_BASE_BAND = (2.0, 16.0)  # vision_yarn: ≥ 16 rotations keep plain RoPE
VISION_NTK_BAND = (0.75, 1.25)  # vision_yarn: ≤ 0.75 rotations position-interpolated, ≥ 1.25 NTK


# ------------------------------------------------------------------------------------------ pure RoPE math


def kappa(sigma: float, lambda_s: float = 2.0, lambda_t: float = 2.0) -> float:
    """DyPE schedule κ(t) = λs·t^λt with t = σ clamped to [0, 1]."""
    t = min(max(float(sigma), 0.0), 1.0)
    return float(lambda_s) * t ** float(lambda_t)


def effective_scale(scale: float, kappa_t: float) -> float:
    """s_t = s^κ(t) for s ≥ 1 (1 when the axis is not enlarged)."""
    return float(scale) ** kappa_t if scale > 1.0 else 1.0


def mscale(scale_h: float, scale_w: float, sigma: float, lambda_t: float = 2.0) -> float:
    """Attention-logit multiplier 1 + 0.1·ln(sqrt(s_h·s_w))·t^λt (1 for images not larger than the base)."""
    s_bar = math.sqrt(max(scale_h, 1.0) * max(scale_w, 1.0))
    t = min(max(float(sigma), 0.0), 1.0)
    return 1.0 + 0.1 * math.log(s_bar) * t ** float(lambda_t)


def base_frequencies(dim: int, theta: float) -> torch.Tensor:
    """Plain RoPE frequencies θ^(−2i/d), float64, computed exactly as diffusers' RopeEmbedder does."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def _ramp(rotations: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """0 at ≤ lo rotations, 1 at ≥ hi, linear in log(rotations) (= linear in the dim index) between."""
    if hi <= lo:
        return (rotations >= hi).to(rotations.dtype)
    return (torch.log(rotations / lo) / math.log(hi / lo)).clamp(0.0, 1.0)


def axis_frequencies(method: str, dim: int, theta: float, scale: float, kappa_t: float,
                     base_len: int) -> torch.Tensor:
    """DyPE frequencies ω' (float64, dim/2) for one spatial axis at schedule value κ(t); see the module doc."""
    if method not in METHODS:
        raise InputError(f"Unknown DyPE method '{method}'; choose one of {', '.join(METHODS)}.")
    omega = base_frequencies(dim, theta)
    s_t = effective_scale(scale, kappa_t)
    if s_t <= 1.0:
        return omega
    ntk = 1.0 / ((theta * s_t ** (dim / (dim - 2))) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if method == "ntk":
        return ntk
    rotations = base_len * omega / (2.0 * math.pi)
    pi = omega / s_t
    if method == "yarn":
        g = _ramp(rotations, *YARN_BAND)
        return g * omega + (1.0 - g) * pi
    g = _ramp(rotations, *VISION_BASE_BAND)
    h = _ramp(rotations, *VISION_NTK_BAND)
    return g * omega + (1.0 - g) * (h * ntk + (1.0 - h) * pi)


def frequency_table(freqs: torch.Tensor, length: int, magnitude: float = 1.0) -> torch.Tensor:
    """Complex64 (length, dim/2) rotary factors magnitude·exp(i·p·ω) for positions p = 0 … length−1 (diffusers'
    precision: angles in float64, then float32)."""
    angles = torch.outer(torch.arange(length, dtype=torch.float64), freqs).float()
    return torch.polar(torch.full_like(angles, float(magnitude)), angles).to(torch.complex64)


# ------------------------------------------------------------------------------------------ the embedder


class DyPERopeEmbedder:
    """Drop-in replacement for diffusers' RopeEmbedder: plain tables from the original embedder for axis 0 and any
    unscaled axis, DyPE tables (rebuilt when σ changes) for enlarged spatial axes, times sqrt(mscale)."""

    def __init__(self, original, dype: "DyPE"):
        self.original = original
        self.dype = dype
        self.axes_dims = list(original.axes_dims)
        self.axes_lens = list(original.axes_lens)
        self.theta = float(original.theta)
        self._cache: dict[tuple, list[torch.Tensor | None]] = {}

    def __getattr__(self, name: str):  # anything else diffusers might read (freqs_cis, …) comes from the original
        if name == "original":
            raise AttributeError(name)
        return getattr(self.original, name)

    def _tables(self, device: torch.device) -> list[torch.Tensor | None]:
        d = self.dype
        key = (d.sigma, str(device))
        if key not in self._cache:
            k = kappa(d.sigma, d.lambda_s, d.lambda_t)
            tables: list[torch.Tensor | None] = [None]
            for axis, scale in ((1, d.scale_h), (2, d.scale_w)):
                if effective_scale(scale, k) <= 1.0:
                    tables.append(None)  # plain RoPE, straight from the original embedder
                else:
                    freqs = axis_frequencies(d.method, self.axes_dims[axis], self.theta, scale, k, d.base_len)
                    tables.append(frequency_table(freqs, self.axes_lens[axis]).to(device))
            self._cache = {key: tables}  # one σ at a time
        return self._cache[key]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.original(ids)
        tables = self._tables(ids.device)
        if all(t is None for t in tables) and self.dype.current_mscale() == 1.0:
            return out
        out = out.clone()
        offset = 0
        for axis, dim in enumerate(self.axes_dims):
            table = tables[axis] if axis < len(tables) else None
            if table is not None:
                out[:, offset:offset + dim // 2] = table[ids[:, axis]]
            offset += dim // 2
        m = self.dype.current_mscale()
        if m != 1.0:
            out = out * math.sqrt(m)
        return out


# ------------------------------------------------------------------------------------------ the user object


class DyPE:
    """DyPE settings for one target size. `active` is False (and `applied` a no-op) when neither side exceeds the
    base or the method is off. Call `set_sigma(σ)` before each model evaluation."""

    def __init__(self, width: int, height: int, *, method: str | None = DEFAULT_METHOD, lambda_s: float = 2.0,
                 lambda_t: float = 2.0, base: int = 1024, patch_px: int = 16):
        if method in (None, "", "off", "none"):
            method = None
        elif method not in METHODS:
            raise InputError(f"Unknown DyPE method '{method}'; choose one of {', '.join(METHODS)} or 'off'.")
        if base < patch_px or patch_px < 1:
            raise InputError(f"DyPE base size must be at least one patch ({patch_px} px); got {base}.")
        if lambda_s < 0 or lambda_t < 0:
            raise InputError(f"DyPE λs and λt must be ≥ 0; got λs={lambda_s}, λt={lambda_t}.")
        self.width, self.height = int(width), int(height)
        self.method = method
        self.lambda_s, self.lambda_t = float(lambda_s), float(lambda_t)
        self.base = int(base)
        self.patch_px = int(patch_px)
        self.base_len = self.base // self.patch_px
        self.scale_h = max(1.0, self.height / self.base)
        self.scale_w = max(1.0, self.width / self.base)
        self.sigma = 1.0

    @property
    def active(self) -> bool:
        return self.method is not None and (self.scale_h > 1.0 or self.scale_w > 1.0)

    def set_sigma(self, sigma: float) -> None:
        self.sigma = min(max(float(sigma), 0.0), 1.0)

    def current_mscale(self) -> float:
        if not self.active or self.method == "ntk":
            return 1.0
        return mscale(self.scale_h, self.scale_w, self.sigma, self.lambda_t)

    def describe(self) -> str:
        if not self.active:
            return f"DyPE off ({self.width}×{self.height} is not above the {self.base}² base)"
        return (f"DyPE {self.method}: scale h {self.scale_h:.3g}, w {self.scale_w:.3g}, κ(σ)={self.lambda_s:g}·σ^"
                f"{self.lambda_t:g}")

    @contextmanager
    def applied(self, transformer: torch.nn.Module) -> Iterator["DyPE"]:
        """Swap the transformer's rope_embedder for ours while inside; always restore the previous one. Nested use
        replaces (never stacks on) an outer DyPE embedder, so the innermost settings win."""
        if not self.active:
            yield self
            return
        previous = transformer.rope_embedder
        original = previous.original if isinstance(previous, DyPERopeEmbedder) else previous
        transformer.rope_embedder = DyPERopeEmbedder(original, self)
        try:
            yield self
        finally:
            transformer.rope_embedder = previous


class DyPEDenoiser:
    """Wraps any Denoiser (latents, σ, step) → velocity so each evaluation runs with DyPE at that σ."""

    def __init__(self, inner, transformer: torch.nn.Module, dype: DyPE):
        self.inner = inner
        self.transformer = transformer
        self.dype = dype

    def __call__(self, latents: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        self.dype.set_sigma(sigma)
        with self.dype.applied(self.transformer):
            return self.inner(latents, sigma, step)


__all__ = ["DyPE", "DyPEDenoiser", "DyPERopeEmbedder", "METHODS", "DEFAULT_METHOD", "axis_frequencies",
           "base_frequencies", "effective_scale", "frequency_table", "kappa", "mscale"]
