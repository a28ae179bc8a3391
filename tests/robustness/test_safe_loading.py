"""Weights only from safetensors or weights_only pickles; request file names stay inside the model folders."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from zimage_core.errors import ModelFileError
from zimage_core.weights import load_state_dict, resolve_inside

MARKER = "zimage_pwned_marker"


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # would create a file if the pickle were executed


def test_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / MARKER
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"weight": _Evil(str(marker))}, fh)
    with pytest.raises(ModelFileError, match="evil.pth was refused"):
        load_state_dict(evil)
    assert not marker.exists()


def test_plain_tensor_pickle_and_nested_checkpoints_load(tmp_path):
    torch.save({"params_ema": {"w": torch.ones(2)}}, tmp_path / "ok.pth")
    assert torch.equal(load_state_dict(tmp_path / "ok.pth")["w"], torch.ones(2))


def test_unknown_and_unsupported_suffixes(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelFileError, match="GGUF"):
        load_state_dict(tmp_path / "m.gguf")
    (tmp_path / "m.xyz").write_bytes(b"0")
    with pytest.raises(ModelFileError, match="unsupported weight file type"):
        load_state_dict(tmp_path / "m.xyz")
    with pytest.raises(ModelFileError, match="not found"):
        load_state_dict(tmp_path / "missing.safetensors")


def test_corrupt_safetensors_names_the_file(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelFileError, match="broken.safetensors"):
        load_state_dict(bad)


def test_request_file_names_cannot_escape_model_folders(tmp_path):
    root = tmp_path / "upscale_models"
    root.mkdir()
    (root / "good.pth").write_bytes(b"x")
    (root / "sub").mkdir()
    (root / "sub" / "nested.pth").write_bytes(b"x")
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    os.symlink(secret, root / "link.pth")
    assert resolve_inside("good.pth", [root]) == (root / "good.pth").resolve()
    assert resolve_inside("sub/nested.pth", [root]).name == "nested.pth"
    for name, why in (("../secret.txt", "outside"), (str(secret), "absolute"), ("link.pth", "outside"),
                      ("sub/../../secret.txt", "outside"), ("", "Empty"), ("nope.pth", "not found")):
        with pytest.raises(ModelFileError, match=why):
            resolve_inside(name, [root])
