"""The core ComfyUI nodes the example workflows use, as ComfyUI 0.18.1's /object_info describes them: socket inputs,
widgets in order (name, what a value must be, the value the workflows start from), outputs, and UI-only values the
front end saves after a widget. Both the workflow generator and its tests read this one table.

A widget check is "FILE" (a combo of installed files: any file name), a list of choices, or (kind, options).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KSAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "res_multistep", "uni_pc"]  # the ones we use, and more
SCHEDULERS = ["simple", "normal", "sgm_uniform", "beta", "karras", "exponential", "ddim_uniform", "linear_quadratic",
              "kl_optimal"]
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis",
              "longcat_image"]
ANY_TEXT = ("STRING", {})
INT_16K = ("INT", {"min": 0, "max": 16384})


@dataclass(frozen=True)
class CoreNode:
    sockets: tuple[tuple[str, str], ...] = ()
    widgets: tuple[tuple[str, Any, Any], ...] = ()  # (name, check, default)
    outputs: tuple[tuple[str, str], ...] = ()
    ui_after: dict[str, Any] = field(default_factory=dict)  # widget -> the UI-only value saved after it
    virtual: bool = False  # front-end only (notes)


CORE_NODES: dict[str, CoreNode] = {
    "LoadImage": CoreNode(widgets=(("image", "FILE", "example.png"),), outputs=(("IMAGE", "IMAGE"), ("MASK", "MASK")),
                          ui_after={"image": "image"}),  # the upload button's widget value
    "SaveImage": CoreNode(sockets=(("images", "IMAGE"),), widgets=(("filename_prefix", ANY_TEXT, "ComfyUI"),)),
    "PreviewImage": CoreNode(sockets=(("images", "IMAGE"),)),
    "SolidMask": CoreNode(outputs=(("MASK", "MASK"),), widgets=(
        ("value", ("FLOAT", {"min": 0.0, "max": 1.0}), 1.0), ("width", ("INT", {"min": 1, "max": 16384}), 512),
        ("height", ("INT", {"min": 1, "max": 16384}), 512))),
    "MaskComposite": CoreNode(sockets=(("destination", "MASK"), ("source", "MASK")), outputs=(("MASK", "MASK"),),
                              widgets=(("x", INT_16K, 0), ("y", INT_16K, 0),
                                       ("operation", ["multiply", "add", "subtract", "and", "or", "xor"], "multiply"))),
    "ImageCompositeMasked": CoreNode(sockets=(("destination", "IMAGE"), ("source", "IMAGE"), ("mask", "MASK")),
                                     outputs=(("IMAGE", "IMAGE"),), widgets=(
        ("x", INT_16K, 0), ("y", INT_16K, 0), ("resize_source", ("BOOLEAN", {}), False))),
    "UpscaleModelLoader": CoreNode(widgets=(("model_name", "FILE", "RealESRGAN_x4plus.safetensors"),),
                                   outputs=(("UPSCALE_MODEL", "UPSCALE_MODEL"),)),
    "ImageScale": CoreNode(sockets=(("image", "IMAGE"),), outputs=(("IMAGE", "IMAGE"),), widgets=(
        ("upscale_method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], "nearest-exact"),
        ("width", INT_16K, 512), ("height", INT_16K, 512), ("crop", ["disabled", "center"], "disabled"))),
    "UNETLoader": CoreNode(outputs=(("MODEL", "MODEL"),), widgets=(
        ("unet_name", "FILE", "z_image_turbo_bf16.safetensors"),
        ("weight_dtype", ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"], "default"))),
    "CLIPLoader": CoreNode(outputs=(("CLIP", "CLIP"),), widgets=(
        ("clip_name", "FILE", "qwen_3_4b.safetensors"), ("type", CLIP_TYPES, "lumina2"),
        ("device", ["default", "cpu"], "default"))),
    "VAELoader": CoreNode(widgets=(("vae_name", "FILE", "ae.safetensors"),), outputs=(("VAE", "VAE"),)),
    "ModelSamplingAuraFlow": CoreNode(sockets=(("model", "MODEL"),), outputs=(("MODEL", "MODEL"),),
                                      widgets=(("shift", ("FLOAT", {"min": 0.0, "max": 100.0}), 3.0),)),
    "CLIPTextEncode": CoreNode(sockets=(("clip", "CLIP"),), outputs=(("CONDITIONING", "CONDITIONING"),),
                               widgets=(("text", ANY_TEXT, ""),)),
    "EmptySD3LatentImage": CoreNode(outputs=(("LATENT", "LATENT"),), widgets=(
        ("width", ("INT", {"min": 16, "max": 16384, "step": 16}), 1024),
        ("height", ("INT", {"min": 16, "max": 16384, "step": 16}), 1024),
        ("batch_size", ("INT", {"min": 1, "max": 4096}), 1))),
    "KSampler": CoreNode(
        sockets=(("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                 ("latent_image", "LATENT")),
        widgets=(("seed", ("INT", {"min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF}), 0),
                 ("steps", ("INT", {"min": 1, "max": 10000}), 8), ("cfg", ("FLOAT", {"min": 0.0, "max": 100.0}), 1.0),
                 ("sampler_name", KSAMPLERS, "euler"), ("scheduler", SCHEDULERS, "simple"),
                 ("denoise", ("FLOAT", {"min": 0.0, "max": 1.0}), 1.0)),
        outputs=(("LATENT", "LATENT"),), ui_after={"seed": "randomize"}),
    "VAEDecode": CoreNode(sockets=(("samples", "LATENT"), ("vae", "VAE")), outputs=(("IMAGE", "IMAGE"),)),
    "Note": CoreNode(widgets=(("text", ANY_TEXT, ""),), virtual=True),
    "MarkdownNote": CoreNode(widgets=(("text", ANY_TEXT, ""),), virtual=True),
}

# KSampler's sockets and widgets interleave in its INPUT_TYPES (model, seed, steps, cfg, sampler, scheduler,
# positive, negative, latent, denoise): the API graph lists inputs in that order
INPUT_ORDER = {"KSampler": ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                            "latent_image", "denoise"),
               "CLIPTextEncode": ("text", "clip"), "VAEDecode": ("samples", "vae"),
               "MaskComposite": ("destination", "source", "x", "y", "operation"),
               "ImageCompositeMasked": ("destination", "source", "x", "y", "resize_source", "mask")}

__all__ = ["CORE_NODES", "CoreNode", "INPUT_ORDER"]
