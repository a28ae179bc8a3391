"""Conditioning bridges between ComfyUI's native CONDITIONING and our ZIMAGE_COND, both ways, so a natively loaded
text encoder (e.g. a GGUF one via a CLIP loader of type lumina2) can feed the Z-Image Sampler, and our Qwen3 Encode
(with its long-prompt modes) can feed KSampler.

Both carry the same thing: the Qwen3 second-to-last hidden state of the chat-formatted prompt, real tokens only.
Native CONDITIONING is `[[tensor (1, L, 2560), {"pooled_output": None, "attention_mask": (1, L)}], ...]`; a mask
with zeros (batched prompts) marks padding, which is dropped here because our sampler takes real tokens only.
"""

from __future__ import annotations

import logging

import torch

from zimage_core.encode import Conditioning
from zimage_core.errors import InputError

from .encode import COND

log = logging.getLogger(__name__)
CATEGORY = "Z-Image/conditioning"


def native_to_ours(conditioning: list) -> Conditioning:
    """Every prompt row of a native CONDITIONING, real tokens only (padding dropped by its attention mask)."""
    if not isinstance(conditioning, list) or not conditioning:
        raise InputError("this is not a ComfyUI CONDITIONING (expected a list of [tensor, dict] entries).")
    if len(conditioning) > 1:
        log.warning("Z-Image bridge: the CONDITIONING has %d entries (combined or concatenated conditionings); each "
                    "becomes its own prompt (one image each) — Z-Image has no area/combine semantics.",
                    len(conditioning))
    embeds = []
    for tensor, meta in conditioning:
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise InputError(f"a CONDITIONING entry holds {type(tensor).__name__} {getattr(tensor, 'shape', '')}; "
                             "expected a (batch, tokens, features) tensor from CLIPTextEncode.")
        mask = (meta or {}).get("attention_mask")
        for row in range(tensor.shape[0]):
            e = tensor[row]
            if mask is not None and mask.ndim == 2 and mask.shape[1] == e.shape[0]:
                e = e[mask[min(row, mask.shape[0] - 1)].bool().to(e.device)]
            embeds.append(e.detach().cpu())
    return Conditioning(embeds, [""] * len(embeds), {"source": "native CONDITIONING"})


def ours_to_native(cond: Conditioning) -> list:
    """One prompt's embeddings as a native CONDITIONING (float32 on the CPU, all-ones mask: no padding)."""
    if len(cond) != 1:
        raise InputError(f"a native CONDITIONING holds one prompt; this Z-Image conditioning has {len(cond)}. Encode "
                         "each prompt with its own Qwen3 Encode node.")
    e = cond.embeds[0].detach().to("cpu", torch.float32)
    return [[e[None], {"pooled_output": None, "attention_mask": torch.ones(1, e.shape[0], dtype=torch.long)}]]


class ZImageToConditioning:
    DESCRIPTION = ("Turns Z-Image conditioning (Qwen3 Encode, Load Embeddings) into ComfyUI's CONDITIONING, so "
                   "KSampler and other native nodes use it — including the long-prompt modes of Qwen3 Encode.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Native CONDITIONING (one prompt, real tokens only).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"conditioning": (COND, {"tooltip": "Z-Image conditioning of one prompt."})}}

    def convert(self, conditioning: Conditioning) -> tuple:
        return (ours_to_native(conditioning),)


class ZImageFromConditioning:
    DESCRIPTION = ("Turns ComfyUI's CONDITIONING (CLIPTextEncode with a lumina2 / Qwen3-4B text encoder, e.g. a GGUF "
                   "one) into Z-Image conditioning for the Z-Image Sampler. Padding tokens are dropped.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Z-Image conditioning (one prompt per CONDITIONING row).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"conditioning": ("CONDITIONING", {
            "tooltip": "From CLIPTextEncode with a Qwen3-4B text encoder (CLIP loader type lumina2)."})}}

    def convert(self, conditioning: list) -> tuple:
        return (native_to_ours(conditioning),)


NODES = {"ZImageToConditioning": ZImageToConditioning, "ZImageFromConditioning": ZImageFromConditioning}
NAMES = {"ZImageToConditioning": "Z-Image Cond → CONDITIONING", "ZImageFromConditioning": "CONDITIONING → Z-Image Cond"}
