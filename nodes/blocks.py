"""Block-upscaling nodes (the block route: saliency, slicing, routing, upscaling, stitching): Saliency Map, Block
Slicer, Block Classifier, Block Upscaler, Feather Stitch, plus a LANCZOS resize for the route's final size.

The blocks travel between nodes as one `ZIMAGE_BLOCKS` object (`BlockSet`): the sliced grid, the classification
once the classifier ran, and the upscaled blocks once the upscaler ran. All math is zimage_core.blocks.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from zimage_core.blocks import (Blocks, Classification, SDUpscaler, classification_preview, classify_blocks,
                                heavy_routes, lanczos_resize, lanczos_upscale_blocks, load_heavy_upscaler,
                                saliency_heatmap, saliency_map, slice_blocks, stitch_blocks, upscale_heavy_route)
from zimage_core.errors import InputError, Interrupted
from zimage_core.images import check_pixels
from zimage_core.model_choice import AUTO, pick_heavy_upscaler
from zimage_core.settings import RouteSettings

from . import host

ROUTE = {o.name: o for o in RouteSettings.options()}

log = logging.getLogger(__name__)

BLOCKS = "ZIMAGE_BLOCKS"
CATEGORY = "Z-Image/upscale"
NO_HEAVY = "none (LANCZOS only)"
SD_PREFIX = "SD x4: "
LIGHT_CHUNK = 64  # LANCZOS blocks per call (bounds memory)


@dataclass(frozen=True)
class BlockSet:
    """What flows along a ZIMAGE_BLOCKS link."""

    blocks: Blocks
    classification: Classification | None = None
    upscaled: torch.Tensor | None = None  # (N, 3, block·scale, block·scale) once upscaled
    scale: int = 1
    heavy: torch.Tensor | None = None  # (N,) bool: the route each block actually took
    heavy_name: str | None = None
    upscaler: object | None = None  # the loaded heavy model: kept alive exactly as long as ComfyUI keeps this output


class ZImageSaliencyMap:
    DESCRIPTION = ("Saliency S = 0.4·edges (Sobel) + 0.4·local contrast (|Laplacian|) + 0.2·colour variance, "
                   "each normalised, Gaussian-blurred (σ 2), 0-1 per image. Bright = where detail matters; the "
                   "Block Classifier uses it to send subject blocks to the heavy upscaler.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("saliency", "heatmap")
    OUTPUT_TOOLTIPS = ("Saliency per pixel (B, H, W), 0-1, as a MASK.",
                       "Colour heatmap of the saliency for viewing (dark = ignored, bright = salient).")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE", {"tooltip": "Image(s) to analyse."})}}

    def run(self, image: torch.Tensor) -> tuple:
        with host.timed("saliency"):
            sal = saliency_map(image)
            heat = saliency_heatmap(sal)
        return (sal.cpu(), heat.cpu())


class ZImageBlockSlicer:
    DESCRIPTION = ("Cuts images into overlapping square blocks covering every pixel (the last block on each side "
                   "is moved inward to end on the border, so nothing is padded). The overlap is what Feather "
                   "Stitch blends, so keep it > 0.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = (BLOCKS,)
    RETURN_NAMES = ("blocks",)
    OUTPUT_TOOLTIPS = ("The block grid with its pixels (connect to Block Classifier or Block Upscaler).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Image(s) to slice (a batch shares one grid)."}),
            "block_size": ROUTE["block"].widget(),
            "overlap": ROUTE["overlap"].widget(),
        }}

    def run(self, image: torch.Tensor, block_size: int, overlap: int) -> tuple:
        with host.timed("slicing"):
            blocks = slice_blocks(image, block_size, overlap)
        return (BlockSet(blocks),)


class ZImageBlockClassifier:
    DESCRIPTION = ("Labels each block subject / flat / detail from the saliency map (subject: max S above the "
                   "85th percentile T and mean S > 0.8·T; flat: grayscale variance < 175) and routes subject and "
                   "detail blocks to the heavy upscaler, flat ones to LANCZOS. With a heavy ratio, blocks move "
                   "between routes by saliency to hit it (subject blocks always stay heavy). The preview tints "
                   "blocks by class; white outlines = heavy route, dark = LANCZOS.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True  # shows its preview even when nothing downstream is connected yet
    RETURN_TYPES = (BLOCKS, "IMAGE")
    RETURN_NAMES = ("blocks", "preview")
    OUTPUT_TOOLTIPS = ("The blocks with their classes and routes (connect to Block Upscaler).",
                       "Class/route preview image.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "blocks": (BLOCKS, {"tooltip": "Blocks from Block Slicer."}),
            "saliency": ("MASK", {"tooltip": "Saliency from Saliency Map, computed on the same image(s)."}),
            "heavy_ratio": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Target fraction of blocks on the heavy path: -1 = natural "
                                                 "routing (subject + detail heavy, flat light); 0-1 = resize the "
                                                 "heavy set to this fraction (subjects never move)."}),
        }}

    def run(self, blocks: BlockSet, saliency: torch.Tensor, heavy_ratio: float = -1.0) -> dict:
        with host.timed("classification"):
            sal = saliency if saliency.ndim == 3 else saliency[None]
            b = blocks.blocks
            if sal.shape[0] == 1 and b.batch_size > 1:
                sal = sal.expand(b.batch_size, -1, -1)
            cls = classify_blocks(b, sal.to(b.tensor.device).float(), None if heavy_ratio < 0 else heavy_ratio)
            images = _reassemble(b)
            preview = classification_preview(images, b, cls).cpu()
        counts = cls.counts()
        log.info("Block classes: %s", counts)
        return {"ui": {"images": host.save_previews(preview, "zimage_blocks")},
                "result": (replace(blocks, classification=cls), preview)}


def _reassemble(b: Blocks) -> torch.Tensor:
    """The source images back from the blocks (exact: blocks cover every pixel) — needed for the preview."""
    return stitch_blocks(b.nchw(), b, 1)


# Loaded heavy models are found again while something uses them (this node's cached output holds its model), and
# never kept alive by the cache itself: when ComfyUI drops its cached outputs (/free), the model goes with them.
_HEAVY_CACHE: weakref.WeakValueDictionary[tuple, object] = weakref.WeakValueDictionary()
_HEAVY_LOCK = threading.Lock()


def heavy_choices() -> list[str]:
    """The Block Upscaler's heavy_model combo: auto, none, the upscale model files, the SD x4 folders."""
    return [AUTO, NO_HEAVY] + host.list_files("upscale_models") + _sd_folders()


def _sd_folders() -> list[str]:
    return [SD_PREFIX + d for folder in ("diffusers", "upscale_models") for d in host.list_dirs(folder)
            if _is_sd_upscaler(folder, d)]


def resolve_auto_heavy() -> tuple[str, str]:
    """What 'auto' means now: (combo choice, why) from the files installed."""
    choice, why = pick_heavy_upscaler(host.list_files("upscale_models"), _sd_folders())
    return (choice or NO_HEAVY), why


def _is_sd_upscaler(folder: str, name: str) -> bool:
    for base in host.folder_paths_for(folder):
        index = base / name / "model_index.json"
        if index.is_file():
            try:
                return "StableDiffusionUpscalePipeline" in index.read_text(errors="replace")
            except OSError:
                return False
    return False


def _resolve_heavy(choice: str) -> Path | None:
    if choice == AUTO:
        choice, why = resolve_auto_heavy()
        log.info("Block Upscaler: heavy model %s", why)
    if not choice or choice == NO_HEAVY:
        return None
    if choice.startswith(SD_PREFIX):
        name = choice[len(SD_PREFIX):]
        for folder in ("diffusers", "upscale_models"):
            for base in host.folder_paths_for(folder):
                if (base / name / "model_index.json").is_file():
                    return base / name
        return host.full_path("diffusers", name)
    return host.full_path("upscale_models", choice)


def _load_heavy(spec, sd_options: dict):
    """Heavy upscalers loaded from files are found again while in use, so re-running a graph does not reload them.

    The cache is keyed by the model path and its mtime only: the SD x4 options (prompt, seed, steps, guidance, noise
    level) are applied to the cached instance on every call, so changing them does not reload the pipeline.
    """
    if not isinstance(spec, Path):
        return load_heavy_upscaler(spec, device=host.compute_device())
    st = spec.stat()
    key = (str(spec.resolve()), st.st_mtime_ns)
    with _HEAVY_LOCK:
        upscaler = _HEAVY_CACHE.get(key)
        if upscaler is None:
            options = sd_options if spec.is_dir() else {}
            upscaler = load_heavy_upscaler(spec, device=host.compute_device(), **options)
            _HEAVY_CACHE[key] = upscaler
        if isinstance(upscaler, SDUpscaler):
            upscaler.configure(**sd_options)
        return upscaler


def _heavy_module(upscaler) -> torch.nn.Module | None:
    desc = getattr(upscaler, "descriptor", None)
    if desc is not None:
        return desc.model
    pipe = getattr(upscaler, "pipe", None)
    return getattr(pipe, "unet", None) if pipe is not None else None


class ZImageBlockUpscaler:
    DESCRIPTION = ("Upscales every block: heavy-route blocks with an upscale model (any spandrel model from "
                   "models/upscale_models or a native Load Upscale Model node: RealESRGAN, 4x-UltraSharp, …; or the "
                   "Stable Diffusion x4 upscaler diffusers folder), batched on the GPU; light-route blocks with "
                   "LANCZOS. Without a heavy model every block uses LANCZOS (and the log says so). A model whose "
                   "native factor differs from the scale is resampled to it.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = (BLOCKS,)
    RETURN_NAMES = ("blocks",)
    OUTPUT_TOOLTIPS = ("The upscaled blocks (connect to Feather Stitch).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "blocks": (BLOCKS, {"tooltip": "Blocks from Block Classifier (or straight from Block Slicer: then "
                                               "every block takes the heavy route when a heavy model is set)."}),
                "heavy_model": (heavy_choices(), {"default": AUTO,
                                                  "tooltip": "Heavy upscaler: auto (the first ×4 model installed — an "
                                                             "SD x4 folder, else a file named 4x/x4/esrgan/"
                                                             "ultrasharp — else LANCZOS only), none, a file in "
                                                             "models/upscale_models, or 'SD x4: <folder>' for a "
                                                             "Stable Diffusion x4 upscaler diffusers folder. Ignored "
                                                             "when an upscale_model is connected."}),
                "scale": ("INT", {"default": 4, "min": 1, "max": 8,
                                  "tooltip": "Upscale factor of every block (the stitched image is this many "
                                             "times larger)."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                       "tooltip": "Heavy blocks per model call (halved automatically on "
                                                  "out-of-memory)."}),
            },
            "optional": {
                "upscale_model": ("UPSCALE_MODEL", {"tooltip": "An upscale model from ComfyUI's Load Upscale Model "
                                                               "node; overrides heavy_model."}),
                "sd_prompt": ("STRING", {"default": "high quality, detailed, sharp",
                                         "tooltip": "SD x4 only: prompt for every block. Keep it generic; a subject "
                                                    "prompt makes tiles hallucinate the subject."}),
                "sd_noise_level": ("INT", {"default": 20, "min": 0, "max": 350,
                                           "tooltip": "SD x4 only: noise added to the low-res block (more = more "
                                                      "invented detail)."}),
                "sd_steps": ("INT", {"default": 20, "min": 1, "max": 200,
                                     "tooltip": "SD x4 only: denoising steps (75 = model card, 20 ≈ 3× faster)."}),
                "sd_guidance": ("FLOAT", {"default": 9.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                          "tooltip": "SD x4 only: classifier-free guidance scale."}),
                "sd_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFF_FFFF,
                                    "tooltip": "SD x4 only: seed of its noise."}),
            },
        }

    def run(self, blocks: BlockSet, heavy_model: str, scale: int, batch_size: int = 8, upscale_model=None,
            sd_prompt: str = "high quality, detailed, sharp", sd_noise_level: int = 20, sd_steps: int = 20,
            sd_guidance: float = 9.0, sd_seed: int = 0) -> tuple:
        b = blocks.blocks
        h, w = b.source_size
        check_pixels(w * int(scale), h * int(scale), f"the ×{scale} upscale of a {w}×{h} image")
        nchw = b.nchw()
        n = len(b)
        bo = b.block * int(scale)
        sd_options = {"prompt": sd_prompt, "noise_level": sd_noise_level, "steps": sd_steps,
                      "guidance_scale": sd_guidance, "seed": sd_seed}
        spec = upscale_model if upscale_model is not None else _resolve_heavy(heavy_model)
        progress = host.Progress(n)
        done = 0
        with host.timed("upscaling"), host.interruptible():
            upscaler = _load_heavy(spec, sd_options) if spec is not None else None
            planned = blocks.classification.heavy if blocks.classification is not None else None
            route = heavy_routes(n, planned, upscaler, scale)
            out = torch.empty((n, 3, bo, bo), dtype=torch.float32)
            if route.any() and _heavy_module(upscaler) is not None:
                host.free_memory_for(_heavy_module(upscaler))

            def store(idx: torch.Tensor, up: torch.Tensor) -> None:
                nonlocal done
                out[idx] = up.float().cpu()
                done += idx.numel()
                progress.update(done, n)

            upscale_heavy_route(upscaler, nchw, route, int(scale), on_batch=store, batch_size=batch_size,
                                should_stop=host.should_stop)
            light_idx = torch.nonzero(~route).flatten()
            for start in range(0, light_idx.numel(), LIGHT_CHUNK):
                if host.should_stop():
                    raise Interrupted("Block upscaling stopped by the user.")
                store(light_idx[start:start + LIGHT_CHUNK],
                      lanczos_upscale_blocks(nchw[light_idx[start:start + LIGHT_CHUNK]], int(scale)))
        heavy_count = int(route.sum())
        name = getattr(upscaler, "name", None)
        log.info("Block Upscaler: %d heavy (%s), %d LANCZOS, ×%d.", heavy_count, name or "-", n - heavy_count, scale)
        return (replace(blocks, upscaled=out, scale=int(scale), heavy=route, heavy_name=name, upscaler=upscaler),)


class ZImageFeatherStitch:
    DESCRIPTION = ("Blends upscaled blocks back into whole images: each block is weighted by a mask that is 1 "
                   "inside and falls off as a Gaussian across the overlap, and the weighted blocks are averaged, "
                   "so overlaps blend with no seam (identical overlaps reproduce their pixels exactly).")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The stitched image(s), scale × the sliced size.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"blocks": (BLOCKS, {"tooltip": "Upscaled blocks from Block Upscaler (blocks that "
                                                            "were never upscaled are stitched at 1×)."})}}

    def run(self, blocks: BlockSet) -> tuple:
        with host.timed("stitching"):
            if blocks.upscaled is None:
                image = _reassemble(blocks.blocks)
            else:
                image = stitch_blocks(blocks.upscaled, blocks.blocks, blocks.scale)
        return (image.clamp(0, 1).cpu(),)


class ZImageResize:
    DESCRIPTION = ("Resizes images to an exact width × height with LANCZOS (the final step of the upscale route: "
                   "the size the client asked for). Set one side to 0 to keep the aspect ratio.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The resized image(s).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Image(s) to resize."}),
            "width": ("INT", {"default": 1024, "min": 0, "max": 16384, "step": 1,
                              "tooltip": "Output width in pixels (0 = from height, keeping the aspect ratio)."}),
            "height": ("INT", {"default": 1024, "min": 0, "max": 16384, "step": 1,
                               "tooltip": "Output height in pixels (0 = from width, keeping the aspect ratio)."}),
        }}

    def run(self, image: torch.Tensor, width: int, height: int) -> tuple:
        h, w = int(image.shape[1]), int(image.shape[2])
        if width <= 0 and height <= 0:
            raise InputError("Give a width or a height (or both) to resize to.")
        if width <= 0:
            width = max(1, round(w * height / h))
        if height <= 0:
            height = max(1, round(h * width / w))
        with host.timed("resize"):
            out = image if (h, w) == (height, width) else lanczos_resize(image, (height, width))
        return (out.clamp(0, 1).cpu(),)


NODES = {"ZImageSaliencyMap": ZImageSaliencyMap, "ZImageBlockSlicer": ZImageBlockSlicer,
         "ZImageBlockClassifier": ZImageBlockClassifier, "ZImageBlockUpscaler": ZImageBlockUpscaler,
         "ZImageFeatherStitch": ZImageFeatherStitch, "ZImageResize": ZImageResize}
NAMES = {"ZImageSaliencyMap": "Z-Image Saliency Map", "ZImageBlockSlicer": "Z-Image Block Slicer",
         "ZImageBlockClassifier": "Z-Image Block Classifier", "ZImageBlockUpscaler": "Z-Image Block Upscaler",
         "ZImageFeatherStitch": "Z-Image Feather Stitch", "ZImageResize": "Z-Image Resize (LANCZOS)"}

__all__ = ["BlockSet", "BLOCKS", "NODES", "NAMES"]
