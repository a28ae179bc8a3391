"""NAG (Normalized Attention Guidance, arXiv 2505.21179) for the single-stream Z-Image DiT, in one forward.

Why our own forward driver: diffusers' forward builds the unified sequence [image, caption] itself, so a negative
caption cannot be added from outside. `nag_velocity` reuses the transformer's own submodules (embedders, refiners,
main layers, final layer, `rope_embedder`, patchify helpers) to run the extended sequence
[image, cap⁺, cap⁻] through every main layer once, with `NagAttnProcessor` (ours) set on each main layer's
attention for the duration of the call and restored afterwards. Nothing in diffusers is patched. RoPE is read
through `transformer.rope_embedder` on every call, so DyPE (which swaps that attribute) acts on NAG passes too.

Per main layer, with heads flattened and before the output projection:
    z⁺ = attention of the [image, cap⁺] queries over keys [image, cap⁺]
    z⁻ = attention of the [image, cap⁻] queries over keys [image, cap⁻]
    image tokens:  z̃ = s·z⁺ − (s−1)·z⁻,  r = ‖z̃‖₁/‖z⁺‖₁ per token,  ẑ = z̃·min(r, τ)/r,  out = α·ẑ + (1−α)·z⁺
    cap⁺ tokens keep z⁺; cap⁻ tokens keep z⁻ (they attend to [image, cap⁻], so the negative caption evolves as it
    would in a forward with only the negative prompt, against the guided image stream).
Q/K/V and output projections, norms, modulation and the FFN run once over the whole sequence; the negative tail is
dropped before the final layer. Only the attention itself runs twice for the image queries (inherent to NAG); both
attention calls are dense over contiguous blocks (no arbitrary masks), so fast SDPA kernels still apply.

Positions: the negative caption is padded to a multiple of 32 exactly as the positive one is, and its token j gets
the caption-axis position 1+j, i.e. the same positions the positive caption uses (both refined by the context
refiner as separate items, so cap⁻ enters the main layers exactly as in a negative-only forward). The image keeps
the positive forward's positions. If the negative is longer than the positive caption, its extra tokens continue
the caption axis (positions past the positive caption's end); nothing is truncated. Batches with different caption
lengths are padded per region and masked.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.nn.utils.rnn import pad_sequence

from ..errors import InputError
from ..fp8 import compute_dtype

PATCH_SIZE = 2
F_PATCH_SIZE = 1


def check_nag(scale: float, tau: float, alpha: float, end_sigma: float = 0.0) -> None:
    """Refuse settings the formula is not defined for, with what to use instead."""
    if scale < 1.0:
        raise InputError(f"NAG scale must be ≥ 1 (1 = off; 2-5 is a sensible range); got {scale}.")
    if tau <= 0.0:
        raise InputError(f"NAG τ (tau) must be > 0 (default 3.5, 2.5 is a good 'on' value); got {tau}.")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"NAG α (alpha) must be in 0..1 (default 0.5); got {alpha}.")
    if not 0.0 <= end_sigma <= 1.0:
        raise InputError(f"NAG end σ must be in 0..1 (0 = NAG on every step); got {end_sigma}.")


def nag_combine(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float) -> torch.Tensor:
    """The NAG combination per token (last dim = features): z̃ = s·z⁺ − (s−1)·z⁻, r = ‖z̃‖₁/‖z⁺‖₁,
    ẑ = z̃·min(r, τ)/r, out = α·ẑ + (1−α)·z⁺. Computed in float32, returned in z_pos's dtype."""
    zp, zn = z_pos.float(), z_neg.float()
    guided = scale * zp - (scale - 1.0) * zn
    norm_pos = zp.abs().sum(-1, keepdim=True)
    norm_guided = guided.abs().sum(-1, keepdim=True)
    ratio = norm_guided / norm_pos.clamp_min(torch.finfo(torch.float32).tiny)
    factor = torch.where(ratio > tau, tau / ratio, torch.ones_like(ratio))  # = min(r, τ)/r; exactly 1 when r ≤ τ
    return (alpha * guided * factor + (1.0 - alpha) * zp).to(z_pos.dtype)


def apply_rope(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Z-Image's rotary embedding: (B, L, H, D) rotated by complex (B, L, D/2) factors (same math as diffusers)."""
    with torch.amp.autocast("cuda", enabled=False):
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis.unsqueeze(2)).flatten(3).type_as(x)


@dataclass
class NagLayout:
    """Where each block sits in the extended sequence [image (X) | cap⁺ (P) | cap⁻ (N)], plus key-validity masks for
    the two attention calls ((B, X+P) and (B, X+N); None when no item is padded) and the NAG settings."""

    image_len: int
    pos_len: int
    neg_len: int
    pos_mask: torch.Tensor | None
    neg_mask: torch.Tensor | None
    scale: float
    tau: float
    alpha: float


class NagAttnProcessor:
    """Attention processor for one main layer during a NAG forward (see the module docstring)."""

    def __init__(self, layout: NagLayout, original: object | None = None):
        self.layout = layout
        # keep whatever attention backend the user chose for the stock processor
        self._attention_backend = getattr(original, "_attention_backend", None)
        self._parallel_config = getattr(original, "_parallel_config", None)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        out = dispatch_attention_fn(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :],
                                    dropout_p=0.0, is_causal=False, backend=self._attention_backend,
                                    parallel_config=self._parallel_config)
        return out.flatten(2, 3).to(q.dtype)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, freqs_cis: torch.Tensor | None = None) -> torch.Tensor:
        lay = self.layout
        q = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
        k = attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if freqs_cis is not None:
            q, k = apply_rope(q, freqs_cis), apply_rope(k, freqs_cis)

        x_len, a = lay.image_len, lay.image_len + lay.pos_len

        def neg_view(t: torch.Tensor) -> torch.Tensor:  # [image, cap⁻]
            return torch.cat([t[:, :x_len], t[:, a:]], dim=1)

        z_pos = self._attend(q[:, :a], k[:, :a], v[:, :a], lay.pos_mask)
        z_neg = self._attend(neg_view(q), neg_view(k), neg_view(v), lay.neg_mask)
        image = nag_combine(z_pos[:, :x_len], z_neg[:, :x_len], lay.scale, lay.tau, lay.alpha)
        z = torch.cat([image, z_pos[:, x_len:], z_neg[:, x_len:]], dim=1)
        out = attn.to_out[0](z)
        if len(attn.to_out) > 1:
            out = attn.to_out[1](out)
        return out


@contextmanager
def nag_attention(transformer: torch.nn.Module, layout: NagLayout) -> Iterator[list[NagAttnProcessor]]:
    """Set our processor on every main layer's attention while inside; always restore the previous processors.
    Layers temporarily replaced by something without `.attention` (an SLG skip) are left alone."""
    saved = []
    try:
        for layer in transformer.layers:
            attn = getattr(layer, "attention", None)
            if attn is None:
                continue
            saved.append((attn, attn.processor))
            attn.set_processor(NagAttnProcessor(layout, attn.processor))
        yield [a.processor for a, _ in saved]
    finally:
        for attn, proc in saved:
            attn.set_processor(proc)


def _embed(tokens: list[torch.Tensor], pad_masks: list[torch.Tensor], pos_ids: list[torch.Tensor],
           embedder: torch.nn.Module, pad_token: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Embed per-item tokens, put the learned pad token on pad slots, look up RoPE, pad to a batch (like diffusers'
    _prepare_sequence). Returns (B, L, dim) features, (B, L, ·) freqs and the per-item lengths."""
    lens = [len(t) for t in tokens]
    # diffusers' caption ids run one grid over the padded length and then append pad ids again (longer than the
    # tokens); it trims them after batching. Trim per item here: same positions for every real or pad token.
    pos_ids = [p[:n] for p, n in zip(pos_ids, lens)]
    feats = embedder(torch.cat(tokens, dim=0))
    feats = torch.where(torch.cat(pad_masks).unsqueeze(-1), pad_token, feats)
    freqs = rope(torch.cat(pos_ids, dim=0))
    feats = pad_sequence(list(feats.split(lens)), batch_first=True, padding_value=0.0)
    freqs = pad_sequence(list(freqs.split(lens)), batch_first=True, padding_value=0.0)
    return feats, freqs, lens


def _valid_mask(lens: list[int], width: int, device: torch.device) -> torch.Tensor | None:
    if all(n == width for n in lens):
        return None
    return torch.arange(width, device=device)[None, :] < torch.tensor(lens, device=device)[:, None]


def nag_velocity(transformer: torch.nn.Module, latents: torch.Tensor, sigma: float, pos_caps: list[torch.Tensor],
                 neg_caps: list[torch.Tensor], *, scale: float, tau: float, alpha: float) -> torch.Tensor:
    """One NAG model evaluation → velocity in float32 (same conventions as sample.transformer_velocity)."""
    t_mod = transformer
    dtype, device = compute_dtype(t_mod), latents.device
    b = latents.shape[0]
    if len(pos_caps) != b or len(neg_caps) != b:
        raise InputError(f"NAG needs one positive and one negative caption per image; got {len(pos_caps)} and "
                         f"{len(neg_caps)} for {b} image(s).")
    sig = torch.as_tensor(sigma, dtype=torch.float32, device=device)
    t = (1.0 - sig).expand(b) if sig.ndim == 0 else 1.0 - sig
    x = list(latents.to(dtype).unsqueeze(2).unbind(0))
    pos = [c.to(device=device, dtype=dtype) for c in pos_caps]
    neg = [c.to(device=device, dtype=dtype) for c in neg_caps]
    key = f"{PATCH_SIZE}-{F_PATCH_SIZE}"

    adaln = t_mod.t_embedder(t * t_mod.t_scale).type_as(x[0])
    x_tok, pos_tok, sizes, x_ids, pos_ids, x_pad, pos_pad = t_mod.patchify_and_embed(x, pos, PATCH_SIZE, F_PATCH_SIZE)
    _, neg_tok, _, _, neg_ids, _, neg_pad = t_mod.patchify_and_embed(x, neg, PATCH_SIZE, F_PATCH_SIZE)
    rope = t_mod.rope_embedder  # read now: DyPE may have swapped it for this evaluation

    img, img_freqs, x_lens = _embed(x_tok, x_pad, x_ids, t_mod.all_x_embedder[key], t_mod.x_pad_token, rope)
    if len(set(x_lens)) != 1:
        raise InputError("NAG needs all images of a batch at the same size.")
    for layer in t_mod.noise_refiner:
        img = layer(img, None, img_freqs, adaln)

    # positive and negative captions refined together as 2B independent items (masked where padded)
    cap, cap_freqs, cap_lens = _embed(pos_tok + neg_tok, pos_pad + neg_pad, pos_ids + neg_ids, t_mod.cap_embedder,
                                      t_mod.cap_pad_token, rope)
    cap_mask = _valid_mask(cap_lens, cap.shape[1], device)
    for layer in t_mod.context_refiner:
        cap = layer(cap, cap_mask, cap_freqs)

    x_len = x_lens[0]
    p_lens, n_lens = cap_lens[:b], cap_lens[b:]
    p_len, n_len = max(p_lens), max(n_lens)
    seq = torch.cat([img, cap[:b, :p_len], cap[b:, :n_len]], dim=1)
    freqs = torch.cat([img_freqs, cap_freqs[:b, :p_len], cap_freqs[b:, :n_len]], dim=1)
    pos_mask = _valid_mask([x_len + n for n in p_lens], x_len + p_len, device)
    neg_mask = _valid_mask([x_len + n for n in n_lens], x_len + n_len, device)
    layout = NagLayout(x_len, p_len, n_len, pos_mask, neg_mask, float(scale), float(tau), float(alpha))

    with nag_attention(t_mod, layout):
        for layer in t_mod.layers:
            seq = layer(seq, None, freqs, adaln)

    out = t_mod.all_final_layer[key](seq[:, :x_len], c=adaln)  # negative (and positive) caption tail dropped
    images = t_mod.unpatchify(list(out.unbind(0)), sizes, PATCH_SIZE, F_PATCH_SIZE)
    return -torch.stack([o.float() for o in images]).squeeze(2)
