"""Options declared once: each setting is a dataclass field whose metadata carries its help text, range, step and
choices. The CLI flags, the HTTP fields, the node widgets and the docs are derived from these declarations (and a
test walks them), so limits and defaults cannot drift between interfaces.

    @dataclass(frozen=True)
    class NagSettings(Settings):
        PREFIX = "nag"
        scale: float = opt(1.0, "NAG strength: 1 = off; 2-5 makes a negative prompt act.", min=1.0, max=20.0)

gives the option `nag_scale` (CLI `--nag-scale`, HTTP `nag_scale`), checked on construction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .checks import check_text
from .errors import InputError

Spelling = Callable[[str], str]  # option name -> how the interface in use spells it (--nag-scale, nag_scale, ...)


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None, step: float | None = None,
        choices: tuple[str, ...] | None = None, advanced: bool = False, optional: bool = False,
        node_default: Any = None) -> Any:
    """A settings field with its documentation and limits. optional: None is allowed (e.g. 'auto'); node_default:
    the value a node that exists to turn this feature on starts with (e.g. the SLG node's scale), when it differs
    from the default every other interface uses."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "step": step, "choices": choices,
                                            "advanced": advanced, "optional": optional,
                                            "node_default": node_default})


@dataclass(frozen=True)
class Option:
    """One option as every interface sees it."""

    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    advanced: bool = False
    optional: bool = False
    node_default: Any = None

    @property
    def widget_default(self) -> Any:
        return self.default if self.node_default is None else self.node_default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, spelled: str | None = None) -> Any:
        """The value converted to the option's type, or InputError naming the option as the caller spells it."""
        name = spelled or self.name
        if value is None:
            if self.optional:
                return None
            raise InputError(f"{name} needs a value (default {self.default!r}).", self.name)
        if self.type is bool:
            if not isinstance(value, bool):
                raise InputError(f"{name} must be true or false; got {value!r}.", self.name)
            return value
        if self.type in (int, float):
            return self._check_number(value, name)
        if not isinstance(value, str):
            raise InputError(f"{name} must be text; got {value!r}.", self.name)
        check_text(value, name)
        if self.choices is not None and value not in self.choices:
            raise InputError(f"{name} must be one of {', '.join(map(repr, self.choices))}; got {value!r}.", self.name)
        return value

    def _check_number(self, value: Any, name: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number; got {value!r}.", self.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{name} must be a finite number; got {value!r}.", self.name)
        if self.type is int and isinstance(value, float) and not value.is_integer():
            raise InputError(f"{name} must be a whole number; got {value!r}.", self.name)
        value = self.type(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise InputError(f"{name}={show_number(value)} is out of range; use {show_number(self.min)}.."
                             f"{show_number(self.max)}.", self.name)
        step = int(self.step) if self.type is int and self.step and self.step > 1 else 0
        if step and value % step:
            lo, hi = value - value % step, value - value % step + step
            near = " and ".join(str(v) for v in (lo, hi) if self.min <= v <= self.max)
            raise InputError(f"{name}={value} is not a multiple of {step}; the nearest valid values are {near}.",
                             self.name)
        return value

    def describe(self) -> str:
        """Help text with the default and the range (CLI help, docs)."""
        extra = []
        if self.choices:
            extra.append("one of " + ", ".join(self.choices))
        elif self.min is not None and self.max is not None:
            extra.append(f"{show_number(self.min)}..{show_number(self.max)}")
        shown = "auto" if self.default is None else ('""' if self.default == "" else self.default)
        extra.append(f"default {shown}")
        return f"{self.help} ({'; '.join(extra)})"

    def widget(self, **overrides: Any) -> tuple:
        """The ComfyUI INPUT_TYPES entry for this option."""
        tip = {"tooltip": self.describe()}
        default = self.widget_default
        if self.type is bool:
            spec: tuple = ("BOOLEAN", {"default": default, **tip})
        elif self.choices is not None:
            spec = (list(self.choices), {"default": default, **tip})
        elif self.type is str:
            spec = ("STRING", {"default": default, **tip})
        else:
            kind = "INT" if self.type is int else "FLOAT"
            limits = {k: getattr(self, k) for k in ("min", "max", "step") if getattr(self, k) is not None}
            spec = (kind, {"default": default, **limits, **tip})
        spec[1].update(overrides)
        return spec


def show_number(x: float) -> str:
    """Whole numbers in full (seeds reach 2**64), others short."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class Settings:
    """Base of the frozen settings dataclasses: their fields become Options named PREFIX_field."""

    PREFIX: ClassVar[str] = ""

    @classmethod
    def option_name(cls, field_name: str) -> str:
        return f"{cls.PREFIX}_{field_name}" if cls.PREFIX else field_name

    @classmethod
    def options(cls) -> list[Option]:
        cached = cls.__dict__.get("_options")  # per class, not inherited: parsing requests calls this a lot
        if cached is not None:
            return list(cached)
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "help" not in f.metadata:
                continue
            kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type).split("|")[0].strip()]
            out.append(Option(cls.option_name(f.name), kind, f.default, **f.metadata))
        cls._options = tuple(out)
        return out

    @classmethod
    def option(cls, name: str) -> Option:
        """One option by its name (e.g. 'face_fidelity')."""
        for option in cls.options():
            if option.name == name:
                return option
        raise KeyError(name)

    @classmethod
    def from_values(cls, values: dict[str, Any], spell: Spelling = lambda name: name) -> "Settings":
        """Settings from {option name: value} (missing → default), each value checked and named as `spell` says."""
        kwargs = {}
        for option in cls.options():
            if option.name in values:
                field_name = option.name[len(cls.PREFIX) + 1:] if cls.PREFIX else option.name
                kwargs[field_name] = option.check(values[option.name], spell(option.name))
        return cls(**kwargs)  # type: ignore[call-arg]

    def values(self) -> dict[str, Any]:
        """{option name: value}: what reports echo back."""
        return {self.option_name(f.name): getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore
                if "help" in f.metadata}

    def _validate(self) -> None:
        """Check every field against its declaration (called by __post_init__ of subclasses)."""
        for option in self.options():
            field_name = option.name[len(self.PREFIX) + 1:] if self.PREFIX else option.name
            object.__setattr__(self, field_name, option.check(getattr(self, field_name)))

    def __post_init__(self) -> None:
        self._validate()


__all__ = ["Option", "Settings", "opt", "show_number"]
