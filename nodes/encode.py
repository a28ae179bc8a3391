"""Prompt nodes: Qwen3 Encode → ZIMAGE_COND, and a save/load pair for embedding files (encode on one machine,
generate on another)."""

from __future__ import annotations

import re
from pathlib import Path

from zimage_core.encode import Conditioning, load_embeddings, save_embeddings
from zimage_core.generate import prompt_encoder
from zimage_core.settings import DEFAULT_HIDDEN_LAYER, DEFAULT_LONG_MODE, MAX_CAPTION_TOKENS, EncodeSettings

from . import host
from .loaders import TEXT_ENCODER, ZImageTextEncoder

COND = "ZIMAGE_COND"
EMBED_FOLDER = "zimage_embeddings"
CATEGORY = "Z-Image/conditioning"


class ZImageEncode:
    """Text → Z-Image conditioning with Qwen3."""

    DESCRIPTION = ("Encodes a prompt with Qwen3-4B exactly as Z-Image was trained (chat template, second-to-last "
                   "hidden layer, only real tokens kept). Prompts longer than the 1504-token caption limit (or your "
                   "max tokens) are truncated or compressed per the long-prompt mode. Use a second encode as the "
                   "negative prompt of the Z-Image Sampler (NAG).")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Z-Image conditioning (positive or negative input of the Z-Image Sampler).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "text_encoder": (TEXT_ENCODER, {"tooltip": "Text encoder from Z-Image Loader."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                "tooltip": "The prompt. Z-Image follows long, descriptive prompts well; no weighting "
                                           "syntax is applied."}),
            **{o.name: o.widget() for o in EncodeSettings.options()},
        }}

    def encode(self, text_encoder: ZImageTextEncoder, text: str, hidden_layer: int = DEFAULT_HIDDEN_LAYER,
               long_prompt_mode: str = DEFAULT_LONG_MODE, max_tokens: int = MAX_CAPTION_TOKENS) -> tuple:
        bundle = text_encoder.bundle
        with host.timed("text_encode"), host.models_ready(bundle.text_encoder):
            cond = prompt_encoder(bundle).encode(text, hidden_layer=hidden_layer, max_tokens=max_tokens,
                                                 long_mode=long_prompt_mode)
        return (cond.to("cpu"),)


def _safe_prefix(prefix: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", prefix.strip()).strip("._") or "zimage"
    return name[:100]


class ZImageSaveEmbeddings:
    """Writes conditioning to a .safetensors file."""

    DESCRIPTION = (f"Saves Z-Image conditioning (embeddings + the prompts) to models/{EMBED_FOLDER}/<prefix>_NNNNN"
                   ".safetensors, so a prompt can be encoded once (or on another machine) and reused with Load "
                   "Embeddings without loading the 8 GB text encoder.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("Name of the written file (as Load Embeddings lists it).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "conditioning": (COND, {"tooltip": "Conditioning from Qwen3 Encode."}),
            "filename_prefix": ("STRING", {"default": "zimage_prompt",
                                           "tooltip": "File name prefix; a 5-digit counter is appended."}),
        }}

    def save(self, conditioning: Conditioning, filename_prefix: str) -> dict:
        host.register_folder(EMBED_FOLDER)
        folder = host.folder_paths_for(EMBED_FOLDER)[0]
        folder.mkdir(parents=True, exist_ok=True)
        prefix = _safe_prefix(filename_prefix)
        taken = {p.name for p in folder.glob(f"{prefix}_*.safetensors")}
        n = 1
        while f"{prefix}_{n:05d}.safetensors" in taken:
            n += 1
        path = save_embeddings(conditioning, folder / f"{prefix}_{n:05d}.safetensors")
        return {"ui": {"text": [path.name]}, "result": (path.name,)}


class ZImageLoadEmbeddings:
    """Reads conditioning written by Save Embeddings."""

    DESCRIPTION = (f"Loads Z-Image conditioning saved by Save Embeddings from models/{EMBED_FOLDER}; connect it "
                   "where a Qwen3 Encode output would go. No text encoder is loaded.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Z-Image conditioning, as it was saved.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        host.register_folder(EMBED_FOLDER)
        return {"required": {
            "embeddings": (host.list_files(EMBED_FOLDER),
                           {"tooltip": f"An embeddings file from models/{EMBED_FOLDER}."}),
        }}

    def load(self, embeddings: str) -> tuple:
        return (load_embeddings(host.full_path(EMBED_FOLDER, embeddings)),)

    @classmethod
    def IS_CHANGED(cls, embeddings: str) -> str:
        """Re-read when the file changes on disk."""
        try:
            p: Path = host.full_path(EMBED_FOLDER, embeddings)
            st = p.stat()
            return f"{p}:{st.st_mtime_ns}:{st.st_size}"
        except Exception:  # noqa: BLE001 - let load() report the missing file
            return embeddings


NODES = {"ZImageEncode": ZImageEncode, "ZImageSaveEmbeddings": ZImageSaveEmbeddings,
         "ZImageLoadEmbeddings": ZImageLoadEmbeddings}
NAMES = {"ZImageEncode": "Qwen3 Encode (Z-Image)", "ZImageSaveEmbeddings": "Z-Image Save Embeddings",
         "ZImageLoadEmbeddings": "Z-Image Load Embeddings"}
