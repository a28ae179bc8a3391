"""VAE decode nodes: ComfyUI LATENT (raw Flux-AE space) → IMAGE, plain (auto-tiling when huge) or tiled."""

from __future__ import annotations

from zimage_core import vae as vae_ops
from zimage_core.errors import Interrupted
from zimage_core.offload import vae_decode_bytes

from . import host
from .loaders import VAE, ZImageVAE

CATEGORY = "Z-Image/latent"


def _model_space(vae, latent: dict):
    return vae_ops.to_model_space(latent["samples"].float(), vae)


class ZImageVAEDecode:
    """Plain decode."""

    DESCRIPTION = ("Decodes a LATENT (raw Flux-AE space, from the Z-Image Sampler or any Flux-VAE latent) to an "
                   "IMAGE with the Z-Image VAE. Above 2048² pixels, or when the GPU runs out of memory, it switches "
                   "to a seamless tiled decode by itself.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Decoded images (B, H, W, 3), 0-1.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "vae": (VAE, {"tooltip": "VAE from Z-Image Loader."}),
            "samples": ("LATENT", {"tooltip": "Latent to decode (Z-Image Sampler output or a native Flux latent)."}),
        }}

    def decode(self, vae: ZImageVAE, samples: dict) -> tuple:
        module = vae.module
        h, w = (int(d) * 8 for d in samples["samples"].shape[-2:])
        with host.timed("decode"), host.models_ready(module, extra_bytes=vae_decode_bytes(w, h)):
            images = vae_ops.decode(module, _model_space(module, samples))
        return (images.cpu(),)


class ZImageTiledVAEDecode(ZImageVAEDecode):
    """Tiled decode in bounded memory (close to, not equal to, the plain decode)."""

    DESCRIPTION = ("Decodes a LATENT tile by tile with smooth (raised-cosine) blending over the overlaps, so very "
                   "large images decode in bounded GPU memory with no visible seam. Progress is shown per tile. The "
                   "result is close to the plain decode but not identical: each tile's normalisation sees only its "
                   "tile, so colours can shift slightly (≈2/255 on average at tile 256 / overlap 64 on test "
                   "models; larger tiles and overlaps come closer). Use it when the plain decode does not fit.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "vae": (VAE, {"tooltip": "VAE from Z-Image Loader."}),
            "samples": ("LATENT", {"tooltip": "Latent to decode."}),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64,
                                  "tooltip": "Tile side in image pixels (multiple of 64). Smaller uses less memory."}),
            "overlap": ("INT", {"default": 128, "min": 0, "max": 2048, "step": 8,
                                "tooltip": "Overlap between tiles in image pixels (multiple of 8; less than the tile "
                                           "size). More overlap blends seams more smoothly."}),
        }}

    def decode(self, vae: ZImageVAE, samples: dict, tile_size: int = 512, overlap: int = 128) -> tuple:
        module = vae.module
        progress = host.Progress(1)

        def on_tile(done: int, total: int) -> None:
            progress.update(done, total)
            if done < total and host.should_stop():
                raise Interrupted(f"Tiled decode stopped by the user after tile {done}/{total}.")

        tile_px = min(tile_size, max(int(d) * 8 for d in samples["samples"].shape[-2:]))
        with host.timed("decode"), host.interruptible(), host.models_ready(
                module, extra_bytes=vae_decode_bytes(tile_px, tile_px)):
            images = vae_ops.decode(module, _model_space(module, samples), tiled=True, tile=tile_size // 8,
                                    overlap=overlap // 8, on_tile=on_tile)
        return (images.cpu(),)


NODES = {"ZImageVAEDecode": ZImageVAEDecode, "ZImageTiledVAEDecode": ZImageTiledVAEDecode}
NAMES = {"ZImageVAEDecode": "Z-Image VAE Decode", "ZImageTiledVAEDecode": "Z-Image Tiled VAE Decode"}
