"""Safe weight-file reading shared by every loader.

Weights come only from safetensors, or from .pth/.ckpt/.pt/.bin through `torch.load(weights_only=True)`, so a pickle
that tries to run code is refused. Every failure names the file and says what to do.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

from .errors import ModelFileError

log = logging.getLogger(__name__)

SAFE_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".ckpt", ".pt", ".bin")
UNSUPPORTED_HINTS = {
    ".gguf": "GGUF files hold whole models (a Z-Image DiT or a Qwen3 text encoder), not this kind of weights; use the "
             ".safetensors or .pth file",
    ".onnx": "ONNX files cannot be loaded as torch weights; use the .safetensors or .pth release",
}


def load_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a state dict from a weight file, refusing anything that could execute code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_HINTS:
        raise ModelFileError(f"{path.name}: {UNSUPPORTED_HINTS[suffix]}.")
    try:
        if suffix in SAFE_SUFFIXES:
            from safetensors.torch import load_file

            return load_file(str(path), device=str(device))
        if suffix in PICKLE_SUFFIXES:
            obj = torch.load(str(path), map_location=device, weights_only=True)
            return _unwrap_state_dict(obj, path)
    except ModelFileError:
        raise
    except pickle.UnpicklingError as err:  # torch's own message advises turning the protection off: not shown
        log.debug("weights_only refused %s: %s", path, err)
        raise ModelFileError(f"{path.name} was refused: it is a pickle that needs more than plain tensors to load "
                             "(it could run code); use a .safetensors version of this model.") from None
    except Exception as err:  # corrupt/truncated files surface as many different exception types
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ModelFileError(f"Could not read {path.name}: the file looks corrupt or truncated ({type(err).__name__}"
                             f"{': ' + detail if detail else ''}). Download it again or pick another file.") from None
    raise ModelFileError(
        f"{path.name}: unsupported weight file type '{suffix}'. Use .safetensors (preferred) or .pth/.ckpt."
    )


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Training checkpoints often nest the weights ('params_ema', 'state_dict', ...); return the tensor dict."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            for key in ("params_ema", "params", "state_dict", "model", "module", "g_ema"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
                if tensors:
                    return tensors
                break
        else:
            break
    raise ModelFileError(f"{path.name} holds no tensor state dict; is it really a model weight file?")


def resolve_inside(name: str, roots: list[str | os.PathLike]) -> Path:
    """Resolve a file name from a request to an existing file inside one of `roots`.

    Refuses absolute paths, '..' escapes and symlinks that point outside the roots, so API callers can only pick
    files that live in the model folders.
    """
    if not name or "\x00" in name:
        raise ModelFileError("Empty or invalid model file name.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelFileError("The model file name is not valid text (it holds a lone surrogate).") from None
    if os.path.isabs(name) or Path(name).drive:
        raise ModelFileError(f"'{name}': absolute paths are not allowed; give a file name inside the model folders.")
    searched = []
    for root in roots:
        root_path = Path(root).resolve()
        searched.append(str(root_path))
        try:
            candidate = (root_path / name).resolve()
            inside = candidate.is_relative_to(root_path)
            found = inside and candidate.exists()
        except (OSError, ValueError, RuntimeError) as err:  # a name too long for the file system, a symlink loop
            raise ModelFileError(f"'{name[:80]}' is not a usable file name ({err.__class__.__name__}).") from None
        if not inside:
            raise ModelFileError(f"'{name}' points outside the model folder {root_path}; refused.")
        if found:
            return candidate
    raise ModelFileError(f"Model file '{name}' not found. Searched: {', '.join(searched) or '(no folders)'}.")
