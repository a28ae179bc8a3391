"""Control-image preprocessing that needs no model: Canny edges (OpenCV), white edges on black, as the Fun
ControlNets' canny mode was trained with."""

from __future__ import annotations

import numpy as np
import torch

from .errors import MissingDependencyError
from .images import as_image_batch


def canny(images: torch.Tensor, low: int = 100, high: int = 200) -> torch.Tensor:
    """(B, H, W, 3) images → their Canny edge maps, same size, 0 or 1 in every channel."""
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("Canny edges need OpenCV: pip install opencv-python-headless, or make the edge "
                                     "map elsewhere (ComfyUI's Canny node, a preprocessor pack) and use it as a raw "
                                     "control image.") from None
    batch = as_image_batch(images)
    out = []
    for img in batch:
        gray = (img.mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy() @ np.array([0.299, 0.587, 0.114]))
        edges = cv2.Canny(gray.round().astype(np.uint8), int(low), int(high))
        out.append(torch.from_numpy(edges.astype(np.float32) / 255.0))
    return torch.stack(out)[..., None].expand(-1, -1, -1, 3).contiguous()


__all__ = ["canny"]
