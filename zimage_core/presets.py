"""Aspect-ratio and style presets, the same the ComfyUI front end offers (web/zimage_presets.js; a test keeps the
two in step), for the CLI (`--aspect`, `--style`) and the HTTP API (`aspect`, `style`).

Aspect presets: 9 ratios × 2 size classes; each w·h is within 1 % of class² and both sides are multiples of 16.
Named "<ratio>" for the 1K class and "<ratio>-2k" for the 2K class (e.g. "16:9" = 1360×768, "16:9-2k" = 2736×1536).
Style presets: a suffix appended to the prompt after ", " (replacing an earlier style suffix).
"""

from __future__ import annotations

from .errors import InputError

ASPECTS_1K = {"1:1": (1024, 1024), "4:3": (1184, 880), "3:4": (880, 1184), "3:2": (1248, 832), "2:3": (832, 1248),
              "16:9": (1360, 768), "9:16": (768, 1360), "21:9": (1568, 672), "9:21": (672, 1568)}
ASPECTS_2K = {"1:1": (2048, 2048), "4:3": (2368, 1776), "3:4": (1776, 2368), "3:2": (2496, 1664),
              "2:3": (1664, 2496), "16:9": (2736, 1536), "9:16": (1536, 2736), "21:9": (3136, 1344),
              "9:21": (1344, 3136)}
ASPECTS = {**ASPECTS_1K, **{f"{ratio}-2k": size for ratio, size in ASPECTS_2K.items()}}

STYLE_NONE = "none"
STYLE_SEPARATOR = ", "
STYLES = {
    STYLE_NONE: "",
    "photorealistic": "photorealistic, high-resolution photograph, natural lighting, sharp focus, fine detail",
    "cinematic": "cinematic film still, dramatic lighting, shallow depth of field, anamorphic lens, color graded",
    "anime": "anime style, cel shading, clean line art, vibrant colors",
    "digital art": "digital art, detailed concept art illustration, vivid colors",
    "oil painting": "oil painting, visible brush strokes, rich impasto texture, classical fine art",
    "watercolor": "watercolor painting, soft washes, bleeding pigments, textured paper",
    "3D render": "3D render, physically based materials, global illumination, octane render",
    "fantasy": "fantasy art, epic magical atmosphere, ethereal glow, intricate details",
    "sci-fi": "science fiction, futuristic technology, neon lights, sleek high-tech design",
}


def aspect_size(name: str) -> tuple[int, int]:
    """(width, height) of an aspect preset."""
    if name not in ASPECTS:
        raise InputError(f"unknown aspect preset {name!r}; choose one of {', '.join(ASPECTS)}.")
    return ASPECTS[name]


def apply_style(prompt: str, style: str) -> str:
    """The prompt with the style's suffix (an earlier style suffix replaced; 'none' removes it)."""
    if style not in STYLES:
        raise InputError(f"unknown style preset {style!r}; choose one of {', '.join(STYLES)}.")
    base = prompt.rstrip()
    for suffix in sorted((s for s in STYLES.values() if s), key=len, reverse=True):
        if base == suffix:
            base = ""
            break
        if base.endswith(STYLE_SEPARATOR + suffix):
            base = base[: -len(suffix) - len(STYLE_SEPARATOR)]
            break
    if not STYLES[style]:
        return base
    head = base.rstrip(" ,\t\n")
    return head + STYLE_SEPARATOR + STYLES[style] if head else STYLES[style]


__all__ = ["ASPECTS", "STYLES", "STYLE_NONE", "apply_style", "aspect_size"]
