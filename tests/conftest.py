"""Shared test setup: offline, CPU, few threads; paths to optional shared test data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflows"))  # pack_import (the pack as ComfyUI loads it) and the workflow tables
SHARED_TOKENIZER = REPO.parent / "shared" / "testdata" / "qwen_tokenizer"


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """The real Qwen tokenizer files from ../shared (skips cleanly on a user's fresh clone without them)."""
    if not (SHARED_TOKENIZER / "tokenizer.json").is_file() and not (SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip("../shared/testdata/qwen_tokenizer is not present (only in the team checkout)")
    return SHARED_TOKENIZER


@pytest.fixture(scope="session")
def tokenizer_source() -> Path | None:
    """Real Qwen tokenizer files when the team checkout has them, else None (a tiny BPE is trained offline)."""
    return SHARED_TOKENIZER if (SHARED_TOKENIZER / "vocab.json").is_file() else None


@pytest.fixture(scope="module")
def dit() -> torch.nn.Module:
    """A tiny in-process Z-Image transformer (seed 0): the guidance tests' model."""
    from zimage_core.testing import tiny_transformer

    return tiny_transformer(seed=0)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer_source) -> dict[str, Path]:
    """The same tiny random models (seed 0) written once per session in both layouts users have."""
    from zimage_core.testing import save_tiny_models

    root = tmp_path_factory.mktemp("tiny_models")
    return {layout: save_tiny_models(root / layout, layout, tokenizer_source=tokenizer_source)
            for layout in ("comfy", "diffusers")}


@pytest.fixture(scope="session")
def tiny_bundle(tiny_dirs):
    """A loaded tiny bundle (ComfyUI layout, CPU, fp32), shared by tests that only need working models."""
    from zimage_core.models import load_models

    return load_models(tiny_dirs["comfy"], device="cpu", dtype="fp32")
