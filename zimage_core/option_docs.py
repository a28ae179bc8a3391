"""The options reference (docs/options.md), written from the options model so the page cannot drift from the CLI,
the HTTP API and the nodes: `python -m zimage_core.option_docs > docs/options.md` (a test checks it is current)."""

from __future__ import annotations

from .cli import GROUP_TITLES, flag
from .job import OPTION_GROUPS
from .options import show_number
from .settings import RouteSettings

HEADER = """# Options

Every generation option, as the command line (`zimage generate --help`), the HTTP API (`POST /generate`, the same
names as JSON fields) and the ComfyUI nodes (same ranges and defaults) offer it. Written from the options model by
`python -m zimage_core.option_docs`; do not edit by hand.

Besides these: `prompts` (HTTP; `--prompt` repeated on the CLI), `loras` (`--lora FILE:STRENGTH`; HTTP
`[{"name", "strength"}]` with names from the server's `loras` folder), `hires_passes` (`--hires SCALE:STEPS:STRENGTH`;
HTTP `[{"scale", "steps", "strength"}]`), `init_image` (`--init-image FILE`; HTTP base64) and, for the CLI, a
`--config FILE` (TOML or JSON) holding any of them by name. The memory options are chosen when a server starts.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def options_markdown() -> str:
    out = [HEADER]
    for group in (*OPTION_GROUPS, RouteSettings):
        out.append(f"\n## {GROUP_TITLES.get(group.__name__, group.__name__)}\n")
        out.append("| name (HTTP) | flag (CLI) | default | range / choices | what it does |")
        out.append("|---|---|---|---|---|")
        for o in group.options():
            if o.choices:
                allowed = ", ".join(f"`{c}`" if c else "`\"\"`" for c in o.choices)
            elif o.min is not None:
                allowed = f"{show_number(o.min)} … {show_number(o.max)}" + (f", step {o.step:g}" if o.step else "")
            else:
                allowed = "text"
            default = "auto" if o.default is None else (f"`{o.default}`" if o.default != "" else "`\"\"`")
            out.append(f"| `{o.name}` | `{flag(o.name)}` | {default} | {_cell(allowed)} | {_cell(o.help)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(options_markdown(), end="")
