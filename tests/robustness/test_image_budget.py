"""Images from files and results have a pixel budget: decompression bombs, over-budget inputs and outputs, and
non-image content behind an image name get one-line errors before any pixel is decoded (peak RSS printed)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from zimage_core.errors import InputError
from zimage_core.images import MAX_PIXELS_ENV, load_image
from zimage_core.pipeline import upscale_route

REPO = Path(__file__).resolve().parents[2]


def write_sparse_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black grayscale PNG of any size, written row by row (a 20000² one is about 48 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"


def test_bombs_budgets_and_fake_images_in_a_fresh_process(tmp_path):
    """One child process loads every bad case; it must refuse each with a one-line InputError and its peak RSS
    must stay near its baseline (nothing decoded)."""
    bomb = write_sparse_png(tmp_path / "bomb.png", 20000, 20000)
    write_sparse_png(tmp_path / "big.png", 4096, 4096)
    (tmp_path / "eps.png").write_bytes(EPS)
    (tmp_path / "text.jpg").write_text("not an image")
    script = f"""
import json, resource, torch
from zimage_core.errors import InputError
from zimage_core.images import load_image
from zimage_core.pipeline import upscale_route
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak()
out = {{}}
for name in ("bomb.png", "eps.png", "text.jpg"):
    try:
        load_image({str(tmp_path)!r} + "/" + name); out[name] = "loaded"
    except InputError as err:
        out[name] = str(err)
out["refusals_mib"] = peak() - base
img = load_image({str(tmp_path)!r} + "/big.png")  # 4096² is within the input budget
loaded = peak()
try:
    upscale_route(img, scale=4); out["x4"] = "ran"
except InputError as err:
    out["x4"] = str(err)
out["x4_refusal_mib"] = peak() - loaded
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(MAX_PIXELS_ENV, None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "400 MP (a decompression bomb)" in out["bomb.png"] and "pixel budget" in out["bomb.png"], out
    assert "eps.png: its content is not PNG" in out["eps.png"], out  # never handed to Ghostscript
    assert "text.jpg: its content is not PNG" in out["text.jpg"], out
    assert str(tmp_path) not in json.dumps(out), out
    assert "16384×16384" in out["x4"] and "pixel budget" in out["x4"], out
    for key in ("bomb.png", "eps.png", "text.jpg", "x4"):
        assert "\n" not in out[key], out[key]
    assert out["refusals_mib"] < 32 and out["x4_refusal_mib"] < 32, out  # nothing was decoded or allocated
    print(f"\nimage budget: bomb (20000², {bomb.stat().st_size // 1024} KB), EPS-as-PNG, text-as-JPEG and a ×4 of "
          f"4096² refused; peak RSS growth {out['refusals_mib']:.1f} MiB for the file refusals, "
          f"{out['x4_refusal_mib']:.1f} MiB for the ×4 refusal")


def test_budget_is_overridable(tmp_path, monkeypatch):
    path = write_sparse_png(tmp_path / "small.png", 200, 100)
    big = write_sparse_png(tmp_path / "big.png", 9000, 9000)  # over the default budget, under Pillow's own limit
    with pytest.raises(InputError, match="9000×9000 = 81.0 MP, over the 67.1 MP pixel budget"):
        load_image(big)
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")
    with pytest.raises(InputError, match="200×100 = 0.0 MP, over the 0.0 MP pixel budget"):
        load_image(path)
    with pytest.raises(InputError, match="pixel budget"):
        upscale_route(torch.rand(1, 50, 50, 3), scale=4)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match="not a positive whole number"):
        load_image(path)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert load_image(path).shape == (1, 100, 200, 3)
