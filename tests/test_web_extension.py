"""Runs the front-end extension's own tests (pure preset/snapping/style logic) with Node, when Node is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"
WEB_TESTS = REPO / "tests" / "web"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_web_extension_unit_tests_pass():
    # web/*.js are ES modules with no package.json next to them (web/ ships only browser files): let Node detect it
    run = subprocess.run(["node", "--experimental-detect-module", "--test", str(WEB_TESTS)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout


def test_extension_files_are_plain_es_modules():
    """No build step, no dependencies: every .js the browser loads imports only ComfyUI's app or our own files."""
    import re

    targets = [(js.name, t) for js in WEB.glob("*.js")
               for t in re.findall(r"^import[^;]*?from\s+[\"']([^\"']+)[\"']", js.read_text(), flags=re.M | re.S)]
    assert targets, "no imports found: the pattern is broken"
    for name, target in targets:
        assert target.startswith(("./", "../../scripts/")), f"{name} imports {target}"


def test_web_folder_ships_only_what_the_browser_loads():
    """ComfyUI serves every file under WEB_DIRECTORY and runs every .js in it: only the extension's modules."""
    shipped = sorted(p.relative_to(WEB).as_posix() for p in WEB.rglob("*") if p.is_file())
    assert shipped == ["zimage.js", "zimage_presets.js"], shipped
