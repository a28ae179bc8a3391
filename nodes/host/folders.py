"""Model folders: ComfyUI's (extra_model_paths included), else a ComfyUI-style models/ tree at $ZIMAGE_MODELS_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from .guards import _fp

MODELS_DIR_ENV = "ZIMAGE_MODELS_DIR"
MODEL_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin", ".gguf")
FACE_FOLDER = "facerestore_models"

def models_dir() -> Path:
    """ComfyUI's models/ folder, else $ZIMAGE_MODELS_DIR, else ./models."""
    if _fp is not None:
        return Path(_fp.models_dir)
    return Path(os.environ.get(MODELS_DIR_ENV) or "models").expanduser()


def register_folder(name: str) -> None:
    """Make `name` a ComfyUI model folder (models/<name>, weight-file extensions) unless something registered it
    already (e.g. `facerestore_models`, which facerestore packs also register)."""
    if _fp is None:
        return
    if name not in _fp.folder_names_and_paths:
        _fp.folder_names_and_paths[name] = ([os.path.join(_fp.models_dir, name)], set(_fp.supported_pt_extensions))


def folder_paths_for(folder: str) -> list[Path]:
    """Every directory ComfyUI searches for `folder` (extra_model_paths included); outside ComfyUI models/<folder>
    (plus models/unet for diffusion_models and models/clip for text_encoders, like ComfyUI)."""
    if _fp is not None:
        try:
            return [Path(p) for p in _fp.get_folder_paths(folder)]
        except Exception:  # noqa: BLE001 - unknown folder name
            return []
    root = models_dir()
    legacy = {"diffusion_models": ["unet"], "text_encoders": ["clip"]}.get(folder, [])
    return [root / folder] + [root / extra for extra in legacy]


def list_files(folder: str) -> list[str]:
    """Model files in a folder, relative names (what the combo widgets show). GGUF files are included: ComfyUI's own
    list leaves them out (its loaders do not read them), ours do."""
    found: set[str] = set()
    if _fp is not None:
        try:
            found.update(_fp.get_filename_list(folder))
        except Exception:  # noqa: BLE001 - unknown folder name
            return []
    suffixes = (".gguf",) if _fp is not None else MODEL_SUFFIXES
    for base in folder_paths_for(folder):
        if base.is_dir():
            for p in base.rglob("*"):
                if p.is_file() and p.suffix.lower() in suffixes:
                    found.add(p.relative_to(base).as_posix())
    return sorted(found)


def list_dirs(folder: str, marker: str = "model_index.json") -> list[str]:
    """Sub-folders (up to two levels deep) of a model folder that contain `marker` (diffusers folders)."""
    found: set[str] = set()
    for base in folder_paths_for(folder):
        if not base.is_dir():
            continue
        for depth in ("*", "*/*"):
            for p in base.glob(f"{depth}/{marker}"):
                found.add(p.parent.relative_to(base).as_posix())
    return sorted(found)


def full_path(folder: str, name: str) -> Path:
    """Absolute path of a listed file or folder; a clear error when it is gone."""
    if _fp is not None:
        hit = _fp.get_full_path(folder, name)
        if hit is not None:
            return Path(hit)
    for base in folder_paths_for(folder):
        cand = base / name
        if cand.exists():
            return cand
    from zimage_core.errors import ModelFileError

    raise ModelFileError(f"'{name}' not found in the {folder} model folder(s): "
                         f"{', '.join(str(p) for p in folder_paths_for(folder)) or '(none registered)'}. "
                         "Refresh the node list (R) after adding or removing files.")


def temp_dir() -> Path:
    """Where preview images go (ComfyUI's temp folder, else a folder in the system temp dir)."""
    if _fp is not None:
        return Path(_fp.get_temp_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "zimage_previews"


def directory_by_type(kind: str) -> Path | None:
    """ComfyUI's output / temp / input folder (None outside ComfyUI)."""
    if _fp is None:
        return None
    d = _fp.get_directory_by_type(kind)
    return Path(d) if d else None
