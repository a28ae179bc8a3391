"""Packaging for the Comfy Registry and hand installs: pyproject, requirements.txt, licence, icon, publish action."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_requirements_txt_matches_pyproject_dependencies():
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    assert reqs == _pyproject()["project"]["dependencies"]


def test_runtime_dependencies_never_pin_torch_or_add_opencv():
    deps = _pyproject()["project"]["dependencies"]
    assert "torch" in deps  # listed, but with no version: ComfyUI's CUDA build must stay
    assert not any(d.startswith(("torch=", "torch>", "torch<", "torchvision")) for d in deps)
    assert not any("opencv" in d for d in deps)


def test_registry_metadata_is_complete():
    meta = _pyproject()
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"]
    assert meta["project"]["name"] and meta["project"]["version"] and meta["project"]["description"]
    assert (REPO / "LICENSE").read_text().startswith(("Apache License", "\n", " ")) and "Apache" in (
        REPO / "LICENSE").read_text()[:400]
    assert (REPO / "icon.png").is_file() and comfy["Icon"].endswith("/main/icon.png")
    publish = (REPO / ".github" / "workflows" / "publish.yml").read_text()
    assert "Comfy-Org/publish-node-action" in publish and "REGISTRY_ACCESS_TOKEN" in publish


def test_package_data_ships_configs_and_assets():
    data = _pyproject()["tool"]["setuptools"]["package-data"]["zimage_core"]
    assert "configs/*.json" in data and "assets/*" in data
    assert (REPO / "zimage_core" / "assets" / "blaze_face_short_range.tflite").is_file()
    assert len(list((REPO / "zimage_core" / "configs").glob("*.json"))) == 4
