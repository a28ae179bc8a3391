"""The command line end to end on tiny models: make-tiny writes both layouts, generate writes PNG + timing report."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "zimage_core", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_make_tiny_then_generate_writes_png_and_timings(tmp_path):
    made = _run("make-tiny", "--layout", "comfy", "--out", str(tmp_path / "models"))
    assert made.returncode == 0, made.stderr
    files = json.loads(made.stdout)["files"]
    assert any(f.startswith("diffusion_models/") for f in files) and any(f.startswith("tokenizer/") for f in files)
    out = tmp_path / "img.png"
    gen = _run("generate", "--prompt", "a lighthouse at dusk", "--models", str(tmp_path / "models"), "--width", "80",
               "--height", "64", "--steps", "2", "--seed", "7", "--out", str(out))
    assert gen.returncode == 0, gen.stderr
    report = json.loads(gen.stdout)
    assert Image.open(out).size == (80, 64)
    assert {"text_encode", "denoise", "decode", "total"} <= set(report["timing_report"])
    assert report["seeds"] == [7]


def test_cli_errors_are_one_clear_line(tmp_path):
    bad = _run("generate", "--prompt", "x", "--models", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: Model folder not found")
