"""Face restoration stage: detect (MediaPipe BlazeFace / OpenCV Haar) → align to the FFHQ 512 template →
GFPGAN v1.4 (spandrel) → paste back with a soft mask.

`restore_faces` is the one entry point the pipeline, nodes, CLI and HTTP API use. It always returns a report that
says what happened to every image (faces restored, faces skipped and why, no face found); an image without faces
comes back unchanged and the report says so. A restorer that fails raises; nothing is returned half-done.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..images import as_image_batch
from ..timing import StageTimer
from .align import align_faces, template_matrix
from .detect import DETECTORS, Face, FaceDetector, detect_faces
from .restore import FaceRestoreError, FaceRestorer, load_gfpgan, paste_faces, soft_mask

log = logging.getLogger(__name__)

__all__ = [
    "DETECTORS",
    "Face",
    "FaceDetector",
    "FaceReport",
    "FaceRestoreError",
    "FaceRestorer",
    "ImageFaces",
    "detect_faces",
    "detect_only_report",
    "load_gfpgan",
    "restore_faces",
    "soft_mask",
]


@dataclass
class ImageFaces:
    """What happened in one batch item."""

    index: int
    restored: list[Face] = field(default_factory=list)
    skipped: list[tuple[Face, str]] = field(default_factory=list)  # found but left alone, with the reason
    note: str = ""

    @property
    def count(self) -> int:
        return len(self.restored)

    def as_dict(self) -> dict:
        return {
            "index": self.index,
            "faces": self.count,
            "restored": [f.as_dict() for f in self.restored],
            "skipped": [{**f.as_dict(), "reason": why} for f, why in self.skipped],
            "note": self.note,
        }


@dataclass
class FaceReport:
    """Per-image outcome of `restore_faces`, plus which detector ran and how long each part took."""

    images: list[ImageFaces]
    detector: str
    restorer: str
    fidelity: float
    fallback_reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def faces_per_image(self) -> list[int]:
        return [im.count for im in self.images]

    @property
    def total_faces(self) -> int:
        return sum(self.faces_per_image)

    @property
    def messages(self) -> list[str]:
        """One human-readable line per image (what a node shows, what the CLI prints)."""
        return [f"image {im.index}: {im.note}" for im in self.images]

    def summary(self) -> str:
        head = f"faces: {self.total_faces} restored with {self.restorer} (detector {self.detector}"
        head += f", fidelity {self.fidelity:g})" if self.fidelity != 1 else ")"
        if self.fallback_reason:
            head += f"; MediaPipe unavailable, used Haar: {self.fallback_reason}"
        return "\n".join([head, *self.messages])

    def as_dict(self) -> dict:
        return {
            "faces_per_image": self.faces_per_image,
            "detector": self.detector,
            "fallback_reason": self.fallback_reason,
            "restorer": self.restorer,
            "fidelity": self.fidelity,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "images": [im.as_dict() for im in self.images],
        }

    def __str__(self) -> str:
        return self.summary()


def restore_faces(
    images: torch.Tensor,
    restorer: FaceRestorer | str | os.PathLike,
    *,
    fidelity: float = 1.0,
    detector: str = "auto",
    min_confidence: float = 0.5,
    max_faces: int = 0,
    min_face_size: float = 16.0,
    faces: list[list[Face]] | None = None,
) -> tuple[torch.Tensor, FaceReport]:
    """Restore every face in a (B, H, W, 3) batch; returns (images, report), same size and device.

    fidelity: how much of the restored face to keep, 0-1. 1 = GFPGAN's face fully, 0 = the original untouched,
        between = a blend (the direction of ReActor's "visibility"; the opposite of CodeFormer's "fidelity").
    detector: 'auto' | 'mediapipe' | 'haar'; min_confidence: detector score threshold 0-1;
    max_faces: restore at most this many faces per image, largest first (0 = all);
    min_face_size: faces smaller than this (px) are skipped — GFPGAN invents a face from a handful of pixels;
    faces: detections to use instead of detecting (e.g. found before an upscale and `Face.scaled` to this size).
    """
    if not 0.0 <= float(fidelity) <= 1.0:
        raise InputError(f"fidelity must be between 0 and 1, got {fidelity}.")
    if isinstance(restorer, (str, os.PathLike)):
        restorer = FaceRestorer.load(restorer)
    if not isinstance(restorer, FaceRestorer):
        raise InputError(f"restorer must be a FaceRestorer or a path to GFPGAN v1.4, got {type(restorer).__name__}.")
    batch = as_image_batch(images)
    timer = StageTimer(sync_cuda=batch.device.type == "cuda")
    with timer.stage("detect"):
        faces, detector_used, fallback = _find_faces(batch, faces, detector, min_confidence, max_faces)
    with timer.stage("align"):
        per_image, plan = _plan_faces(batch, faces, min_face_size, with_crops=fidelity > 0)
    with timer.stage("restore"):
        restored = restorer(torch.cat(plan.crops)) if plan.crops else None  # one model call for every face
    out = batch.clone()
    with timer.stage("paste"):
        if restored is not None:
            for i in range(batch.shape[0]):
                idx = [k for k, o in enumerate(plan.owners) if o == i]
                if idx:
                    mats = torch.stack([plan.matrices[k] for k in idx])
                    out[i] = paste_faces(batch[i], restored[idx], mats, strength=fidelity)
    for im in per_image:
        im.note = _note(im, fidelity, detector_used, min_confidence)
    report = FaceReport(images=per_image, detector=detector_used, restorer=restorer.name, fidelity=float(fidelity),
                        fallback_reason=fallback, seconds=timer.seconds)
    return out, report


def _find_faces(batch: torch.Tensor, faces: list[list[Face]] | None, detector: str, min_confidence: float,
                max_faces: int) -> tuple[list[list[Face]], str, str | None]:
    """(faces per image, detector used, why a fallback detector was used): detected, or the given ones checked."""
    if faces is None:
        finder = FaceDetector(detector, min_confidence=min_confidence, max_faces=max_faces)
        return finder(batch), finder.backend, finder.fallback_reason
    if len(faces) != batch.shape[0]:
        raise InputError(f"faces has {len(faces)} entries for a batch of {batch.shape[0]} images.")
    return [list(f)[:max_faces] if max_faces else list(f) for f in faces], "given", None


@dataclass
class _FacePlan:
    """Every usable face of a batch: its alignment matrix, the image it belongs to and (when restoring) its crop."""

    matrices: list[torch.Tensor] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    crops: list[torch.Tensor] = field(default_factory=list)


def _plan_faces(batch: torch.Tensor, faces: list[list[Face]], min_face_size: float,
                with_crops: bool) -> tuple[list[ImageFaces], _FacePlan]:
    """Skip faces too small or impossible to align (saying why), align the rest to the template."""
    per_image = [ImageFaces(index=i) for i in range(batch.shape[0])]
    plan = _FacePlan()
    for i, found in enumerate(faces):
        usable, mats = [], []
        for face in found:
            if face.size < min_face_size:
                why = f"smaller than min_face_size ({face.size:.0f} < {min_face_size:g} px)"
                per_image[i].skipped.append((face, why))
                continue
            try:
                mats.append(template_matrix(face))
            except InputError as err:
                per_image[i].skipped.append((face, str(err)))
                continue
            usable.append(face)
        per_image[i].restored = usable
        if usable:
            stacked = torch.stack(mats)
            plan.matrices.extend(stacked)
            plan.owners.extend([i] * len(usable))
            if with_crops:
                plan.crops.append(align_faces(batch[i], stacked))
    return per_image, plan


def _note(im: ImageFaces, fidelity: float, detector_used: str, min_confidence: float) -> str:
    """One line on what happened to one image's faces."""
    skipped = f"; {len(im.skipped)} skipped ({'; '.join(why for _, why in im.skipped)})" if im.skipped else ""
    if im.count and fidelity > 0:
        return f"{im.count} face(s) restored{skipped}"
    if im.count:
        return f"{im.count} face(s) found, left unchanged because fidelity is 0{skipped}"
    if im.skipped:
        return f"no face restored, image returned unchanged{skipped}"
    log.info("Face restore: image %d has no face; returned unchanged.", im.index)
    return f"no face found (detector {detector_used}, min confidence {min_confidence:g}); image returned unchanged"


def detect_only_report(images: torch.Tensor, detector: str = "auto", min_confidence: float = 0.5) -> str:
    """What restoring would have touched, when there is no face model: detection alone, one line."""
    from ..errors import ZImageError

    try:
        finder = FaceDetector(detector, min_confidence=min_confidence)
        found = sum(len(f) for f in finder(as_image_batch(images)))
    except (ZImageError, ImportError) as err:
        return f"faces not detected ({err}); not restored (no GFPGAN model)"
    noun = "face" if found == 1 else "faces"
    return (f"{found} {noun} found by {finder.backend}; not restored (no GFPGAN model: put GFPGANv1.4.pth in "
            "models/facerestore_models)")
