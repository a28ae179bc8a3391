"""Label blocks subject / flat / detail and route them to the heavy or light upscaler.

Per image: T = 85th percentile of its saliency map. A block is *subject* when max(S in block) > T and
mean(S in block) > 0.8·T; otherwise *flat* when its grayscale pixel variance (0-255 scale) is below 175; otherwise
*detail*. Routing: subject and detail → heavy, flat → light. With a target heavy ratio r the heavy set is resized to
round(r·n) blocks per image: subject blocks are always heavy and never move; when there are too many heavy blocks
the lowest-saliency detail blocks go light first; when too few, the highest-saliency flat blocks are promoted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import InputError
from .saliency import luma
from .slicer import Blocks, slice_map

log = logging.getLogger(__name__)

SUBJECT, FLAT, DETAIL = 0, 1, 2
CLASS_NAMES = ("subject", "flat", "detail")  # index = label value
CLASS_COLORS = {  # 0-255 RGB; the web legend uses these
    "subject": (230, 57, 70),
    "flat": (69, 123, 157),
    "detail": (244, 162, 97),
}
ROUTE_NAMES = ("light", "heavy")  # index = route value (False/True)
ROUTE_COLORS = {"heavy": (255, 255, 255), "light": (24, 24, 24)}  # block outline colours in the preview

SUBJECT_PERCENTILE = 85.0
SUBJECT_MEAN_FACTOR = 0.8
FLAT_VARIANCE = 175.0  # grayscale variance on the 0-255 scale (half of the 350 variance threshold)


@dataclass
class Classification:
    """Per-block labels and routes, in the slicer's block order.

    labels: (N,) int64 of SUBJECT/FLAT/DETAIL; heavy: (N,) bool route; mean_saliency / max_saliency / variance:
    (N,) the statistics the rules used; thresholds: (B,) the per-image T.
    """

    labels: torch.Tensor
    heavy: torch.Tensor
    mean_saliency: torch.Tensor
    max_saliency: torch.Tensor
    variance: torch.Tensor
    thresholds: torch.Tensor

    def counts(self) -> dict[str, int]:
        """Number of blocks per class and per route (for logs and reports)."""
        out = {name: int((self.labels == i).sum()) for i, name in enumerate(CLASS_NAMES)}
        out["heavy"] = int(self.heavy.sum())
        out["light"] = int((~self.heavy).sum())
        return out


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-th percentile of (B, n) with linear interpolation (numpy's default); no size limit (unlike
    torch.quantile, which refuses more than 16 M elements)."""
    n = values.shape[1]
    pos = (q / 100.0) * (n - 1)
    lo, hi = int(pos), min(int(pos) + 1, n - 1)
    v_lo = torch.kthvalue(values, lo + 1, dim=1).values
    v_hi = torch.kthvalue(values, hi + 1, dim=1).values if hi != lo else v_lo
    return v_lo + (v_hi - v_lo) * (pos - lo)


def block_statistics(blocks: Blocks, saliency: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-block mean/max saliency and grayscale variance (0-255 scale), plus the per-image threshold T."""
    s_blocks = slice_map(saliency, blocks).reshape(len(blocks), -1).float()
    gray = luma(blocks.tensor.float()).reshape(len(blocks), -1) * 255.0
    t = percentile(saliency.reshape(saliency.shape[0], -1).float(), SUBJECT_PERCENTILE)
    return {
        "mean": s_blocks.mean(dim=1),
        "max": s_blocks.amax(dim=1),
        "variance": gray.var(dim=1, unbiased=False),
        "threshold": t,
    }


def classify_blocks(blocks: Blocks, saliency: torch.Tensor, heavy_ratio: float | None = None) -> Classification:
    """Label every block and choose its route; heavy_ratio (0-1) None keeps the natural routing."""
    if heavy_ratio is not None and not (0.0 <= float(heavy_ratio) <= 1.0):
        raise InputError(f"heavy_ratio must be between 0 and 1 (fraction of blocks on the heavy path); got "
                         f"{heavy_ratio}.")
    st = block_statistics(blocks, saliency)
    t_per_block = st["threshold"][blocks.positions[:, 0].to(st["threshold"].device)]
    subject = (st["max"] > t_per_block) & (st["mean"] > SUBJECT_MEAN_FACTOR * t_per_block)
    flat = ~subject & (st["variance"] < FLAT_VARIANCE)
    labels = torch.full_like(st["mean"], DETAIL, dtype=torch.int64)
    labels[flat] = FLAT
    labels[subject] = SUBJECT
    heavy = labels != FLAT
    if heavy_ratio is not None:
        heavy = enforce_heavy_ratio(labels, heavy, st["mean"], blocks.positions[:, 0], float(heavy_ratio))
    return Classification(labels=labels, heavy=heavy, mean_saliency=st["mean"], max_saliency=st["max"],
                          variance=st["variance"], thresholds=st["threshold"])


def enforce_heavy_ratio(labels: torch.Tensor, heavy: torch.Tensor, mean_saliency: torch.Tensor,
                        image_index: torch.Tensor, ratio: float) -> torch.Tensor:
    """Resize each image's heavy set to round(ratio·n) blocks, moving blocks in saliency order; subjects stay heavy."""
    heavy = heavy.clone()
    image_index = image_index.to(labels.device)
    for b in torch.unique(image_index).tolist():
        idx = torch.nonzero(image_index == b).flatten()
        target = int(round(ratio * idx.numel()))
        n_subject = int((labels[idx] == SUBJECT).sum())
        if n_subject > target:
            log.info("Image %d: %d subject blocks exceed the heavy target of %d; subjects always stay heavy.",
                     b, n_subject, target)
            target = n_subject
        n_heavy = int(heavy[idx].sum())
        if n_heavy > target:  # demote heavy non-subject blocks, least salient first
            movable = idx[(labels[idx] != SUBJECT) & heavy[idx]]
            order = torch.argsort(mean_saliency[movable], stable=True)
            heavy[movable[order[: n_heavy - target]]] = False
        elif n_heavy < target:  # promote light blocks (flat ones), most salient first
            movable = idx[~heavy[idx]]
            order = torch.argsort(mean_saliency[movable], descending=True, stable=True)
            heavy[movable[order[: target - n_heavy]]] = True
    return heavy


def classification_preview(images: torch.Tensor, blocks: Blocks, result: Classification,
                           alpha: float = 0.45) -> torch.Tensor:
    """(B,H,W,3) preview: each pixel tinted with the class colour of its nearest block centre; block outlines show the
    route (white = heavy upscaler, dark = LANCZOS)."""
    b, h, w = images.shape[0], *blocks.source_size
    dev = images.device
    bs = blocks.block
    cy = torch.tensor(blocks.ys, device=dev, dtype=torch.float32) + bs / 2
    cx = torch.tensor(blocks.xs, device=dev, dtype=torch.float32) + bs / 2
    iy = torch.argmin((torch.arange(h, device=dev)[:, None] + 0.5 - cy[None]).abs(), dim=1)
    ix = torch.argmin((torch.arange(w, device=dev)[:, None] + 0.5 - cx[None]).abs(), dim=1)
    cell = iy[:, None] * len(blocks.xs) + ix[None, :]  # (H, W) block index within an image
    per = blocks.per_image
    labels = result.labels.to(dev).view(b, per)
    heavy = result.heavy.to(dev).view(b, per)
    palette = torch.tensor([CLASS_COLORS[n] for n in CLASS_NAMES], device=dev, dtype=torch.float32) / 255.0
    route_pal = torch.tensor([ROUTE_COLORS[n] for n in ROUTE_NAMES], device=dev, dtype=torch.float32) / 255.0
    lab = torch.gather(labels, 1, cell.reshape(1, -1).expand(b, -1)).view(b, h, w)
    hv = torch.gather(heavy.long(), 1, cell.reshape(1, -1).expand(b, -1)).view(b, h, w)
    gray = luma(images.float())[..., None].expand(b, h, w, 3)
    out = gray * (1 - alpha) + palette[lab] * alpha
    border = torch.zeros(h, w, dtype=torch.bool, device=dev)
    border[1:, :] |= iy[1:, None] != iy[:-1, None]
    border[:, 1:] |= ix[None, 1:] != ix[None, :-1]
    border[0, :] = border[-1, :] = True
    border[:, 0] = border[:, -1] = True
    out = torch.where(border[None, ..., None], route_pal[hv], out)
    return out.clamp_(0.0, 1.0)


__all__ = ["Classification", "classify_blocks", "enforce_heavy_ratio", "classification_preview",
           "block_statistics", "percentile", "CLASS_NAMES", "CLASS_COLORS", "ROUTE_NAMES", "ROUTE_COLORS", "SUBJECT",
           "FLAT",
           "DETAIL", "SUBJECT_PERCENTILE", "SUBJECT_MEAN_FACTOR", "FLAT_VARIANCE"]
