"""ComfyUI's own Z-Image model as the native guidance adapter (native.py) meets it: how to recognise it (a NextDiT of
Z-Image's shape, not Lumina-Image 2.0 or NewBie), the NextDiT API its copied forward relies on (checked once per
class, naming the ComfyUI version when it changed), and the RoPE embedder it swaps in for DyPE."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from zimage_core.errors import InputError, ZImageError
from zimage_core.guidance import dype as dype_math

from . import host

CHECKED_COMFYUI = "0.18.1"
ZIMAGE_AXES = [32, 48, 48]  # Z-Image's RoPE split per head (caption/frame, height, width)


def diffusion_model_of(model: Any) -> Any:
    patcher = host.model_patcher_class()
    if patcher is None or not isinstance(model, patcher):
        return None
    return getattr(getattr(model, "model", None), "diffusion_model", None)


def _has_zimage_shape(dm: Any) -> bool:
    """Z-Image's NextDiT, not Lumina-Image 2.0 or NewBie: learned pad tokens, timesteps ×1000, no pooled text."""
    return (dm.pad_tokens_multiple is not None and dm.clip_text_pooled_proj is None
            and float(dm.time_scale) == 1000.0 and list(dm.axes_dims) == ZIMAGE_AXES)


def is_native_zimage(model: Any) -> bool:
    """True for ComfyUI's own Z-Image MODEL: a ModelPatcher around a NextDiT of Z-Image's shape."""
    nextdit = host.nextdit_class()
    dm = diffusion_model_of(model)
    return nextdit is not None and type(dm) is nextdit and _has_zimage_shape(dm)


def _describe(model: Any) -> str:
    patcher = host.model_patcher_class()
    if patcher is None or not isinstance(model, patcher):
        return f"a {type(model).__name__}, not a ComfyUI MODEL"
    inner = getattr(model, "model", None)
    dm = getattr(inner, "diffusion_model", None)
    family = type(getattr(inner, "model_config", None) or inner).__name__
    nextdit = host.nextdit_class()
    if nextdit is not None and type(dm) is nextdit:
        if dm.clip_text_pooled_proj is not None:
            return "a NewBie model (Lumina 2 based)"
        return "a Lumina-Image 2.0 model"
    if "PixelSpace" in type(dm).__name__:
        return "Z-Image's pixel-space variant (it has its own forward)"
    return f"a {family} model ({type(dm).__name__})"


def check_native_zimage(model: Any) -> None:
    """InputError naming what the MODEL is unless it is ComfyUI's own Z-Image model."""
    if not is_native_zimage(model):
        raise InputError(f"Z-Image guidance works on ComfyUI's Z-Image model (a Z-Image file from Load Diffusion "
                         f"Model or Load Checkpoint); this MODEL is {_describe(model)}.")


# ----------------------------------------------------------------------------------------------- ComfyUI API check

# the leading parameters `_forward` passes by position, per method it calls
_SIGNATURES = {
    "NextDiT.forward": ("self", "x", "timesteps", "context", "num_tokens", "attention_mask"),
    "NextDiT.patchify_and_embed": ("self", "x", "cap_feats", "cap_mask", "t", "num_tokens"),
    "NextDiT.embed_cap": ("self", "cap_feats", "offset", "bsz", "device", "dtype"),
    "NextDiT.unpatchify": ("self", "x", "img_size", "cap_size", "return_tensor"),
    "JointTransformerBlock.forward": ("self", "x", "x_mask", "freqs_cis", "adaln_input"),
    "FinalLayer.forward": ("self", "x", "c"),
}
_KEYWORDS = {"NextDiT.patchify_and_embed": "transformer_options",
             "JointTransformerBlock.forward": "transformer_options"}
_checked: set[type] = set()


def check_comfy_api(dm: Any) -> None:
    """Refuse a ComfyUI whose NextDiT no longer has the methods `_forward` copies (checked once per class)."""
    if type(dm) in _checked:
        return
    methods = {"NextDiT.forward": type(dm).forward, "NextDiT.patchify_and_embed": type(dm).patchify_and_embed,
               "NextDiT.embed_cap": type(dm).embed_cap, "NextDiT.unpatchify": type(dm).unpatchify,
               "JointTransformerBlock.forward": type(dm.layers[0]).forward,
               "FinalLayer.forward": type(dm.final_layer).forward}
    changed = []
    for name, fn in methods.items():
        params = list(inspect.signature(fn).parameters)
        expected = _SIGNATURES[name]
        keyword = _KEYWORDS.get(name)
        if tuple(params[:len(expected)]) != expected or (keyword is not None and keyword not in params):
            changed.append(f"{name}{inspect.signature(fn)}")
    embedder = dm.rope_embedder
    embedder = getattr(embedder, "original", embedder)
    if not (hasattr(embedder, "theta") and hasattr(embedder, "axes_dim")):
        changed.append(f"the RoPE embedder ({type(embedder).__name__} has no theta/axes_dim)")
    if changed:
        raise ZImageError(f"Z-Image guidance on ComfyUI's own model was checked against ComfyUI {CHECKED_COMFYUI}; "
                          f"this ComfyUI ({host.comfy_version()}) changed {'; '.join(changed)}. Update the Z-Image "
                          "pack; its own loader and sampler are not affected.")
    _checked.add(type(dm))


class DyPEEmbedND(torch.nn.Module):
    """Stands in for NextDiT's RoPE embedder (comfy.ldm.flux.layers.EmbedND: ids (1, L, 3) → (1, 1, L, D/2, 2, 2)
    rotation matrices). Returns the original's output unless armed with a DyPE for the current model call; armed,
    it builds the pack's DyPE frequencies (angles in float64 on the CPU, as the pack does) in ComfyUI's format."""

    def __init__(self, original: torch.nn.Module):
        super().__init__()
        self.original = original
        self.armed: dype_math.DyPE | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        d = self.armed
        if d is None:
            return self.original(ids)
        theta = float(self.original.theta)
        k = dype_math.kappa(d.sigma, d.lambda_s, d.lambda_t)
        parts = []
        for axis, dim in enumerate(self.original.axes_dim):
            scale = (1.0, d.scale_h, d.scale_w)[axis]
            if axis == 0 or dype_math.effective_scale(scale, k) <= 1.0:
                parts.append(host.rope(ids[..., axis], dim, theta))
                continue
            omega = dype_math.axis_frequencies(d.method, dim, theta, scale, k, d.base_len)
            angles = (ids[..., axis].to("cpu", torch.float64)[..., None] * omega).float()
            cos, sin = angles.cos(), angles.sin()
            parts.append(torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2)).to(ids.device))
        out = torch.cat(parts, dim=-3).unsqueeze(1)
        m = d.current_mscale()
        return out * math.sqrt(m) if m != 1.0 else out


__all__ = ["CHECKED_COMFYUI", "DyPEEmbedND", "ZIMAGE_AXES", "check_comfy_api", "check_native_zimage",
           "diffusion_model_of", "is_native_zimage"]
