"""The node pack's ComfyUI contract, checked with no ComfyUI installed: it imports, and every node's declared
inputs, outputs, function and docs are consistent (what ComfyUI's /object_info and executor rely on)."""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from pack_import import load_pack

EXPECTED = {"ZImageLoader", "ZImageLoraLoader", "ZImageEncode", "ZImageSaveEmbeddings", "ZImageLoadEmbeddings",
            "ZImageSampler", "ZImageVAEDecode", "ZImageTiledVAEDecode", "ZImageSaliencyMap", "ZImageBlockSlicer",
            "ZImageBlockClassifier", "ZImageBlockUpscaler", "ZImageFeatherStitch", "ZImageFaceRestore",
            "ZImageFaceRestoreModelLoader", "ZImageResize", "ZImageNAG", "ZImageSLG", "ZImageDyPE", "ZImageCFG",
            "ZImageSeedDiversity", "ZImageSchedule", "ZImageToConditioning", "ZImageFromConditioning",
            "ZImageControlNetLoader", "ZImageApplyControl", "ZImageCanny"}
PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def nodes(pack):
    return sorted(pack.NODE_CLASS_MAPPINGS.items())


def test_pack_imports_without_comfyui(pack):
    assert importlib.util.find_spec("folder_paths") is None, "ComfyUI must not be importable in the test env"
    from zimage_turbo_pack.nodes import host

    assert not host.inside_comfyui()
    assert host.prompt_server() is None
    assert pack.WEB_DIRECTORY == "./web"
    assert set(pack.NODE_CLASS_MAPPINGS) == EXPECTED
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == EXPECTED
    assert all(name.strip() for name in pack.NODE_DISPLAY_NAME_MAPPINGS.values())


def test_only_host_imports_comfyui():
    import ast

    from pack_import import REPO

    comfy_roots = {"folder_paths", "comfy", "server", "latent_preview", "comfy_execution", "execution", "nodes"}
    for path in sorted((REPO / "nodes").rglob("*.py")):
        if path.parent.name == "host":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in comfy_roots, \
                    f"{path.name} imports {n}; only nodes/host/ may touch ComfyUI"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_node_declaration(pack, name):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and "required" in spec
    assert isinstance(cls.CATEGORY, str) and cls.CATEGORY.startswith("Z-Image/")
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
    fn = getattr(cls(), cls.FUNCTION)
    assert callable(fn)
    sig = inspect.signature(fn)
    params = sig.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    required, optional = spec["required"], spec.get("optional", {})
    for section, inputs in (("required", required), ("optional", optional)):
        for input_name, decl in inputs.items():
            assert input_name in params or takes_any, \
                f"{name}.{cls.FUNCTION} does not accept {section} input {input_name}"
            assert isinstance(decl, tuple) and 1 <= len(decl) <= 2
            kind = decl[0]
            opts = decl[1] if len(decl) > 1 else {}
            assert opts.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if isinstance(kind, list):  # combo: default must be one of the values
                if "default" in opts:
                    assert opts["default"] in kind, f"{name}.{input_name} default not in its list"
            elif kind in PRIMITIVES and "default" in opts:
                d = opts["default"]
                if "min" in opts:
                    assert d >= opts["min"], f"{name}.{input_name} default below min"
                if "max" in opts:
                    assert d <= opts["max"], f"{name}.{input_name} default above max"
            else:
                assert isinstance(kind, str) and kind.isupper()
            if section == "optional" and input_name in params:
                assert params[input_name].default is not inspect.Parameter.empty, \
                    f"optional input {input_name} needs a default in {cls.FUNCTION}"
    for p in params.values():  # nothing the executor would not pass
        assert (p.name in required or p.name in optional or p.default is not inspect.Parameter.empty
                or p.kind is inspect.Parameter.VAR_KEYWORD)
    # every required input can be bound by name
    sig.bind(**{k: None for k in required})


def test_frontend_contract(pack):
    """web/zimage.js targets these widgets: sampler width/height INTs (step 16), encode STRING `text`."""
    m = pack.NODE_CLASS_MAPPINGS
    req = m["ZImageSampler"].INPUT_TYPES()["required"]
    for side in ("width", "height"):
        assert req[side][0] == "INT" and req[side][1]["step"] == 16 and req[side][1]["default"] % 16 == 0
    assert m["ZImageEncode"].INPUT_TYPES()["required"]["text"][0] == "STRING"
    assert m["ZImageBlockClassifier"].OUTPUT_NODE is True


def test_standard_types_where_they_exist(pack):
    m = pack.NODE_CLASS_MAPPINGS
    assert m["ZImageSampler"].RETURN_TYPES == ("LATENT",)
    assert m["ZImageVAEDecode"].RETURN_TYPES == ("IMAGE",)
    assert m["ZImageSaliencyMap"].RETURN_TYPES == ("MASK", "IMAGE")
    assert m["ZImageBlockUpscaler"].INPUT_TYPES()["optional"]["upscale_model"][0] == "UPSCALE_MODEL"
    assert m["ZImageFaceRestore"].RETURN_TYPES[0] == "IMAGE"


def test_route_graph_is_valid_for_our_nodes(pack):
    """The /zimage/generate graph only uses our nodes (+ PreviewImage) with existing inputs and valid links."""
    from zimage_core.job import GenerationJob
    from zimage_turbo_pack.nodes.route_graph import build_route_graph

    job = GenerationJob.build(["a cat", "a dog"], {"width": 1008, "height": 1504, "seed": 5, "batch": 2,
                                                   "negative_prompt": "blurry", "slg_scale": 2.0,
                                                   "dype_method": "yarn", "style": "anime"})
    built = build_route_graph(job, diffusion_model="d.safetensors", text_encoder="t.safetensors",
                              vae="v.safetensors", heavy="none (LANCZOS only)", face_model="GFPGANv1.4.pth",
                              loras=[("detail.safetensors", 0.5)], route={"heavy_ratio": 0.3, "face_fidelity": 0.7})
    graph, outputs = built.nodes, built.outputs
    assert len(outputs) == 2
    # only the guidance the request changed gets a node (NAG acts at its defaults without one), after the LoRA
    assert graph["slg"]["inputs"]["scale"] == 2.0 and graph["dype"]["inputs"]["method"] == "yarn"
    assert "nag" not in graph and graph["slg"]["inputs"]["model"] == ["lora0", 0]
    assert graph["p0_sample"]["inputs"]["model"] == ["dype", 0]
    assert graph["p0_encode"]["inputs"]["text"].startswith("a cat, anime style")
    assert graph["p0_classify"]["inputs"]["heavy_ratio"] == 0.3 and graph["p0_faces"]["inputs"]["fidelity"] == 0.7
    m = pack.NODE_CLASS_MAPPINGS
    for node_id, node in graph.items():
        ct = node["class_type"]
        if ct == "PreviewImage":
            continue
        cls = m[ct]
        spec = cls.INPUT_TYPES()
        declared = {**spec["required"], **spec.get("optional", {})}
        assert set(spec["required"]) <= set(node["inputs"]), f"{node_id} misses required inputs"
        for key, value in node["inputs"].items():
            assert key in declared, f"{node_id}.{key} is not an input of {ct}"
            if isinstance(value, list):
                src, idx = value
                src_cls = m[graph[src]["class_type"]]
                # ComfyUI's validation: union types ("MODEL,ZIMAGE_MODEL") link when they share a type
                sent, wanted = set(src_cls.RETURN_TYPES[idx].split(",")), set(declared[key][0].split(","))
                assert sent & wanted, f"link type mismatch into {node_id}.{key}"
    assert graph["p1_sample"]["inputs"]["seed"] == 7  # prompt 1's images follow prompt 0's two: seeds 7, 8
    from zimage_core.pipeline import plan_route

    plan = plan_route(1008, 1504)
    sample = graph["p0_sample"]["inputs"]
    assert (sample["width"], sample["height"]) == (plan.work_width, plan.work_height) == (512, 768)
    assert graph["p0_resize"]["inputs"]["width"] == 1008 and graph["p0_resize"]["inputs"]["height"] == 1504
    small = build_route_graph(GenerationJob.build(["a cat"], {"width": 256, "height": 128}),
                              diffusion_model="d.safetensors", text_encoder="t.safetensors", vae="v.safetensors",
                              heavy="none (LANCZOS only)", face_model=None).nodes
    assert (small["p0_sample"]["inputs"]["width"], small["p0_sample"]["inputs"]["height"]) == (256, 128)
    assert not any(n["class_type"] in ("ZImageBlockUpscaler", "ZImageResize") for n in small.values())


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_route_default_choices(tmp_path, monkeypatch):
    """Defaults: SD x4 folder > file named 4x/x4 > esrgan/ultrasharp > LANCZOS; faces only from a GFPGAN file (a
    CodeFormer file alone means faces are skipped, not a failing graph); the notes say which and why."""
    from zimage_turbo_pack.nodes import server_routes

    monkeypatch.setenv("ZIMAGE_MODELS_DIR", str(tmp_path))
    ups, faces = tmp_path / "upscale_models", tmp_path / "facerestore_models"
    _touch(ups / "1x_Dehalo.pth")
    _touch(ups / "2x_Sharp.safetensors")
    _touch(faces / "codeformer.pth")
    c = server_routes.default_choices()
    assert c["heavy"] == "none (LANCZOS only)" and "4x/x4" in c["heavy_note"]
    assert c["face_model"] is None and c["face_choices"] == ["codeformer.pth"]
    assert "not restored" in c["face_note"] and "GFPGAN" in c["face_note"]

    _touch(ups / "RealESRGAN_general.pth")
    assert server_routes.default_choices()["heavy"] == "RealESRGAN_general.pth"
    _touch(ups / "sub" / "4X-UltraSharp.pth")
    c = server_routes.default_choices()
    assert c["heavy"] == "sub/4X-UltraSharp.pth" and c["heavy"] in c["heavy_note"]
    (ups / "sdx4").mkdir()
    (ups / "sdx4" / "model_index.json").write_text('{"_class_name": "StableDiffusionUpscalePipeline"}')
    assert server_routes.default_choices()["heavy"] == "SD x4: sdx4"

    _touch(faces / "GFPGANv1.4.pth")
    c = server_routes.default_choices()
    assert c["face_model"] == "GFPGANv1.4.pth" and c["face_note"].startswith("faces: GFPGANv1.4.pth (auto")


def test_route_encodes_each_image_once_off_the_event_loop(pack, monkeypatch):
    """handle_generate (with ComfyUI's queue faked): every output is JPEG-encoded exactly once, in a worker thread,
    and the first encoding is reused for "image"."""
    import asyncio
    import json
    import threading

    import torch

    from zimage_turbo_pack.nodes import host, server_routes

    choices = {"diffusion_model": "d.safetensors", "text_encoder": "t.safetensors", "vae": "v.safetensors",
               "heavy_choices": ["none (LANCZOS only)"], "heavy": "none (LANCZOS only)", "heavy_note": "heavy: x",
               "face_choices": [], "face_model": None, "face_note": "faces: skipped"}
    monkeypatch.setattr(server_routes, "default_choices", lambda: choices)

    async def fake_queue(server, prompt):
        return "pid", {}

    async def fake_wait(server, prompt_id, timeout):
        return {"status": {"status_str": "success", "messages": []}}

    monkeypatch.setattr(server_routes, "_queue", fake_queue)
    monkeypatch.setattr(server_routes, "_wait", fake_wait)
    monkeypatch.setattr(server_routes, "_read_outputs",
                        lambda entry, node: [torch.full((1, 16, 24, 3), 0.1 * (1 + int(node[1])))])
    calls = []

    def fake_encode(image):
        calls.append(threading.current_thread() is threading.main_thread())
        return f"jpeg{len(calls)}"

    monkeypatch.setattr(server_routes, "encode_jpeg_base64", fake_encode)
    monkeypatch.setattr(host, "pop_timings", lambda prompt_id: {})

    class Request:
        async def json(self):
            return {"prompts": ["a", "b", "c"], "width": 64, "height": 64}

    response = asyncio.run(server_routes.handle_generate(Request()))
    body = json.loads(response.body)
    assert response.status == 200, body
    assert calls == [False, False, False]  # three images, three encodings, none on the loop's thread
    assert body["image"] == "jpeg1" and body["images"] == ["jpeg1", "jpeg2", "jpeg3"]
    assert body["notes"][:3] == ["generated at 64×64 as requested; no upscaling needed", "heavy: x", "faces: skipped"]
    assert (body["width"], body["height"]) == (24, 16)
