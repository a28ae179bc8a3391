"""The OpenCV Haar-cascade face detector: the fallback where MediaPipe has no wheel (Linux ARM, Intel macOS) and
the host has OpenCV with its cascades."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from .detect import Face, no_haar

# Where the landmarks sit inside a Haar frontal-face box (fractions of the box), used when the eye cascade fails.
BOX_LANDMARKS = {"eye_left": (0.30, 0.40), "eye_right": (0.70, 0.40), "nose": (0.50, 0.62), "mouth": (0.50, 0.80)}


class HaarBackend:
    """OpenCV's frontal-face cascade, plus the eye cascade for two measured landmarks."""

    _instance: HaarBackend | None = None
    _instance_lock = threading.Lock()
    MAX_SIDE = 1024  # Haar cost grows with pixels; faces stay findable after this downscale

    def __init__(self):
        import cv2

        root = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
        face_xml, eye_xml = root / "haarcascade_frontalface_default.xml", root / "haarcascade_eye.xml"
        if not face_xml.is_file():
            raise no_haar(f"OpenCV {cv2.__version__} ships no Haar cascades")
        self._cv2 = cv2
        self._face = cv2.CascadeClassifier(str(face_xml))
        self._eye = cv2.CascadeClassifier(str(eye_xml)) if eye_xml.is_file() else None
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> HaarBackend:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def detect(self, arr: np.ndarray, min_confidence: float) -> list[Face]:
        cv2 = self._cv2
        h, w = arr.shape[:2]
        scale = min(1.0, self.MAX_SIDE / max(h, w))
        gray = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(24, min(gray.shape) // 32)
        with self._lock:
            boxes, _, weights = self._face.detectMultiScale3(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side), outputRejectLevels=True
            )
        faces = []
        for box, weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            x, y, bw, bh = (int(v) for v in box)
            # Haar has no calibrated confidence; squash the final-stage weight (0 -> 0.5, 7 -> ~1).
            score = 1.0 / (1.0 + math.exp(-float(weight)))
            if score < min_confidence:
                continue
            eyes = self._eyes(gray, x, y, bw, bh)
            if eyes is not None:
                points, estimated = eyes, False
            else:
                points = {k: (x + fx * bw, y + fy * bh) for k, (fx, fy) in BOX_LANDMARKS.items()}
                estimated = True
            inv = 1.0 / scale
            faces.append(
                Face(
                    box=(x * inv, y * inv, (x + bw) * inv, (y + bh) * inv),
                    score=score,
                    landmarks={k: ((px + 0.5) * inv - 0.5, (py + 0.5) * inv - 0.5) for k, (px, py) in points.items()},
                    detector="haar",
                    landmarks_estimated=estimated,
                )
            )
        return faces

    def _eyes(self, gray: np.ndarray, x: int, y: int, bw: int, bh: int) -> dict[str, tuple[float, float]] | None:
        """Both eye centres from the eye cascade in the upper part of the face box, or None if not both found."""
        if self._eye is None:
            return None
        roi = gray[y : y + int(bh * 0.62), x : x + bw]
        with self._lock:
            found = self._eye.detectMultiScale(roi, scaleFactor=1.1, minNeighbors=3, minSize=(bw // 8, bw // 8))
        best: dict[str, tuple[float, float, float]] = {}
        for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4).tolist():
            cx, cy = x + ex + ew / 2 - 0.5, y + ey + eh / 2 - 0.5
            if not (y + 0.15 * bh < cy < y + 0.55 * bh):
                continue
            side = "eye_left" if cx < x + bw / 2 else "eye_right"
            if side not in best or ew > best[side][2]:
                best[side] = (cx, cy, ew)
        if len(best) < 2 or best["eye_right"][0] - best["eye_left"][0] < 0.2 * bw:
            return None
        return {k: (v[0], v[1]) for k, v in best.items()}


# ----------------------------------------------------------------------------------------------------------------
# Public API
