"""Saliency-routed block upscaling (saliency → slicing → routing → heavy or LANCZOS → feather stitch): the public API.

    from zimage_core.blocks import upscale_chain
    result = upscale_chain(image, scale=4, heavy="models/upscale_models/4x-UltraSharp.safetensors")
    result.image, result.timings, result.previews["classes"]
"""

from .chain import STAGES, ChainResult, upscale_chain, working_scale
from .classify import (CLASS_COLORS, CLASS_NAMES, DETAIL, FLAT, FLAT_VARIANCE, ROUTE_COLORS, ROUTE_NAMES, SUBJECT,
                       Classification, classification_preview, classify_blocks, enforce_heavy_ratio)
from .light import blend_blocks_into, feather_resample
from .resample import lanczos_resize, lanczos_resize_nchw
from .saliency import saliency_heatmap, saliency_map, saliency_terms
from .slicer import DEFAULT_BLOCK, DEFAULT_OVERLAP, Blocks, slice_blocks, slice_map
from .stitch import FeatherStitcher, feather_mask, stitch_blocks
from .upscale import (HeavyUpscaler, SDUpscaler, SpandrelUpscaler, heavy_routes, heavy_upscale_blocks,
                      lanczos_upscale_blocks, load_heavy_upscaler, load_spandrel, release_upscaler,
                      upscale_heavy_route)

__all__ = [
    "upscale_chain", "ChainResult", "STAGES", "working_scale",
    "saliency_map", "saliency_heatmap", "saliency_terms",
    "Blocks", "slice_blocks", "slice_map", "DEFAULT_BLOCK", "DEFAULT_OVERLAP",
    "Classification", "classify_blocks", "enforce_heavy_ratio", "classification_preview",
    "CLASS_NAMES", "CLASS_COLORS", "ROUTE_NAMES", "ROUTE_COLORS", "SUBJECT", "FLAT", "DETAIL", "FLAT_VARIANCE",
    "lanczos_resize", "lanczos_resize_nchw", "lanczos_upscale_blocks",
    "HeavyUpscaler", "SpandrelUpscaler", "SDUpscaler", "load_heavy_upscaler", "load_spandrel", "heavy_routes",
    "heavy_upscale_blocks", "release_upscaler", "upscale_heavy_route",
    "FeatherStitcher", "stitch_blocks", "feather_mask", "feather_resample", "blend_blocks_into",
]
