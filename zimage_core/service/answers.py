"""What a failed request is answered, the same for every server (aiohttp, Ray Serve): a status, a one-line message
with no server paths, the request field at fault, and headers (Retry-After when waiting helps)."""

from __future__ import annotations

import logging
import re

from ..errors import InputError, Interrupted, ModelFileError, ZImageError
from .jobs import ShuttingDown
from .request import RequestError

log = logging.getLogger("zimage_core.service")

_ABS_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(=,:;]))(?:[A-Za-z]:\\|/)[^\s'\",;()]*")


def redact(text: str) -> str:
    """Replace absolute paths in a client-facing message by their last component (server paths stay private)."""
    def last(m: re.Match) -> str:
        parts = [p for p in re.split(r"[\\/]", m.group(0).rstrip(".")) if p]
        return (parts[-1] + ("." if m.group(0).endswith(".") else "")) if parts else "<path>"
    return _ABS_PATH.sub(last, text)


def job_failure(err: BaseException, request_id: str) -> tuple[int, str, str | None, dict[str, str]]:
    """(status, message, field, headers) for an exception a request ended with; the full detail goes to the log."""
    if isinstance(err, RequestError):
        return err.status, err.message, err.field, {}
    if isinstance(err, (Interrupted, ShuttingDown)):
        return 503, f"the job was stopped: {err}", None, {"Retry-After": "1"}
    if isinstance(err, ModelFileError):  # the server's own model files are at fault, not the request
        log.error("request %s: %s", request_id, err)
        return 500, f"server model files: {err}", None, {}
    if isinstance(err, ZImageError):
        log.info("request %s: %s", request_id, err)
        return 400, str(err), err.option if isinstance(err, InputError) else None, {}
    log.error("request %s failed", request_id, exc_info=err)
    return 500, f"internal error ({type(err).__name__}): {err}", None, {}


def error_body(message: str, field: str | None, request_id: str | None) -> dict:
    return {"error": redact(message), "field": field, "request_id": request_id}


__all__ = ["error_body", "job_failure", "redact"]
