"""Z-Image-Turbo Fun ControlNet (Union) files as users have them (ComfyUI's models/model_patches or models/controlnet;
alibaba-pai's Z-Image-Turbo-Fun-Controlnet-Union 1.0, 2.0, 2.1 and 2.1-lite), loaded into diffusers'
ZImageControlNetModel.

The files hold only the control weights, in diffusers' key layout (`control_all_x_embedder.2-1.*`,
`control_layers.N.*`, `control_noise_refiner.N.*`), so nothing is renamed. The version is read from the keys and
shapes, as ComfyUI does, never from the Hub (diffusers' single-file loader fetches a config from there, and
mistakes the lite files for 1.0):
  1.0        16 control input channels, 6 control layers (one per 5 main layers)
  2.0 / 2.1  33 channels (control latents, keep-mask, masked-image latents), 15 layers (one per 2); 2.0's
             control_noise_refiner weights were never trained (its before_proj is all zero): dropped, and its
             refiner hints come from the control layers, as in diffusers and ComfyUI
  2.1-lite   33 channels, 3 layers (one per 10)
The control layers' places follow from their count and the transformer's depth: k · round(n_layers / n_control).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (Header, detect_format, file_structure, guess_architecture, read_header,
                          read_tensors, require_tensor)
from .errors import ModelFileError
from .loading import build, check_storage, read_component

EMBEDDER = "control_all_x_embedder.2-1.weight"
CONTROL_FOLDERS = ("model_patches", "controlnet")  # where ComfyUI users keep these files
_BLOCK_WEIGHT = re.compile(r"^control_(layers|noise_refiner)\.\d+\..+\.weight$")
_OTHER_CONTROLNETS = (("controlnet_blocks.", "a Flux / SD3 / Qwen-Image ControlNet"),
                      ("input_hint_block.", "an SD1.x / SDXL ControlNet"),
                      ("controlnet_cond_embedding.", "a diffusers SD ControlNet"))


@dataclass
class ControlNetInfo:
    """What a file is: its version and the ZImageControlNetModel config for a given transformer."""

    version: str  # "1.0", "2.0", "2.1", "2.1-lite"
    config: dict[str, Any]
    drop_prefix: str | None  # keys the model does not use (2.0's untrained control_noise_refiner)


def _indices(header: Header, prefix: str) -> list[int]:
    found = {int(m.group(1)) for k in header if (m := re.match(rf"^{re.escape(prefix)}\.(\d+)\.", k))}
    return sorted(found)


def _refuse(path: Path, header: Header) -> ModelFileError:
    keys = " ".join(list(header)[:2000])
    kind = next((name for marker, name in _OTHER_CONTROLNETS if marker in keys), None)
    detail = f": it is {kind}" if kind else guess_architecture(list(header))
    return ModelFileError(f"{path.name} is not a Z-Image Fun ControlNet (no {EMBEDDER}){detail}. Use "
                          "Z-Image-Turbo-Fun-Controlnet-Union (1.0, 2.0, 2.1 or 2.1-lite) in models/model_patches/.")


def check_controlnet_file(path: str | Path) -> None:
    """Refuse a file that is not a Fun ControlNet from its header alone (before any model loads)."""
    path = Path(path)
    header = read_header(path)
    if EMBEDDER not in header:
        raise _refuse(path, header)


def _refiner_trained(path: Path, header: Header) -> bool:
    """2.1 vs 2.0: 2.0 ships control_noise_refiner blocks whose before_proj is all zero (never trained)."""
    key = "control_noise_refiner.0.before_proj.weight"
    if key not in header:
        return False
    found = read_tensors(path, header, lambda k, t: t if k == key else None)
    return bool(torch.count_nonzero(found[key]))


def inspect_controlnet(path: Path, header: Header, transformer: torch.nn.Module) -> ControlNetInfo:
    """The version and model config of a Fun ControlNet file for this transformer, or ModelFileError saying why it
    cannot drive it."""
    if EMBEDDER not in header:
        raise _refuse(path, header)
    what = "Z-Image Fun ControlNet"
    dim, in4 = require_tensor(path, header, EMBEDDER, 2, what)
    head_dim = require_tensor(path, header, "control_layers.0.attention.norm_q.weight", 1, what)[0]
    tcfg = transformer.config
    if dim != int(tcfg.dim):
        raise ModelFileError(f"{path.name} is a ControlNet for a {dim}-wide model; this Z-Image transformer is "
                             f"{tcfg.dim} wide (a ControlNet only drives the model it was trained for).")
    layers = _indices(header, "control_layers")
    if not layers or layers != list(range(len(layers))):
        raise ModelFileError(f"{path.name}: its control_layers are incomplete ({layers[:8]}…).")
    n_layers, n_control = len(transformer.layers), len(layers)
    div = max(1, round(n_layers / n_control))
    places = [k * div for k in range(n_control)]
    if places[-1] >= n_layers:
        raise ModelFileError(f"{path.name} has {n_control} control layers; this transformer has only {n_layers} "
                             "main layers.")
    in_dim = in4 // 4
    cfg = dict(all_patch_size=[2], all_f_patch_size=[1], dim=dim, n_heads=dim // head_dim, n_kv_heads=dim // head_dim,
               n_refiner_layers=int(tcfg.n_refiner_layers), norm_eps=1e-5, qk_norm=True,
               control_layers_places=places, control_in_dim=in_dim)
    if in_dim == 16:
        return ControlNetInfo("1.0", {**cfg, "control_refiner_layers_places": None,
                                      "add_control_noise_refiner": None}, None)
    if in_dim != 33:
        raise ModelFileError(f"{path.name}: {in_dim} control input channels; the Fun ControlNets have 16 (1.0) or 33 "
                             "(2.x).")
    refiner = list(range(int(tcfg.n_refiner_layers)))
    if _refiner_trained(path, header):
        version = "2.1-lite" if n_control <= 3 else "2.1"
        return ControlNetInfo(version, {**cfg, "control_refiner_layers_places": refiner,
                                        "add_control_noise_refiner": "control_noise_refiner"}, None)
    return ControlNetInfo("2.0", {**cfg, "control_refiner_layers_places": refiner,
                                  "add_control_noise_refiner": "control_layers"}, "control_noise_refiner.")


def load_controlnet_file(path: str | Path, transformer: torch.nn.Module, dtype: torch.dtype,
                         storage: str = "auto") -> torch.nn.Module:
    """A Fun ControlNet file as a ZImageControlNetModel for `transformer` (with the same compact-weight rules as the
    DiT: fp8 files stay fp8, storage='fp8' stores 16-bit weights as fp8). Its `zimage_version` says which it is."""
    from diffusers import ZImageControlNetModel

    path = Path(path)
    check_storage(storage)
    if path.suffix.lower() == ".gguf":
        raise ModelFileError(f"{path.name}: GGUF ControlNets are not supported; use the .safetensors file.")
    what = "Z-Image Fun ControlNet"
    header = read_header(path)
    info = inspect_controlnet(path, header, transformer)
    fmt = detect_format(path, header, what)
    with file_structure(path, what):
        tensors, scales = read_component(path, header, "", fmt, storage, dtype,
                                         lambda k, shape: len(shape) == 2 and bool(_BLOCK_WEIGHT.match(k)))
        if info.drop_prefix:
            tensors = {k: v for k, v in tensors.items() if not k.startswith(info.drop_prefix)}
        with torch.device("meta"):
            model = ZImageControlNetModel(**info.config)
        build(model, tensors, scales, None, path, what, dtype)
    model.zimage_version = info.version
    model.zimage_name = path.name
    return model


__all__ = ["CONTROL_FOLDERS", "ControlNetInfo", "check_controlnet_file", "inspect_controlnet", "load_controlnet_file"]
