"""GFPGAN v1.4 face restoration through spandrel, and the soft-mask paste-back into the image.

Why spandrel: it is the loader ComfyUI already uses for upscale models and it carries the clean GFPGAN
architecture, so we need none of basicsr/facexlib/gfpgan (which break with current torchvision and download
detector weights at run time). Weights are read by `weights.load_state_dict` (safetensors, or .pth with
weights_only), never by spandrel's own file loader (which would also run TorchScript).

A restorer that cannot act raises `FaceRestoreError`; it never hands back unrestored faces as if it had worked.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path

import torch

from ..errors import InputError, ModelFileError, StageFailed
from ..weights import load_state_dict
from .align import TEMPLATE_SIZE, unalign

log = logging.getLogger(__name__)

EXPECTED = "GFPGAN v1.4 (GFPGANv1.4.pth or a .safetensors conversion of it)"


class FaceRestoreError(StageFailed):
    """The face restorer failed while running (out of memory, non-finite output, ...); no image is returned."""


def load_gfpgan(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Read a GFPGAN v1.4 file into a spandrel ImageModelDescriptor, or raise ModelFileError naming the file."""
    import spandrel

    path = Path(path)
    state_dict = load_state_dict(path)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as err:
        raise ModelFileError(
            f"{path.name} is not a face-restoration model this pack can load (spandrel recognises no architecture "
            f"in it). Expected {EXPECTED}."
        ) from err
    except Exception as err:  # noqa: BLE001 - right keys, wrong shapes (another GFPGAN version) or a damaged file
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ModelFileError(
            f"{path.name} looks like GFPGAN but its weights do not fit GFPGAN v1.4 ({detail}). Expected {EXPECTED}; "
            "v1.2/v1.3 files with the same layout also work."
        ) from err
    finally:
        del state_dict
    arch = getattr(descriptor.architecture, "id", type(descriptor.model).__name__)
    if arch != "GFPGAN":
        raise ModelFileError(
            f"{path.name} is a {arch} model ({getattr(descriptor, 'purpose', '?')}), not GFPGAN. Expected {EXPECTED}; "
            "upscale models belong in the block upscaler's heavy-model input."
        )
    return descriptor.to(torch.device(device)).eval()


class FaceRestorer:
    """A loaded GFPGAN v1.4 that restores aligned 512 px faces, batched into as few model calls as fit.

    Runs in float32 by default; bfloat16 is allowed on GPUs (GFPGAN overflows in float16, so that is refused).
    The decoder's noise inputs are the fixed buffers stored in the file (not fresh random noise), so results are
    reproducible run to run.
    """

    size = TEMPLATE_SIZE

    def __init__(self, descriptor, *, name: str = "GFPGAN", dtype: torch.dtype = torch.float32, batch_size: int = 8):
        if dtype == torch.float16:
            raise InputError("GFPGAN overflows in float16; use float32 (default) or bfloat16.")
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}.")
        self.descriptor = descriptor
        self.model = descriptor.model.to(dtype=dtype).eval()
        self.name = name
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.calls = 0  # model calls so far (for reports and tests of batching)
        self.faces = 0  # faces restored so far
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
    ) -> FaceRestorer:
        """Load a GFPGAN v1.4 file (.safetensors, or .pth read with weights_only)."""
        return cls(load_gfpgan(path, device), name=Path(path).name, dtype=dtype, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> FaceRestorer:
        """Move the model (e.g. off the GPU between runs)."""
        self.model.to(device)
        return self

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        """Restore (N, 3, 512, 512) aligned RGB faces in 0-1; returns the same shape in 0-1 on the input's device."""
        if faces.ndim != 4 or faces.shape[1:] != (3, self.size, self.size):
            want = f"(N, 3, {self.size}, {self.size})"
            raise InputError(f"Expected aligned faces shaped {want}; got {tuple(faces.shape)}.")
        if faces.shape[0] == 0:
            return faces.clone()
        outs = []
        with self._lock, torch.inference_mode():
            for start in range(0, faces.shape[0], self.batch_size):
                chunk = faces[start : start + self.batch_size]
                x = chunk.to(self.device, self.dtype) * 2 - 1  # GFPGAN works in [-1, 1]
                try:
                    y = self.model(x, return_rgb=False, randomize_noise=False)[0]
                except Exception as err:
                    raise FaceRestoreError(
                        f"{self.name} failed on {chunk.shape[0]} face(s): {type(err).__name__}: {err}. "
                        + ("Lower the face batch size or free GPU memory." if "memory" in str(err).lower() else "")
                    ) from err
                self.calls += 1
                if not torch.isfinite(y).all():
                    raise FaceRestoreError(
                        f"{self.name} produced NaN/inf for {chunk.shape[0]} face(s) (dtype {self.dtype}); the file "
                        "may be damaged or the precision too low. Try float32."
                    )
                outs.append(((y.float() + 1) / 2).clamp(0, 1).to(faces.device))
        self.faces += faces.shape[0]
        return torch.cat(outs)


_MASKS: dict[tuple[int, str], torch.Tensor] = {}


def soft_mask(size: int = TEMPLATE_SIZE, device: str | torch.device = "cpu") -> torch.Tensor:
    """(size, size) paste-back weight in the aligned frame: the template square eroded by ~8 % and Gaussian-blurred
    (σ ≈ 2.3 % of the size), i.e. what facexlib does, computed exactly with erf. ~0 at the square's edge, so the
    warped-back mask has no hard border even where the face is cut by the image edge."""
    key = (size, str(device))
    if key not in _MASKS:
        inset, sigma = 0.078 * size, 0.0234 * size
        x = torch.arange(size, dtype=torch.float64)
        lo, hi = inset - 0.5, size - 0.5 - inset
        s = sigma * math.sqrt(2.0)
        profile = 0.5 * (torch.erf((x - lo) / s) - torch.erf((x - hi) / s))
        _MASKS[key] = (profile[:, None] * profile[None, :]).float().to(device)
    return _MASKS[key]


def paste_faces(
    image: torch.Tensor, restored: torch.Tensor, matrices: torch.Tensor, *, strength: float = 1.0
) -> torch.Tensor:
    """Blend restored aligned faces (N, 3, S, S) back into one (H, W, 3) image with the soft mask.

    out = image + strength · mask · (restored_warped_back − image), region by region, so pixels outside each
    face's template square are untouched bit for bit and strength 0 returns the image unchanged.
    """
    out = image.clone()
    if strength == 0 or restored.shape[0] == 0:
        return out
    size = restored.shape[-1]
    mask = soft_mask(size, restored.device)[None].to(restored.dtype)
    h, w = image.shape[:2]
    for face, m in zip(restored, matrices):
        patch, (x0, y0, x1, y1) = unalign(torch.cat([face, mask]), m, (h, w))
        if x1 <= x0 or y1 <= y0:
            continue
        rgb = patch[:3].permute(1, 2, 0).to(out.device, out.dtype)
        alpha = (patch[3:] * strength).clamp(0, 1).permute(1, 2, 0).to(out.device, out.dtype)
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = region + alpha * (rgb - region)
    return out
