"""The example workflows in workflows/: every file parses; node types are ours or known core nodes; links are typed
correctly at both ends; widget values are valid for the node inputs; each API twin matches its UI graph; the
generator is deterministic and the committed files are what it builds; the full pipeline matches the graph the
/zimage/generate route builds; and the API graphs run on tiny models through our nodes (core nodes stubbed).

No ComfyUI needed: our nodes' INPUT_TYPES / RETURN_TYPES are the reference, core nodes are described below.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pack_import import REPO, load_pack

CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}

WF_DIR = REPO / "workflows"
NAMES = ("text_to_image", "image_to_image", "full_pipeline", "hires_2048_dype", "upscale_existing_image",
         "native_graph_guidance", "controlnet_canny", "inpaint")
CONTROLNET_FILE = "Z-Image-Turbo-Fun-Controlnet-Union-2.1.safetensors"
ZIMAGE_FILES = {"diffusion_models": "z_image_turbo_bf16.safetensors", "text_encoders": "qwen_3_4b.safetensors",
                "vae": "ae.safetensors"}

# Core ComfyUI node types (ComfyUI 0.18.1 /object_info), from the table the generator uses too
from core_nodes import CORE_NODES  # noqa: E402  (workflows/ is on the path: conftest.py)

CORE = {name: {"inputs": dict(node.sockets), "outputs": [kind for _, kind in node.outputs],
               "widgets": [(w, check) for w, check, _ in node.widgets],
               "ui_after": {w: ({"image"} if w == "image" else CONTROL_VALUES) for w in node.ui_after},
               "virtual": node.virtual} for name, node in CORE_NODES.items()}
# Combos that list installed files/folders: any file name is valid (the user's machine decides).
FILE_COMBOS = {("ZImageLoader", "diffusion_model"), ("ZImageLoader", "text_encoder"), ("ZImageLoader", "vae"),
               ("ZImageLoader", "diffusers_folder"), ("ZImageLoraLoader", "lora_name"),
               ("ZImageLoadEmbeddings", "embeddings"), ("ZImageBlockUpscaler", "heavy_model"),
               ("ZImageFaceRestoreModelLoader", "model_name"), ("ZImageControlNetLoader", "controlnet_name"),
               ("UNETLoader", "unet_name"),
               ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name")}
PRIMITIVES = ("INT", "FLOAT", "STRING", "BOOLEAN")


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def _load(name: str) -> dict:
    return json.loads((WF_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui_files() -> dict[str, dict]:
    return {n: _load(f"{n}.json") for n in NAMES}


@pytest.fixture(scope="module")
def api_files() -> dict[str, dict]:
    return {n: _load(f"{n}.api.json") for n in NAMES}


# ------------------------------------------------------------------------------------------ node descriptions
def describe(pack, type_: str) -> dict:
    """{'inputs': {socket name: type} (definition order), 'outputs': [types], 'widgets': [(name, check)],
    'ui_after': {widget: allowed UI-only values}} for our node or a core node."""
    if type_ in CORE:
        return CORE[type_]
    cls = pack.NODE_CLASS_MAPPINGS[type_]
    inputs, widgets, ui_after = {}, [], {}
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            kind, opts = s[0], (s[1] if len(s) > 1 else {})
            if isinstance(kind, (list, tuple)):
                widgets.append((name, "FILE" if (type_, name) in FILE_COMBOS else list(kind)))
            elif kind in PRIMITIVES and not opts.get("forceInput"):
                widgets.append((name, (kind, opts)))
                if opts.get("control_after_generate"):
                    ui_after[name] = CONTROL_VALUES
            else:
                inputs[name] = kind
    return {"inputs": inputs, "outputs": list(cls.RETURN_TYPES), "widgets": widgets, "ui_after": ui_after}


def check_value(where: str, value, check) -> None:
    if check == "FILE":
        assert isinstance(value, str) and value, f"{where}: file name expected, got {value!r}"
    elif isinstance(check, list):
        assert value in check, f"{where}: {value!r} is not one of {check}"
    else:
        kind, opts = check
        opts = opts or {}
        if kind == "INT":
            assert isinstance(value, int) and not isinstance(value, bool), f"{where}: int expected, got {value!r}"
        elif kind == "FLOAT":
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: number, got {value!r}"
        elif kind == "STRING":
            assert isinstance(value, str), f"{where}: string expected, got {value!r}"
        elif kind == "BOOLEAN":
            assert isinstance(value, bool), f"{where}: boolean expected, got {value!r}"
        if kind in ("INT", "FLOAT"):
            assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {value} out of range {opts}"
        if kind == "INT" and opts.get("step", 1) > 1:
            assert value % opts["step"] == 0, f"{where}: {value} is not a multiple of the step {opts['step']}"


def ui_widget_values(desc: dict, values: list, where: str) -> dict:
    """Map a UI node's widgets_values to {widget name: value}, checking the UI-only extras in between."""
    out, i = {}, 0
    for name, _ in desc["widgets"]:
        assert i < len(values), f"{where}: widgets_values too short ({len(values)})"
        out[name] = values[i]
        i += 1
        if name in desc.get("ui_after", {}):
            assert i < len(values) and values[i] in desc["ui_after"][name], f"{where}: bad UI value after {name}"
            i += 1
    assert i == len(values), f"{where}: {len(values) - i} extra widgets_values {values[i:]}"
    return out


# ------------------------------------------------------------------------------------------ structure
def test_every_workflow_file_parses_and_is_listed():
    found = sorted(p.name for p in WF_DIR.glob("*.json"))
    assert found == sorted([f"{n}.json" for n in NAMES] + [f"{n}.api.json" for n in NAMES])
    for name in found:
        assert isinstance(_load(name), dict)


def test_ui_format_shape(ui_files):
    for name, wf in ui_files.items():
        assert wf["version"] == 0.4 and isinstance(wf["extra"], dict) and isinstance(wf["groups"], list), name
        ids = [n["id"] for n in wf["nodes"]]
        assert len(set(ids)) == len(ids) and wf["last_node_id"] == max(ids), name
        link_ids = [lk[0] for lk in wf["links"]]
        assert len(set(link_ids)) == len(link_ids) and wf["last_link_id"] == max(link_ids), name
        for n in wf["nodes"]:
            for key in ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "order", "mode"):
                assert key in n, f"{name} node {n.get('id')}: no {key}"
            assert len(n["pos"]) == 2 and len(n["size"]) == 2 and min(n["size"]) > 0
        for g in wf["groups"]:
            assert g["title"] and len(g["bounding"]) == 4


def test_node_types_are_ours_or_known_core(pack, ui_files, api_files):
    ours = set(pack.NODE_CLASS_MAPPINGS)
    for name in NAMES:
        types = {n["type"] for n in ui_files[name]["nodes"]} | {n["class_type"] for n in api_files[name].values()}
        unknown = types - ours - set(CORE)
        assert not unknown, f"{name}: unknown node types {unknown}"


def test_links_typed_at_both_ends(pack, ui_files):
    for name, wf in ui_files.items():
        nodes = {n["id"]: n for n in wf["nodes"]}
        for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
            where = f"{name} link {link_id}"
            s, d = nodes[src], nodes[dst]
            s_desc, d_desc = describe(pack, s["type"]), describe(pack, d["type"])
            # the declared sockets match the node definitions
            assert [o["type"] for o in s["outputs"]] == s_desc["outputs"], f"{where}: {s['type']} outputs"
            assert [(i["name"], i["type"]) for i in d["inputs"]] == list(d_desc["inputs"].items()), \
                f"{where}: {d['type']} inputs"
            assert s_desc["outputs"][src_slot] == kind, f"{where}: {s['type']} output {src_slot} is not {kind}"
            # ComfyUI accepts a link when the comma-separated type sets intersect ("MODEL,ZIMAGE_MODEL" → MODEL)
            dst_kind = d["inputs"][dst_slot]["type"]
            assert set(dst_kind.split(",")) & set(kind.split(",")), f"{where}: {d['type']} input {dst_slot} " \
                                                                     f"({dst_kind}) does not take {kind}"
            # both ends refer back to the link
            assert d["inputs"][dst_slot]["link"] == link_id, where
            assert link_id in s["outputs"][src_slot]["links"], where
        # no dangling references
        all_links = {lk[0] for lk in wf["links"]}
        for n in wf["nodes"]:
            for i in n["inputs"]:
                assert i["link"] is None or i["link"] in all_links, f"{name} node {n['id']}"
            for o in n["outputs"]:
                assert set(o.get("links") or []) <= all_links, f"{name} node {n['id']}"
        # every required socket input is connected
        for n in wf["nodes"]:
            if n["type"] in CORE:
                required = set(CORE[n["type"]]["inputs"])
            else:
                spec = pack.NODE_CLASS_MAPPINGS[n["type"]].INPUT_TYPES()["required"]
                required = {k for k in describe(pack, n["type"])["inputs"] if k in spec}
            linked = {i["name"] for i in n["inputs"] if i["link"] is not None}
            assert required <= linked, f"{name} node {n['id']} {n['type']}: unconnected {required - linked}"


def test_widget_values_valid(pack, ui_files):
    for name, wf in ui_files.items():
        for n in wf["nodes"]:
            where = f"{name} node {n['id']} {n['type']}"
            desc = describe(pack, n["type"])
            values = ui_widget_values(desc, n["widgets_values"], where)
            for wname, check in desc["widgets"]:
                check_value(f"{where}.{wname}", values[wname], check)


def test_default_model_files_are_what_users_have(ui_files):
    for name, wf in ui_files.items():
        for n in wf["nodes"]:
            if n["type"] == "ZImageLoader":
                assert n["widgets_values"][:3] == list(ZIMAGE_FILES.values()), name
            if n["type"] in ("UNETLoader", "CLIPLoader", "VAELoader"):
                assert n["widgets_values"][0] in ZIMAGE_FILES.values(), name
            if n["type"] in ("ZImageBlockUpscaler", "ZImageFaceRestoreModelLoader"):
                assert n["widgets_values"][0] == "auto", f"{name}: optional models must not be required"
            assert n["type"] != "UpscaleModelLoader", f"{name}: its combo fails validation with no file installed"


def test_model_download_metadata_for_every_file(ui_files):
    """Every node naming a model file carries ComfyUI's download metadata for it (Hugging Face, so the front end
    offers a Download button); the optional upscaler and face model are listed at the top level."""
    allowed = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
    for name, wf in ui_files.items():
        for n in wf["nodes"]:
            known = {**ZIMAGE_FILES, "model_patches": CONTROLNET_FILE}
            files = [v for v in n["widgets_values"] if isinstance(v, str) and v in known.values()]
            entries = {m["name"]: m for m in n.get("properties", {}).get("models", [])}
            assert set(files) == set(entries), f"{name} node {n['id']}: {files} vs {sorted(entries)}"
            for f, entry in entries.items():
                assert entry["directory"] == next(d for d, v in known.items() if v == f)
        top = wf.get("models", [])
        uses_blocks = any(n["type"] == "ZImageBlockUpscaler" for n in wf["nodes"])
        assert {m["name"] for m in top} == ({"RealESRGAN_x4plus.safetensors", "GFPGANv1.4.pth"} if uses_blocks
                                            else set()), name
        for entry in top + [m for n in wf["nodes"] for m in n.get("properties", {}).get("models", [])]:
            assert entry["url"].startswith("https://huggingface.co/") and "/resolve/" in entry["url"], entry
            assert entry["name"].endswith(allowed) and entry["url"].endswith(entry["name"]), entry
            assert entry["directory"] in ("diffusion_models", "text_encoders", "vae", "upscale_models",
                                          "facerestore_models", "model_patches"), entry


def test_every_workflow_has_notes(ui_files):
    for name, wf in ui_files.items():
        notes = [n for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
        assert len(notes) >= 3, name
        assert all(isinstance(n["widgets_values"][0], str) and len(n["widgets_values"][0]) > 40 for n in notes)
        assert len(wf["groups"]) >= 3, name


def test_api_twin_matches_ui(pack, ui_files, api_files):
    for name in NAMES:
        ui, api = ui_files[name], api_files[name]
        real = {n["id"]: n for n in ui["nodes"] if not describe(pack, n["type"]).get("virtual")}
        assert set(api) == {str(i) for i in real}, name
        links = {(lk[3], lk[4]): (lk[1], lk[2]) for lk in ui["links"]}
        for sid, entry in api.items():
            n = real[int(sid)]
            where = f"{name} node {sid}"
            assert set(entry) == {"class_type", "inputs"} and entry["class_type"] == n["type"], where
            desc = describe(pack, n["type"])
            expected = {}
            for slot, inp in enumerate(n["inputs"]):
                if (n["id"], slot) in links:
                    src, src_slot = links[(n["id"], slot)]
                    expected[inp["name"]] = [str(src), src_slot]
            expected.update(ui_widget_values(desc, n["widgets_values"], where))
            assert entry["inputs"] == expected, where
            for key, value in entry["inputs"].items():  # values only where the node has such an input
                assert key in desc["inputs"] or key in dict(desc["widgets"]), f"{where}: unknown input {key}"
                if key in desc["inputs"]:
                    assert isinstance(value, list) and value[0] in api, where


def test_sampler_seed_is_followed_by_control_value(ui_files):
    for name, wf in ui_files.items():
        for n in wf["nodes"]:
            if n["type"] == "ZImageSampler":
                v = n["widgets_values"]
                assert v[3] == 42 and v[4] == "randomize", name  # width, height, steps, seed, control_after_generate
            if n["type"] == "KSampler":
                assert n["widgets_values"][:2] == [42, "randomize"], name


# ------------------------------------------------------------------------------------------ generator
def _generator():
    spec = importlib.util.spec_from_file_location("zimage_build_workflows", WF_DIR / "build_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_generator_is_deterministic_and_files_are_current(pack, tmp_path):
    gen = _generator()
    a, b = tmp_path / "a", tmp_path / "b"
    gen.write_all(a, pack)
    gen.write_all(b, pack)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for f in names:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
        assert (a / f).read_bytes() == (WF_DIR / f).read_bytes(), \
            f"workflows/{f} is stale: run python workflows/build_workflows.py"


def _canonical(graph: dict, pack) -> list:
    """A graph as a sorted list of node signatures (class, every input with widget defaults filled in, links as the
    signature of their source): equal lists = the same graph, whatever the node ids."""
    memo: dict[str, tuple] = {}

    def sig(node_id: str) -> tuple:
        if node_id not in memo:
            node = graph[node_id]
            inputs = dict(node["inputs"])
            cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
            if cls is not None:
                for section in cls.INPUT_TYPES().values():
                    for name, spec in section.items():
                        if len(spec) > 1 and "default" in spec[1]:
                            inputs.setdefault(name, spec[1]["default"])
            memo[node_id] = (node["class_type"], tuple(sorted(
                (k, (sig(v[0]), v[1]) if isinstance(v, list) else repr(v)) for k, v in inputs.items())))
        return memo[node_id]

    return sorted(repr(sig(i)) for i in graph)


def test_full_pipeline_is_the_route_graph(pack, api_files):
    """workflows/full_pipeline.api.json and the graph POST /zimage/generate queues for the same request come from one
    builder (nodes/route_graph.build_route_graph) and are the same graph; the example only writes its output with
    Save Image and adds a preview of the saliency heat map."""
    from zimage_core.job import GenerationJob
    from zimage_turbo_pack.nodes import server_routes
    from zimage_turbo_pack.nodes.route_graph import build_route_graph

    gen = _generator()
    assert gen.route_graph_builder() is build_route_graph is server_routes.build_route_graph
    assert _canonical(api_files["full_pipeline"], pack) == _canonical(gen.full_pipeline_graph().nodes, pack)

    request = dict(gen.FULL_PIPELINE)  # what a client would POST
    job = GenerationJob.build(request.pop("prompts"), request)
    served = build_route_graph(job, **gen.ROUTE_FILES, heavy="auto", face_model="auto").nodes
    example = {k: v for k, v in api_files["full_pipeline"].items()
               if v["class_type"] not in ("SaveImage", "PreviewImage")}
    served = {k: v for k, v in served.items() if v["class_type"] != "PreviewImage"}
    assert _canonical(example, pack) == _canonical(served, pack)


# ------------------------------------------------------------------------------------------ run on tiny models
TINY = {"z_image_turbo_bf16.safetensors": "z_image_turbo_tiny.safetensors",
        "qwen_3_4b.safetensors": "qwen_3_4b_tiny.safetensors", "ae.safetensors": "ae_tiny.safetensors",
        "4x-UltraSharp.pth": "tiny_esrgan_x4.safetensors", "GFPGANv1.4.pth": "GFPGANv1.4-random.safetensors",
        CONTROLNET_FILE: "tiny_fun_controlnet_2.1.safetensors"}


@pytest.fixture(scope="module")
def run_models(tmp_path_factory, tiny_dirs) -> Path:
    from zimage_core.testing.controlnet import save_tiny_controlnet
    from zimage_core.testing.faces import save_random_gfpgan
    from zimage_core.testing.upscalers import save_tiny_esrgan

    root = tmp_path_factory.mktemp("wf_models")
    for sub in ("diffusion_models", "text_encoders", "vae", "tokenizer"):
        (root / sub).symlink_to(tiny_dirs["comfy"] / sub, target_is_directory=True)
    save_tiny_esrgan(root / "upscale_models" / "tiny_esrgan_x4.safetensors", scale=4)
    save_random_gfpgan(root / "facerestore_models", formats=("safetensors",))
    save_tiny_controlnet(root / "model_patches" / TINY[CONTROLNET_FILE], "2.1")
    return root


def _core_node(type_: str, inputs: dict, models: Path, saved: list):
    """Minimal stand-ins for the core nodes (what ComfyUI's versions return)."""
    from zimage_core.images import load_image

    if type_ == "LoadImage":
        img = load_image(REPO / "examples" / "astronaut.png")  # the workflows name ComfyUI's example.png
        return (img, torch.zeros(img.shape[:3]))
    if type_ == "ImageScale":
        img, w, h = inputs["image"], inputs["width"], inputs["height"]
        if inputs["crop"] == "center":
            ih, iw = img.shape[1:3]
            if iw / ih > w / h:
                cw = round(ih * w / h)
                img = img[:, :, (iw - cw) // 2:(iw - cw) // 2 + cw]
            else:
                ch = round(iw * h / w)
                img = img[:, (ih - ch) // 2:(ih - ch) // 2 + ch]
        out = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                                              align_corners=False)
        return (out.permute(0, 2, 3, 1).clamp(0, 1),)
    if type_ == "UpscaleModelLoader":
        from spandrel import ModelLoader

        return (ModelLoader().load_from_file(str(models / "upscale_models" / inputs["model_name"])).eval(),)
    if type_ in ("SaveImage", "PreviewImage"):
        saved.append((type_, inputs["images"]))
        return ()
    if type_ == "SolidMask":
        return (torch.full((1, inputs["height"], inputs["width"]), float(inputs["value"])),)
    if type_ == "MaskComposite":
        assert inputs["operation"] == "add"
        out, src, x, y = inputs["destination"].clone(), inputs["source"], inputs["x"], inputs["y"]
        h, w = min(src.shape[1], out.shape[1] - y), min(src.shape[2], out.shape[2] - x)
        out[:, y:y + h, x:x + w] = (out[:, y:y + h, x:x + w] + src[:, :h, :w]).clamp(0, 1)
        return (out,)
    if type_ == "ImageCompositeMasked":
        m = inputs["mask"][..., None]
        return (inputs["destination"] * (1 - m) + inputs["source"] * m,)
    raise AssertionError(f"no stand-in for {type_}")


def run_api(pack, graph: dict, models: Path) -> tuple[dict, list]:
    """Execute an API graph like ComfyUI's executor (dependencies first), our nodes for real."""
    results: dict[str, tuple] = {}
    saved: list = []

    def run(nid: str):
        if nid in results:
            return results[nid]
        entry = graph[nid]
        inputs = {k: (run(v[0])[v[1]] if isinstance(v, list) else v) for k, v in entry["inputs"].items()}
        cls = pack.NODE_CLASS_MAPPINGS.get(entry["class_type"])
        if cls is None:
            out = _core_node(entry["class_type"], inputs, models, saved)
        else:
            out = getattr(cls(), cls.FUNCTION)(**inputs)
            out = out["result"] if isinstance(out, dict) else out
            assert len(out) == len(cls.RETURN_TYPES)
        results[nid] = out
        return out

    for nid in graph:
        run(nid)
    return results, saved


def tiny_graph(name: str, **overrides) -> dict:
    """The committed API graph with the tiny model files and {class_type: {input: value}} overrides for speed."""
    graph = _load(f"{name}.api.json")
    for entry in graph.values():
        for k, v in entry["inputs"].items():
            if isinstance(v, str) and v in TINY:
                entry["inputs"][k] = TINY[v]
        entry["inputs"].update(overrides.get(entry["class_type"], {}))
    return graph


@pytest.fixture(scope="module")
def three_files(tmp_path_factory, tiny_dirs) -> Path:
    """A models/ folder holding only what every user has: the Z-Image DiT, text encoder and VAE (+ tokenizer)."""
    root = tmp_path_factory.mktemp("wf_three_files")
    for sub in ("diffusion_models", "text_encoders", "vae", "tokenizer"):
        (root / sub).symlink_to(tiny_dirs["comfy"] / sub, target_is_directory=True)
    return root


def _combo_problems(pack, graph: dict, available: dict[str, set[str]]) -> list[str]:
    """What ComfyUI's validation would refuse: a combo value not in the node's list (our nodes: their INPUT_TYPES
    with these files installed; core loaders: the files in their folder; LoadImage: ComfyUI's example.png)."""
    core_files = {("UNETLoader", "unet_name"): "diffusion_models", ("CLIPLoader", "clip_name"): "text_encoders",
                  ("VAELoader", "vae_name"): "vae", ("UpscaleModelLoader", "model_name"): "upscale_models"}
    problems = []
    for nid, entry in graph.items():
        ct, inputs = entry["class_type"], entry["inputs"]
        if ct in pack.NODE_CLASS_MAPPINGS:
            spec = pack.NODE_CLASS_MAPPINGS[ct].INPUT_TYPES()
            for section in ("required", "optional"):
                for key, decl in spec.get(section, {}).items():
                    if isinstance(decl[0], list) and key in inputs and inputs[key] not in decl[0]:
                        problems.append(f"{nid} {ct}.{key}: {inputs[key]!r} not in {decl[0]}")
        for (core, key), folder in core_files.items():
            if ct == core and inputs[key] not in available.get(folder, set()):
                problems.append(f"{nid} {ct}.{key}: {inputs[key]!r} not installed")
        if ct == "LoadImage" and inputs["image"] != "example.png":
            problems.append(f"{nid} LoadImage: {inputs['image']!r}")
    return problems


def test_every_workflow_validates_with_only_the_three_zimage_files(pack, three_files, monkeypatch):
    """Each workflow's combos are all valid on a machine with only the three Z-Image files (upscale_existing_image:
    with no model at all; controlnet_canny: plus the ControlNet it is about), so ComfyUI runs every output node
    instead of dropping them."""
    from zimage_core.testing.controlnet import save_tiny_controlnet
    from zimage_turbo_pack.nodes import host

    with_controlnet = three_files.parent / "three_plus_controlnet"
    for sub in ("diffusion_models", "text_encoders", "vae", "tokenizer"):
        if not (with_controlnet / sub).exists():
            with_controlnet.mkdir(exist_ok=True)
            (with_controlnet / sub).symlink_to((three_files / sub).resolve(), target_is_directory=True)
    save_tiny_controlnet(with_controlnet / "model_patches" / TINY[CONTROLNET_FILE], "2.1")
    for name in NAMES:
        folder = {"upscale_existing_image": three_files.parent / "empty_models",
                  "controlnet_canny": with_controlnet}.get(name, three_files)
        folder.mkdir(exist_ok=True)
        monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(folder))
        available = {sub: set(host.list_files(sub)) for sub in ("diffusion_models", "text_encoders", "vae",
                                                                "upscale_models")}
        graph = _load(f"{name}.api.json")
        for entry in graph.values():  # the committed names → what this tiny machine calls its three files
            for k, v in entry["inputs"].items():
                if isinstance(v, str) and v in TINY:
                    entry["inputs"][k] = TINY[v]
        assert _combo_problems(pack, graph, available) == [], name


@pytest.fixture()
def _env(run_models, monkeypatch):
    monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(run_models))
    return run_models


FAST = {"steps": 2}


def _outputs(saved, kind="SaveImage"):
    return [img for t, img in saved if t == kind]


def test_run_text_to_image(pack, _env):
    _, saved = run_api(pack, tiny_graph("text_to_image", ZImageSampler={"width": 80, "height": 64, **FAST}), _env)
    (img,) = _outputs(saved)
    assert img.shape == (1, 64, 80, 3) and 0 <= float(img.min()) and float(img.max()) <= 1


def test_run_image_to_image(pack, _env):
    graph = tiny_graph("image_to_image", ImageScale={"width": 80, "height": 64}, ZImageSampler=FAST)
    _, saved = run_api(pack, graph, _env)
    (img,) = _outputs(saved)
    assert img.shape == (1, 64, 80, 3)  # the input image's (scaled) size, not the sampler's widgets


def test_run_hires_dype(pack, _env):
    # one side above the 1024 base so DyPE really acts; tiny height keeps it fast
    graph = tiny_graph("hires_2048_dype", ZImageSampler={"width": 1152, "height": 64, "steps": 1},
                       ZImageTiledVAEDecode={"tile_size": 256, "overlap": 64})
    _, saved = run_api(pack, graph, _env)
    (img,) = _outputs(saved)
    assert img.shape == (1, 64, 1152, 3)


def test_run_full_pipeline(pack, _env):
    graph = tiny_graph("full_pipeline", ZImageSampler={"width": 192, "height": 160, **FAST},
                       ZImageResize={"width": 320, "height": 0})
    results, saved = run_api(pack, graph, _env)
    (img,) = _outputs(saved)
    assert img.shape == (1, 267, 320, 3)  # 192×160 → ×4 = 768×640 → width 320, aspect kept
    (heat,) = _outputs(saved, "PreviewImage")
    assert heat.shape == (1, 160, 192, 3)
    stitch = next(results[i][0] for i, e in graph.items() if e["class_type"] == "ZImageFeatherStitch")
    assert stitch.shape == (1, 640, 768, 3)


def test_run_full_pipeline_with_only_the_three_files(pack, three_files, monkeypatch):
    """No upscale model and no GFPGAN: the route runs to its Save Image with LANCZOS blocks, and the face step
    reports the faces it found instead of failing."""
    monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(three_files))
    graph = tiny_graph("full_pipeline", ZImageSampler={"width": 128, "height": 128, **FAST},
                       ZImageResize={"width": 256, "height": 256})
    results, saved = run_api(pack, graph, three_files)
    (img,) = _outputs(saved)
    assert img.shape == (1, 256, 256, 3)
    blocks = next(results[i][0] for i, e in graph.items() if e["class_type"] == "ZImageBlockUpscaler")
    assert blocks.heavy_name is None and not bool(blocks.heavy.any())  # auto found nothing: LANCZOS everywhere
    report = next(results[i][1] for i, e in graph.items() if e["class_type"] == "ZImageFaceRestore")
    assert "not restored" in report


def test_run_upscale_existing_image_with_no_models(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(tmp_path))
    results, saved = run_api(pack, tiny_graph("upscale_existing_image"), tmp_path)
    (img,) = _outputs(saved)
    assert img.shape == (1, 384 * 4, 384 * 4, 3)
    report = next(results[i][1] for i, e in tiny_graph("upscale_existing_image").items()
                  if e["class_type"] == "ZImageFaceRestore")
    assert report.startswith("1 face found by") and "not restored" in report


def test_run_upscale_existing_image(pack, _env):
    results, saved = run_api(pack, tiny_graph("upscale_existing_image"), _env)
    (img,) = _outputs(saved)
    assert img.shape == (1, 384 * 4, 384 * 4, 3)  # examples/astronaut.png is 384²
    blocks = next(results[i][0] for i, e in tiny_graph("upscale_existing_image").items()
                  if e["class_type"] == "ZImageBlockUpscaler")
    assert blocks.heavy_name and bool(blocks.heavy.any())  # auto picked the installed ×4 model for heavy blocks
    report = next(results[i][1] for i, e in tiny_graph("upscale_existing_image").items()
                  if e["class_type"] == "ZImageFaceRestore")
    assert "restored" in report


def test_route_graph_and_python_route_run_the_same_stages_to_the_same_image(pack, run_models, monkeypatch):
    """The graph POST /zimage/generate queues, run through our nodes, and zimage_core's generate_route for the same
    request: the same stages (as each records them) and the same image."""
    from zimage_core.job import GenerationJob
    from zimage_core.models import load_models
    from zimage_core.pipeline import generate_route
    from zimage_turbo_pack.nodes import host
    from zimage_turbo_pack.nodes.route_graph import build_route_graph

    monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(run_models))
    job = GenerationJob.build(["a red fox in the snow"], {"width": 128, "height": 96, "steps": 2, "seed": 5})
    route = {"heavy_ratio": 1.0}  # every block heavy, so the heavy path and its stitching run on both sides
    graph = build_route_graph(job, diffusion_model=TINY["z_image_turbo_bf16.safetensors"],
                              text_encoder=TINY["qwen_3_4b.safetensors"], vae=TINY["ae.safetensors"],
                              heavy="tiny_esrgan_x4.safetensors", face_model="none", route=route, work_max=64)
    host.pop_timings(None)
    _, saved = run_api(pack, graph.nodes, run_models)
    node_stages = set(host.pop_timings(None))
    (from_graph,) = _outputs(saved, "PreviewImage")

    bundle = load_models(run_models, device="cpu", dtype="fp32")
    result = generate_route(bundle, job, heavy=run_models / "upscale_models" / "tiny_esrgan_x4.safetensors",
                            work_max=64, **route)
    assert node_stages == set(result.timings) - {"load", "total"}, (node_stages, result.timings)
    assert from_graph.shape == result.image.shape == (1, 96, 128, 3)
    # the node route stitches LANCZOS blocks one by one, the Python route fuses them (1.2e-4 measured)
    assert (from_graph - result.image).abs().max() < 5e-4


def test_run_controlnet_canny(pack, _env):
    graph = tiny_graph("controlnet_canny", ZImageSampler={"width": 64, "height": 64, **FAST})
    results, saved = run_api(pack, graph, _env)
    (img,) = _outputs(saved)
    assert img.shape == (1, 64, 64, 3)
    edges = next(results[i][0] for i, e in graph.items() if e["class_type"] == "ZImageCanny")
    loaded = next(results[i][0] for i, e in graph.items() if e["class_type"] == "LoadImage")
    assert set(edges.unique().tolist()) == {0.0, 1.0} and edges.shape == loaded.shape  # the photo's edges
    model = next(results[i][0] for i, e in graph.items() if e["class_type"] == "ZImageApplyControl")
    assert len(model.controls) == 1 and model.controls[0].scale == 0.75
    # the same graph without the control gives another image: the ControlNet acted
    plain = tiny_graph("controlnet_canny", ZImageSampler={"width": 64, "height": 64, **FAST})
    sampler = next(k for k, e in plain.items() if e["class_type"] == "ZImageSampler")
    plain[sampler]["inputs"]["model"] = [next(k for k, e in plain.items() if e["class_type"] == "ZImageLoader"), 0]
    _, saved_plain = run_api(pack, plain, _env)
    assert (img - _outputs(saved_plain)[0]).abs().max() > 1e-3


def test_run_inpaint_keeps_the_outside_exactly(pack, _env):
    graph = tiny_graph("inpaint", ImageScale={"width": 128, "height": 128}, ZImageSampler={"steps": 2},
                       SolidMask={"width": 128, "height": 128}, MaskComposite={"x": 32, "y": 32})
    hole = next(k for k, e in graph.items() if e["class_type"] == "SolidMask" and e["inputs"]["value"] == 1.0)
    graph[hole]["inputs"].update(width=64, height=64)
    results, saved = run_api(pack, graph, _env)
    (img,) = _outputs(saved)
    scaled = next(results[i][0] for i, e in graph.items() if e["class_type"] == "ImageScale")
    outside = torch.ones(128, 128, dtype=torch.bool)
    outside[16:112, 16:112] = False  # the 64² square plus the 16 px feather around it
    assert img.shape == (1, 128, 128, 3)
    assert torch.equal(img[0][outside], scaled[0][outside])  # pasted back: the original pixels
    assert (img[0, 40:88, 40:88] - scaled[0, 40:88, 40:88]).abs().mean() > 0.02  # the square was repainted
