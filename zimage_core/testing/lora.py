"""Tiny LoRA files with known deltas for the tiny transformer (tests and ComfyUI smoke tests).

Each target module m gets random lora_A (r × in) and lora_B (out × r); the weight change a loader must produce at
strength w is w · (alpha / r if alpha is given else 1) · B @ A, returned alongside so tests can check it exactly.
Styles are the key layouts users' files come in: 'diffusers' (transformer.<module>.lora_A/B.weight), 'kohya'
(lora_unet_<module_with_underscores>.lora_down/up.weight + .alpha), 'comfy' (diffusion_model.<module>.lora_A/B
.weight + .alpha, as ai-toolkit/ComfyUI save them) and 'comfy_qkv' (original layout: one fused attention.qkv LoRA).
"""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_TARGETS = ("layers.0.attention.to_q", "layers.0.attention.to_k", "layers.1.feed_forward.w1",
                   "layers.2.attention.to_out.0")
STYLES = ("diffusers", "kohya", "comfy", "comfy_qkv")


def _shape(transformer: torch.nn.Module, module: str) -> tuple[int, int]:
    weight = transformer.get_submodule(module).weight
    return int(weight.shape[0]), int(weight.shape[1])


def make_tiny_lora(transformer: torch.nn.Module, targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS, *,
                   rank: int = 4, alpha: float | None = None, style: str = "diffusers", seed: int = 0,
                   std: float = 0.2) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA state dict in `style`, {diffusers module name: full weight delta at strength 1}).

    'comfy_qkv' targets the fused qkv of each attention block named in `targets` (…attention.to_q/k/v all map to
    one fused LoRA per block) and reports the split to_q/to_k/to_v deltas.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}")
    g = torch.Generator().manual_seed(seed)
    scale = (alpha / rank) if alpha is not None else 1.0
    sd: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}
    if style == "comfy_qkv":
        blocks = sorted({t.rsplit(".attention.", 1)[0] for t in targets if ".attention.to_" in t})
        for block in blocks:
            out_f, in_f = _shape(transformer, f"{block}.attention.to_q")
            a = torch.randn(rank, in_f, generator=g) * std
            b = torch.randn(3 * out_f, rank, generator=g) * std
            key = f"diffusion_model.{block}.attention.qkv"
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = a, b
            if alpha is not None:
                sd[f"{key}.alpha"] = torch.tensor(float(alpha))
            for proj, chunk in zip("qkv", b.chunk(3, dim=0)):
                deltas[f"{block}.attention.to_{proj}"] = scale * chunk @ a
        return sd, deltas
    for module in targets:
        out_f, in_f = _shape(transformer, module)
        a = torch.randn(rank, in_f, generator=g) * std
        b = torch.randn(out_f, rank, generator=g) * std
        deltas[module] = scale * b @ a
        if style == "diffusers":
            key = f"transformer.{module}"
            sd[f"{key}.lora_A.weight"], sd[f"{key}.lora_B.weight"] = a, b
        elif style == "kohya":
            key = "lora_unet_" + module.replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = a, b
        else:
            key = f"diffusion_model.{module}"
            sd[f"{key}.lora_A.weight"], sd[f"{key}.lora_B.weight"] = a, b
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    return sd, deltas


def save_tiny_lora(path: str | Path, transformer: torch.nn.Module, **kwargs) -> dict[str, torch.Tensor]:
    """Write make_tiny_lora(...) to a .safetensors file; returns the expected deltas."""
    from safetensors.torch import save_file

    sd, deltas = make_tiny_lora(transformer, **kwargs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return deltas


def foreign_lora(kind: str = "sdxl", rank: int = 4) -> dict[str, torch.Tensor]:
    """A small LoRA in another architecture's key layout (for the 'wrong model' error path)."""
    if kind == "sdxl":
        base = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    elif kind == "flux":
        base = "lora_unet_double_blocks_0_img_attn_qkv"
    else:
        raise ValueError(kind)
    return {f"{base}.lora_down.weight": torch.randn(rank, 64), f"{base}.lora_up.weight": torch.randn(64, rank),
            f"{base}.alpha": torch.tensor(float(rank))}


__all__ = ["DEFAULT_TARGETS", "STYLES", "foreign_lora", "make_tiny_lora", "save_tiny_lora"]
