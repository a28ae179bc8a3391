"""Face detection: MediaPipe Tasks BlazeFace (shipped model file) with an OpenCV Haar fallback.

Why two backends: MediaPipe gives calibrated scores and five-ish landmarks and is the better detector, but it is an
optional dependency whose API has broken before; OpenCV's Haar cascades ship inside every cv2 < 5 wheel and are
always there. Both return the same `Face` records in pixel coordinates of the image they were given, one list per
batch item. Coordinates use the pixel-index convention (pixel i has its centre at i), like OpenCV's warpAffine.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import InputError, MissingDependencyError, ModelFileError, StageFailed
from ..images import as_image_batch

log = logging.getLogger(__name__)

DETECTORS = ("auto", "mediapipe", "haar")
BLAZEFACE_MODEL = Path(__file__).resolve().parents[1] / "assets" / "blaze_face_short_range.tflite"

# Landmark names are image-side: "eye_left" is the eye on the left of the picture (the subject's right eye).
LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth", "mouth_left", "mouth_right", "ear_left", "ear_right")
# BlazeFace keypoint order: right eye, left eye (subject's), nose tip, mouth centre, right ear, left ear.
_BLAZEFACE_KEYPOINTS = ("eye_left", "eye_right", "nose", "mouth", "ear_left", "ear_right")

# mediapipe 0.10.30-0.10.31 need no OpenCV (later versions pull in opencv-contrib-python, which replaces a host's cv2)
MEDIAPIPE_REQUIREMENT = "mediapipe>=0.10.14,<0.10.32"
HAAR_REQUIREMENT = "opencv-python-headless<5"  # the 5.0 headless wheel ships no Haar cascades


def _no_detector(reason: str) -> MissingDependencyError:
    """One sentence, one command: what is missing and how to install it into the Python that runs the pack."""
    return MissingDependencyError(f"No face detector can run here ({reason}); install MediaPipe with: "
                                  f"pip install \"{MEDIAPIPE_REQUIREMENT}\"")


def no_haar(reason: str) -> MissingDependencyError:
    return MissingDependencyError(f"The Haar face detector cannot run ({reason}); install OpenCV with its cascades "
                                  f"with: pip install \"{HAAR_REQUIREMENT}\"")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what MediaPipe's native code (LiteRT, absl) prints to the process's stderr while a detector starts or
    closes — 8-10 lines per run that no environment variable turns off. Only around creation, a warm-up detection
    and close (fd 2 is process-wide, so the window stays short); not at all when this logger is at DEBUG (-v)."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. pythonw): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class Face:
    """One detected face. `box` is (x0, y0, x1, y1) in pixels; `landmarks` maps LANDMARK_NAMES to (x, y) pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)
    detector: str = ""
    landmarks_estimated: bool = False  # True when the points were guessed from the box, not measured

    @property
    def size(self) -> float:
        """Face size in pixels (geometric mean of box width and height)."""
        x0, y0, x1, y1 = self.box
        return math.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))

    def scaled(self, sx: float, sy: float | None = None) -> Face:
        """The same face in an image resized by (sx, sy), e.g. detected before an upscale and restored after it."""
        sy = sx if sy is None else sy

        def pt(x: float, y: float) -> tuple[float, float]:
            # pixel-index convention: centres move as (x + 0.5) * s - 0.5
            return (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5

        x0, y0, x1, y1 = self.box
        return replace(
            self,
            box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy),
            landmarks={k: pt(*v) for k, v in self.landmarks.items()},
        )

    def as_dict(self) -> dict:
        """JSON-friendly form for reports and the HTTP API."""
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": {k: [round(v[0], 1), round(v[1], 1)] for k, v in self.landmarks.items()},
            "detector": self.detector,
            "landmarks_estimated": self.landmarks_estimated,
        }


# ----------------------------------------------------------------------------------------------------------------
# MediaPipe backend


class _MediaPipeBackend:
    """A MediaPipe Tasks FaceDetector on the shipped BlazeFace short-range model (one per confidence threshold)."""

    _cache: dict[float, _MediaPipeBackend] = {}
    _cache_lock = threading.Lock()

    def __init__(self, min_confidence: float):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        if not BLAZEFACE_MODEL.is_file():
            raise ModelFileError(f"The shipped BlazeFace model is missing: {BLAZEFACE_MODEL}. Reinstall the pack.")
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=BLAZEFACE_MODEL.read_bytes()),
            min_detection_confidence=float(min_confidence),
        )
        self._mp = mp
        with quiet_native_stderr():  # the first detection prints a one-time warning: take it here
            self._detector = vision.FaceDetector.create_from_options(options)
            self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8)))
        self._lock = threading.Lock()  # a Tasks detector in IMAGE mode is not re-entrant

    @classmethod
    def get(cls, min_confidence: float) -> _MediaPipeBackend:
        key = round(float(min_confidence), 4)
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key)
            return cls._cache[key]

    @classmethod
    def close_all(cls) -> None:
        with cls._cache_lock, quiet_native_stderr():
            for backend in cls._cache.values():
                try:
                    backend._detector.close()
                except Exception:  # closing at interpreter exit must never raise
                    pass
            cls._cache.clear()

    def detect(self, arr: np.ndarray) -> list[Face]:
        """Faces in one uint8 RGB (H, W, 3) array."""
        h, w = arr.shape[:2]
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(arr))
        with self._lock:
            result = self._detector.detect(image)
        faces = []
        for det in result.detections:
            bb = det.bounding_box
            x0, y0 = float(bb.origin_x), float(bb.origin_y)
            box = (x0, y0, x0 + float(bb.width), y0 + float(bb.height))
            score = float(det.categories[0].score) if det.categories else 0.0
            # keypoints are relative to the frame (edges at 0 and 1); convert to pixel-index coordinates
            points = {
                name: (kp.x * w - 0.5, kp.y * h - 0.5) for name, kp in zip(_BLAZEFACE_KEYPOINTS, det.keypoints)
            }
            faces.append(Face(box=box, score=score, landmarks=points, detector="mediapipe"))
        return faces


atexit.register(_MediaPipeBackend.close_all)


def _tiles(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (half the short side, stride a quarter) so faces too small for BlazeFace's 128 px
    input on the whole frame are still found; every face smaller than a quarter of the short side lies wholly
    inside at least one tile."""
    side = min(h, w) // 2
    stride = max(side // 2, 1)
    ys = list(range(0, max(h - side, 0) + 1, stride))
    xs = list(range(0, max(w - side, 0) + 1, stride))
    if ys[-1] != h - side:
        ys.append(h - side)
    if xs[-1] != w - side:
        xs.append(w - side)
    return [(y, x, y + side, x + side) for y in ys for x in xs]


# Faces found only in a tile must be confirmed at this score on a crop framing them the way BlazeFace likes: tiles zoom
# textures (suits, helmets, foliage) up to face scale, and measured false positives there scored 0.4-0.75 while
# real faces confirm at > 0.9.
TILE_CONFIRM_CONFIDENCE = 0.8


def _shift(face: Face, dx: float, dy: float) -> Face:
    x0, y0, x1, y1 = face.box
    return replace(
        face,
        box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy),
        landmarks={k: (px + dx, py + dy) for k, (px, py) in face.landmarks.items()},
    )


def _mediapipe_faces(backend: _MediaPipeBackend, arr: np.ndarray, tiled: bool, min_confidence: float) -> list[Face]:
    """Whole-frame detection, plus (for frames of 512 px and more) overlapping tiles for faces too small for
    BlazeFace's 128 px input, each tile-only face confirmed on a crop twice its size."""
    faces = backend.detect(arr)
    h, w = arr.shape[:2]
    if not tiled or min(h, w) < 512:
        return _suppress_duplicates(faces)
    candidates = []
    for y0, x0, y1, x1 in _tiles(h, w):
        for f in backend.detect(arr[y0:y1, x0:x1]):
            bx0, by0, bx1, by1 = f.box
            # a face cut by an inner tile edge is a partial detection; the whole face is in another tile
            if (bx0 <= 2 and x0 > 0) or (by0 <= 2 and y0 > 0):
                continue
            if (bx1 >= (x1 - x0) - 2 and x1 < w) or (by1 >= (y1 - y0) - 2 and y1 < h):
                continue
            candidates.append(_shift(f, x0, y0))
    threshold = max(min_confidence, TILE_CONFIRM_CONFIDENCE)
    for cand in _suppress_duplicates(candidates):
        if any(_overlap_of_smaller(cand.box, f.box) >= 0.5 for f in faces):
            continue
        bx0, by0, bx1, by1 = cand.box
        side, cx, cy = 2 * max(bx1 - bx0, by1 - by0), (bx0 + bx1) / 2, (by0 + by1) / 2
        cx0, cy0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        cx1, cy1 = min(w, int(cx + side / 2) + 1), min(h, int(cy + side / 2) + 1)
        confirmed = [
            _shift(f, cx0, cy0)
            for f in backend.detect(arr[cy0:cy1, cx0:cx1])
            if f.score >= threshold and _overlap_of_smaller(_shift(f, cx0, cy0).box, cand.box) >= 0.5
        ]
        if confirmed:
            faces.append(max(confirmed, key=lambda f: f.score))
    return _suppress_duplicates(faces)


def _suppress_duplicates(faces: list[Face], overlap: float = 0.5) -> list[Face]:
    """Greedy NMS on intersection-over-smaller-box, keeping the higher score."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(_overlap_of_smaller(f.box, k.box) < overlap for k in kept):
            kept.append(f)
    return kept


def _overlap_of_smaller(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# OpenCV Haar backend


def _mediapipe_available() -> str | None:
    """None if MediaPipe can run here, else the reason why not."""
    try:
        _MediaPipeBackend.get(0.5)
        return None
    except ImportError as err:
        return f"mediapipe is not importable: {err}"
    except Exception as err:  # broken install, missing model, API change
        return f"mediapipe failed to start: {type(err).__name__}: {str(err).strip().rstrip('.')}"


class FaceDetector:
    """Detects faces in image batches with the chosen backend.

    detector: 'auto' (MediaPipe, falling back to Haar when MediaPipe is missing or fails), 'mediapipe' or 'haar'.
    min_confidence: drop faces scoring below this (0-1). max_faces: keep at most this many per image, the largest
    first (0 = all). `backend` says which one actually ran; `fallback_reason` why 'auto' did not use MediaPipe.
    """

    def __init__(self, detector: str = "auto", *, min_confidence: float = 0.5, max_faces: int = 0, tiled: bool = True):
        if detector not in DETECTORS:
            raise InputError(f"Unknown face detector '{detector}'; choose one of {', '.join(DETECTORS)}.")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise InputError(f"min_confidence must be between 0 and 1, got {min_confidence}.")
        if int(max_faces) < 0:
            raise InputError(f"max_faces must be 0 (no limit) or more, got {max_faces}.")
        self.requested = detector
        self.min_confidence = float(min_confidence)
        self.max_faces = int(max_faces)
        self.tiled = tiled
        self.fallback_reason: str | None = None
        self.backend = self._resolve(detector)

    def _resolve(self, detector: str) -> str:
        if detector in ("auto", "mediapipe"):
            reason = _mediapipe_available()
            if reason is None:
                return "mediapipe"
            if detector == "mediapipe":
                raise MissingDependencyError(f"The MediaPipe face detector cannot run ({reason}); install it with: "
                                             f"pip install \"{MEDIAPIPE_REQUIREMENT}\"")
            self._use_haar_instead(reason)
            return "haar"
        self._haar()
        return "haar"

    def _use_haar_instead(self, reason: str) -> None:
        try:
            self._haar()
        except ImportError:
            raise _no_detector(reason) from None
        self.fallback_reason = reason
        log.warning("Face detection falls back to OpenCV Haar: %s.", reason)

    @staticmethod
    def _haar():
        try:  # OpenCV is optional: its backend module is imported only when Haar is wanted
            from .haar import HaarBackend

            return HaarBackend.get()
        except MissingDependencyError:
            raise
        except ImportError:
            raise no_haar("OpenCV (cv2) is not installed") from None

    def __call__(self, images: torch.Tensor) -> list[list[Face]]:
        """Faces per batch item, largest first, in pixel coordinates of each image."""
        batch = as_image_batch(images)
        arrays = batch.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        return [self._detect_one(arr) for arr in arrays]

    def _detect_one(self, arr: np.ndarray) -> list[Face]:
        faces: list[Face] | None = None
        if self.backend == "mediapipe":
            try:
                backend = _MediaPipeBackend.get(self.min_confidence)
                faces = _mediapipe_faces(backend, arr, self.tiled, self.min_confidence)
            except Exception as err:
                if self.requested == "mediapipe":
                    raise StageFailed(f"MediaPipe face detection failed: {type(err).__name__}: {err}") from err
                self._use_haar_instead(f"mediapipe failed while detecting ({type(err).__name__}: {err})")
                self.backend = "haar"
        if faces is None:
            faces = self._haar().detect(arr, self.min_confidence)
        faces = [f for f in faces if f.score >= self.min_confidence]
        faces.sort(key=lambda f: f.size, reverse=True)
        return faces[: self.max_faces] if self.max_faces else faces


def detect_faces(
    images: torch.Tensor, *, detector: str = "auto", min_confidence: float = 0.5, max_faces: int = 0
) -> list[list[Face]]:
    """Faces per batch item (see `FaceDetector`)."""
    return FaceDetector(detector, min_confidence=min_confidence, max_faces=max_faces)(images)
