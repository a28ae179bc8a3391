"""Face alignment to the FFHQ 512 px template GFPGAN was trained on, and the inverse warp for pasting back.

Why a similarity transform (rotation + uniform scale + shift, least squares over the available landmarks): it is
what facexlib/GFPGAN use, so the restorer sees faces framed exactly as in training, and it never shears a face.
Warps run in torch (grid_sample), so they stay on the GPU with the image; a warp that shrinks averages several
samples per output pixel, so big faces in upscaled images (and 512 px restored faces pasted small) do not alias.
Coordinates use the pixel-index convention (pixel i has its centre at i), like OpenCV's warpAffine and facexlib.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from .detect import Face

TEMPLATE_SIZE = 512
# The standard facexlib/GFPGAN 5-point template for 512 px: image-left eye, image-right eye, nose tip, mouth corners.
FFHQ_TEMPLATE_512 = (
    (192.98138, 239.94708),
    (318.90277, 240.1936),
    (256.63416, 314.01935),
    (201.26117, 371.41043),
    (313.08905, 371.15118),
)
TEMPLATE_POINTS: dict[str, tuple[float, float]] = {
    "eye_left": FFHQ_TEMPLATE_512[0],
    "eye_right": FFHQ_TEMPLATE_512[1],
    "nose": FFHQ_TEMPLATE_512[2],
    "mouth_left": FFHQ_TEMPLATE_512[3],
    "mouth_right": FFHQ_TEMPLATE_512[4],
    # BlazeFace gives the mouth centre: it maps to the middle of the two template corners
    "mouth": (
        (FFHQ_TEMPLATE_512[3][0] + FFHQ_TEMPLATE_512[4][0]) / 2,
        (FFHQ_TEMPLATE_512[3][1] + FFHQ_TEMPLATE_512[4][1]) / 2,
    ),
}


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (Umeyama 1991) mapping points `src` onto `dst`; shapes (..., K, 2), K >= 2.

    Returns (..., 2, 3) float64 matrices A with dst ≈ A[:, :2] @ src + A[:, 2]. Reflections are excluded.
    """
    src, dst = src.double(), dst.double()
    src, dst = torch.broadcast_tensors(src, dst)
    k = src.shape[-2]
    mu_s, mu_d = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.transpose(-1, -2) @ sc / k  # (..., 2, 2)
    u, s, vt = torch.linalg.svd(cov)
    d = torch.ones_like(s)
    d[..., 1] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    d[..., 1] = torch.where(d[..., 1] == 0, torch.ones_like(d[..., 1]), d[..., 1])
    rot = u @ torch.diag_embed(d) @ vt
    var_s = (sc**2).sum((-1, -2)) / k
    scale = (s * d).sum(-1) / var_s.clamp_min(1e-12)
    lin = scale[..., None, None] * rot
    shift = mu_d.squeeze(-2) - (lin @ mu_s.transpose(-1, -2)).squeeze(-1)
    return torch.cat([lin, shift[..., None]], dim=-1)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 2, 3) affine matrices."""
    lin = torch.linalg.inv(matrix[..., :2].double())
    shift = -(lin @ matrix[..., 2:].double())
    return torch.cat([lin, shift], dim=-1)


def affine_scale(matrix: torch.Tensor) -> torch.Tensor:
    """Uniform scale factor of (..., 2, 3) similarity matrices (sqrt of |det|)."""
    return torch.linalg.det(matrix[..., :2].double()).abs().sqrt()


def template_matrix(face: Face, size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """(2, 3) float64 matrix mapping image pixels to the `size` px FFHQ template, from the face's landmarks."""
    names = [n for n in TEMPLATE_POINTS if n in face.landmarks]
    if "mouth" in names and ("mouth_left" in names or "mouth_right" in names):
        names.remove("mouth")  # corners are better than their mean
    if "eye_left" not in names or "eye_right" not in names:
        raise InputError(f"face at {face.box} has no eye landmarks, cannot align it (has {list(face.landmarks)})")
    src = torch.tensor([face.landmarks[n] for n in names], dtype=torch.float64)
    dst = torch.tensor([TEMPLATE_POINTS[n] for n in names], dtype=torch.float64)
    # pixel-index coordinates scale like pixel centres when size != 512
    dst = (dst + 0.5) * (size / TEMPLATE_SIZE) - 0.5
    return similarity_transform(src, dst)


def _square_corners(h: int, w: int) -> torch.Tensor:
    """Outer corners of an h x w pixel grid, homogeneous, float64 (4, 3)."""
    return torch.tensor(
        [[-0.5, -0.5, 1.0], [w - 0.5, -0.5, 1.0], [-0.5, h - 0.5, 1.0], [w - 0.5, h - 0.5, 1.0]], dtype=torch.float64
    )


def warp_affine(
    src: torch.Tensor,
    matrix: torch.Tensor,
    out_hw: tuple[int, int],
    *,
    padding_mode: str = "zeros",
    antialias: bool = True,
) -> torch.Tensor:
    """Warp a (C, H, W) tensor with a (2, 3) matrix mapping source pixels to output pixels; returns (C, h, w).

    When the warp shrinks (scale < 1) each output pixel averages k x k bilinear samples over its footprint
    (k = ceil(1 / scale), at most 8): an area filter, so a 512 px restored face pasted into a 150 px region does
    not alias, without the double blur of resizing first and resampling after.
    """
    if src.ndim != 3:
        raise InputError(f"warp_affine expects a (C, H, W) tensor, got shape {tuple(src.shape)}.")
    h, w = int(out_hw[0]), int(out_hw[1])
    _, sh, sw = src.shape
    m = matrix.detach().double().cpu()
    k = min(8, math.ceil(1.0 / float(affine_scale(m)) - 1e-6)) if antialias else 1
    k = max(k, 1)
    inv = invert_affine(m).to(src.device, torch.float32)  # output -> source

    # sub-pixel sample positions: output pixel j covers [j - 0.5, j + 0.5]; k samples at the centres of its k parts
    us = (torch.arange(w * k, device=src.device, dtype=torch.float32) + 0.5) / k - 0.5
    vs = (torch.arange(h * k, device=src.device, dtype=torch.float32) + 0.5) / k - 0.5
    gy, gx = torch.meshgrid(vs, us, indexing="ij")
    sx = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    sy = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    grid = torch.stack([(2 * sx + 1) / sw - 1, (2 * sy + 1) / sh - 1], dim=-1)
    out = F.grid_sample(src[None].float(), grid[None], mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if k > 1:
        out = F.avg_pool2d(out, k)
    return out[0].to(src.dtype)


def align_faces(
    image: torch.Tensor, matrices: torch.Tensor, size: int = TEMPLATE_SIZE, *, padding_mode: str = "reflection"
) -> torch.Tensor:
    """Crop the faces of one (H, W, 3) image into (N, 3, size, size) aligned crops, one per (2, 3) matrix.

    Parts of the template square outside the image are filled by reflection (GFPGAN then sees no hard black edge);
    they are masked away again on paste-back.
    """
    chw = image.permute(2, 0, 1)
    if len(matrices) == 0:
        return chw.new_zeros((0, 3, size, size))
    return torch.stack([warp_affine(chw, m, (size, size), padding_mode=padding_mode) for m in matrices])


def template_region(
    matrix: torch.Tensor, image_hw: tuple[int, int], size: int = TEMPLATE_SIZE
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) bounding box, clipped to the image, of the template square mapped back into the image."""
    inv = invert_affine(matrix.detach().cpu())
    pts = _square_corners(size, size) @ inv.T
    h, w = image_hw
    x0 = max(0, math.floor(pts[:, 0].min().item()))
    y0 = max(0, math.floor(pts[:, 1].min().item()))
    x1 = min(w, math.ceil(pts[:, 0].max().item()) + 1)
    y1 = min(h, math.ceil(pts[:, 1].max().item()) + 1)
    return x0, y0, max(x0, x1), max(y0, y1)


def unalign(
    aligned: torch.Tensor, matrix: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Warp one aligned (C, S, S) crop back into image space (the inverse warp used for paste-back).

    Returns the (C, h, w) patch covering only the face's region of the image, and that region's (x0, y0, x1, y1),
    already clipped to the image (faces at the border give a smaller patch, never a wrong size). Outside the
    template square the patch is 0 (so a warped mask fades to nothing there).
    """
    size = aligned.shape[-1]
    x0, y0, x1, y1 = template_region(matrix, image_hw, size)
    if x1 <= x0 or y1 <= y0:
        return aligned.new_zeros((aligned.shape[0], 0, 0)), (x0, y0, x1, y1)
    back = invert_affine(matrix.detach().cpu())  # template -> image
    back[:, 2] -= torch.tensor([x0, y0], dtype=back.dtype)  # -> region coordinates
    patch = warp_affine(aligned, back, (y1 - y0, x1 - x0), padding_mode="zeros")
    return patch, (x0, y0, x1, y1)
