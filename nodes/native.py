"""Our guidance (NAG, SLG, DyPE, CFG renorm/truncation, seed diversity) on ComfyUI's own Z-Image MODEL.

Why: most users load Z-Image with ComfyUI's own loader and sample with KSampler, so that graph is where the
guidance has to act. ComfyUI's NAGuidance and SkipLayerGuidanceDiT nodes do nothing on this model: NAGuidance sets an
attn1-output patch and SkipLayerGuidanceDiT a `patches_replace["dit"]` entry, and Z-Image's NextDiT
(comfy/ldm/lumina/model.py) reads neither. They only cost extra model evaluations.

`attach()` returns `model.clone()` with our math (zimage_core.guidance) on it, through ComfyUI's public extension
points only. Nothing in ComfyUI is monkey-patched, and the base MODEL stays unchanged:
  - DIFFUSION_MODEL wrapper (around NextDiT.forward): seed diversity on the positive rows' captions; arms DyPE for
    this call; runs NAG and SLG's skip pass through `_forward`, a copy of NextDiT's text-to-image forward built from
    its own methods and submodules; everything else goes to the stock forward.
  - OUTER_SAMPLE wrapper (once per sampling run): reads the seed, KSampler's cfg and its negative conditioning.
  - attention override in transformer_options: NAG's two attentions per main layer.
  - sampler_cfg_function: CFG renormalisation and truncation. ComfyUI's cfg c is our scale + 1
    (uncond + c·(cond − uncond) = cond + (c − 1)·(cond − uncond)), so set KSampler's cfg to scale + 1;
    CfgSettings.scale itself is not read here.
  - sampler_post_cfg_function: SLG. One extra positive pass with the chosen layers skipped (left out, not run),
    added after CFG: denoised + s·(cond − skip), which is v + s·(v_c − v_skip) in denoised form.
  - object patch of `diffusion_model.rope_embedder`: `DyPEEmbedND`. It returns the original embedder's output
    unless our wrapper has armed it for the current call, because the patched module stays on the shared model
    after a run until ComfyUI loads another patcher.

NAG layout. NAG needs the negative caption in the same forward, but NextDiT builds its sequence [caption, image]
itself, so `_forward` appends the negative after the image: [cap⁺ | image | cap⁻]. The negative is padded with the
learned pad token, gets caption positions 1…N and runs through the context refiner on its own, exactly as in a
negative-only forward. Per main layer the override attends [cap⁺, image] and [image, cap⁻] (two contiguous slices)
and mixes the image tokens with `nag_combine`. The tail is dropped before the final layer. As in the pack, NAG acts
only at KSampler cfg 1. With cfg > 1 the negative goes to CFG and NAG is off.

What the copied forward does not cover: edit/omni inputs (reference latents, SigLIP features), NewBie's pooled text,
inner DIFFUSION_MODEL wrappers and `double_block` patches of other nodes. For those calls NAG and SLG fall back to
the stock forward (a one-time warning says so), and DyPE and seed diversity still act.

Checked against ComfyUI 0.18.1. `_forward` depends on NextDiT's method signatures, so the first attach() checks
them and names the ComfyUI version when they changed.
"""

from __future__ import annotations

import functools
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import torch

from zimage_core.errors import InputError
from zimage_core.guidance.cfg import cfg_combine, cfg_scale_at
from zimage_core.guidance.diversity import caption_noise
from zimage_core.guidance.nag import nag_combine
from zimage_core.guidance.settings import CfgSettings, DiversitySettings, DypeSettings, NagSettings, SlgSettings
from zimage_core.guidance.settings import check_layers
from zimage_core.guidance.slg import slg_active

from . import host
from .native_model import DyPEEmbedND, check_comfy_api, check_native_zimage, is_native_zimage

log = logging.getLogger(__name__)

KEY = "zimage_guidance"  # transformer_options key of the attached settings; also the key of our wrappers
RUN_KEY = "zimage_guidance_run"  # transformer_options key of one sampling run's data (set by OUTER_SAMPLE)
SKIP_KEY = "zimage_slg_skip"  # transformer_options key present only in SLG's skip pass: the layers to leave out
ROPE = "diffusion_model.rope_embedder"
LATENT_PX = 8  # pixels per latent cell (DyPE sizes are in pixels)


@dataclass(frozen=True, eq=False)
class NativeGuidance:
    """The settings attach() put on a MODEL, kept in its transformer_options[KEY] so a later attach() can add to them.
    A group left None was never set; `negative` is NAG's own (1, tokens, dim) negative, else KSampler's is used."""

    nag: NagSettings | None = None
    slg: SlgSettings | None = None
    dype: DypeSettings | None = None
    cfg: CfgSettings | None = None
    diversity: DiversitySettings | None = None
    negative: torch.Tensor | None = None
    slg_layers: tuple[int, ...] = ()

    @property
    def nag_on(self) -> bool:
        return self.nag is not None and self.nag.scale != 1.0

    @property
    def slg_on(self) -> bool:
        return self.slg is not None and self.slg.scale != 0.0

    @property
    def dype_on(self) -> bool:
        return self.dype is not None and self.dype.on

    @property
    def cfg_on(self) -> bool:
        return self.cfg is not None and (self.cfg.normalization > 0.0 or self.cfg.truncation < 1.0)

    @property
    def diversity_on(self) -> bool:
        return self.diversity is not None and self.diversity.strength > 0.0

    @property
    def any_on(self) -> bool:
        return self.nag_on or self.slg_on or self.dype_on or self.cfg_on or self.diversity_on


@dataclass
class _Run:
    """One sampling run's data, set by the OUTER_SAMPLE wrapper for the per-call one; caption noise is drawn once per
    run."""

    seed: int
    cfg: float
    negative: torch.Tensor | None
    noise: dict[tuple, torch.Tensor] = field(default_factory=dict)


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        log.warning(text)


# ----------------------------------------------------------------------------------------------- attach


def attach(model: Any, *, nag: NagSettings | None = None, slg: SlgSettings | None = None,
           dype: DypeSettings | None = None, cfg: CfgSettings | None = None,
           diversity: DiversitySettings | None = None, negative: list | None = None) -> Any:
    """A clone of ComfyUI's Z-Image MODEL with our guidance on it (see the module doc).

    Chainable: groups attached earlier stay, the groups given here replace theirs. `negative` is a native
    CONDITIONING for NAG; without one NAG uses the negative KSampler gets. Groups that are off change nothing."""
    check_native_zimage(model)
    dm = model.get_model_object("diffusion_model")
    check_comfy_api(dm)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    given = dict(nag=nag, slg=slg, dype=dype, cfg=cfg, diversity=diversity)
    guidance = replace(options.get(KEY) or NativeGuidance(), **{k: v for k, v in given.items() if v is not None})
    if negative is not None:
        guidance = replace(guidance, negative=_cross_attn(negative, dm))
    if guidance.slg_on:
        guidance = replace(guidance, slg_layers=check_layers(guidance.slg.layers, len(dm.layers)))
    options[KEY] = guidance
    _install(patched, guidance)
    return patched


def _cross_attn(conditioning: list, dm: Any) -> torch.Tensor:
    """The first entry's embeddings of a native CONDITIONING ([[tensor (1, tokens, dim), {...}], ...])."""
    try:
        emb = conditioning[0][0]
    except (IndexError, KeyError, TypeError):
        emb = None
    if not isinstance(emb, torch.Tensor) or emb.ndim != 3:
        raise InputError("The NAG negative must be a CONDITIONING (e.g. from CLIP Text Encode).")
    width = dm.cap_embedder[-1].weight.shape[1]
    if emb.shape[-1] != width:
        raise InputError(f"The NAG negative has {emb.shape[-1]} features per token, but this model reads {width} "
                         "(Z-Image's Qwen3-4B text encoder): encode it with the Z-Image text encoder.")
    return emb


def _install(patched: Any, guidance: NativeGuidance) -> None:
    """Put exactly the hooks the settings need on the clone, replacing any of ours it inherited."""
    diffusion, outer = host.wrapper_type("DIFFUSION_MODEL"), host.wrapper_type("OUTER_SAMPLE")
    patched.remove_wrappers_with_key(diffusion, KEY)
    patched.remove_wrappers_with_key(outer, KEY)
    if guidance.any_on:
        patched.add_wrapper_with_key(diffusion, KEY, _diffusion_model_wrapper)
        patched.add_wrapper_with_key(outer, KEY, _outer_sample_wrapper)

    current = patched.get_model_object(ROPE)
    original = current.original if isinstance(current, DyPEEmbedND) else current
    if guidance.dype_on:
        patched.add_object_patch(ROPE, DyPEEmbedND(original))
    elif current is not original:
        patched.add_object_patch(ROPE, original)

    options = patched.model_options
    cfg_function = options.get("sampler_cfg_function")
    if guidance.cfg_on:
        if cfg_function is not None and cfg_function is not _cfg_function:
            log.warning("Z-Image CFG renormalisation/truncation replaces the CFG function another node set on this "
                        "MODEL.")
        patched.set_model_sampler_cfg_function(_cfg_function)
    elif cfg_function is _cfg_function:
        del options["sampler_cfg_function"]
    if "sampler_post_cfg_function" in options:
        options["sampler_post_cfg_function"] = [f for f in options["sampler_post_cfg_function"]
                                                if f is not _slg_post_cfg]
    if guidance.slg_on:
        patched.set_model_sampler_post_cfg_function(_slg_post_cfg)


# ----------------------------------------------------------------------------------------------- sampler hooks


def _sigma(value: Any) -> float:
    return float(value.flatten()[0]) if isinstance(value, torch.Tensor) else float(value)


def _outer_sample_wrapper(executor: Any, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any,
                          sigmas: torch.Tensor, denoise_mask: Any, callback: Any, disable_pbar: bool, seed: Any,
                          **kwargs: Any) -> Any:
    """Once per run: the seed, KSampler's cfg and negative, where the per-call wrapper can read them."""
    guider = executor.class_obj  # the CFGGuider; its model_options are this run's copy
    options = guider.model_options.setdefault("transformer_options", {})
    guidance: NativeGuidance | None = options.get(KEY)
    if guidance is not None:
        cfg = float(getattr(guider, "cfg", 1.0))
        negative = guidance.negative if guidance.negative is not None else _guider_negative(guider)
        _note_run(guidance, cfg, negative)
        options[RUN_KEY] = _Run(seed=int(seed or 0), cfg=cfg, negative=negative)
    return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **kwargs)


def _guider_negative(guider: Any) -> torch.Tensor | None:
    entries = (getattr(guider, "conds", None) or {}).get("negative") or []
    return entries[0].get("cross_attn") if entries else None


def _note_run(guidance: NativeGuidance, cfg: float, negative: torch.Tensor | None) -> None:
    if guidance.nag_on and negative is None:
        log.warning("NAG has no effect: the sampler has no negative conditioning and none was given to the "
                    "guidance node.")
    elif guidance.nag_on and not math.isclose(cfg, 1.0):
        log.warning(f"NAG is off while the sampler's cfg is {cfg:g}: with cfg > 1 the negative prompt acts through "
                    "CFG (NAG is the negative prompt for cfg 1).")
    if guidance.cfg_on and guidance.cfg.scale > 0.0 and not math.isclose(guidance.cfg.scale + 1.0, cfg):
        log.warning(f"CFG scale {guidance.cfg.scale:g} of the guidance node is not used: ComfyUI's sampler uses its "
                    f"own cfg ({cfg:g}), which is our scale + 1. Set it to {guidance.cfg.scale + 1.0:g}.")


def _cfg_function(args: dict) -> torch.Tensor:
    """Our CFG with renormalisation and truncation. ComfyUI hands over x − denoised (= σ·v) and wants that form
    back; the per-image norm cap does not change with the σ factor."""
    cfg = args["model_options"]["transformer_options"][KEY].cfg
    scale = cfg_scale_at(_sigma(args["sigma"]), float(args["cond_scale"]) - 1.0, cfg.truncation)
    if scale <= 0.0:  # a truncated step is the positive prediction alone (the uncond is never norm-capped)
        return args["cond"]
    return cfg_combine(args["cond"], args["uncond"], scale, cfg.normalization).to(args["cond"].dtype)


def _slg_post_cfg(args: dict) -> torch.Tensor:
    """SLG after CFG: one positive pass with the chosen layers left out, inside the σ window."""
    guidance: NativeGuidance = args["model_options"]["transformer_options"][KEY]
    if not slg_active(_sigma(args["sigma"]), guidance.slg.start, guidance.slg.end):
        return args["denoised"]
    options = dict(args["model_options"])
    options["transformer_options"] = {**options.get("transformer_options", {}), SKIP_KEY: guidance.slg_layers}
    (skipped,) = host.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], options)
    return args["denoised"] + guidance.slg.scale * (args["cond_denoised"] - skipped)


# ----------------------------------------------------------------------------------------------- the model call

_STOCK_KWARGS = {"transformer_options", "control"}  # what a text-to-image call passes besides the positional args


def _diffusion_model_wrapper(executor: Any, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                             num_tokens: Any, attention_mask: Any = None, **kwargs: Any) -> torch.Tensor:
    """Around NextDiT.forward: diversity, then DyPE armed, then NAG/SLG through `_forward` or the stock forward."""
    to = kwargs.get("transformer_options", {})
    guidance: NativeGuidance | None = to.get(KEY)
    if guidance is None:
        return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)
    run = to.get(RUN_KEY) or _Run(seed=0, cfg=1.0, negative=guidance.negative)
    dm = executor.class_obj  # the NextDiT
    sigma = _sigma(to.get("sigmas", timesteps))
    if guidance.diversity_on and sigma > guidance.diversity.until_sigma:
        context = _diversify(context, to.get("cond_or_uncond", [0]), guidance.diversity.strength, run)
    skip = tuple(to.get(SKIP_KEY, ()))
    nag = (guidance.nag_on and math.isclose(run.cfg, 1.0) and run.negative is not None
           and sigma >= guidance.nag.end_sigma)
    wanted = [name for name, on in (("NAG", nag), ("SLG", bool(skip))) if on]
    driven = bool(wanted) and _driver_covers(kwargs, to, wanted)
    with _dype_armed(dm, guidance, x, sigma):
        if not driven:
            return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)
        return _forward(dm, x, timesteps, context, to, negative=run.negative if nag else None,
                        nag=guidance.nag if nag else None, skip=skip)


def _driver_covers(kwargs: dict, to: dict, wanted: list[str]) -> bool:
    """False (with a one-time warning naming the guidance left out) for calls `_forward` does not reproduce."""
    extra = sorted(k for k, v in kwargs.items()
                   if k not in _STOCK_KWARGS and v is not None and not (isinstance(v, (list, tuple)) and not v))
    if extra:
        _warn_once(f"Z-Image {' and '.join(wanted)} not applied to this model call: it carries {', '.join(extra)} "
                   "(an edit/omni or NewBie input), which only ComfyUI's own forward handles. DyPE and seed "
                   "diversity still act.")
        return False
    if "double_block" in to.get("patches", {}):
        _warn_once(f"Z-Image {'/'.join(wanted)} passes do not run other nodes' double_block patches; the other "
                   "model calls still do.")
    return True


def _diversify(context: torch.Tensor, cond_or_uncond: list[int], strength: float, run: _Run) -> torch.Tensor:
    """The pack's seed diversity on the positive rows (row r of each positive chunk uses seed + r)."""
    chunk = context.shape[0] // max(len(cond_or_uncond), 1)
    out = context.clone()
    for j, kind in enumerate(cond_or_uncond):
        if kind != 0:
            continue
        for r in range(chunk):
            e = context[j * chunk + r]
            key = (run.seed + r, tuple(e.shape))
            if key not in run.noise:
                run.noise[key] = caption_noise(key[1], key[0])
            x = e.float()
            out[j * chunk + r] = (x + strength * x.std() * run.noise[key].to(e.device)).to(e.dtype)
    return out


@contextmanager
def _dype_armed(dm: Any, guidance: NativeGuidance, x: torch.Tensor, sigma: float) -> Iterator[None]:
    """Arm our RoPE embedder with DyPE at this size and σ for the duration of one model call."""
    dype = guidance.dype.for_size(x.shape[-1] * LATENT_PX, x.shape[-2] * LATENT_PX) if guidance.dype_on else None
    if dype is None or not dype.active:
        yield
        return
    embedder = dm.rope_embedder
    if not isinstance(embedder, DyPEEmbedND):
        _warn_once("Z-Image DyPE is not applied: another node replaced this model's RoPE embedder after ours.")
        yield
        return
    dype.set_sigma(sigma)
    embedder.armed = dype
    try:
        yield
    finally:
        embedder.armed = None


def _forward(dm: Any, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, to: dict, *,
             negative: torch.Tensor | None, nag: NagSettings | None, skip: tuple[int, ...]) -> torch.Tensor:
    """NextDiT's text-to-image forward from its own methods and submodules, with the negative caption appended after
    the image (NAG) and main layers left out (SLG). Returns what NextDiT returns (−velocity)."""
    bs, _, h, w = x.shape
    x = host.pad_to_patch_size(x, (dm.patch_size, dm.patch_size))
    t = dm.t_embedder((1.0 - timesteps) * dm.time_scale, dtype=x.dtype)
    seq, _, img_size, cap_size, freqs, _ = dm.patchify_and_embed(x, context, None, t, context.shape[1],
                                                                   transformer_options=to)
    freqs = freqs.to(seq.device)
    length = seq.shape[1]  # [cap⁺ | image]
    main_to = dict(to)  # per-pass block bookkeeping must not leak into the caller's dict
    if negative is not None:
        neg, neg_freqs = _embed_negative(dm, negative.to(device=x.device, dtype=x.dtype), to)
        seq = torch.cat([seq, host.repeat_to_batch_size(neg, bs)], dim=1)
        freqs = torch.cat([freqs, neg_freqs.to(seq.device)], dim=1)
        main_to["optimized_attention_override"] = _nag_attention(cap_size[0], length - cap_size[0], nag,
                                                                 to.get("optimized_attention_override"))
    main_to["total_blocks"] = len(dm.layers)
    main_to["block_type"] = "double"
    for i, layer in enumerate(dm.layers):
        if i in skip:
            continue
        main_to["block_index"] = i
        seq = layer(seq, None, freqs, t, transformer_options=main_to)
    out = dm.final_layer(seq[:, :length], t)
    return -dm.unpatchify(out, img_size, cap_size, return_tensor=True)[:, :, :h, :w]


def _embed_negative(dm: Any, negative: torch.Tensor, to: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The negative caption as a negative-only forward sees it: padded with the learned pad token, positions 1…N,
    refined on its own."""
    embeds, freqs, _ = dm.embed_cap(negative, offset=0, bsz=1, device=negative.device, dtype=negative.dtype)
    neg, neg_freqs = embeds[0], freqs[0].to(negative.device)
    for layer in dm.context_refiner:
        neg = layer(neg, None, neg_freqs, transformer_options=to)
    return neg, neg_freqs


def _nag_attention(pos_len: int, image_len: int, nag: NagSettings, previous: Callable | None) -> Callable:
    """Attention override for the main layers over [cap⁺ (pos_len) | image (image_len) | cap⁻]; chains an override
    another node set (e.g. a faster attention backend)."""
    end = pos_len + image_len

    def override(func: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: Any = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        attend = func if previous is None else functools.partial(previous, func)
        # q, k, v: (batch, heads, tokens, head_dim); outputs (batch, tokens, heads·head_dim)
        z_pos = attend(q[:, :, :end], k[:, :, :end], v[:, :, :end], heads, None, *args, **kwargs)
        z_neg = attend(q[:, :, pos_len:], k[:, :, pos_len:], v[:, :, pos_len:], heads, None, *args, **kwargs)
        image = nag_combine(z_pos[:, pos_len:], z_neg[:, :image_len], nag.scale, nag.tau, nag.alpha)
        return torch.cat([z_pos[:, :pos_len], image, z_neg[:, image_len:]], dim=1)

    return override


__all__ = ["DyPEEmbedND", "NativeGuidance", "attach", "check_native_zimage", "is_native_zimage"]
