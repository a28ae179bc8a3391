"""Z-Image Turbo for ComfyUI: the custom-node entry point.

ComfyUI imports this file as a package from its folder (the folder itself is not on sys.path), so the pack's own
`zimage_core` library is made importable by appending this folder to sys.path (appended, not prepended: our
`nodes/` folder must never shadow ComfyUI's `nodes` module). Imports fine with no ComfyUI installed (tests,
headless use); the HTTP route is registered only when ComfyUI's server is running.
"""

from __future__ import annotations

import logging
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes import server_routes as _server_routes  # noqa: E402

WEB_DIRECTORY = "./web"

try:
    _server_routes.register()
except Exception as _err:  # noqa: BLE001 - the nodes must load even if the route cannot be added
    logging.getLogger(__name__).warning("Z-Image: /zimage/generate route not registered: %s", _err)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
