"""The command line against bad output paths, failing writes, bad devices and non-finite numbers: one `error:`
line and exit 2, found before any model loads, and never a partial file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "examples" / "astronaut.png"


def run(*args: str, preexec=None, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "zimage_core", *args], capture_output=True, text=True, env=env,
                          timeout=300, preexec_fn=preexec, cwd=cwd or REPO)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_bad_output_paths_are_refused_before_any_work(tmp_path):
    folder = tmp_path / "exists"
    folder.mkdir()
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    cases = [(str(folder), "is a folder"), ("", "output path is empty"), (str(tmp_path / "x.tga"), ".tga"),
             (str(tmp_path / "noext"), "(none)")]
    if os.geteuid() != 0:  # root may write anywhere
        cases.append((str(readonly / "x.png"), "cannot write to"))
    try:
        for out, needle in cases:
            # a model folder that does not exist: the output check must come first
            proc = run("generate", "--prompt", "x", "--models", str(tmp_path / "no-models"), "--out", out)
            one_error_line(proc, needle)
        one_error_line(run("upscale", str(PHOTO), "--out", str(folder), "--scale", "1"), "is a folder")
    finally:
        readonly.chmod(0o755)


def test_a_write_that_fails_midway_is_one_line_and_leaves_nothing(tmp_path):
    """A real failing write: the file-size limit (RLIMIT_FSIZE) makes the PNG write fail with EFBIG."""
    import resource
    import signal

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with an error instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    out = tmp_path / "big.png"
    proc = run("upscale", str(PHOTO), "--out", str(out), "--scale", "1", preexec=small_files)
    one_error_line(proc, "could not write", "big.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial file, no temp file


@pytest.mark.parametrize("args,needle", [
    (("--shift", "nan"), "--shift must be a finite number"),
    (("--shift", "inf"), "--shift must be a finite number"),
    (("--device", "foo"), "--device 'foo' is not a device"),
    (("--width", "1000"), "width=1000 is not a multiple of 16"),
    (("--prompt", "cat \udcff"), "--prompt contains something that is not text"),
])
def test_bad_settings_fail_fast(tmp_path, args, needle):
    base = {"--prompt": "x", "--models": str(tmp_path / "no-models"), "--out": str(tmp_path / "o.png")}
    argv = ["generate"]
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    proc = run(*argv, *args)
    one_error_line(proc, needle)
    assert not (tmp_path / "o.png").exists()


def test_cuda_device_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run("upscale", str(PHOTO), "--out", str(tmp_path / "o.png"), "--device", "cuda")
    one_error_line(proc, "no CUDA GPU is visible")


FAIL_FAST_PROBE = """
import json, sys, time
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and str(args[0]).endswith(
    (".safetensors", ".gguf", ".pth")) else None)
t0 = time.perf_counter()
from zimage_core.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - t0, "opened": opened,
                  "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("args,needle", [
    (("--width", "1000"), "--width=1000 is not a multiple of 16"),
    (("--steps", "0"), "--steps=0 is out of range"),
    (("--nag-scale", "50"), "--nag-scale=50 is out of range"),
    (("--out", "{tmp}"), "is a folder"),
    (("--out", "{tmp}/x.gif"), ".gif is not an image format"),
    (("--aspect", "16:9", "--width", "512"), "--aspect sets the size"),
    (("--lora", "{tmp}/missing.safetensors:0.5"), "missing.safetensors: not found"),
])
def test_bad_input_fails_before_torch_or_any_weight_is_touched(tiny_dirs, tmp_path, args, needle):
    """With real model files present: refused with one line, nothing read from a model file and torch not even
    imported (the seconds are printed for the record; a test never races the clock)."""
    argv = ["generate", "--prompt", "a cat", "--models", str(tiny_dirs["comfy"]), "--out", str(tmp_path / "o.png"),
            *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", FAIL_FAST_PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert result["code"] == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert result["opened"] == [] and result["torch"] is False, result
    print(f"{' '.join(args)}: refused in {result['seconds'] * 1000:.0f} ms")
