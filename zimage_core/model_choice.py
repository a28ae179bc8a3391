"""Which optional model file a route uses when the user leaves the choice on "auto": the first heavy upscaler that
is really a ×4 upscaler, the first GFPGAN face model — or none, said in the report. The rules look only at names,
so the ComfyUI nodes, the HTTP route and the CLI pick the same file from the same folder listing.

Why names: a 1×/2× model or a face restorer in models/upscale_models is not a ×4 block upscaler, and a CodeFormer
file in models/facerestore_models is not the GFPGAN the face step runs.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

AUTO = "auto"
_X4_NAMES = (re.compile(r"4x|x4", re.IGNORECASE), re.compile(r"esrgan|ultrasharp", re.IGNORECASE))  # best first


def pick_heavy_upscaler(files: list[str], sd_folders: list[str] = ()) -> tuple[str | None, str]:
    """(choice, why): an SD x4 upscaler folder first, then an upscale model file whose name says ×4 (4x / x4 /
    esrgan / ultrasharp), else None (every block LANCZOS)."""
    if sd_folders:
        return sd_folders[0], f"{sd_folders[0]} (auto: the first SD x4 upscaler folder)"
    for pattern in _X4_NAMES:
        for name in files:
            if pattern.search(PurePosixPath(name).name):
                return name, f"{name} (auto: the first upscale model named 4x/x4/esrgan/ultrasharp)"
    return None, ("none: every block uses LANCZOS (auto found no SD x4 folder and no upscale model named "
                  "4x/x4/esrgan/ultrasharp in models/upscale_models)")


def pick_face_model(files: list[str]) -> tuple[str | None, str]:
    """(choice, why): the first GFPGAN file, else None (faces are detected and reported, not restored)."""
    gfpgan = [f for f in files if "gfpgan" in PurePosixPath(f).name.lower()]
    if gfpgan:
        return gfpgan[0], f"{gfpgan[0]} (auto: the first GFPGAN file)"
    if files:
        return None, ("none: faces detected, not restored (auto found no GFPGAN file in models/facerestore_models; "
                      "the files there are not GFPGAN)")
    return None, "none: faces detected, not restored (no GFPGAN file in models/facerestore_models)"


__all__ = ["AUTO", "pick_face_model", "pick_heavy_upscaler"]
