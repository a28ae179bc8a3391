"""Tiny random Z-Image Fun ControlNets with the real architecture (diffusers' ZImageControlNetModel), for the tiny
transformer, saved in the single-file layout of the published files: only the `control_*` weights."""

from __future__ import annotations

from pathlib import Path

import torch

from . import TINY_TRANSFORMER

# version → the ZImageControlNetModel settings of that release, at the tiny transformer's depth (4 layers, 1 refiner)
TINY_CONTROLNETS = {
    "1.0": dict(control_layers_places=[0, 2], control_refiner_layers_places=None, control_in_dim=16,
                add_control_noise_refiner=None),
    "2.0": dict(control_layers_places=[0, 1, 2, 3], control_refiner_layers_places=[0], control_in_dim=33,
                add_control_noise_refiner="control_layers"),
    "2.1": dict(control_layers_places=[0, 2], control_refiner_layers_places=[0], control_in_dim=33,
                add_control_noise_refiner="control_noise_refiner"),
}


def tiny_controlnet(version: str = "1.0", seed: int = 1):
    """A random tiny ControlNet whose hints act (the zero-initialised projections get values)."""
    from diffusers import ZImageControlNetModel

    t = TINY_TRANSFORMER
    torch.manual_seed(seed)
    model = ZImageControlNetModel(all_patch_size=[2], all_f_patch_size=[1], dim=t["dim"], n_heads=t["n_heads"],
                                  n_kv_heads=t["n_kv_heads"], n_refiner_layers=t["n_refiner_layers"], norm_eps=1e-5,
                                  qk_norm=True, **TINY_CONTROLNETS[version])
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.normal_(0, 0.05)
    return model.eval()


def save_tiny_controlnet(path: str | Path, version: str = "1.0", seed: int = 1) -> Path:
    """Write a tiny ControlNet as the published files are laid out. A 2.0 file also carries the untrained
    (all-zero) control_noise_refiner blocks the real 2.0 release ships."""
    from safetensors.torch import save_file

    model = tiny_controlnet(version, seed)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("control_")}
    if version == "2.0":
        template = tiny_controlnet("2.1", seed)
        tensors.update({k: torch.zeros_like(v) for k, v in template.state_dict().items()
                        if k.startswith("control_noise_refiner.")})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


__all__ = ["TINY_CONTROLNETS", "save_tiny_controlnet", "tiny_controlnet"]
