"""The `POST /generate` request: its fields, limits and validation. No aiohttp here, so ComfyUI's route and any
other server (Ray Serve) parse requests with exactly the same rules and messages.

Request (JSON object):
  prompts          list of 1..4 non-empty strings, each <= 4000 characters (required)
  <option>         every generation option by name, with the ranges and defaults of the CLI and the nodes
                   (`zimage generate --help` lists them): width, height (the final size, 64..4096, multiples of
                   16), steps, shift, batch, negative_prompt, style, aspect, nag_*, slg_*, dype_*, cfg_*,
                   diversity_*, hidden_layer, long_prompt_mode, max_tokens, hires_upscale, hires_resampler, strength.
                   The model options (weights, memory, resident_blocks) are the server's: set at start-up.
  seed             absent or null -> a random seed in 0..2**32-1, echoed back
  loras            optional list of {"name": file name in the server's LoRA folders, "strength": number}
  hires_passes     optional list of {"scale", "steps", "strength"}: refine passes after the base image
  init_image       optional start image (base64 PNG/JPEG/WebP) for image-to-image with strength < 1
  mask             optional inpaint mask for init_image (base64 image; white = repaint)
  control_image    optional control image (base64) for a Fun ControlNet ...
  control_model    ... named among the server's ControlNet files (models/model_patches, models/controlnet)
  scale, block, overlap, heavy_ratio, face_fidelity
                   the block route (used when the final size is larger than the generated one)
  heavy            optional heavy upscaler: a file/folder name resolved only inside the configured upscaler folders
  face_model       optional GFPGAN v1.4 file name resolved only inside the configured face-restore folders
  diffusion_model, text_encoder, vae
                   optional file names choosing the model files among those in the server's model folders
Integers must be JSON integers (1024, not 1024.0). Every string must be valid text (no lone surrogates). Unknown
fields are ignored and listed in the answer's "warnings", so a typo such as "setps" is visible.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..checks import check_text
from ..errors import InputError
from ..job import MODEL_OPTION_GROUPS, GenerationJob, all_options
from ..pipeline import WORK_MAX, plan_route
from ..settings import MAX_STEPS, RouteSettings
from ..sizes import MAX_SIZE, MIN_SIZE

MODEL_FIELDS = ("diffusion_model", "text_encoder", "vae")
FILE_FIELDS = ("heavy", "face_model", "control_model", *MODEL_FIELDS)
IMAGE_FIELDS = ("init_image", "mask", "control_image")
LIST_FIELDS = ("prompts", "loras", "hires_passes", *IMAGE_FIELDS)
SERVER_OPTIONS = tuple(o.name for group in MODEL_OPTION_GROUPS for o in group.options())
OPTIONS = {o.name: o for o in all_options() if o.name not in SERVER_OPTIONS}
ROUTE_OPTIONS = {o.name: o for o in RouteSettings.options()}
KNOWN_FIELDS = (*LIST_FIELDS, *OPTIONS, *ROUTE_OPTIONS, *SERVER_OPTIONS, *FILE_FIELDS)
RANDOM_SEED_BOUND = 2**32  # random seeds stay small enough to type into any UI
MAX_NAME_CHARS = 255


@dataclass(frozen=True)
class Limits:
    """Request bounds. Defaults keep one request's cost and memory predictable on a single GPU; the option ranges
    themselves come from the options model (an operator may only tighten them here)."""

    max_body: int = 1 << 20  # bytes (413 beyond)
    max_prompts: int = 4
    max_prompt_chars: int = 4000
    min_side: int = MIN_SIZE
    max_side: int = MAX_SIZE
    max_steps: int = MAX_STEPS
    max_images: int = 8  # prompts × batch
    max_loras: int = 8
    max_hires_passes: int = 4


class RequestError(Exception):
    """A request the client must change (or a server state it must wait out); becomes a JSON error with an HTTP
    status. `field` names the request field at fault (None when it is not one field)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


@dataclass
class GenerateRequest:
    """A validated `POST /generate` body: the job (width × height = the final size) plus the files it names.
    `loras` and `control_model` hold the requested names; the runner resolves them inside its folders into the job
    (with `control_image`)."""

    job: GenerationJob
    route: dict[str, Any] = field(default_factory=dict)  # the block-route options the body gives
    loras: list[tuple[str, float]] = field(default_factory=list)
    control_image: Any = None  # decoded; joins the job with the resolved control_model
    heavy: str | None = None
    face_model: str | None = None
    control_model: str | None = None
    diffusion_model: str | None = None
    text_encoder: str | None = None
    vae: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        return self.job.prompts

    @property
    def width(self) -> int:
        return self.job.generation.width

    @property
    def height(self) -> int:
        return self.job.generation.height

    @property
    def steps(self) -> int:
        return self.job.generation.steps

    @property
    def seed(self) -> int:
        return self.job.generation.seed

    @property
    def negative_prompt(self) -> str | None:
        return self.job.prompt.negative_prompt or None


def _show(value: object) -> str:
    return json.dumps(value)[:40]


def _text_field(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string; got {_show(value)}.", name.split("[")[0])
    try:
        check_text(value, name)
    except InputError as err:
        raise RequestError(str(err), name.split("[")[0]) from None
    if len(value) > max_chars:
        raise RequestError(f"{name} is {len(value)} characters; the limit is {max_chars}.", name.split("[")[0])
    return value


def _optional_name(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    value = _text_field(name, value, MAX_NAME_CHARS)
    return value if value.strip() else None  # blank = not given


def _prompts(data: dict, limits: Limits) -> list[str]:
    prompts = data.get("prompts")
    if prompts is None:
        hint = " (use \"prompts\": [\"...\"], a list)" if "prompt" in data else ""
        raise RequestError(f"prompts is required{hint}.", "prompts")
    if not isinstance(prompts, list):
        raise RequestError("prompts must be a list of strings, e.g. [\"a cat\"].", "prompts")
    if not 1 <= len(prompts) <= limits.max_prompts:
        raise RequestError(f"prompts must hold 1 to {limits.max_prompts} strings; got {len(prompts)}.", "prompts")
    for i, p in enumerate(prompts):
        _text_field(f"prompts[{i}]", p, limits.max_prompt_chars)
        if not p.strip():
            raise RequestError(f"prompts[{i}] is empty.", "prompts")
    return list(prompts)


def _typed(data: dict, options: dict, limits: Limits) -> dict[str, Any]:
    """The values of `options` the body gives, JSON types checked (ranges are checked by the options model)."""
    values: dict[str, Any] = {}
    for name, option in options.items():
        if name not in data or (data[name] is None and (name == "seed" or option.optional)):
            continue
        value = data[name]
        if option.type is int and type(value) is not int:  # JSON clients send what they mean: 1024, not 1024.0
            raise RequestError(f"{name} must be an integer; got {_show(value)}.", name)
        if option.type is str:
            value = _text_field(name, value, limits.max_prompt_chars)
        values[name] = value
    return values


def _option_values(data: dict, limits: Limits) -> dict[str, Any]:
    """The generation options the body gives (the model options are refused: the server chose them)."""
    given = sorted(name for name in SERVER_OPTIONS if name in data)
    if given:
        raise RequestError(f"{', '.join(given)}: chosen when the server starts (zimage serve --weights / --memory "
                           "/ --resident-blocks; in ComfyUI, its --lowvram / --novram and the loader's weight_dtype), "
                           "not per request.", given[0])
    values = _typed(data, OPTIONS, limits)
    if values.get("negative_prompt", "x").strip() == "":
        values.pop("negative_prompt")  # blank or whitespace-only = none (a " " must not turn guidance on)
    for name, cap in (("steps", limits.max_steps), ("width", limits.max_side), ("height", limits.max_side)):
        if isinstance(values.get(name), int) and values[name] > cap:
            raise RequestError(f"{name}={values[name]} is over this server's limit of {cap}.", name)
    if "seed" not in values:
        values["seed"] = secrets.randbelow(RANDOM_SEED_BOUND)
    return values


def _list_field(data: dict, name: str, limit: int) -> list:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(f"{name} must be a list.", name)
    if len(value) > limit:
        raise RequestError(f"{name} holds {len(value)} entries; the limit is {limit}.", name)
    return value


def _loras(data: dict, limits: Limits) -> list[tuple[str, float]]:
    out = []
    for i, entry in enumerate(_list_field(data, "loras", limits.max_loras)):
        if not isinstance(entry, dict) or set(entry) - {"name", "strength"} or "name" not in entry:
            raise RequestError(f"loras[{i}] must be {{\"name\": \"file.safetensors\", \"strength\": 1.0}}.", "loras")
        name = _text_field(f"loras[{i}].name", entry["name"], MAX_NAME_CHARS)
        strength = entry.get("strength", 1.0)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not -10 <= strength <= 10:
            raise RequestError(f"loras[{i}].strength must be a number in -10..10; got {_show(strength)}.", "loras")
        out.append((name, float(strength)))
    return out


def _image(data: dict, name: str) -> Any:
    """A base64 image field decoded (with the pixel budget of every upload), or None when absent."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a base64 string of a PNG, JPEG or WebP image.", name)
    if value.startswith("data:"):  # a data URL: keep the payload
        value = value.partition(",")[2]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name} is not valid base64.", name) from None
    from ..images import decode_image

    try:
        return decode_image(raw, name)
    except InputError as err:
        raise RequestError(str(err), name) from None


def parse_request(data: object, limits: Limits = Limits(), work_max: int = WORK_MAX) -> GenerateRequest:
    """Validate a decoded JSON body against the options model and `limits`; raises RequestError naming the
    offending field. The route is planned here too, so a size the route cannot make is refused before the request is
    queued."""
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object such as {\"prompts\": [\"a cat\"]}.", "body")
    prompts = _prompts(data, limits)
    values = _option_values(data, limits)
    hires = _list_field(data, "hires_passes", limits.max_hires_passes)
    loras = _loras(data, limits)
    route = _typed(data, ROUTE_OPTIONS, limits)
    try:
        RouteSettings.from_values(route)
        images = {name: _image(data, name) for name in IMAGE_FIELDS}
        control_image = images.pop("control_image")  # joins the job once the runner has found control_model
        if (control_image is None) != (_optional_name(data, "control_model") is None):
            field_ = "control_model" if control_image is not None else "control_image"
            raise RequestError("a control needs both control_image and control_model (a Fun ControlNet file among "
                               f"the server's); {field_} is missing.", field_)
        if control_image is not None and hires:
            raise RequestError("hi-res passes start from text: leave out control_image or hires_passes.",
                               "hires_passes")
        job = GenerationJob.build(prompts, values, hires_passes=hires, **images)
        plan_route(job.generation.width, job.generation.height, work_max=work_max, max_side=limits.max_side)
    except InputError as err:
        raise RequestError(str(err), err.option) from None
    if job.image_count > limits.max_images:
        raise RequestError(f"prompts × batch = {job.image_count} images; the limit is {limits.max_images}.", "batch")
    req = GenerateRequest(job, route, loras, control_image=control_image,
                          **{name: _optional_name(data, name) for name in FILE_FIELDS})
    unknown = sorted(k for k in data if k not in KNOWN_FIELDS)
    if unknown:
        req.warnings.append(f"unknown fields ignored: {', '.join(unknown)}")
    return req


__all__ = ["FILE_FIELDS", "GenerateRequest", "KNOWN_FIELDS", "Limits", "MODEL_FIELDS", "OPTIONS", "ROUTE_OPTIONS",
           "RequestError", "SERVER_OPTIONS", "parse_request"]
