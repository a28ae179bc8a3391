"""The `POST /generate` request: its fields, limits and validation. No aiohttp here, so ComfyUI's route and any
other server (Ray Serve) parse requests with exactly the same rules and messages.

Request (JSON object):
  prompts          list of 1..4 non-empty strings, each <= 4000 characters (required)
  width, height    integers 64..2048, multiples of 16 (default 1024); the error names the nearest valid sizes
  steps            integer 1..50 (default 9; = model evaluations)
  seed             integer 0..2**63-1; absent or null -> a random seed in 0..2**32-1, echoed back
  negative_prompt  optional string (<= 4000 chars), applied with NAG
  heavy            optional heavy upscaler: a file/folder name resolved only inside the configured upscaler folders
  face_model       optional GFPGAN v1.4 file name resolved only inside the configured face-restore folders
  diffusion_model, text_encoder, vae
                   optional file names choosing the model files among those in the server's model folders
Every string must be valid text (no lone surrogates). Unknown fields are ignored and listed in the answer's
"warnings", so a typo such as "setps" is visible.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from ..checks import check_text
from ..errors import InputError
from ..pipeline import WORK_MAX, plan_route
from ..sizes import MIN_SIZE, check_side

MODEL_FIELDS = ("diffusion_model", "text_encoder", "vae")
KNOWN_FIELDS = ("prompts", "width", "height", "steps", "seed", "negative_prompt", "heavy", "face_model",
                *MODEL_FIELDS)
RANDOM_SEED_BOUND = 2**32  # random seeds stay small enough to type into any UI
MAX_NAME_CHARS = 255


@dataclass(frozen=True)
class Limits:
    """Request bounds. Defaults keep one request's cost and memory predictable on a single GPU."""

    max_body: int = 1 << 20  # bytes (413 beyond)
    max_prompts: int = 4
    max_prompt_chars: int = 4000
    min_side: int = MIN_SIZE
    max_side: int = 2048
    max_steps: int = 50
    max_seed: int = 2**63 - 1


class RequestError(Exception):
    """A request the client must change (or a server state it must wait out); becomes a JSON error with an HTTP
    status. `field` names the request field at fault (None when it is not one field)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


@dataclass
class GenerateRequest:
    """A validated `POST /generate` body."""

    prompts: list[str]
    width: int = 1024
    height: int = 1024
    steps: int = 9
    seed: int = 0
    negative_prompt: str | None = None
    heavy: str | None = None
    face_model: str | None = None
    diffusion_model: str | None = None
    text_encoder: str | None = None
    vae: str | None = None
    warnings: list[str] = field(default_factory=list)


def _show(value: object) -> str:
    return json.dumps(value)[:40]


def _int_field(data: dict, name: str, default: int | None, lo: int, hi: int, *, nullable: bool = False) -> int | None:
    if name not in data:
        return default
    value = data[name]
    if value is None and nullable:
        return None
    if type(value) is not int:  # rejects null, bool, float (even 1024.0) and strings: clients send what they mean
        raise RequestError(f"{name} must be an integer; got {_show(value)}.", name)
    if not lo <= value <= hi:
        raise RequestError(f"{name} must be between {lo} and {hi}; got {value}.", name)
    return value


def _text_field(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string; got {_show(value)}.", name)
    try:
        check_text(value, name)
    except InputError as err:
        raise RequestError(str(err), name) from None
    if len(value) > max_chars:
        raise RequestError(f"{name} is {len(value)} characters; the limit is {max_chars}.", name)
    return value


def _optional_str(data: dict, name: str, max_chars: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    value = _text_field(name, value, max_chars)
    if value.strip() == "":  # blank or whitespace-only = not given (a " " negative_prompt must not turn NAG on)
        return None
    return value


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
        try:
            _text_field(f"prompts[{i}]", p, limits.max_prompt_chars)
        except RequestError as err:
            raise RequestError(err.message, "prompts") from None
        if not p.strip():
            raise RequestError(f"prompts[{i}] is empty.", "prompts")
    return list(prompts)


def _side(data: dict, name: str, limits: Limits) -> int:
    value = data.get(name, 1024)
    if type(value) is not int:
        raise RequestError(f"{name} must be an integer; got {_show(value)}.", name)
    try:
        return check_side(name, value, min_size=limits.min_side, max_size=limits.max_side)
    except InputError as err:
        raise RequestError(str(err), name) from None


def parse_request(data: object, limits: Limits = Limits(), work_max: int = WORK_MAX) -> GenerateRequest:
    """Validate a decoded JSON body against `limits`; raises RequestError naming the offending field. The route is
    planned here too, so a size the route cannot make is refused before the request is queued."""
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object such as {\"prompts\": [\"a cat\"]}.", "body")
    prompts = _prompts(data, limits)
    width, height = _side(data, "width", limits), _side(data, "height", limits)
    try:
        plan_route(width, height, work_max=work_max, max_side=limits.max_side)
    except InputError as err:
        raise RequestError(str(err), "width" if str(err).startswith("width") else "height") from None
    steps = _int_field(data, "steps", 9, 1, limits.max_steps)
    seed = _int_field(data, "seed", None, 0, limits.max_seed, nullable=True)
    if seed is None:
        seed = secrets.randbelow(RANDOM_SEED_BOUND)
    req = GenerateRequest(prompts, width, height, steps, seed,
                          negative_prompt=_optional_str(data, "negative_prompt", limits.max_prompt_chars),
                          heavy=_optional_str(data, "heavy", MAX_NAME_CHARS),
                          face_model=_optional_str(data, "face_model", MAX_NAME_CHARS),
                          **{name: _optional_str(data, name, MAX_NAME_CHARS) for name in MODEL_FIELDS})
    unknown = sorted(k for k in data if k not in KNOWN_FIELDS)
    if unknown:
        req.warnings.append(f"unknown fields ignored: {', '.join(unknown)}")
    return req


__all__ = ["KNOWN_FIELDS", "Limits", "RequestError", "GenerateRequest", "parse_request"]
