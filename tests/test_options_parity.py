"""One options model, four interfaces: every declared option appears in the CLI (flag, type, choices, help with its
default), in the HTTP parser (accepted at its limits, refused past them with the option as the error's field) and,
where it is a node input, in the node's INPUT_TYPES with the same range, step and default."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from zimage_core.cli import build_parser, flag
from zimage_core.job import all_options
from zimage_core.options import Option
from zimage_core.service.request import (KNOWN_FIELDS, OPTIONS, ROUTE_OPTIONS, SERVER_OPTIONS, Limits,
                                         RequestError, parse_request)
from zimage_core.settings import MemorySettings, RouteSettings

from pack_import import load_pack

EVERY_OPTION = [*all_options(), *RouteSettings.options()]

# node class -> {input name: option name}: the node inputs that are options of the model
NODE_INPUTS = {
    "ZImageSampler": {"width": "width", "height": "height", "steps": "steps", "seed": "seed", "shift": "shift",
                      "denoise": "strength", "batch_size": "batch", "mask_grow": "mask_grow",
                      "mask_feather": "mask_feather"},
    "ZImageSchedule": {"steps": "steps", "shift": "shift", "denoise": "strength"},
    "ZImageEncode": {"hidden_layer": "hidden_layer", "long_prompt_mode": "long_prompt_mode",
                     "max_tokens": "max_tokens"},
    "ZImageBlockSlicer": {"block_size": "block", "overlap": "overlap"},
    "ZImageApplyControl": {"scale": "control_scale", "start": "control_start", "end": "control_end"},
    "ZImageCanny": {"low": "control_canny_low", "high": "control_canny_high"},
    "ZImageFaceRestore": {"fidelity": "face_fidelity"},
    **{node: {name[len(prefix) + 1:]: name for name in (o.name for o in EVERY_OPTION) if name.startswith(prefix + "_")}
       for node, prefix in (("ZImageNAG", "nag"), ("ZImageSLG", "slg"), ("ZImageDyPE", "dype"), ("ZImageCFG", "cfg"),
                            ("ZImageSeedDiversity", "diversity"))},
}
# Options that are not node inputs, and why: the negative prompt is a second Qwen3 Encode; style and aspect are
# presets of the front end (web/zimage_presets.js, kept equal by test_presets); hi-res passes are chained samplers in
# a graph; weights is the loader's weight_dtype and the memory mode is ComfyUI's own manager; the route's scale and
# heavy ratio are node widgets with whole-number / -1 = auto conventions; the control type is a node of its own (Canny).
NOT_NODE_INPUTS = {"negative_prompt", "style", "aspect", "hires_upscale", "hires_resampler", "weights", "memory",
                   "resident_blocks", "scale", "heavy_ratio", "control_type"}


def _generate_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["generate"]


def test_every_option_is_documented_with_its_default_and_range():
    names = [o.name for o in EVERY_OPTION]
    assert len(names) == len(set(names)), "an option name is declared twice"
    for option in EVERY_OPTION:
        text = option.describe()
        assert len(option.help) > 15 and "default" in text, option.name
        if option.choices is None and option.type in (int, float):
            assert option.min is not None and option.max is not None, f"{option.name} has no range"


def test_every_option_is_a_cli_flag_with_its_type_choices_and_help():
    parser = _generate_parser()
    actions = {a.dest: a for a in parser._actions}
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    help_text = out.getvalue()
    assert help_text.startswith("usage: zimage generate")
    for option in EVERY_OPTION:
        action = actions[option.name]
        assert flag(option.name) in action.option_strings and flag(option.name) in help_text
        assert action.help == option.describe()
        assert action.type is {int: int, float: float}.get(option.type, str)
        if option.choices and "" not in option.choices:
            assert tuple(action.choices) == option.choices
    memory = {a.dest: a for a in next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
              .choices["serve"]._actions}
    assert all(memory[o.name].help == o.describe() for o in MemorySettings.options())  # serve chooses these


# options whose edge values need another option to agree (SLG window end ≤ start, overlap < block)
COMPANIONS = {"slg_start": {"slg_end": 0.0}, "slg_end": {"slg_start": 1.0}, "overlap": {"block": 2048},
              "block": {"overlap": 0}, "control_start": {"control_end": 0.0}, "control_end": {"control_start": 1.0},
              "control_canny_low": {"control_canny_high": 255}, "control_canny_high": {"control_canny_low": 0}}


def _limits(option: Option) -> list:
    """Values at the edge of the declared range (accepted) and just past it (refused)."""
    if option.choices is not None:
        return [(option.choices[-1], True), ("no-such-choice", False)]
    if option.type is str:
        return [(option.default, True)]
    lo, hi = option.min, option.max
    past = 1 if option.type is int else 0.01
    out = [(option.type(lo) if option.type is int else lo, True), (option.type(hi) if option.type is int else hi, True),
           (lo - past * (option.step or 1), False), (hi + past * (option.step or 1), False)]
    if option.name in ("width", "height"):  # the route also needs the other side to fit the aspect limit
        out = [(1024, True), (option.max, True), (option.min - 16, False), (option.max + 16, False)]
    return out


def test_every_option_is_an_http_field_with_the_same_limits():
    assert set(o.name for o in EVERY_OPTION) <= set(KNOWN_FIELDS)
    # a server may tighten its per-request policy (default: 8 images a request); the option ranges are the same
    limits = Limits(max_images=64)
    for option in EVERY_OPTION:
        for value, ok in _limits(option):
            body = {"prompts": ["a"], **COMPANIONS.get(option.name, {}), option.name: value}
            if option.name == "strength" and value < 1:
                continue  # needs a start image: covered with one below
            if option.name in SERVER_OPTIONS:
                with pytest.raises(RequestError) as info:
                    parse_request(body, limits)
                assert info.value.field == option.name and "server starts" in info.value.message
                continue
            if ok:
                req = parse_request(body, limits)
                given = req.route if option.name in ROUTE_OPTIONS else req.job.values()
                assert given[option.name] == value, option.name
            else:
                with pytest.raises(RequestError) as info:
                    parse_request(body, limits)
                assert info.value.field == option.name, (option.name, value, info.value.message)
    assert set(OPTIONS) | set(SERVER_OPTIONS) == {o.name for o in all_options()}


def test_node_inputs_match_the_options_they_stand_for():
    pack = load_pack()
    by_name = {o.name: o for o in EVERY_OPTION}
    covered = set()
    for node, inputs in NODE_INPUTS.items():
        spec = pack.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
        declared = {**spec["required"], **spec.get("optional", {})}
        for input_name, option_name in inputs.items():
            option = by_name[option_name]
            kind, meta = declared[input_name]
            want_kind, want = option.widget()
            assert kind == want_kind, (node, input_name)
            for key in ("default", "min", "max", "step"):
                assert meta.get(key) == want.get(key), (node, input_name, key, meta.get(key), want.get(key))
            assert meta["tooltip"].startswith(option.help), (node, input_name)
            covered.add(option_name)
    assert covered | NOT_NODE_INPUTS == {o.name for o in EVERY_OPTION}, "classify the new option above"


def test_the_options_page_is_written_from_the_model():
    from pathlib import Path

    from zimage_core.option_docs import options_markdown

    page = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    assert page.read_text(encoding="utf-8") == options_markdown(), \
        "docs/options.md is stale: python -m zimage_core.option_docs > docs/options.md"
    assert all(f"`{o.name}`" in page.read_text(encoding="utf-8") for o in EVERY_OPTION)
