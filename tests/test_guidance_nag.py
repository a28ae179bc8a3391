"""NAG: the formula on small tensors (τ clipping included), identity at scale 1, the efficient single-forward form
against a straightforward two-pass reference, pushing away from the negative prompt, batches, img2img, end σ, the
no-negative note, and processors always restored."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from guidance_fixtures import conditioning, embeds, latents, run

from zimage_core.encode import Conditioning
from zimage_core.errors import InputError
from zimage_core.guidance import GuidanceOptions, guided_denoiser, nag_combine, nag_velocity
from zimage_core.guidance.nag import NagAttnProcessor
from zimage_core.sample import TransformerDenoiser, transformer_velocity

ON = dict(nag_scale=3.0, nag_tau=2.5, nag_alpha=0.25)
STEPS = 6


# ------------------------------------------------------------------------------------------------- the formula


def test_formula_by_hand_with_and_without_tau_clipping():
    z_pos = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    z_neg = torch.tensor([[-1.0, -1.0], [1.9, 0.1]])
    # token 0: z̃ = 3·(1,1) − 2·(−1,−1) = (5,5), r = 10/2 = 5 > τ = 2.5 → ẑ = (5,5)·2.5/5 = (2.5,2.5)
    #          out = 0.25·(2.5,2.5) + 0.75·(1,1) = (1.375, 1.375)
    # token 1: z̃ = (6,0) − (3.8,0.2) = (2.2,−0.2), r = 2.4/2 = 1.2 ≤ τ → ẑ = z̃; out = 0.25·(2.2,−0.2) + 0.75·(2,0)
    out = nag_combine(z_pos, z_neg, scale=3.0, tau=2.5, alpha=0.25)
    torch.testing.assert_close(out, torch.tensor([[1.375, 1.375], [2.05, -0.05]]), atol=1e-6, rtol=0)
    # a larger τ no longer clips token 0: ẑ = (5,5) → out = 0.25·5 + 0.75·1 = 2
    out = nag_combine(z_pos, z_neg, scale=3.0, tau=10.0, alpha=0.25)
    torch.testing.assert_close(out[0], torch.tensor([2.0, 2.0]), atol=1e-6, rtol=0)
    # the clipped token's L1 norm is exactly τ·‖z⁺‖₁ before the α mix
    clipped = nag_combine(z_pos, z_neg, scale=3.0, tau=2.5, alpha=1.0)
    assert clipped[0].abs().sum().item() == pytest.approx(2.5 * 2.0)


def test_formula_identities():
    g = torch.Generator().manual_seed(0)
    zp, zn = torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    assert torch.equal(nag_combine(zp, zn, 1.0, 3.5, 0.5), zp)  # s = 1 → z⁺ exactly
    assert torch.equal(nag_combine(zp, zn, 4.0, 3.5, 0.0), zp)  # α = 0 → z⁺ exactly
    out = nag_combine(zp, zn, 4.0, 2.0, 1.0)  # α = 1 → ẑ, whose norm ratio never exceeds τ
    ratio = out.abs().sum(-1) / zp.abs().sum(-1)
    assert ratio.max().item() <= 2.0 + 1e-5 and (ratio > 2.0 - 1e-5).any()  # some tokens clipped right at τ
    assert nag_combine(zp.half(), zn.half(), 3.0, 2.5, 0.25).dtype == torch.float16


@pytest.mark.parametrize("bad, match", [(dict(nag_scale=0.5), "scale"), (dict(nag_scale=2, nag_tau=0), "tau"),
                                        (dict(nag_scale=2, nag_alpha=1.5), "alpha"),
                                        (dict(nag_scale=2, nag_end_sigma=2), "end")])
def test_bad_settings_are_refused(dit, bad, match):
    with pytest.raises(InputError, match=match):
        guided_denoiser(GuidanceOptions(negative=conditioning(5), **bad))(dit, conditioning(5))


# ------------------------------------------------------------------------ identity, efficient form vs reference


def test_scale_one_is_the_plain_sampler(dit):
    pos, neg = conditioning(12, 40), conditioning(20, seed=1)
    plain = run(dit, pos, steps=2)
    off = run(dit, pos, guided_denoiser(GuidanceOptions(negative=neg, nag_scale=1.0)), steps=2)
    assert torch.equal(off, plain)


def test_driver_at_scale_one_reproduces_the_diffusers_forward(dit):
    """The extended-sequence driver rebuilds diffusers' forward; with s = 1 the image stream is the plain one."""
    x = latents(2)
    with torch.no_grad():
        ref = transformer_velocity(dit, x, 0.7, embeds(5, 40))
        ours = nag_velocity(dit, x, 0.7, embeds(5, 40), embeds(70, 3, seed=1), scale=1.0, tau=3.5, alpha=0.5)
    assert (ours - ref).abs().max().item() <= 1e-6


def _rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs[:, None, :]).flatten(-2)


def _attention(attn, h: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention of one unpadded sequence (L, dim) → (L, heads·head_dim), before to_out."""
    q, k, v = (f(h).unflatten(-1, (attn.heads, -1)) for f in (attn.to_q, attn.to_k, attn.to_v))
    q, k = _rope(attn.norm_q(q), freqs), _rope(attn.norm_k(k), freqs)
    w = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("hqk,khd->qhd", w.softmax(-1), v).flatten(1)


def reference_nag(T, x: torch.Tensor, sigma: float, pos: list[torch.Tensor], neg: list[torch.Tensor], scale: float,
                  tau: float, alpha: float, clipped: list[int]) -> torch.Tensor:
    """Straightforward two-pass NAG: per image, two separate sequences [image, cap⁺] and [image, cap⁻] sharing the
    image stream; two separate attention computations per main layer, combined for the image tokens by the
    paper's formula written out again; every block step spelled out; no batching, padding masks or packing."""
    out = []
    for i in range(x.shape[0]):
        xi = [x[i].unsqueeze(1)]
        adaln = T.t_embedder(torch.tensor([1.0 - sigma]) * T.t_scale)
        (img_t,), (cp_t,), (size,), (img_ids,), (cp_ids,), (img_pad,), (cp_pad,) = T.patchify_and_embed(
            xi, [pos[i]], 2, 1)
        _, (cn_t,), _, _, (cn_ids,), _, (cn_pad,) = T.patchify_and_embed(xi, [neg[i]], 2, 1)

        def embed(tok, pad, ids, embedder, pad_token):
            h = torch.where(pad[:, None], pad_token, embedder(tok))
            return h, T.rope_embedder(ids[: len(tok)])

        img, f_img = embed(img_t, img_pad, img_ids, T.all_x_embedder["2-1"], T.x_pad_token)
        cp, f_cp = embed(cp_t, cp_pad, cp_ids, T.cap_embedder, T.cap_pad_token)
        cn, f_cn = embed(cn_t, cn_pad, cn_ids, T.cap_embedder, T.cap_pad_token)
        for layer in T.noise_refiner:
            img = layer(img[None], None, f_img[None], adaln)[0]
        for layer in T.context_refiner:
            cp, cn = layer(cp[None], None, f_cp[None])[0], layer(cn[None], None, f_cn[None])[0]
        n_img = len(img)
        for layer in T.layers:
            s_msa, g_msa, s_mlp, g_mlp = layer.adaLN_modulation(adaln).chunk(4, dim=1)
            s_msa, s_mlp, g_msa, g_mlp = 1 + s_msa, 1 + s_mlp, g_msa.tanh(), g_mlp.tanh()
            seq_p, seq_n = torch.cat([img, cp]), torch.cat([img, cn])
            z_p = _attention(layer.attention, layer.attention_norm1(seq_p) * s_msa, torch.cat([f_img, f_cp]))
            z_n = _attention(layer.attention, layer.attention_norm1(seq_n) * s_msa, torch.cat([f_img, f_cn]))
            zi_p, zi_n = z_p[:n_img], z_n[:n_img]
            guided = scale * zi_p - (scale - 1) * zi_n
            r = torch.linalg.vector_norm(guided, ord=1, dim=-1, keepdim=True) / torch.linalg.vector_norm(
                zi_p, ord=1, dim=-1, keepdim=True)
            clipped.append(int((r > tau).sum()))
            zi = alpha * (guided * torch.clamp(r, max=tau) / r) + (1 - alpha) * zi_p
            seq_p = seq_p + g_msa * layer.attention_norm2(layer.attention.to_out[0](torch.cat([zi, z_p[n_img:]])))
            cn = cn + g_msa * layer.attention_norm2(layer.attention.to_out[0](z_n[n_img:]))
            seq_p = seq_p + g_mlp * layer.ffn_norm2(layer.feed_forward(layer.ffn_norm1(seq_p) * s_mlp))
            cn = cn + g_mlp * layer.ffn_norm2(layer.feed_forward(layer.ffn_norm1(cn) * s_mlp))
            img, cp = seq_p[:n_img], seq_p[n_img:]
        final = T.all_final_layer["2-1"](img[None], c=adaln)[0]
        out.append(-T.unpatchify([final], [size], 2, 1)[0].float().squeeze(1))
    return torch.stack(out)


@pytest.mark.parametrize("tau", [2.5, 1.05])
def test_efficient_single_forward_equals_two_pass_reference(dit, tau):
    # item 0: negative (70 → 96 padded) longer than the positive (5 → 32); item 1: the reverse (40 → 64 vs 3 → 32)
    x, pos, neg = latents(2), embeds(5, 40), embeds(70, 3, seed=1)
    clipped: list[int] = []
    with torch.no_grad():
        ours = nag_velocity(dit, x, 0.8, pos, neg, scale=4.0, tau=tau, alpha=0.25)
        ref = reference_nag(dit, x, 0.8, pos, neg, 4.0, tau, 0.25, clipped)
    diff = (ours - ref).abs().max().item()
    print(f"efficient vs two-pass NAG (τ={tau}): max abs diff {diff:.2e}, clipped tokens per layer {clipped}")
    assert diff <= 1e-5
    assert (ours - transformer_velocity(dit, x, 0.8, pos)).abs().max() > 1e-3  # NAG acted
    if tau < 2:
        assert sum(clipped) > 0  # the τ branch was exercised


# --------------------------------------------------------------------------------------------------- behaviour


def test_output_moves_away_from_what_the_negative_prompt_alone_gives(dit):
    lines = []
    for seed in range(2):
        pos, neg = conditioning(12, seed=seed), conditioning(14, seed=100 + seed)
        plain = run(dit, pos, steps=STEPS, seed=seed)
        neg_only = run(dit, neg, steps=STEPS, seed=seed)
        nag = run(dit, pos, guided_denoiser(GuidanceOptions(negative=neg, **ON)), steps=STEPS, seed=seed)
        d_plain, d_nag = (plain - neg_only).abs().mean().item(), (nag - neg_only).abs().mean().item()
        push = torch.nn.functional.cosine_similarity((nag - plain).flatten(), (plain - neg_only).flatten(), dim=0)
        lines.append(f"seed {seed}: |plain−neg| {d_plain:.4f}  |nag−neg| {d_nag:.4f}  cos(push, plain−neg) "
                     f"{push.item():.3f}")
        assert d_nag > 1.2 * d_plain
        assert push > 0.2  # the change points away from the negative-only result
    print("\n".join(lines))


def test_batches_with_different_caption_lengths_match_single_items(dit):
    pos, neg = conditioning(5, 40), conditioning(70, 3, seed=1)
    both = run(dit, pos, guided_denoiser(GuidanceOptions(negative=neg, **ON)), seed=7, steps=2)
    for i in range(2):
        neg_i = Conditioning([neg.embeds[i]], [neg.prompts[i]])
        one = run(dit, Conditioning([pos.embeds[i]], [pos.prompts[i]]),
                  guided_denoiser(GuidanceOptions(negative=neg_i, **ON)), seed=7 + i, steps=2)
        assert (both[i:i + 1] - one).abs().max().item() <= 1e-5


def test_img2img_with_an_end_sigma(dit):
    pos, neg = conditioning(12), conditioning(14, seed=1)
    init = run(dit, pos, steps=1)
    made = []

    def make(t, c):
        made.append(guided_denoiser(GuidanceOptions(negative=neg, nag_end_sigma=0.6, **ON))(t, c))
        return made[-1]

    plain = run(dit, pos, steps=8, init_latents=init, strength=0.5)
    nag = run(dit, pos, make, steps=8, init_latents=init, strength=0.5)
    # strength 0.5 of N = 8 starts at index 4 (σ .75 .6429 .5 .3); end σ 0.6 keeps NAG on σ ≥ 0.6 only
    assert made[-1].nag_steps == [4, 5] and torch.isfinite(nag).all()
    assert (nag - plain).abs().max() > 1e-3


def test_no_negative_prompt_is_a_noop_with_a_note(dit, caplog):
    pos = conditioning(12)
    with caplog.at_level(logging.INFO, logger="zimage_core.guidance"):
        den = guided_denoiser(GuidanceOptions(negative=None, nag_scale=4.0))(dit, pos)
    assert "no negative prompt" in caplog.text and den.notes
    x = latents(1)
    with torch.no_grad():
        assert torch.equal(den(x, 0.9, 0), TransformerDenoiser(dit, pos)(x, 0.9, 0))
    assert den.nag_steps == []


def test_processors_are_restored_even_after_an_error(dit):
    before = [layer.attention.processor for layer in dit.layers]
    with torch.no_grad():
        nag_velocity(dit, latents(1), 0.5, embeds(5), embeds(9), scale=3.0, tau=2.5, alpha=0.25)
        with pytest.raises(Exception):
            nag_velocity(dit, latents(1), 0.5, embeds(5), [torch.randn(4, 7)], scale=3.0, tau=2.5, alpha=0.25)
    after = [layer.attention.processor for layer in dit.layers]
    assert all(a is b for a, b in zip(before, after))
    assert not any(isinstance(p, NagAttnProcessor) for p in after)
