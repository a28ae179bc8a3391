"""Guidance nodes, one technique each (NAG, SLG, DyPE, CFG, seed diversity): model in, the same model out with that
guidance attached, chainable in any order. They take ComfyUI's native MODEL (a Z-Image / NextDiT model, e.g. from
UNETLoader or a GGUF loader, for KSampler) as well as our ZIMAGE_MODEL (for the Z-Image Sampler); the output is the
kind that came in. Widgets, ranges and defaults come from zimage_core.guidance.settings; on a native model the
attaching is done by nodes/native.py, on ours the settings ride on the model handle to the sampler.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zimage_core.encode import Conditioning
from zimage_core.guidance.settings import (CfgSettings, DiversitySettings, DypeSettings, NagSettings, SlgSettings)
from zimage_core.options import Settings

from .bridges import native_to_ours, ours_to_native
from .encode import COND
from .loaders import MODEL, ZImageModel

MODELS = f"MODEL,{MODEL}"  # ComfyUI accepts a link when the type sets intersect; the output keeps the input's kind
CONDS = f"CONDITIONING,{COND}"
CATEGORY = "Z-Image/guidance"


def attach(model: Any, group: str, settings: Settings, negative: Any = None) -> Any:
    """`model` with one guidance group set (our handle, or a native ModelPatcher clone)."""
    if isinstance(model, ZImageModel):
        updated = replace(model, guidance=replace(model.guidance, **{group: settings}))
        if negative is not None:
            updated = replace(updated, nag_negative=negative if isinstance(negative, Conditioning)
                              else native_to_ours(negative))
        return updated
    from . import native

    native.check_native_zimage(model)
    native_negative = ours_to_native(negative) if isinstance(negative, Conditioning) else negative
    return native.attach(model, **{group: settings}, negative=native_negative)


class _GuidanceNode:
    """Inputs derived from a settings class: everyday options required, advanced ones optional."""

    SETTINGS: type[Settings]
    GROUP: str
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODELS,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model with this guidance attached (native MODEL in → MODEL out; Z-Image model in → "
                       "Z-Image model out).",)

    @classmethod
    def _field(cls, option_name: str) -> str:
        return option_name[len(cls.SETTINGS.PREFIX) + 1:]

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        required: dict = {"model": (MODELS, {"tooltip": "A Z-Image model: ComfyUI's MODEL (UNETLoader, GGUF loader, "
                                                        "…) or the Z-Image Loader's model."})}
        optional: dict = {}
        for option in cls.SETTINGS.options():
            (optional if option.advanced else required)[cls._field(option.name)] = option.widget()
        return {"required": required, "optional": optional}

    def settings(self, values: dict) -> Settings:
        return self.SETTINGS.from_values({f"{self.SETTINGS.PREFIX}_{k}": v for k, v in values.items()},
                                         spell=self._field)

    def apply(self, model: Any, **values: Any) -> tuple:
        return (attach(model, self.GROUP, self.settings(values)),)


class ZImageNAG(_GuidanceNode):
    SETTINGS, GROUP = NagSettings, "nag"
    DESCRIPTION = ("NAG (Normalized Attention Guidance): makes a negative prompt act on Turbo, which runs without "
                   "CFG. In each layer the image attends to the positive and to the negative caption in one extended "
                   "forward and is pushed away from the negative, with its change capped (τ) and blended (α). Uses "
                   "the negative connected here, else the sampler's negative (KSampler: its negative input, at cfg "
                   "1). Off while CFG is on.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        spec = super().INPUT_TYPES()
        spec["optional"]["negative"] = (CONDS, {"tooltip": "Negative prompt for NAG (CONDITIONING or Z-Image "
                                                           "conditioning). Empty: the sampler's negative is used."})
        return spec

    def apply(self, model: Any, negative: Any = None, **values: Any) -> tuple:
        return (attach(model, self.GROUP, self.settings(values), negative),)


class ZImageSLG(_GuidanceNode):
    SETTINGS, GROUP = SlgSettings, "slg"
    DESCRIPTION = ("SLG (skip-layer guidance) that really acts on Z-Image: during the chosen σ window one extra "
                   "forward skips the chosen main layers (they return their input) and the prediction moves away "
                   "from it, v + s·(v − v_skip), which sharpens structure. ComfyUI's own SkipLayerGuidanceDiT does "
                   "nothing on this model (it hooks a place Z-Image never calls).")


class ZImageDyPE(_GuidanceNode):
    SETTINGS, GROUP = DypeSettings, "dype"
    DESCRIPTION = ("DyPE: dynamic RoPE extrapolation for images larger than 1024² (2K and up). The two spatial "
                   "position axes are rescaled by the noise level — strongly while the layout forms, not at all for "
                   "the final detail — each on its own, so non-square images are not stretched. No effect at or "
                   "below 1024 per side.")


class ZImageCFG(_GuidanceNode):
    SETTINGS, GROUP = CfgSettings, "cfg"
    DESCRIPTION = ("Classic CFG with renormalisation and truncation, for non-distilled Z-Image checkpoints (Base, "
                   "de-distilled). On the Z-Image Sampler the scale here is used (diffusers' convention); on "
                   "KSampler its cfg sets the strength (cfg = scale + 1) and this node adds renormalisation and "
                   "truncation. Turbo: leave CFG off.")


class ZImageSeedDiversity(_GuidanceNode):
    SETTINGS, GROUP = DiversitySettings, "diversity"
    DESCRIPTION = ("Seed diversity: Turbo maps almost every seed to the same composition. This adds seeded noise "
                   "(relative to the embedding's own spread) to the prompt embeddings during the early, high-noise "
                   "steps only, so the layout changes with the seed while the details follow the prompt.")


NODES = {"ZImageNAG": ZImageNAG, "ZImageSLG": ZImageSLG, "ZImageDyPE": ZImageDyPE, "ZImageCFG": ZImageCFG,
         "ZImageSeedDiversity": ZImageSeedDiversity}
NAMES = {"ZImageNAG": "Z-Image NAG", "ZImageSLG": "Z-Image SLG", "ZImageDyPE": "Z-Image DyPE",
         "ZImageCFG": "Z-Image CFG", "ZImageSeedDiversity": "Z-Image Seed Diversity"}
