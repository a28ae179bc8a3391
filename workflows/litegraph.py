"""LiteGraph workflows from a description: node specs (from our INPUT_TYPES and the core-node table), a column
layout, and the two serialisations ComfyUI reads — the UI file (what the front end saves and what you drag onto the
canvas) and its API twin (the `{id: {class_type, inputs}}` graph `POST /prompt` takes). Deterministic: no
timestamps, ids from the workflow name."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from core_nodes import CORE_NODES, INPUT_ORDER
from pack_import import load_pack

# (node type, input) pairs whose combo lists files/folders found at run time: the graph must give a value (their
# INPUT_TYPES default depends on what is installed), and validation accepts any file name.
FILE_COMBOS = {
    ("ZImageLoader", "diffusion_model"), ("ZImageLoader", "text_encoder"), ("ZImageLoader", "vae"),
    ("ZImageLoader", "diffusers_folder"), ("ZImageLoraLoader", "lora_name"), ("ZImageLoadEmbeddings", "embeddings"),
    ("ZImageBlockUpscaler", "heavy_model"), ("ZImageFaceRestoreModelLoader", "model_name"),
    ("ZImageControlNetLoader", "controlnet_name"), ("LoadImage", "image"), ("UpscaleModelLoader", "model_name"),
    ("UNETLoader", "unet_name"),
    ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"),
}

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


@dataclass(frozen=True)
class Spec:
    """What the generator needs to know about a node type."""

    sockets: tuple[tuple[str, str], ...]  # (input name, type), required then optional, in definition order
    widgets: tuple[tuple[str, Any], ...]  # (input name, default) in definition order
    outputs: tuple[tuple[str, str], ...]  # (output name, type)
    order: tuple[str, ...] = ()  # every input name in definition order (sockets and widgets interleaved)
    ui_after: dict[str, Any] = field(default_factory=dict)  # widget name → front-end-only value saved after it
    virtual: bool = False  # front-end only (notes): in the UI file, never in the API graph
    ui_widgets: int = 0  # front-end-only widgets our web/ extension adds (for sizing only; never serialized)


def core_spec(name: str) -> Spec:
    """A Spec from the shared description of a core ComfyUI node (workflows/core_nodes.py)."""
    node = CORE_NODES[name]
    widgets = tuple((w, default) for w, _, default in node.widgets)
    order = INPUT_ORDER.get(name) or tuple(n for n, _ in node.sockets) + tuple(w for w, _ in widgets)
    return Spec(node.sockets, widgets, node.outputs, order, dict(node.ui_after), node.virtual)


CORE: dict[str, Spec] = {name: core_spec(name) for name in CORE_NODES}
UI_EXTRA_WIDGETS = {"ZImageSampler": 1, "ZImageEncode": 1}  # web/zimage.js: aspect preset / style preset combos


def _is_widget(spec: tuple) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def pack_spec(cls) -> Spec:
    """A Spec from one of our node classes."""
    it = cls.INPUT_TYPES()
    sockets, widgets, order, ui_after = [], [], [], {}
    for section in ("required", "optional"):
        for name, spec in it.get(section, {}).items():
            order.append(name)
            opts = spec[1] if len(spec) > 1 else {}
            if _is_widget(spec):
                default = opts.get("default")
                if default is None and isinstance(spec[0], (list, tuple)) and spec[0]:
                    default = spec[0][0]
                widgets.append((name, default))
                if opts.get("control_after_generate"):
                    ui_after[name] = "randomize"  # Run twice = two images; "fixed" is one click away
            else:
                sockets.append((name, spec[0]))
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return Spec(tuple(sockets), tuple(widgets), tuple(zip(names, cls.RETURN_TYPES)), tuple(order), ui_after,
                ui_widgets=UI_EXTRA_WIDGETS.get(cls.__name__, 0))


def all_specs(pack=None) -> dict[str, Spec]:
    pack = pack or load_pack()
    specs = dict(CORE)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        specs[name] = pack_spec(cls)
    return specs


# ------------------------------------------------------------------------------------------------ graph description
@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    size: tuple[int, int]
    widgets: dict[str, Any]
    links: dict[str, tuple["Node", str]]  # input name → (source node, output name)
    title: str | None = None
    color: str | None = None
    bgcolor: str | None = None
    ui_after: dict[str, Any] = field(default_factory=dict)


NOTE_COLOR, NOTE_BG = "#432", "#653"
DS_SCALE = 0.65  # initial zoom: LiteGraph stops drawing text below 0.6
TITLE_H = 30  # LiteGraph title bar height (not part of a node's size)
GAP = 40


class Graph:
    """A workflow being laid out: nodes stacked in columns, groups, then serialised as UI and API JSON.
    `downloads` maps model file names to (url, models/ folder): loaders naming such a file carry download metadata,
    and `optional_models` lists further files offered at the workflow's top level."""

    def __init__(self, name: str, specs: dict[str, Spec], downloads: dict[str, tuple[str, str]] | None = None):
        self.name = name
        self.specs = specs
        self.downloads = dict(downloads or {})
        self.nodes: list[Node] = []
        self.groups: list[tuple[str, list[Node], str]] = []
        self.optional_models: list[str] = []  # optional files offered for download at the workflow's top level
        self._col_y: dict[int, int] = {}

    def model_entry(self, name: str) -> dict:
        url, directory = self.downloads[name]
        return {"name": name, "url": url, "directory": directory}

    # -- sizing
    def _size(self, type_: str, width: int | None, height: int | None) -> tuple[int, int]:
        spec = self.specs[type_]
        if type_ in ("SaveImage", "PreviewImage"):
            return (width or 420, height or 440)
        n_widgets = len(spec.widgets) + len(spec.ui_after) + spec.ui_widgets
        rows = max(len(spec.sockets), len(spec.outputs))
        h = 12 + rows * 22 + n_widgets * 26
        if any(n == "text" for n, _ in spec.widgets) and not spec.virtual:
            h += 110  # multiline prompt box
        if type_ == "ZImageBlockClassifier":
            h += 300  # its preview image + the block legend
        return (width or (360 if type_ == "ZImageSampler" else 330), height or h)

    @staticmethod
    def _note_height(text: str, width: int) -> int:
        """Rendered markdown height, estimated (≈ 5 px per character, 14 px lines, headings taller)."""
        chars = max(20, int((width - 40) / 6.0))
        lines = 0.0
        for line in text.split("\n"):
            if line == "":
                lines += 0.6  # paragraph spacing
            elif line.startswith("#"):
                lines += 2.2
            else:
                lines += math.ceil(len(line) / chars)
        return int(70 + lines * 16)

    # -- building
    def add(self, type_: str, col: int, *, widgets: dict | None = None, links: dict | None = None,
            title: str | None = None, width: int | None = None, height: int | None = None,
            control: str | None = None) -> Node:
        """A node at the next free place in column x=col (columns stack top-down, never overlapping)."""
        spec = self.specs[type_]
        widgets = dict(widgets or {})
        unknown = set(widgets) - {n for n, _ in spec.widgets}
        if unknown:
            raise KeyError(f"{self.name}: {type_} has no widget(s) {sorted(unknown)}")
        for name, default in spec.widgets:
            if name not in widgets:
                if (type_, name) in FILE_COMBOS and name not in ("diffusers_folder", "heavy_model"):
                    raise ValueError(f"{self.name}: {type_}.{name} lists installed files; give it explicitly")
                widgets[name] = default
        links = dict(links or {})
        socket_names = {n for n, _ in spec.sockets}
        for name, (src, out) in links.items():
            if name not in socket_names:
                raise KeyError(f"{self.name}: {type_} has no socket input {name!r}")
            if out not in {n for n, _ in self.specs[src.type].outputs}:
                raise KeyError(f"{self.name}: {src.type} has no output {out!r}")
        size = self._size(type_, width, height)
        if spec.virtual and height is None:
            size = (size[0], self._note_height(widgets.get("text", ""), size[0]))
        y = self._col_y.get(col, 0)
        ui_after = dict(spec.ui_after)
        if control is not None:
            ui_after = {k: control for k in ui_after}
        node = Node(len(self.nodes) + 1, type_, (col, y), size, widgets, links, title,
                    NOTE_COLOR if spec.virtual else None, NOTE_BG if spec.virtual else None, ui_after)
        self._col_y[col] = y + size[1] + TITLE_H + GAP
        self.nodes.append(node)
        return node

    def add_api(self, nodes: dict[str, dict], key: str, col: int, *, bound: dict[str, Node], **layout: Any) -> Node:
        """Lay out node `key` of an API-format graph: its literal inputs become widgets, its [id, output] inputs links
        to the nodes laid out so far (`bound`, which gains this one)."""
        entry = nodes[key]
        widgets, links = {}, {}
        for name, value in entry["inputs"].items():
            if isinstance(value, list):
                src = bound[value[0]]
                links[name] = (src, self.specs[src.type].outputs[value[1]][0])
            else:
                widgets[name] = value
        bound[key] = node = self.add(entry["class_type"], col, widgets=widgets, links=links, **layout)
        return node

    def note(self, col: int, text: str, *, title: str | None = None, width: int | None = None,
             markdown: bool = True) -> Node:
        return self.add("MarkdownNote" if markdown else "Note", col, widgets={"text": text.strip()},
                        title=title, width=width or 330)

    def skip(self, col: int, pixels: int) -> None:
        self._col_y[col] = self._col_y.get(col, 0) + pixels

    def at(self, col: int, y: int) -> None:
        self._col_y[col] = max(self._col_y.get(col, 0), y)

    def group(self, title: str, nodes: list[Node], color: str) -> None:
        self.groups.append((title, nodes, color))

    # -- output
    def _link_table(self) -> list[list]:
        links = []
        for node in self.nodes:
            spec = self.specs[node.type]
            slots = [n for n, _ in spec.sockets]
            for name in slots:
                if name in node.links:
                    src, out = node.links[name]
                    out_slot = [n for n, _ in self.specs[src.type].outputs].index(out)
                    kind = self.specs[src.type].outputs[out_slot][1]
                    links.append([len(links) + 1, src.id, out_slot, node.id, slots.index(name), kind])
        return links

    def _order(self) -> dict[int, int]:
        """Execution order (Kahn, lowest id first), as LiteGraph stores it in `order`."""
        deps = {n.id: {src.id for src, _ in n.links.values()} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            if not ready:
                raise ValueError(f"{self.name}: the graph has a cycle")
            order[ready[0]] = len(order)
            done.add(ready[0])
        return order

    def ui(self) -> dict:
        links = self._link_table()
        order = self._order()
        nodes = []
        for node in self.nodes:
            spec = self.specs[node.type]
            inputs = []
            for slot, (name, kind) in enumerate(spec.sockets):
                link = next((lk[0] for lk in links if lk[3] == node.id and lk[4] == slot), None)
                inputs.append({"name": name, "type": kind, "link": link})
            outputs = []
            for slot, (name, kind) in enumerate(spec.outputs):
                ids = [lk[0] for lk in links if lk[1] == node.id and lk[2] == slot]
                outputs.append({"name": name, "type": kind, "slot_index": slot, "links": ids})
            values = []
            for name, _ in spec.widgets:
                values.append(node.widgets[name])
                if name in node.ui_after:
                    values.append(node.ui_after[name])
            d: dict[str, Any] = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                                 "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs,
                                 "outputs": outputs}
            if node.title:
                d["title"] = node.title
            if node.color:
                d["color"], d["bgcolor"] = node.color, node.bgcolor
            d["properties"] = {} if spec.virtual else {"Node name for S&R": node.type}
            files = [v for v in node.widgets.values() if isinstance(v, str) and v in self.downloads]
            if files:  # what ComfyUI's front end offers to download when the file is missing
                d["properties"]["models"] = [self.model_entry(f) for f in files]
            d["widgets_values"] = values
            nodes.append(d)
        groups = []
        for i, (title, members, color) in enumerate(self.groups, start=1):
            x0 = min(n.pos[0] for n in members) - 20
            y0 = min(n.pos[1] for n in members) - TITLE_H - 50
            x1 = max(n.pos[0] + n.size[0] for n in members) + 20
            y1 = max(n.pos[1] + n.size[1] for n in members) + 20
            groups.append({"id": i, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color,
                           "font_size": 24, "flags": {}})
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-zimage-turbo/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": links,
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": DS_SCALE, "offset": self._view_offset()},
                      "zimage_workflow": {"name": self.name, "generator": "workflows/build_workflows.py"}},
            **({"models": [self.model_entry(m) for m in self.optional_models]} if self.optional_models else {}),
            "version": 0.4,
        }

    def _view_offset(self) -> list[int]:
        """Canvas offset that puts the graph's top-left corner (group titles included) near the screen's."""
        x0 = min(n.pos[0] for n in self.nodes) - 20
        y0 = min(n.pos[1] for n in self.nodes) - TITLE_H - 50
        return [round(110 / DS_SCALE) - x0, round(70 / DS_SCALE) - y0]  # clear of the side bar and top bar

    def api(self) -> dict:
        out = {}
        for node in self.nodes:
            spec = self.specs[node.type]
            if spec.virtual:
                continue
            sockets = {n for n, _ in spec.sockets}
            inputs: dict[str, Any] = {}
            for name in spec.order:
                if name in sockets:
                    if name in node.links:
                        src, o = node.links[name]
                        inputs[name] = [str(src.id), [n for n, _ in self.specs[src.type].outputs].index(o)]
                else:
                    inputs[name] = node.widgets[name]
            out[str(node.id)] = {"class_type": node.type, "inputs": inputs}
        return out


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
