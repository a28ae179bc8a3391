"""Tiny random upscale models for the block tests, built once per test session (not a test module)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from zimage_core.testing.upscalers import save_tiny_esrgan, save_tiny_sd_x4_upscaler


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="zimage_blocks_models_"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def esrgan_file() -> Path:
    return save_tiny_esrgan(_root() / "tiny_RRDB_4x.safetensors")


@functools.cache
def sd_x4_folder() -> Path:
    return save_tiny_sd_x4_upscaler(_root() / "stable-diffusion-x4-upscaler")
