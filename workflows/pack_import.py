"""Import the node pack the way ComfyUI does (a package loaded from the repo folder's __init__.py), with every
ComfyUI module made unimportable: the workflow generator reads INPUT_TYPES this way (so combos never list one
machine's files), and the tests use it to prove the plain-torch fallbacks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "zimage_turbo_pack"
COMFY_MODULES = ("folder_paths", "server", "latent_preview", "comfy_execution", "comfy_execution.utils",
                 "comfy.model_management", "comfy.model_patcher", "comfy.utils", "comfy.cli_args")


def load_pack():
    """The imported pack module (cached). Raises if ComfyUI is importable here: these tests must run without it."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    blocked = {}
    for name in COMFY_MODULES:
        blocked[name] = sys.modules.get(name, "absent")
        sys.modules[name] = None  # `import name` now raises ImportError
    try:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    finally:
        for name, old in blocked.items():
            if old == "absent":
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module
