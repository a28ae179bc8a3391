"""Control and inpaint nodes: Z-Image ControlNet Loader (Z-Image-Turbo Fun ControlNet Union files from
models/model_patches or models/controlnet), Z-Image Apply Control (attaches a control image to the Z-Image model, like
the guidance nodes attach guidance; chain several) and Z-Image Canny (edge maps). The Z-Image Sampler
runs the controls and takes an inpaint mask (`prepare_sampling`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from zimage_core.control import Control, controls_applied, prepare_controls
from zimage_core.controlnet import CONTROL_FOLDERS, check_controlnet_file
from zimage_core.errors import InputError
from zimage_core.inpaint import latent_mask, prepare_mask
from zimage_core.preprocess import canny
from zimage_core.settings import ControlSettings

from . import host
from .loaders import MODEL, ZImageModel

log = logging.getLogger(__name__)

CONTROLNET = "ZIMAGE_CONTROLNET"
CATEGORY = "Z-Image/control"
OPTIONS = {o.name: o for o in ControlSettings.options()}


@dataclass(frozen=True)
class ControlNetFile:
    """A Fun ControlNet file; it loads for the transformer it drives when the sampler first uses it."""

    path: Path


@dataclass(frozen=True)
class ControlRequest:
    """One Apply Control node's settings, kept on the Z-Image model until the sampler runs them."""

    controlnet: ControlNetFile
    image: torch.Tensor
    scale: float
    start: float
    end: float


def _controlnet_files() -> list[str]:
    for folder in CONTROL_FOLDERS:
        host.register_folder(folder)
    return sorted({name for folder in CONTROL_FOLDERS for name in host.list_files(folder)})


def _controlnet_path(name: str) -> Path:
    for folder in CONTROL_FOLDERS:
        for base in host.folder_paths_for(folder):
            if (base / name).is_file():
                return base / name
    return host.full_path(CONTROL_FOLDERS[0], name)


class ZImageControlNetLoader:
    DESCRIPTION = ("Picks a Z-Image-Turbo Fun ControlNet (Union 1.0, 2.0, 2.1, 2.1-lite; alibaba-pai) from "
                   "models/model_patches or models/controlnet. Its version is read from the file; another model's "
                   "ControlNet is refused by name. It loads when the sampler first uses it, in the Z-Image model's "
                   "weight format.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (CONTROLNET,)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The ControlNet (connect to Z-Image Apply Control).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"controlnet_name": (_controlnet_files(), {
            "tooltip": "Z-Image-Turbo-Fun-Controlnet-Union*.safetensors in models/model_patches (or "
                       "models/controlnet)."})}}

    def load(self, controlnet_name: str) -> tuple:
        path = _controlnet_path(controlnet_name)
        check_controlnet_file(path)
        return (ControlNetFile(path),)


class ZImageApplyControl:
    DESCRIPTION = ("Steers the Z-Image Sampler with a control image (a depth, pose, edge, line or gray map; Canny "
                   "edges from Z-Image Canny) through a Fun ControlNet. The image is resized to the sampler's size. "
                   "Chain several Apply Control nodes to combine controls; guidance nodes still apply. With the "
                   "sampler's inpaint mask, 2.x ControlNets also see the masked image.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same Z-Image model with this control attached.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": (MODEL, {"tooltip": "The Z-Image model (from Z-Image Loader, LoRA or guidance nodes)."}),
            "controlnet": (CONTROLNET, {"tooltip": "From Z-Image ControlNet Loader."}),
            "image": ("IMAGE", {"tooltip": "The control image (white edges on black for canny / lines)."}),
            "scale": OPTIONS["control_scale"].widget(),
            "start": OPTIONS["control_start"].widget(),
            "end": OPTIONS["control_end"].widget(),
        }}

    def apply(self, model: ZImageModel, controlnet: ControlNetFile, image: torch.Tensor, scale: float, start: float,
              end: float) -> tuple:
        if not isinstance(model, ZImageModel):
            raise InputError("Z-Image Apply Control works on the Z-Image Loader's model; for ComfyUI's own MODEL use "
                             "its Model Patch Loader + ZImageFunControlnet nodes.")
        ControlSettings(scale=scale, start=start, end=end)  # the window check, with its message
        request = ControlRequest(controlnet, image, float(scale), float(start), float(end))
        return (replace(model, controls=model.controls + (request,)),)


class ZImageCanny:
    DESCRIPTION = ("Canny edge map of an image: white edges on black, the input of a Fun ControlNet's canny mode "
                   "(OpenCV's algorithm in torch: no OpenCV needed).")
    CATEGORY = CATEGORY
    FUNCTION = "edges"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("edges",)
    OUTPUT_TOOLTIPS = ("The edge map, same size as the input.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE", {"tooltip": "Any picture."}),
                             "low": OPTIONS["control_canny_low"].widget(),
                             "high": OPTIONS["control_canny_high"].widget()}}

    def edges(self, image: torch.Tensor, low: int, high: int) -> tuple:
        ControlSettings(canny_low=low, canny_high=high)
        return (canny(image, low, high),)


@dataclass
class PreparedSampling:
    """What the sampler adds for controls and an inpaint mask: the context manager to sample inside and the latent
    mask (None without a mask)."""

    context: Any
    latent_mask: torch.Tensor | None


def prepare_sampling(model: ZImageModel, vae, width: int, height: int, batch: int, image: torch.Tensor | None,
                     mask: torch.Tensor | None, grow: int, feather: int, has_start: bool) -> PreparedSampling:
    """Load the model's controls (for its transformer) and encode their contexts; shape the inpaint mask."""
    pixel_mask = None
    if mask is not None:
        if not has_start:
            raise InputError("an inpaint mask needs the image to repaint: connect the sampler's image (or latent).")
        pixel_mask = prepare_mask(mask, width, height, grow=grow, feather=feather)
    controls = [Control(model.bundle.controlnet(c.controlnet.path), c.image, c.scale, c.start, c.end)
                for c in model.controls]
    prepared, notes = prepare_controls(vae, controls, width, height, batch, inpaint_image=image,
                                       repaint_mask=pixel_mask)
    for note in notes:
        log.info("Z-Image Sampler: %s", note)
    transformer = model.bundle.transformer
    return PreparedSampling(controls_applied(transformer, prepared),
                            latent_mask(pixel_mask) if pixel_mask is not None else None)


NODES = {"ZImageControlNetLoader": ZImageControlNetLoader, "ZImageApplyControl": ZImageApplyControl,
         "ZImageCanny": ZImageCanny}
NAMES = {"ZImageControlNetLoader": "Z-Image ControlNet Loader", "ZImageApplyControl": "Z-Image Apply Control",
         "ZImageCanny": "Z-Image Canny"}
