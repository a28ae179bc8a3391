"""Faces: detection on a real photo (MediaPipe and Haar), FFHQ alignment, GFPGAN v1.4 restore + paste-back, and the
file-safety paths. The GFPGAN is random but full-size (spandrel only builds the real v1.4 shapes), so it is made
once per session and the restoring tests share one batched call."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zimage_core.errors import InputError, ModelFileError
from zimage_core.faces import Face, FaceDetector, FaceRestorer, detect_faces, restore_faces
from zimage_core.faces import detect as detect_mod
from zimage_core.faces.align import (
    FFHQ_TEMPLATE_512,
    TEMPLATE_POINTS,
    align_faces,
    invert_affine,
    similarity_transform,
    template_matrix,
    template_region,
    unalign,
    warp_affine,
)
from zimage_core.faces.restore import paste_faces, soft_mask
from zimage_core.images import as_image_batch, load_image
from zimage_core.testing.faces import save_random_gfpgan

REPO = Path(__file__).resolve().parents[1]

skimage_data = pytest.importorskip("skimage.data")

# Where the astronaut's face is in skimage's 512 px photo (measured once with both detectors, which agree to ~3 px).
EYES_512 = ((202.0, 102.0), (246.0, 104.0))
FACE_CENTRE_512 = (224.0, 125.0)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return as_image_batch(skimage_data.astronaut())


@pytest.fixture(scope="session")
def gfpgan_files(tmp_path_factory) -> dict:
    return save_random_gfpgan(tmp_path_factory.mktemp("gfpgan"))


@pytest.fixture(scope="session")
def restorer(gfpgan_files) -> FaceRestorer:
    return FaceRestorer.load(gfpgan_files["safetensors"], batch_size=4)


@pytest.fixture(scope="module")
def restored_batch(astronaut, restorer):
    """One restore call on three 400x300 crops of the photo: face inside, face cut by the left edge, flat gray."""
    inside = astronaut[:, 0:400, 80:380]
    cut = astronaut[:, 0:400, 200:500]
    flat = torch.full_like(inside, 0.5)
    batch = torch.cat([inside, cut, flat])
    calls, faces = restorer.calls, restorer.faces
    out, report = restore_faces(batch, restorer)
    return batch, out, report, restorer.calls - calls, restorer.faces - faces


def _near(p, q, tol):
    return abs(p[0] - q[0]) <= tol and abs(p[1] - q[1]) <= tol


# ------------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize("detector", ["mediapipe", "haar"])
@pytest.mark.parametrize("source", ["skimage", "example"])
def test_face_found_on_real_photo(detector, source, astronaut):
    image, s = (astronaut, 1.0) if source == "skimage" else (load_image(REPO / "examples" / "astronaut.png"), 0.75)
    faces = detect_faces(image, detector=detector)
    assert len(faces) == 1 and len(faces[0]) == 1
    face = faces[0][0]
    assert face.detector == detector and 0.5 <= face.score <= 1.0
    x0, y0, x1, y1 = face.box
    assert x0 < FACE_CENTRE_512[0] * s < x1 and y0 < FACE_CENTRE_512[1] * s < y1
    assert 60 * s < face.size < 130 * s
    # measured landmarks (both detectors find the eyes here), image-left eye first
    assert not face.landmarks_estimated
    assert _near(face.landmarks["eye_left"], [v * s for v in EYES_512[0]], 6)
    assert _near(face.landmarks["eye_right"], [v * s for v in EYES_512[1]], 6)
    if detector == "mediapipe":
        assert {"nose", "mouth", "ear_left", "ear_right"} <= set(face.landmarks)
        assert face.landmarks["eye_left"][1] < face.landmarks["nose"][1] < face.landmarks["mouth"][1]


@pytest.mark.parametrize("detector", ["mediapipe", "haar"])
def test_no_face_in_flat_or_noise_images(detector):
    flat = torch.full((1, 256, 320, 3), 0.4)
    noise = torch.rand((1, 256, 320, 3), generator=torch.Generator().manual_seed(0))
    assert detect_faces(torch.cat([flat, noise]), detector=detector) == [[], []]


def test_batch_two_faces_largest_first_and_max_faces(astronaut):
    big = astronaut
    small = torch.nn.functional.interpolate(astronaut.permute(0, 3, 1, 2), size=(384, 384), mode="area")
    canvas = torch.full((1, 512, 1024, 3), 0.5)
    canvas[:, :, :512] = big
    canvas[:, 64:448, 576:960] = small.permute(0, 2, 3, 1).flip(2)  # mirrored, 0.75x, on the right
    faces = FaceDetector("mediapipe")(torch.cat([canvas, canvas.flip(2)]))
    assert [len(f) for f in faces] == [2, 2]
    first, second = faces[0]
    assert first.size > second.size and first.box[0] < 512 < second.box[0]
    # the mirrored image finds the mirrored boxes
    assert abs((1023 - faces[1][0].box[2]) - first.box[0]) < 8
    assert len(FaceDetector("mediapipe", max_faces=1)(canvas)[0]) == 1
    assert FaceDetector("mediapipe", max_faces=1)(canvas)[0][0].size == pytest.approx(first.size)


def test_scaled_detection_matches_detection_at_that_size(astronaut):
    small = load_image(REPO / "examples" / "astronaut.png")  # the same photo at 384 px
    face = detect_faces(small, detector="mediapipe")[0][0].scaled(512 / 384)
    ref = detect_faces(astronaut, detector="mediapipe")[0][0]
    for name in ("eye_left", "eye_right", "nose", "mouth"):
        assert _near(face.landmarks[name], ref.landmarks[name], 5)


def test_detector_options_are_validated():
    with pytest.raises(InputError, match="choose one of"):
        FaceDetector("retinaface")
    with pytest.raises(InputError, match="min_confidence"):
        FaceDetector("haar", min_confidence=1.5)
    with pytest.raises(InputError, match="max_faces"):
        FaceDetector("haar", max_faces=-1)


def test_missing_packages_fall_back_or_say_what_to_install(monkeypatch, astronaut):
    monkeypatch.setattr(detect_mod._MediaPipeBackend, "_cache", {})
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # what an environment without mediapipe looks like
    with pytest.raises(ImportError, match='pip install "mediapipe>=0.10.14,<0.10.32"'):
        FaceDetector("mediapipe")
    auto = FaceDetector("auto")
    assert auto.backend == "haar" and "mediapipe" in auto.fallback_reason
    assert auto(astronaut)[0][0].detector == "haar"
    out, report = restore_faces(torch.full((1, 64, 64, 3), 0.5), _NeverCalled(), detector="auto")
    assert report.detector == "haar" and report.fallback_reason and "Haar" in report.summary()
    from zimage_core.faces.haar import HaarBackend

    monkeypatch.setattr(HaarBackend, "_instance", None)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError) as info:
        FaceDetector("auto")
    message = str(info.value)  # one sentence, one install command, no doubled punctuation
    assert message.startswith("No face detector can run here (mediapipe is not importable")
    assert message.count("pip install") == 1 and ".." not in message and "\n" not in message
    with pytest.raises(ImportError, match='pip install "opencv-python-headless<5"'):
        FaceDetector("haar")


class _NeverCalled(FaceRestorer):
    """A restorer for paths that must not reach the model (no face, fidelity 0)."""

    def __init__(self):
        self.name, self.calls, self.faces = "never-called", 0, 0

    def __call__(self, faces):
        raise AssertionError("the model must not be called")


# ------------------------------------------------------------------------------------------------- alignment


def test_similarity_transform_recovers_a_known_similarity():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(6, 5, 2, generator=g, dtype=torch.float64) * 40
    angle = torch.rand(6, generator=g, dtype=torch.float64) * 6.28
    scale = 0.3 + 3 * torch.rand(6, generator=g, dtype=torch.float64)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    truth = torch.cat([scale[:, None, None] * rot, torch.randn(6, 2, 1, generator=g, dtype=torch.float64) * 50], -1)
    dst = src @ truth[:, :, :2].transpose(-1, -2) + truth[:, None, :, 2]
    assert torch.allclose(similarity_transform(src, dst), truth, atol=1e-9)
    # a mirror image is not a similarity: the fit must stay a proper rotation (det > 0)
    mirrored = dst * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    assert (torch.linalg.det(similarity_transform(src, mirrored)[:, :, :2]) > 0).all()


def test_template_landmarks_map_to_themselves():
    five = dict(zip(["eye_left", "eye_right", "nose", "mouth_left", "mouth_right"], FFHQ_TEMPLATE_512))
    blaze = {k: TEMPLATE_POINTS[k] for k in ("eye_left", "eye_right", "nose", "mouth")}
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    image = torch.rand(1, 512, 512, 3, generator=torch.Generator().manual_seed(0))
    for points in (five, blaze):
        m = template_matrix(Face(box=(0, 0, 512, 512), score=1.0, landmarks=points))
        assert torch.allclose(m, identity, atol=1e-9)
        assert torch.allclose(align_faces(image[0], m[None])[0], image[0].permute(2, 0, 1), atol=1e-5)


def test_alignment_round_trip_reproduces_the_face(astronaut):
    face = detect_faces(astronaut, detector="mediapipe")[0][0]
    m = template_matrix(face)
    aligned = align_faces(astronaut[0], m[None])
    assert aligned.shape == (1, 3, 512, 512) and torch.isfinite(aligned).all()
    # the eyes land on the template's eyes
    for name in ("eye_left", "eye_right"):
        x, y = face.landmarks[name]
        mapped = m @ torch.tensor([x, y, 1.0], dtype=torch.float64)
        assert _near(mapped.tolist(), TEMPLATE_POINTS[name], 8)
    patch, (x0, y0, x1, y1) = unalign(aligned[0], m, astronaut.shape[1:3])
    assert patch.shape == (3, y1 - y0, x1 - x0)
    fx0, fy0, fx1, fy1 = (int(v) for v in face.box)
    diff = (patch.permute(1, 2, 0) - astronaut[0, y0:y1, x0:x1])[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0].abs()
    assert diff.mean() < 0.015 and diff.quantile(0.99) < 0.12


def test_warp_shrink_is_antialiased():
    # a 1-px checkerboard shrunk 4x must come out as flat gray, not as an aliasing pattern
    yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    checker = ((yy + xx) % 2).float()[None].expand(3, -1, -1)
    quarter = torch.tensor([[0.25, 0, 0], [0, 0.25, 0]], dtype=torch.float64)
    small = warp_affine(checker, quarter, (64, 64))
    inner = (slice(None), slice(2, -2), slice(2, -2))  # the outermost pixels also see the zero padding
    assert small.shape == (3, 64, 64) and (small[inner] - 0.5).abs().max() < 0.02
    assert (warp_affine(checker, quarter, (64, 64), antialias=False)[inner] - 0.5).abs().max() > 0.3


def test_unalign_at_the_border_gives_a_clipped_patch(astronaut):
    face = detect_faces(astronaut[:, :, 200:], detector="mediapipe")[0][0]  # face cut by the left edge
    m = template_matrix(face)
    x0, y0, x1, y1 = template_region(m, (512, 312))
    assert x0 == 0 and 0 <= y0 < y1 <= 512 and x1 <= 312
    patch, region = unalign(torch.rand(3, 512, 512), m, (512, 312))
    assert region == (x0, y0, x1, y1) and patch.shape == (3, y1 - y0, x1 - x0)
    # the inverse really is the inverse
    assert torch.allclose(invert_affine(invert_affine(m)), m, atol=1e-9)


# ------------------------------------------------------------------------------------------------- restoring


def test_both_file_formats_load_as_gfpgan(gfpgan_files, restorer):
    from_pth = FaceRestorer.load(gfpgan_files["pth"])
    assert type(restorer.model).__name__ == type(from_pth.model).__name__ == "GFPGANv1Clean"
    assert sum(p.numel() for p in from_pth.model.parameters()) == 86_444_252  # the real v1.4 size
    a, b = restorer.model.state_dict(), from_pth.model.state_dict()
    assert a.keys() == b.keys()
    for key in ("conv_body_first.weight", "stylegan_decoder.to_rgbs.6.modulated_conv.weight", "final_linear.bias"):
        assert a[key].dtype == torch.float32  # the float16 .safetensors copy was upcast
        assert torch.allclose(a[key], b[key], atol=2e-3, rtol=1e-3)


def test_restore_changes_only_the_face_regions(restored_batch):
    batch, out, report, calls, faces = restored_batch
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert report.faces_per_image == [1, 1, 0] and report.detector == "mediapipe"
    assert calls == 1 and faces == 2  # both faces went through the model in one batched call
    for i in (0, 1):
        face = report.images[i].restored[0]
        x0, y0, x1, y1 = template_region(template_matrix(face), batch.shape[1:3])
        outside = torch.ones(batch.shape[1:3], dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(out[i][outside], batch[i][outside])  # far from the face: bit-identical
        fx0, fy0, fx1, fy1 = (max(0, int(v)) for v in face.box)
        assert (out[i, fy0:fy1, fx0:fx1] - batch[i, fy0:fy1, fx0:fx1]).abs().mean() > 0.05
    # the soft mask: the change fades towards the region's edge instead of stopping at a hard border
    face = report.images[0].restored[0]
    x0, y0, x1, y1 = template_region(template_matrix(face), batch.shape[1:3])
    change = (out[0] - batch[0]).abs().mean(-1)
    cy = (y0 + y1) // 2
    assert change[cy, x0 + 2] < 0.01 < change[cy, (x0 + x1) // 2]


def test_face_cut_by_the_border_is_restored_without_size_errors(restored_batch):
    batch, out, report, _, _ = restored_batch
    face = report.images[1].restored[0]
    assert face.box[0] <= 1  # really at the border
    assert out[1].shape == batch[1].shape
    x0, _, x1, _ = template_region(template_matrix(face), batch.shape[1:3])
    assert x0 == 0 and x1 < batch.shape[2]


def test_image_without_faces_comes_back_unchanged_and_reported(restored_batch):
    batch, out, report, _, _ = restored_batch
    assert torch.equal(out[2], batch[2])
    assert report.images[2].count == 0
    assert "no face found" in report.images[2].note and "unchanged" in report.images[2].note
    assert "image 2: no face found" in report.summary()
    assert report.as_dict()["faces_per_image"] == [1, 1, 0]


def test_fidelity_zero_returns_the_input_and_skips_the_model(astronaut):
    out, report = restore_faces(astronaut, _NeverCalled(), fidelity=0.0)
    assert torch.equal(out, astronaut)
    assert report.faces_per_image == [1] and "fidelity is 0" in report.images[0].note


def test_fidelity_blends_linearly_between_original_and_restored(astronaut):
    face = detect_faces(astronaut, detector="mediapipe")[0][0]
    m = template_matrix(face)[None]
    restored = torch.zeros(1, 3, 512, 512)
    restored[:, 0] = 1.0  # a pure red "restored" face
    image = astronaut[0]
    full, none, half = (paste_faces(image, restored, m, strength=s) for s in (1.0, 0.0, 0.5))
    assert torch.equal(none, image)
    assert torch.allclose(half, (full + none) / 2, atol=1e-5)
    cx, cy = (int(v) for v in face.landmarks["nose"])
    assert full[cy, cx, 0] > 0.99 and full[cy, cx, 1] < 0.01  # mask is ~1 in the middle of the face
    assert soft_mask(512)[0, 0] < 1e-3 and soft_mask(512)[256, 256] > 0.999


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 3, 5, 3), (1, 16, 600, 3)])
def test_degenerate_images_come_back_unchanged(shape):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    out, report = restore_faces(images, _NeverCalled())
    assert torch.equal(out, images) and report.faces_per_image == [0] * shape[0]


def test_tiny_faces_are_skipped_and_reported(astronaut):
    small = torch.nn.functional.interpolate(astronaut.permute(0, 3, 1, 2), size=(128, 128), mode="area")
    out, report = restore_faces(small.permute(0, 2, 3, 1), _NeverCalled(), min_face_size=40, detector="mediapipe")
    assert report.faces_per_image == [0] and len(report.images[0].skipped) == 1
    assert "min_face_size" in report.images[0].note and "unchanged" in report.images[0].note


def test_restore_arguments_are_validated(astronaut, restorer):
    with pytest.raises(InputError, match="fidelity"):
        restore_faces(astronaut, restorer, fidelity=1.5)
    with pytest.raises(InputError, match="FaceRestorer"):
        restore_faces(astronaut, object())
    with pytest.raises(InputError, match="float16"):
        FaceRestorer(restorer.descriptor, dtype=torch.float16)
    with pytest.raises(InputError, match="entries"):
        restore_faces(astronaut, restorer, faces=[[], []])


# ------------------------------------------------------------------------------------------------- file safety


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    legacy, zipped = tmp_path / "GFPGANv1.4.pth", tmp_path / "GFPGANv1.4-zip.pth"
    with open(legacy, "wb") as fh:
        pickle.dump({"params_ema": {"x": _RunsCode(marker)}}, fh, protocol=2)
    torch.save({"params_ema": _RunsCode(marker)}, zipped)
    for path in (legacy, zipped):
        with pytest.raises(ModelFileError, match=path.name):
            FaceRestorer.load(path)
    assert not marker.exists()


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "GFPGANv1.4.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    whole, truncated = tmp_path / "whole.safetensors", tmp_path / "GFPGANv1.4.safetensors"
    save_file({"toRGB.0.weight": torch.zeros(3, 64, 1, 1), "final_linear.weight": torch.zeros(512, 512)}, str(whole))
    truncated.write_bytes(whole.read_bytes()[:100_000])  # a download cut short
    for path in (junk, truncated, tmp_path / "missing.pth"):
        with pytest.raises(ModelFileError, match=path.name):
            FaceRestorer.load(path)


def test_models_that_are_not_gfpgan_v14_are_refused(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "not_a_face_model.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ModelFileError, match=r"not_a_face_model.safetensors.*GFPGAN v1\.4"):
        FaceRestorer.load(other)
    # GFPGAN's keys with the wrong shapes (another version / a shrunken model): a clear message, no traceback soup
    wrong = tmp_path / "GFPGANv1.2-odd.safetensors"
    save_file({"toRGB.0.weight": torch.zeros(3, 8, 1, 1), "stylegan_decoder.style_mlp.1.weight": torch.zeros(8, 8)},
              str(wrong))
    with pytest.raises(ModelFileError, match=r"GFPGANv1.2-odd.safetensors looks like GFPGAN but .*v1\.4"):
        FaceRestorer.load(wrong)
