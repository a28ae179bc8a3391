"""Builds the example workflows in this folder: one graph description each → a UI-format file (`<name>.json`, what
ComfyUI's front end saves and what you drag onto the canvas) and its API-format twin (`<name>.api.json`, the bare
`{id: {class_type, inputs}}` graph that `POST /prompt` takes).

    python workflows/build_workflows.py              # rewrite workflows/*.json
    python workflows/build_workflows.py --out DIR    # write them elsewhere
    python workflows/build_workflows.py --check      # exit 1 if the committed files differ from a fresh build

Widget order, defaults and socket/output types come from the pack's own INPUT_TYPES / RETURN_TYPES / RETURN_NAMES
(the pack is imported with no ComfyUI, like the tests do), so after a node gains or loses an input only a re-run
is needed. Core ComfyUI nodes are described in CORE below. Pure Python + the pack; no ComfyUI, no network, and the
output is byte-identical on every run (no timestamps, ids derived from the workflow name).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))
from core_nodes import CORE_NODES, INPUT_ORDER  # noqa: E402
from nodes_pack import load_pack  # noqa: E402  (the one way to import the pack without ComfyUI; tests use it too)

# The model files users have; combo widgets that list files accept any name here.
FILES = {
    "diffusion_model": "z_image_turbo_bf16.safetensors",
    "text_encoder": "qwen_3_4b.safetensors",
    "vae": "ae.safetensors",
    "image": "example.png",  # ships in ComfyUI's input/ folder
}
AUTO = "auto"  # heavy upscaler / face model: the first suitable file installed, else none (said in the report)
NO_HEAVY = "none (LANCZOS only)"

# Official download locations (Hugging Face, so ComfyUI's front end offers a Download button for a missing file):
# {file name: (url, models/ folder)}. The optional heavy upscaler and face model are listed at the workflow's top
# level: the graph uses "auto", which picks them up once downloaded.
HF = "https://huggingface.co/"
DOWNLOADS = {
    "z_image_turbo_bf16.safetensors": (HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/"
                                       "z_image_turbo_bf16.safetensors", "diffusion_models"),
    "qwen_3_4b.safetensors": (HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/"
                              "qwen_3_4b.safetensors", "text_encoders"),
    "ae.safetensors": (HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors", "vae"),
    "RealESRGAN_x4plus.safetensors": (HF + "Comfy-Org/Real-ESRGAN_repackaged/resolve/main/"
                                      "RealESRGAN_x4plus.safetensors", "upscale_models"),
    "GFPGANv1.4.pth": (HF + "datasets/Gourieff/ReActor/resolve/main/models/facerestore_models/GFPGANv1.4.pth",
                       "facerestore_models"),
}
OPTIONAL_DOWNLOADS = {"blocks": "RealESRGAN_x4plus.safetensors", "faces": "GFPGANv1.4.pth"}


def model_entry(name: str) -> dict:
    url, directory = DOWNLOADS[name]
    return {"name": name, "url": url, "directory": directory}
NO_DIFFUSERS = "none (use the three files)"

# (node type, input) pairs whose combo lists files/folders found at run time: the graph must give a value (their
# INPUT_TYPES default depends on what is installed), and validation accepts any file name.
FILE_COMBOS = {
    ("ZImageLoader", "diffusion_model"), ("ZImageLoader", "text_encoder"), ("ZImageLoader", "vae"),
    ("ZImageLoader", "diffusers_folder"), ("ZImageLoraLoader", "lora_name"), ("ZImageLoadEmbeddings", "embeddings"),
    ("ZImageBlockUpscaler", "heavy_model"), ("ZImageFaceRestoreModelLoader", "model_name"),
    ("LoadImage", "image"), ("UpscaleModelLoader", "model_name"), ("UNETLoader", "unet_name"),
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
GROUP_COLORS = {"models": "#3f789e", "prompt": "#8A8", "sample": "#a1309b", "blocks": "#b58b2a",
                "faces": "#88A", "output": "#444"}
DS_SCALE = 0.65  # initial zoom: LiteGraph stops drawing text below 0.6
TITLE_H = 30  # LiteGraph title bar height (not part of a node's size)
GAP = 40


class Graph:
    def __init__(self, name: str, specs: dict[str, Spec]):
        self.name = name
        self.specs = specs
        self.nodes: list[Node] = []
        self.groups: list[tuple[str, list[Node], str]] = []
        self.optional_models: list[str] = []  # optional files offered for download at the workflow's top level
        self._col_y: dict[int, int] = {}

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
            files = [v for v in node.widgets.values() if isinstance(v, str) and v in DOWNLOADS]
            if files:  # what ComfyUI's front end offers to download when the file is missing
                d["properties"]["models"] = [model_entry(f) for f in files]
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
            **({"models": [model_entry(m) for m in self.optional_models]} if self.optional_models else {}),
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


# ------------------------------------------------------------------------------------------------ shared text
MODELS_NOTE = f"""
## Models
Put these files in ComfyUI's `models/` folders (any other file of the same kind can be chosen in the combos):

- `diffusion_models/{FILES['diffusion_model']}`
- `text_encoders/{FILES['text_encoder']}`
- `vae/{FILES['vae']}`

(Comfy-Org/z_image_turbo on Hugging Face, `split_files/`). bf16 and fp8 files load; GGUF / nvfp4 / int8 files are
refused with a message naming the format. Instead of the three files you can pick a whole diffusers folder
(`models/diffusers/…`) in **diffusers_folder**.

**Z-Image Loader** returns three handles that load lazily: a graph that only encodes loads only the text encoder.
"""

PROMPT = ("A photorealistic close-up portrait of an elderly fisherman mending a net on a wooden pier at golden hour, "
          "weathered skin, knitted wool sweater, soft rim light, calm sea and small boats in the background, "
          "shallow depth of field")
NEGATIVE = "blurry, low quality, oversaturated, distorted hands, watermark, text"
SEED = 42


def _sampler_note(extra: str = "") -> str:
    return f"""
## Z-Image Sampler
Turbo is distilled: **9 steps** (= model evaluations), **no CFG**, shift 3. Sizes snap to multiples of 16 (the
*aspect preset* combo under the widgets sets 18 common sizes; it is front-end only and not saved).

Guidance is attached to the model by the **Z-Image guidance nodes** (chain them between the loader and the
sampler; they also work on ComfyUI's own MODEL with KSampler):
- **negative** works through **NAG** (Normalized Attention Guidance); the *Z-Image NAG* node tunes it
  (scale 1 = off, 2-5 = on; τ 2.5, α 0.25).
- **Z-Image SLG** (skip-layer guidance) sharpens structure; one extra model call per active step.
- **Z-Image DyPE** keeps composition intact above 1024² (no effect at or below 1024 px per side).
- **Z-Image Seed Diversity**: Turbo varies little with the seed; 0.25-0.5 varies the composition.
{extra}
The output LATENT is in the raw Flux-VAE space: native **VAE Decode** with `ae.safetensors` decodes it too.
"""


BLOCKS_NOTE = """
## Block upscale route (×4)
1. **Saliency Map**: S = 0.4·edges + 0.4·local contrast + 0.2·colour variance, blurred; bright = detail matters
   (the heat-map preview shows it).
2. **Block Slicer**: overlapping 128 px blocks (overlap 32 px: what the stitch blends).
3. **Block Classifier**: *subject* (salient), *flat* (low variance) or *detail*; subject + detail go to the heavy
   upscaler, flat ones to LANCZOS. Its preview tints the blocks (legend under it). heavy_ratio -1 = natural routing,
   0-1 = force that fraction onto the heavy path (subjects never move).
4. **Block Upscaler**: heavy blocks batched through the upscale model, the rest LANCZOS. *auto* uses the first ×4
   model in `models/upscale_models` (any spandrel model: RealESRGAN, UltraSharp …, or an SD x4 upscaler folder);
   with none installed every block uses LANCZOS and the graph still runs. `RealESRGAN_x4plus.safetensors` is
   offered for download when it is missing.
5. **Feather Stitch**: Gaussian-feathered overlaps, no seams.
"""

FACES_NOTE = """
## Faces
**Face Restore** finds faces (MediaPipe, Haar fallback), aligns each to the 512 px FFHQ template, restores it with
GFPGAN v1.4 and pastes it back with a soft mask. The model loader's *auto* uses the first GFPGAN file in
`models/facerestore_models/` (`GFPGANv1.4.pth` is offered for download when it is missing); without one the faces
are only detected and the *report* output says so. fidelity 1 = GFPGAN's face, lower blends in the original.
"""


# ------------------------------------------------------------------------------------------------ the workflows
C0, C1, C2, C3, C4, C5 = 0, 420, 860, 1320, 1800, 2260


def _loader(g: Graph, col: int) -> Node:
    return g.add("ZImageLoader", col, width=430, widgets={
        "diffusion_model": FILES["diffusion_model"], "text_encoder": FILES["text_encoder"], "vae": FILES["vae"],
        "weight_dtype": "auto", "diffusers_folder": NO_DIFFUSERS})


def _encode(g: Graph, col: int, loader: Node, text: str, title: str) -> Node:
    return g.add("ZImageEncode", col, links={"text_encoder": (loader, "text_encoder")}, title=title,
                 widgets={"text": text, "hidden_layer": -2, "long_prompt_mode": "truncate", "max_tokens": 1504})


def text_to_image(specs) -> Graph:
    g = Graph("text_to_image", specs)
    intro = g.note(C0, """
# Z-Image Turbo: text to image
Loader → Qwen3 Encode (positive + negative) → Z-Image Sampler (1024², 9 steps, NAG on) → VAE Decode → Save.
About 1.1-1.4 s per 1024² image on an H100 (bf16); the 6 B model needs ~12-14 GB of VRAM (ComfyUI offloads when
short).
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = _loader(g, C0)
    pnote = g.note(C1, """
## Qwen3 Encode
Encodes the prompt with Qwen3-4B exactly as Z-Image was trained (chat template, second-to-last hidden layer).
Long, descriptive prompts work well; there is no weighting syntax. The *style preset* combo appends a style
suffix (front-end only). Prompts beyond 1504 tokens are truncated / compressed per **long_prompt_mode**.

The second encode is the **negative** prompt: it acts through NAG in the sampler.
""", title="Prompts")
    pos = _encode(g, C1, loader, PROMPT, "Positive prompt")
    neg = _encode(g, C1, loader, NEGATIVE, "Negative prompt (NAG)")
    snote = g.note(C2, _sampler_note(), title="Sampling", width=360)
    nag = g.add("ZImageNAG", C2, links={"model": (loader, "model")}, width=360)
    sampler = g.add("ZImageSampler", C2, links={"model": (nag, "model"), "positive": (pos, "conditioning"),
                                                "negative": (neg, "conditioning")},
                    widgets={"width": 1024, "height": 1024, "steps": 9, "seed": SEED})
    dnote = g.note(C3, """
## Decode & save
**Z-Image VAE Decode** turns the latent into an image (it switches to a seamless tiled decode by itself above
2048² or when VRAM runs out). **Save Image** writes `output/zimage_t2i_NNNNN_.png`.
""", title="Output", width=420)
    decode = g.add("ZImageVAEDecode", C3, links={"vae": (loader, "vae"), "samples": (sampler, "latent")},
                   width=420)
    save = g.add("SaveImage", C3, links={"images": (decode, "image")}, widgets={"filename_prefix": "zimage_t2i"})
    g.group("1. Models", [intro, models, loader], GROUP_COLORS["models"])
    g.group("2. Prompts", [pnote, pos, neg], GROUP_COLORS["prompt"])
    g.group("3. Sample", [snote, nag, sampler], GROUP_COLORS["sample"])
    g.group("4. Decode & save", [dnote, decode, save], GROUP_COLORS["output"])
    return g


def image_to_image(specs) -> Graph:
    g = Graph("image_to_image", specs)
    intro = g.note(C0, """
# Z-Image Turbo: image to image
Load Image → Image Scale (to a multiple of 16) → Z-Image Sampler with **denoise 0.6** → VAE Decode → Save.
The sampler encodes the image with the Z-Image VAE itself (or connect a LATENT from VAE Encode to **latent**).
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = _loader(g, C0)
    inote = g.note(C1, """
## Input image
Pick any image (ComfyUI's `example.png` by default; upload with the button). **Image Scale** resizes it to
1024×1024 with a centre crop: the VAE needs sides that are multiples of 16, and the output has the input's size
(the sampler's width/height widgets are ignored when an image is connected). Change width/height here to keep
another aspect ratio.
""", title="Input", width=330)
    load = g.add("LoadImage", C1, widgets={"image": FILES["image"]}, height=360)
    scale = g.add("ImageScale", C1, links={"image": (load, "IMAGE")},
                  widgets={"upscale_method": "lanczos", "width": 1024, "height": 1024, "crop": "center"})
    pnote = g.note(C2, """
## Prompt
Describe the image you want; with denoise 0.6 the composition and colours of the input survive while the
content follows the prompt.
""", title="Prompt")
    pos = _encode(g, C2, loader, "A watercolor painting of the same scene, soft washes of colour, visible paper "
                  "texture, loose brush strokes", "Prompt")
    snote = g.note(C3, _sampler_note("""
**denoise** sets how much of the input is replaced: 0.3-0.5 = restyle, 0.6-0.8 = reimagine, 1 = ignore the
input. With 9 steps and denoise 0.6, the last ~5 steps run.
"""), title="Sampling", width=360)
    sampler = g.add("ZImageSampler", C3, links={"model": (loader, "model"), "positive": (pos, "conditioning"),
                                                "image": (scale, "IMAGE")},
                    widgets={"width": 1024, "height": 1024, "steps": 9, "seed": SEED, "denoise": 0.6})
    decode = g.add("ZImageVAEDecode", C4, links={"vae": (loader, "vae"), "samples": (sampler, "latent")},
                   width=420)
    save = g.add("SaveImage", C4, links={"images": (decode, "image")}, widgets={"filename_prefix": "zimage_i2i"})
    g.group("1. Models", [intro, models, loader], GROUP_COLORS["models"])
    g.group("2. Input image", [inote, load, scale], GROUP_COLORS["blocks"])
    g.group("3. Prompt", [pnote, pos], GROUP_COLORS["prompt"])
    g.group("4. Sample", [snote, sampler], GROUP_COLORS["sample"])
    g.group("5. Decode & save", [decode, save], GROUP_COLORS["output"])
    return g


# The full pipeline is the graph nodes/server_routes.py build_prompt() makes for a 2048×2048 request.
FULL_WIDTH = FULL_HEIGHT = 2048
WORK_SIZE = 768
ROUTE_SCALE = 4


def full_pipeline(specs) -> Graph:
    g = Graph("full_pipeline", specs)
    g.optional_models = [OPTIONAL_DOWNLOADS["blocks"], OPTIONAL_DOWNLOADS["faces"]]
    intro = g.note(C0, f"""
# Z-Image Turbo: the full pipeline
generate → saliency → slice → classify → upscale → stitch → faces → resize → save.

The same graph `POST /zimage/generate` runs: generate at a **{WORK_SIZE}²** working size (the requested shape
with its longest side at 768 px; requests that fit 768 px are generated as asked and skip the upscale), upscale
×{ROUTE_SCALE} block by block ({WORK_SIZE * ROUTE_SCALE}²), restore faces, then resize to the size asked for
(**{FULL_WIDTH}×{FULL_HEIGHT}**). Each stage's seconds go to the timing report.
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = _loader(g, C0)
    pnote = g.note(C1, """
## 1. Generate
Qwen3 Encode → Z-Image Sampler at the working size (9 steps) → VAE Decode. Generating small and upscaling
block-wise is much faster than sampling at full size, and the heavy upscaler only works where detail matters.
""", title="Generate")
    pos = _encode(g, C1, loader, PROMPT, "Prompt")
    sampler = g.add("ZImageSampler", C2, links={"model": (loader, "model"), "positive": (pos, "conditioning")},
                    widgets={"width": WORK_SIZE, "height": WORK_SIZE, "steps": 9, "seed": SEED})
    decode = g.add("ZImageVAEDecode", C2, links={"vae": (loader, "vae"), "samples": (sampler, "latent")})
    bnote = g.note(C3, BLOCKS_NOTE, title="Blocks", width=380)
    saliency = g.add("ZImageSaliencyMap", C3, links={"image": (decode, "image")}, width=380)
    heat = g.add("PreviewImage", C3, links={"images": (saliency, "heatmap")}, title="Saliency heat map",
                 width=380, height=380)
    slicer = g.add("ZImageBlockSlicer", C4, links={"image": (decode, "image")},
                   widgets={"block_size": 128, "overlap": 32})
    classify = g.add("ZImageBlockClassifier", C4, links={"blocks": (slicer, "blocks"),
                                                         "saliency": (saliency, "saliency")},
                     widgets={"heavy_ratio": -1.0})
    upscale = g.add("ZImageBlockUpscaler", C4, links={"blocks": (classify, "blocks")},
                    widgets={"heavy_model": AUTO, "scale": ROUTE_SCALE, "batch_size": 8})
    stitch = g.add("ZImageFeatherStitch", C4, links={"blocks": (upscale, "blocks")})
    fnote = g.note(C5, FACES_NOTE + f"""
## Resize & save
**Resize (LANCZOS)** brings the {WORK_SIZE * ROUTE_SCALE}² result to the requested {FULL_WIDTH}×{FULL_HEIGHT}
(0 on one side keeps the aspect ratio).
""", title="Faces & output", width=420)
    face_model = g.add("ZImageFaceRestoreModelLoader", C5, widgets={"model_name": AUTO}, width=420)
    faces = g.add("ZImageFaceRestore", C5, links={"image": (stitch, "image"), "face_model": (face_model, "face_model")},
                  widgets={"fidelity": 1.0, "detector": "auto", "min_confidence": 0.5, "max_faces": 0}, width=420)
    resize = g.add("ZImageResize", C5, links={"image": (faces, "image")},
                   widgets={"width": FULL_WIDTH, "height": FULL_HEIGHT}, width=420)
    save = g.add("SaveImage", C5, links={"images": (resize, "image")},
                 widgets={"filename_prefix": "zimage_pipeline"})
    g.group("Models", [intro, models, loader], GROUP_COLORS["models"])
    g.group("1. Generate (768²)", [pnote, pos, sampler, decode], GROUP_COLORS["sample"])
    g.group("2. Saliency", [bnote, saliency, heat], GROUP_COLORS["blocks"])
    g.group("3. Slice · classify · upscale ×4 · stitch", [slicer, classify, upscale, stitch], GROUP_COLORS["blocks"])
    g.group("4. Faces · resize · save", [fnote, face_model, faces, resize, save], GROUP_COLORS["faces"])
    return g


def hires_2048_dype(specs) -> Graph:
    g = Graph("hires_2048_dype", specs)
    intro = g.note(C0, """
# Z-Image Turbo: 2048² in one pass with DyPE
Loader → Qwen3 Encode → Z-Image Sampler at **2048×2048 with DyPE on** → Tiled VAE Decode → Save.
About 6-7 s per image on an H100 (bf16), ~14 GB of VRAM.
""", title="About this workflow")
    why = g.note(C0, """
## Why one pass with DyPE (and not 1024 → img2img at 2048)
Z-Image was trained at up to 1024². Sampled directly at 2048² with plain RoPE, the image repeats or loses its
composition (duplicated subjects, tiled textures). **DyPE** (Dynamic Position Extrapolation) rescales the two
spatial RoPE axes by target/base size per axis, strongest at high noise (when the layout forms) and fading to
plain RoPE by the last steps (when fine detail forms). So a single 9-step pass at 2048² gets a coherent layout
*and* native 2K detail, in less time than generate + refine.

A two-pass alternative (1024² → upscale → sampler with denoise ~0.4 at 2048²) also works: enable DyPE on the
second sampler too. Non-square sizes are handled per axis (no stretching).
""", title="Why DyPE", width=330)
    loader = _loader(g, C0)
    pnote = g.note(C1, """
## Prompt
Large images reward detailed prompts: describe the background and the textures, not only the subject.
""", title="Prompt")
    pos = _encode(g, C1, loader, "A vast alpine valley at sunrise, a turquoise lake in the foreground with a small "
                  "wooden cabin and a red canoe, pine forests, snow-capped peaks, mist in the valleys, crisp "
                  "detail, landscape photography", "Prompt")
    snote = g.note(C2, _sampler_note("""
**Z-Image DyPE** node: method *vision_yarn* (default; yarn and ntk also offered), scale (λs) 2, exponent (λt) 2
(higher = fades to plain RoPE sooner). Base size is 1024: at ≤ 1024 px per side DyPE does nothing, so the same
graph also works for small images.
"""), title="Sampling (2048², DyPE)", width=360)
    dype = g.add("ZImageDyPE", C2, links={"model": (loader, "model")},
                 widgets={"method": "vision_yarn", "scale": 2.0, "exponent": 2.0}, width=360)
    sampler = g.add("ZImageSampler", C2, links={"model": (dype, "model"), "positive": (pos, "conditioning")},
                    widgets={"width": 2048, "height": 2048, "steps": 9, "seed": SEED})
    dnote = g.note(C3, """
## Tiled decode & save
**Tiled VAE Decode** decodes 512 px tiles with 128 px raised-cosine overlaps: a 2048² decode in bounded VRAM with
no visible seams. Save writes `output/zimage_2048_dype_NNNNN_.png`.
""", title="Output", width=420)
    decode = g.add("ZImageTiledVAEDecode", C3, links={"vae": (loader, "vae"), "samples": (sampler, "latent")},
                   widgets={"tile_size": 512, "overlap": 128}, width=420)
    save = g.add("SaveImage", C3, links={"images": (decode, "image")},
                 widgets={"filename_prefix": "zimage_2048_dype"}, height=460)
    g.group("1. Models", [intro, why, loader], GROUP_COLORS["models"])
    g.group("2. Prompt", [pnote, pos], GROUP_COLORS["prompt"])
    g.group("3. Sample at 2048² with DyPE", [snote, dype, sampler], GROUP_COLORS["sample"])
    g.group("4. Tiled decode & save", [dnote, decode, save], GROUP_COLORS["output"])
    return g


def upscale_existing_image(specs) -> Graph:
    g = Graph("upscale_existing_image", specs)
    g.optional_models = [OPTIONAL_DOWNLOADS["blocks"], OPTIONAL_DOWNLOADS["faces"]]
    intro = g.note(C0, """
# Upscale an existing image (no Z-Image model needed)
Load Image → saliency + blocks → classify → upscale ×4 → feather stitch → face restore → save.
The block route of the full pipeline on any image: the heavy upscaler only runs where the image has detail,
LANCZOS does the flat areas.
""", title="About this workflow")
    inote = g.note(C0, f"""
## Input & upscale model
Pick any image (ComfyUI's `example.png` by default). The Block Upscaler's **heavy_model** is *auto*: the first
×4 model in `models/upscale_models` (e.g. {OPTIONAL_DOWNLOADS['blocks']}, offered for download when missing),
else every block uses LANCZOS — the graph runs either way. A **Load Upscale Model** node connected to its
*upscale_model* input overrides the combo.
""", title="Input", width=330)
    load = g.add("LoadImage", C0, widgets={"image": FILES["image"]}, height=360)
    bnote = g.note(C1, BLOCKS_NOTE, title="Blocks", width=380)
    saliency = g.add("ZImageSaliencyMap", C1, links={"image": (load, "IMAGE")}, width=380)
    heat = g.add("PreviewImage", C1, links={"images": (saliency, "heatmap")}, title="Saliency heat map",
                 width=380, height=380)
    slicer = g.add("ZImageBlockSlicer", C2, links={"image": (load, "IMAGE")},
                   widgets={"block_size": 128, "overlap": 32}, width=360)
    classify = g.add("ZImageBlockClassifier", C2, links={"blocks": (slicer, "blocks"),
                                                         "saliency": (saliency, "saliency")},
                     widgets={"heavy_ratio": -1.0}, width=360)
    upscale = g.add("ZImageBlockUpscaler", C2, links={"blocks": (classify, "blocks")},
                    widgets={"heavy_model": AUTO, "scale": 4, "batch_size": 8}, width=360)
    stitch = g.add("ZImageFeatherStitch", C2, links={"blocks": (upscale, "blocks")}, width=360)
    fnote = g.note(C3 + 20, FACES_NOTE, title="Faces", width=420)
    face_model = g.add("ZImageFaceRestoreModelLoader", C3 + 20, widgets={"model_name": AUTO},
                       width=420)
    faces = g.add("ZImageFaceRestore", C3 + 20, links={"image": (stitch, "image"),
                                                       "face_model": (face_model, "face_model")},
                  widgets={"fidelity": 1.0, "detector": "auto", "min_confidence": 0.5, "max_faces": 0}, width=420)
    save = g.add("SaveImage", C3 + 20, links={"images": (faces, "image")},
                 widgets={"filename_prefix": "zimage_upscaled"})
    g.group("1. Input", [intro, inote, load], GROUP_COLORS["models"])
    g.group("2. Saliency", [bnote, saliency, heat], GROUP_COLORS["blocks"])
    g.group("3. Slice · classify · upscale ×4 · stitch", [slicer, classify, upscale, stitch], GROUP_COLORS["blocks"])
    g.group("4. Faces & save", [fnote, face_model, faces, save], GROUP_COLORS["faces"])
    return g


def native_graph_guidance(specs) -> Graph:
    g = Graph("native_graph_guidance", specs)
    g.optional_models = [OPTIONAL_DOWNLOADS["blocks"], OPTIONAL_DOWNLOADS["faces"]]
    intro = g.note(C0, """
# Z-Image guidance in the native ComfyUI graph
ComfyUI's own Z-Image graph — **UNETLoader** (bf16, fp8 or a GGUF loader), **CLIPLoader** (type *lumina2*),
**ModelSamplingAuraFlow** (shift 3), **KSampler** (cfg 1) — with the Z-Image guidance nodes chained on its MODEL,
then the block-upscale route on the decoded image.

ComfyUI's own *NAGuidance* and *SkipLayerGuidanceDiT* do nothing on Z-Image (they hook places this model never
calls); these nodes work through ComfyUI's public hooks and leave the loaded model unchanged.
""", title="About this workflow")
    files = g.note(C0, """
## Models
- `diffusion_models/z_image_turbo_bf16.safetensors`
- `text_encoders/qwen_3_4b.safetensors`
- `vae/ae.safetensors`

(Comfy-Org/z_image_turbo on Hugging Face, `split_files/`.) One set of weights serves the whole graph: the guidance
nodes patch a clone of the native model, nothing is loaded twice.
""", title="Models")
    unet = g.add("UNETLoader", C0, widgets={"unet_name": FILES["diffusion_model"], "weight_dtype": "default"})
    clip = g.add("CLIPLoader", C0, widgets={"clip_name": FILES["text_encoder"], "type": "lumina2",
                                            "device": "default"})
    vae = g.add("VAELoader", C0, widgets={"vae_name": FILES["vae"]})
    gnote = g.note(C1, """
## Guidance on the native MODEL
- **Z-Image NAG**: the negative prompt acts at cfg 1 (KSampler's negative input is used).
- **Z-Image SLG**: skips layers 7-12 in one extra pass during the early steps: sharper structure.
- **Z-Image DyPE**: only acts above 1024² (e.g. set the latent to 2048×1152).
Bypass a node (Ctrl+B) to compare. KSampler's *simple* scheduler gives Turbo's exact schedule at 8 steps; for 9,
use SamplerCustom with **Z-Image Schedule**.
""", title="Guidance", width=360)
    aura = g.add("ModelSamplingAuraFlow", C1, links={"model": (unet, "MODEL")}, widgets={"shift": 3.0}, width=360)
    nag = g.add("ZImageNAG", C1, links={"model": (aura, "MODEL")}, width=360)
    slg = g.add("ZImageSLG", C1, links={"model": (nag, "model")}, width=360)
    dype = g.add("ZImageDyPE", C1, links={"model": (slg, "model")}, width=360)
    pos = g.add("CLIPTextEncode", C2, links={"clip": (clip, "CLIP")}, widgets={"text": PROMPT},
                title="Positive prompt", width=400)
    neg = g.add("CLIPTextEncode", C2, links={"clip": (clip, "CLIP")}, widgets={"text": NEGATIVE},
                title="Negative prompt (NAG)", width=400)
    latent = g.add("EmptySD3LatentImage", C2, widgets={"width": 1024, "height": 1024, "batch_size": 1}, width=400)
    sampler = g.add("KSampler", C3, links={"model": (dype, "model"), "positive": (pos, "CONDITIONING"),
                                           "negative": (neg, "CONDITIONING"), "latent_image": (latent, "LATENT")},
                    widgets={"seed": SEED, "steps": 8, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                             "denoise": 1.0}, width=360, height=330)
    decode = g.add("VAEDecode", C3, links={"samples": (sampler, "LATENT"), "vae": (vae, "VAE")}, width=360)
    bnote = g.note(C4, BLOCKS_NOTE + """
Then faces are restored and the result (×4) is saved.
""", title="Blocks & faces", width=380)
    saliency = g.add("ZImageSaliencyMap", C4, links={"image": (decode, "IMAGE")}, width=380)
    slicer = g.add("ZImageBlockSlicer", C4, links={"image": (decode, "IMAGE")},
                   widgets={"block_size": 128, "overlap": 32}, width=380)
    classify = g.add("ZImageBlockClassifier", C4, links={"blocks": (slicer, "blocks"),
                                                         "saliency": (saliency, "saliency")},
                     widgets={"heavy_ratio": -1.0}, width=380)
    upscale = g.add("ZImageBlockUpscaler", C5, links={"blocks": (classify, "blocks")},
                    widgets={"heavy_model": AUTO, "scale": ROUTE_SCALE, "batch_size": 8}, width=420)
    stitch = g.add("ZImageFeatherStitch", C5, links={"blocks": (upscale, "blocks")}, width=420)
    face_model = g.add("ZImageFaceRestoreModelLoader", C5, widgets={"model_name": AUTO}, width=420)
    faces = g.add("ZImageFaceRestore", C5, links={"image": (stitch, "image"), "face_model": (face_model, "face_model")},
                  widgets={"fidelity": 1.0, "detector": "auto", "min_confidence": 0.5, "max_faces": 0}, width=420)
    save = g.add("SaveImage", C5, links={"images": (faces, "image")}, widgets={"filename_prefix": "zimage_native"})
    g.group("Native models", [intro, files, unet, clip, vae], GROUP_COLORS["models"])
    g.group("Z-Image guidance on MODEL", [gnote, aura, nag, slg, dype], GROUP_COLORS["sample"])
    g.group("Prompts & KSampler", [pos, neg, latent, sampler, decode], GROUP_COLORS["prompt"])
    g.group("Block route ×4 · faces · save", [bnote, saliency, slicer, classify, upscale, stitch, face_model, faces,
                                                save], GROUP_COLORS["blocks"])
    return g


WORKFLOWS = {
    "text_to_image": text_to_image,
    "image_to_image": image_to_image,
    "full_pipeline": full_pipeline,
    "hires_2048_dype": hires_2048_dype,
    "upscale_existing_image": upscale_existing_image,
    "native_graph_guidance": native_graph_guidance,
}


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def build_all(pack=None) -> dict[str, str]:
    """{file name: text} for every workflow, both formats."""
    specs = all_specs(pack)
    files = {}
    for name, build in WORKFLOWS.items():
        graph = build(specs)
        files[f"{name}.json"] = dumps(graph.ui())
        files[f"{name}.api.json"] = dumps(graph.api())
    return files


def write_all(out_dir: Path, pack=None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in build_all(pack).items():
        path = out_dir / fname
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: this folder)")
    ap.add_argument("--check", action="store_true", help="only compare with the files in --out; exit 1 if stale")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    files = build_all()
    if args.check:
        stale = [f for f, text in files.items()
                 if not (args.out / f).is_file() or (args.out / f).read_text(encoding="utf-8") != text]
        for f in stale:
            print(f"stale: {args.out / f}")
        print("up to date" if not stale else "re-run: python workflows/build_workflows.py")
        return 1 if stale else 0
    for fname, text in files.items():
        (args.out / fname).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / fname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
