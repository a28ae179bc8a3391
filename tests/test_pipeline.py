"""The signature route on an existing photo: block chain, face step, final resize, timing report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zimage_core.errors import InputError
from zimage_core.images import load_image
from zimage_core.pipeline import TIMING_STAGES, upscale_route, working_size

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


def test_route_without_weights_reports_every_stage_and_the_face_it_found():
    image = load_image(PHOTO)
    result = upscale_route(image, scale=2, out_width=500, out_height=400)
    assert result.image.shape == (1, 400, 500, 3) and torch.isfinite(result.image).all()
    assert set(result.timings) == set(TIMING_STAGES)
    assert result.timings["total"] == pytest.approx(sum(v for k, v in result.timings.items() if k != "total"))
    assert any("every block used LANCZOS" in n for n in result.notes)
    face_note = next(n for n in result.notes if n.startswith("faces:"))
    assert "1 found" in face_note and "not restored" in face_note


def test_route_keeps_aspect_when_one_side_is_given():
    result = upscale_route(torch.rand(1, 60, 90, 3), scale=2, out_width=360)
    assert result.image.shape == (1, 240, 360, 3)


def test_working_size_clamps_and_snaps():
    assert working_size(1024, 1024) == (768, 768)
    assert working_size(600, 700) == (608, 704)  # within 2 % of the requested aspect
    assert working_size(512, 600) == (512, 608)
    # clamping sides separately would stretch these: the shape is kept, longest side at 768
    assert working_size(2048, 512) == (768, 192)
    assert working_size(300, 2000) == (112, 768)
    assert working_size(200, 300) == (512, 768)  # small requests grow to the working range, shape kept
    with pytest.raises(InputError):
        upscale_route(torch.rand(1, 32, 32, 3), scale=2, out_width=100_000)
