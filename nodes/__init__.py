"""ComfyUI adapters over zimage_core: one module per node family; `host` is the only package that imports ComfyUI.

NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS collect every family's NODES / NAMES.
"""

from __future__ import annotations

from . import blocks, bridges, control, encode, faces, guidance, loaders, sampler, vae

_FAMILIES = (loaders, encode, bridges, guidance, control, sampler, vae, blocks, faces)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _family in _FAMILIES:
    NODE_CLASS_MAPPINGS.update(_family.NODES)
    NODE_DISPLAY_NAME_MAPPINGS.update(_family.NAMES)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
