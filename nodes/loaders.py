"""Loader nodes: the Z-Image bundle from ComfyUI's model folders (or a diffusers folder), and a chainable LoRA loader.

The loader returns three handles on one lazily loaded zimage_core ModelBundle (like native MODEL / CLIP / VAE), so a
graph that only encodes loads only the text encoder, and one that only decodes loads only the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from zimage_core.encode import Conditioning
from zimage_core.guidance.settings import GuidanceSettings
from zimage_core.models import ModelBundle, default_dtype, load_models, parse_dtype
from zimage_core.offload import HOST_MANAGED

from . import host

MODEL = "ZIMAGE_MODEL"
TEXT_ENCODER = "ZIMAGE_TEXT_ENCODER"
VAE = "ZIMAGE_VAE"
NO_DIFFUSERS = "none (use the three files)"
WEIGHT_DTYPES = ("auto", "fp8_e4m3fn", "bf16", "fp16", "fp32")
CATEGORY = "Z-Image/loaders"


@dataclass(frozen=True)
class ZImageModel:
    """The diffusion transformer handle: the bundle, the LoRAs to activate when sampling, the guidance the guidance
    nodes attached (with the NAG node's own negative prompt, if it has one) and the controls of Apply Control
    (ControlNet file, image, strength, σ window)."""

    bundle: ModelBundle
    loras: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    nag_negative: Conditioning | None = None
    controls: tuple = ()  # control.ControlRequest per Apply Control node


@dataclass(frozen=True)
class ZImageTextEncoder:
    """The Qwen3 text encoder + tokenizer handle."""

    bundle: ModelBundle


@dataclass(frozen=True)
class ZImageVAE:
    """The Flux autoencoder handle."""

    bundle: ModelBundle

    @property
    def module(self):
        return self.bundle.vae


def _preferred(names: list[str], words: tuple[str, ...]) -> str | None:
    """The first file whose name holds the first word that any name holds (the official file names come first)."""
    for word in words:
        for n in names:
            if word in Path(n).name.lower():
                return n
    return names[0] if names else None


def _combo(names: list[str], words: tuple[str, ...], tooltip: str) -> tuple:
    opts: dict = {"tooltip": tooltip}
    default = _preferred(names, words)
    if default is not None:
        opts["default"] = default
    return (names, opts)


class ZImageLoader:
    """Z-Image-Turbo from the files ComfyUI users have."""

    DESCRIPTION = ("Loads Z-Image-Turbo: the diffusion transformer (models/diffusion_models, e.g. "
                   "z_image_turbo_bf16.safetensors), the Qwen3-4B text encoder (models/text_encoders, "
                   "qwen_3_4b.safetensors) and the Flux VAE (models/vae, ae.safetensors), or a whole diffusers folder "
                   "(models/diffusers). Each part loads on first use; inside ComfyUI the weights are managed by its "
                   "memory manager (offloaded when other models need the VRAM; with --lowvram / --novram, or when a "
                   "model cannot fit, its blocks stream from CPU memory). bf16, fp8, ComfyUI scaled-fp8 and GGUF "
                   "(Q8_0, Q6_K, Q5_K, Q4_K, …) files load and stay compact on the GPU; nvfp4 / mxfp8 / int8 "
                   "repacks are refused with a message naming them.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, TEXT_ENCODER, VAE)
    RETURN_NAMES = ("model", "text_encoder", "vae")
    OUTPUT_TOOLTIPS = ("The Z-Image diffusion transformer (connect to Z-Image Sampler, or through LoRA loaders).",
                       "The Qwen3 text encoder + tokenizer (connect to Qwen3 Encode).",
                       "The Flux autoencoder (connect to the Z-Image VAE Decode nodes).")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "diffusion_model": _combo(host.list_files("diffusion_models"),
                                          ("z_image_turbo_bf16", "z_image_turbo", "z_image", "zimage", "z-image"),
                                          "Z-Image transformer file from models/diffusion_models: bf16, fp8 or "
                                          "scaled-fp8 .safetensors, or a GGUF (Q8_0, Q6_K, Q5_K_M, Q4_K_M, …)."),
                "text_encoder": _combo(host.list_files("text_encoders"), ("qwen_3_4b", "qwen3", "qwen"),
                                       "Qwen3-4B text encoder file from models/text_encoders (.safetensors in "
                                       "bf16/fp8, or a GGUF). The tokenizer comes from ComfyUI's bundled Qwen "
                                       "tokenizer (or models/tokenizer)."),
                "vae": _combo(host.list_files("vae"), ("ae.", "flux", "z_image"),
                              "Flux autoencoder from models/vae (ae.safetensors)."),
                "weight_dtype": (list(WEIGHT_DTYPES), {
                    "default": "auto",
                    "tooltip": "How the weights are kept. auto: as the file is (fp8 and GGUF stay compact; bf16 "
                               "files in bf16 on a GPU, fp32 on the CPU). fp8_e4m3fn: store the transformer and "
                               "text-encoder weights in fp8 (half of bf16; each layer is upcast when it runs). "
                               "bf16 / fp16 / fp32: everything in that precision (compact files are expanded)."}),
            },
            "optional": {
                "diffusers_folder": ([NO_DIFFUSERS] + host.list_dirs("diffusers"),
                                     {"default": NO_DIFFUSERS,
                                      "tooltip": "A Z-Image diffusers folder in models/diffusers (model_index.json, "
                                                 "transformer/, text_encoder/, tokenizer/, vae/). When set, it is "
                                                 "used instead of the three files above."}),
            },
        }

    def load(self, diffusion_model: str, text_encoder: str, vae: str, weight_dtype: str = "auto",
             diffusers_folder: str = NO_DIFFUSERS) -> tuple:
        dtype, storage = default_dtype(host.compute_device()), "auto"
        if weight_dtype == "fp8_e4m3fn":
            storage = "fp8"
        elif weight_dtype != "auto":
            dtype, storage = parse_dtype(weight_dtype), "full"
        options = dict(device=host.load_device(), dtype=dtype, storage=storage,
                       memory=HOST_MANAGED if host.inside_comfyui() else "auto")
        if diffusers_folder and diffusers_folder != NO_DIFFUSERS:
            bundle = load_models(host.full_path("diffusers", diffusers_folder), **options)
        else:
            dit = host.full_path("diffusion_models", diffusion_model)
            root = host.models_dir() if host.models_dir().is_dir() else dit.parent.parent  # tokenizer search root
            bundle = load_models(root, transformer=str(dit), vae=str(host.full_path("vae", vae)),
                                 text_encoder=str(host.full_path("text_encoders", text_encoder)), **options)
        return (ZImageModel(bundle), ZImageTextEncoder(bundle), ZImageVAE(bundle))


class ZImageLoraLoader:
    """Adds one LoRA to a Z-Image model; chain several."""

    DESCRIPTION = ("Adds a LoRA (models/loras) to the Z-Image transformer at a strength; chain nodes for several. "
                   "LoRAs are applied as adapters when sampling (the base weights are never changed), so switching "
                   "LoRAs or strengths does not reload the model. Common layouts load: diffusers/peft, kohya, "
                   "ai-toolkit/ComfyUI, and the original fused-qkv layout; a LoRA for another model is refused with a "
                   "message saying what it looks like.")
    CATEGORY = CATEGORY
    FUNCTION = "add"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA added to its LoRA list.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": (MODEL, {"tooltip": "Z-Image model from Z-Image Loader (or another LoRA loader)."}),
            "lora_name": (host.list_files("loras"), {"tooltip": "LoRA file from models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "1 = as trained, 0 = off, negative values invert the LoRA."}),
        }}

    def add(self, model: ZImageModel, lora_name: str, strength: float) -> tuple:
        path = host.full_path("loras", lora_name)
        return (replace(model, loras=model.loras + ((str(path), float(strength)),)),)


NODES = {"ZImageLoader": ZImageLoader, "ZImageLoraLoader": ZImageLoraLoader}
NAMES = {"ZImageLoader": "Z-Image Loader", "ZImageLoraLoader": "Z-Image LoRA Loader"}
