"""The signature route on an existing photo: block chain, face step, final resize, timing report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zimage_core.errors import InputError
from zimage_core.images import load_image
from zimage_core.pipeline import plan_route, upscale_route, working_size

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


def test_route_without_weights_reports_the_stages_that_ran_and_the_face_it_found():
    image = load_image(PHOTO)
    result = upscale_route(image, scale=2, out_width=500, out_height=400)
    assert result.image.shape == (1, 400, 500, 3) and torch.isfinite(result.image).all()
    # no generation, and no heavy blocks to stitch: those stages are absent, not 0.0
    assert list(result.timings) == ["slicing", "saliency", "classification", "upscaling", "faces", "resize", "total"]
    assert result.timings["total"] == pytest.approx(sum(v for k, v in result.timings.items() if k != "total"))
    assert any("every block used LANCZOS" in n for n in result.notes)
    face_note = next(n for n in result.notes if n.startswith("faces:"))
    assert "1 face found" in face_note and "not restored" in face_note


def test_route_keeps_aspect_when_one_side_is_given():
    result = upscale_route(torch.rand(1, 60, 90, 3), scale=2, out_width=360)
    assert result.image.shape == (1, 240, 360, 3)


def test_route_plan_generates_small_requests_as_asked_and_keeps_the_shape_of_large_ones():
    # both sides within the working size: generated as asked, no upscale-then-shrink round trip
    for w, h in ((128, 128), (608, 704), (768, 512), (64, 768)):
        plan = plan_route(w, h)
        assert (plan.work_width, plan.work_height, plan.upscale) == (w, h, False)
    # larger: the requested shape, longest side at 768, multiples of 16
    assert working_size(1024, 1024) == (768, 768)
    assert working_size(2048, 512) == (768, 192)
    assert working_size(2048, 1152) == (768, 432)
    assert working_size(1024, 768) == (768, 576)
    assert plan_route(1024, 1024).upscale
    # a shape too long for 768 keeps a 64 px short side (the sampler's minimum), never below, never past the request
    assert working_size(1536, 112) == (880, 64)
    assert working_size(2048, 64) == (2048, 64) and not plan_route(2048, 64).upscale
    with pytest.raises(InputError, match="width=8192: the aspect ratio 8192:64"):
        plan_route(8192, 64)
    with pytest.raises(InputError):
        upscale_route(torch.rand(1, 32, 32, 3), scale=2, out_width=100_000)
