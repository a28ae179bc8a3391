"""A random GFPGAN v1.4 (real architecture and real key layout) written to disk like the files users have.

Why full size and not tiny: spandrel recognises GFPGAN by two keys but always builds the one v1.4 configuration
(out_size 512, channel multiplier 2, narrow 1) and loads strictly, so any shrunken variant is refused as
"wrong shapes" by the very loader we need to test. The full model is 86.4 M parameters (346 MB in float32); building
it takes ~2 s and one 512 px face takes ~3-4 s on 2 CPU cores, so tests make it once per session and restore few
faces. The .safetensors copy is written in float16 (half the disk; also proves that the loader upcasts), the .pth
copy in float32 wrapped in {"params_ema": ...} exactly like the official GFPGANv1.4.pth.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

GFPGAN_V14_CONFIG = dict(
    out_size=512,
    num_style_feat=512,
    channel_multiplier=2,
    decoder_load_path=None,
    fix_decoder=False,
    num_mlp=8,
    input_is_latent=True,
    different_w=True,
    narrow=1,
    sft_half=True,
)


def random_gfpgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a freshly initialised GFPGAN v1.4 (float32), deterministic for a seed."""
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    model = GFPGAN(**GFPGAN_V14_CONFIG)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def save_random_gfpgan(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    formats: tuple[str, ...] = ("safetensors", "pth"),
    safetensors_dtype: torch.dtype = torch.float16,
) -> dict[str, Path]:
    """Write the random GFPGAN as GFPGANv1.4-random.safetensors and/or .pth; returns {format: path}."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = random_gfpgan_state_dict(seed)
    paths: dict[str, Path] = {}
    for fmt in formats:
        path = out / f"GFPGANv1.4-random.{fmt}"
        if fmt == "safetensors":
            save_file({k: v.to(safetensors_dtype) if v.is_floating_point() else v for k, v in sd.items()}, str(path))
        elif fmt == "pth":
            torch.save({"params_ema": sd}, str(path))
        else:
            raise ValueError(f"format must be 'safetensors' or 'pth', got {fmt!r}")
        paths[fmt] = path
    return paths
