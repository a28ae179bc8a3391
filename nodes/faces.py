"""Face restoration nodes: a GFPGAN loader (models/facerestore_models) and Face Restore (IMAGE → IMAGE)."""

from __future__ import annotations

import logging

import torch

from zimage_core.faces import DETECTORS, FaceRestorer, detect_only_report, restore_faces
from zimage_core.model_choice import AUTO, pick_face_model
from zimage_core.settings import RouteSettings

from . import host

log = logging.getLogger(__name__)

FACE_FOLDER = host.FACE_FOLDER
FACE_MODEL = "ZIMAGE_FACE_MODEL"
CATEGORY = "Z-Image/faces"


NONE = "none"


class ZImageFaceRestoreModelLoader:
    DESCRIPTION = (f"Loads GFPGAN v1.4 (GFPGANv1.4.pth or a .safetensors conversion) from models/{FACE_FOLDER}, "
                   "through spandrel (no basicsr/facexlib, nothing downloaded). auto picks the first GFPGAN file "
                   "installed; with none (or no file) Face Restore still finds the faces and reports them without "
                   "restoring. Other files are refused with a message saying what they are.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (FACE_MODEL,)
    RETURN_NAMES = ("face_model",)
    OUTPUT_TOOLTIPS = ("The face restorer, or nothing (connect to Face Restore either way).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        host.register_folder(FACE_FOLDER)
        return {"required": {
            "model_name": ([AUTO, NONE] + host.list_files(FACE_FOLDER), {
                "default": AUTO,
                "tooltip": f"GFPGAN v1.4 file in models/{FACE_FOLDER}; auto = the first GFPGAN file there (none "
                           "installed: faces are only detected and reported); none = detect and report only."}),
        }}

    def load(self, model_name: str) -> tuple:
        if model_name == AUTO:
            model_name, why = pick_face_model(host.list_files(FACE_FOLDER))
            log.info("Face model: %s", why)
        if model_name in (None, NONE):
            return (None,)
        return (FaceRestorer.load(host.full_path(FACE_FOLDER, model_name), device="cpu"),)


class ZImageFaceRestore:
    DESCRIPTION = ("Finds faces (MediaPipe BlazeFace, OpenCV Haar as fallback), aligns each to the 512 px FFHQ "
                   "template, restores it with GFPGAN v1.4 (all faces in one batched call) and pastes it back with a "
                   "soft mask. Images without faces come back unchanged; the log says per image what happened.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    OUTPUT_TOOLTIPS = ("The images with faces restored.",
                       "What happened per image (faces restored / skipped and why / none found).")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Image(s) to restore faces in (after upscaling works best)."}),
            "face_model": (FACE_MODEL, {"tooltip": "GFPGAN from Z-Image Face Restore Model Loader (when it has none, "
                                                   "faces are detected and reported, not restored)."}),
            "fidelity": RouteSettings.option("face_fidelity").widget(),
            "detector": (list(DETECTORS), {"default": "auto",
                                           "tooltip": "Face detector: auto (MediaPipe, else Haar), mediapipe, or "
                                                      "haar."}),
            "min_confidence": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "Detector score threshold; lower finds more (and more false) "
                                                    "faces."}),
            "max_faces": ("INT", {"default": 0, "min": 0, "max": 100,
                                  "tooltip": "Restore at most this many faces per image, largest first (0 = all)."}),
        }}

    def run(self, image: torch.Tensor, face_model: FaceRestorer | None, fidelity: float = 1.0,
            detector: str = "auto", min_confidence: float = 0.5, max_faces: int = 0) -> tuple:
        if face_model is None:
            with host.timed("faces"):
                text = detect_only_report(image, detector, min_confidence)
            log.info("Face restore: %s", text)
            return (image, text)
        with host.timed("faces"):
            device = host.compute_device()
            host.free_memory_for(face_model.model)
            face_model.to(device)
            try:
                out, report = restore_faces(image, face_model, fidelity=fidelity, detector=detector,
                                            min_confidence=min_confidence, max_faces=max_faces)
            finally:
                face_model.to("cpu")
        text = report.summary()
        log.info("Face restore: %s", text)
        return (out.cpu(), text)


NODES = {"ZImageFaceRestoreModelLoader": ZImageFaceRestoreModelLoader, "ZImageFaceRestore": ZImageFaceRestore}
NAMES = {"ZImageFaceRestoreModelLoader": "Z-Image Face Restore Model Loader",
         "ZImageFaceRestore": "Z-Image Face Restore (GFPGAN)"}
