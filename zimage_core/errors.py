"""User-facing error types. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class ZImageError(ValueError):
    """A problem the user can fix (bad input, missing or wrong file); the message names the fix."""


class InputError(ZImageError):
    """An argument or input image is out of range or malformed. `option`: the option at fault, when it is one (an
    HTTP answer names it as its field)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class ModelFileError(ZImageError):
    """A model file or folder is missing, unreadable, of an unsupported format, or of another architecture."""


class OutputError(ZImageError):
    """A result cannot be written where it was asked for (a folder, a read-only or full disk, an unknown format)."""


class Interrupted(RuntimeError):
    """The user asked to stop; raised between steps so the process stays healthy."""


class MissingDependencyError(ZImageError, ImportError):
    """An optional package (mediapipe, OpenCV, peft, ...) is missing or broken; the message names what to install.

    Also an ImportError, so callers that fall back from one backend to another keep working."""


class StageFailed(ZImageError, RuntimeError):
    """A model failed while running (e.g. non-finite output); nothing half-done is returned."""
