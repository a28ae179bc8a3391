"""The Python presets (CLI --aspect/--style, HTTP aspect/style) are exactly the front end's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zimage_core.errors import InputError
from zimage_core.presets import ASPECTS_1K, ASPECTS_2K, STYLES, apply_style, aspect_size

JS = (Path(__file__).resolve().parents[1] / "web" / "zimage_presets.js").read_text()


def test_aspect_presets_match_the_front_end():
    rows = re.findall(r"\{ cls: (\d+), ratio: \"([\d:]+)\", width: (\d+), height: (\d+) \}", JS)
    assert len(rows) == 18
    js = {(int(c), r): (int(w), int(h)) for c, r, w, h in rows}
    py = {**{(1024, r): s for r, s in ASPECTS_1K.items()}, **{(2048, r): s for r, s in ASPECTS_2K.items()}}
    assert js == py
    for w, h in py.values():
        assert w % 16 == 0 and h % 16 == 0


def test_style_presets_match_the_front_end():
    block = JS[JS.index("export const STYLE_PRESETS"):JS.index("});", JS.index("export const STYLE_PRESETS"))]
    js = dict(re.findall(r"^\s+\"?([\w\- ]+?)\"?: \"([^\"]*)\",$", block, flags=re.M))
    js["none"] = ""  # written as [STYLE_NONE]: "" in the JS
    assert js == STYLES


def test_apply_style_replaces_and_removes_suffixes():
    once = apply_style("a cat, ", "anime")
    assert once == "a cat, " + STYLES["anime"]
    assert apply_style(once, "anime") == once
    assert apply_style(once, "watercolor") == "a cat, " + STYLES["watercolor"]
    assert apply_style(once, "none") == "a cat"
    assert aspect_size("16:9") == (1360, 768) and aspect_size("16:9-2k") == (2736, 1536)
    with pytest.raises(InputError, match="unknown style"):
        apply_style("x", "vaporwave")
