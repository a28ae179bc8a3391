"""Builds the example workflows in this folder: one graph description each → a UI-format file (`<name>.json`, what
ComfyUI's front end saves and what you drag onto the canvas) and its API-format twin (`<name>.api.json`, the bare
`{id: {class_type, inputs}}` graph that `POST /prompt` takes).

    python workflows/build_workflows.py              # rewrite workflows/*.json
    python workflows/build_workflows.py --out DIR    # write them elsewhere
    python workflows/build_workflows.py --check      # exit 1 if the committed files differ from a fresh build

Widget order, defaults and socket/output types come from the pack's own INPUT_TYPES / RETURN_TYPES / RETURN_NAMES
(the pack is imported with no ComfyUI, see pack_import.py), so after a node gains or loses an input only a re-run
is needed; core ComfyUI nodes are described in core_nodes.py, the layout and serialisation live in litegraph.py,
shared prose in notes.py. The full pipeline is laid out from the graph `POST /zimage/generate` queues
(nodes/route_graph.py). Pure Python + the pack; no ComfyUI, no network, and the output is byte-identical on every
run (no timestamps, ids derived from the workflow name).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]
from control_examples import controlnet_canny, inpaint  # noqa: E402
from litegraph import Graph, all_specs, dumps  # noqa: E402
from notes import BLOCKS_NOTE, FACES_NOTE, FILES, MODELS_NOTE, NEGATIVE, PROMPT, SEED, sampler_note  # noqa: E402
from pack_import import load_pack  # noqa: E402
from parts import (C0, C1, C2, C3, C4, C5, GROUP_COLORS, OPTIONAL_DOWNLOADS, encode_node, loader_node,  # noqa: E402
                   workflow)

from zimage_core.model_choice import AUTO  # noqa: E402
from zimage_core.settings import RouteSettings  # noqa: E402

def text_to_image(specs) -> Graph:
    g = workflow("text_to_image", specs)
    intro = g.note(C0, """
# Z-Image Turbo: text to image
Loader → Qwen3 Encode (positive + negative) → Z-Image Sampler (1024², 9 steps, NAG on) → VAE Decode → Save.
About 1.1-1.4 s per 1024² image on an H100 (bf16); the 6 B model needs ~12-14 GB of VRAM (ComfyUI offloads when
short).
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = loader_node(g, C0)
    pnote = g.note(C1, """
## Qwen3 Encode
Encodes the prompt with Qwen3-4B exactly as Z-Image was trained (chat template, second-to-last hidden layer).
Long, descriptive prompts work well; there is no weighting syntax. The *style preset* combo appends a style
suffix (front-end only). Prompts beyond 1504 tokens are truncated / compressed per **long_prompt_mode**.

The second encode is the **negative** prompt: it acts through NAG in the sampler.
""", title="Prompts")
    pos = encode_node(g, C1, loader, PROMPT, "Positive prompt")
    neg = encode_node(g, C1, loader, NEGATIVE, "Negative prompt (NAG)")
    snote = g.note(C2, sampler_note(), title="Sampling", width=360)
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
    g = workflow("image_to_image", specs)
    intro = g.note(C0, """
# Z-Image Turbo: image to image
Load Image → Image Scale (to a multiple of 16) → Z-Image Sampler with **denoise 0.6** → VAE Decode → Save.
The sampler encodes the image with the Z-Image VAE itself (or connect a LATENT from VAE Encode to **latent**).
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = loader_node(g, C0)
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
    pos = encode_node(g, C2, loader, "A watercolor painting of the same scene, soft washes of colour, visible paper "
                  "texture, loose brush strokes", "Prompt")
    snote = g.note(C3, sampler_note("""
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


# The full pipeline is the graph POST /zimage/generate queues for a 2048×2048 request (nodes/route_graph.py), with
# Save Image for its output and a preview of the saliency heat map.
FULL_PIPELINE = {"prompts": [PROMPT], "width": 2048, "height": 2048, "steps": 9, "seed": SEED}
ROUTE_FILES = {"diffusion_model": FILES["diffusion_model"], "text_encoder": FILES["text_encoder"],
               "vae": FILES["vae"]}


def route_graph_builder():
    """nodes/route_graph.build_route_graph, from the pack as ComfyUI loads it."""
    load_pack()
    from zimage_turbo_pack.nodes.route_graph import build_route_graph

    return build_route_graph


def block_route(image_key: str) -> dict[str, dict]:
    """The block route's nodes (as the full pipeline has them) for the image of node `image_key`."""
    load_pack()
    from zimage_turbo_pack.nodes.route_graph import add_block_route

    nodes: dict[str, dict] = {}
    add_block_route(nodes, "", [image_key, 0], AUTO, RouteSettings())
    return nodes


def full_pipeline_graph():
    """The route graph the full_pipeline workflow is laid out from."""
    from zimage_core.job import GenerationJob

    request = dict(FULL_PIPELINE)
    job = GenerationJob.build(request.pop("prompts"), request)
    return route_graph_builder()(job, **ROUTE_FILES, output="SaveImage",
                                 output_widgets={"filename_prefix": "zimage_pipeline"}, saliency_preview=True)


def full_pipeline(specs) -> Graph:
    from zimage_core.pipeline import plan_route

    g = workflow("full_pipeline", specs)
    g.optional_models = [OPTIONAL_DOWNLOADS["blocks"], OPTIONAL_DOWNLOADS["faces"]]
    width, height = FULL_PIPELINE["width"], FULL_PIPELINE["height"]
    plan = plan_route(width, height)
    work, scale = plan.work_width, int(plan.scale)
    route, bound = full_pipeline_graph().nodes, {}
    intro = g.note(C0, f"""
# Z-Image Turbo: the full pipeline
generate → saliency → slice → classify → upscale → stitch → faces → resize → save.

The same graph `POST /zimage/generate` runs: generate at a **{work}²** working size (the requested shape
with its longest side at 768 px; requests that fit 768 px are generated as asked and skip the upscale), upscale
×{scale} block by block ({work * scale}²), restore faces, then resize to the size asked for
(**{width}×{height}**). Each stage's seconds go to the timing report.
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = g.add_api(route, "loader", C0, bound=bound, width=430)
    pnote = g.note(C1, """
## 1. Generate
Qwen3 Encode → Z-Image Sampler at the working size (9 steps) → VAE Decode. Generating small and upscaling
block-wise is much faster than sampling at full size, and the heavy upscaler only works where detail matters.
""", title="Generate")
    pos = g.add_api(route, "p0_encode", C1, bound=bound, title="Prompt")
    sampler = g.add_api(route, "p0_sample", C2, bound=bound)
    decode = g.add_api(route, "p0_decode", C2, bound=bound)
    bnote = g.note(C3, BLOCKS_NOTE, title="Blocks", width=380)
    saliency = g.add_api(route, "p0_saliency", C3, bound=bound, width=380)
    heat = g.add_api(route, "p0_heatmap", C3, bound=bound, title="Saliency heat map", width=380, height=380)
    blocks = [g.add_api(route, key, C4, bound=bound) for key in ("p0_slice", "p0_classify", "p0_upscale",
                                                                  "p0_stitch")]
    fnote = g.note(C5, FACES_NOTE + f"""
## Resize & save
**Resize (LANCZOS)** brings the {work * scale}² result to the requested {width}×{height}
(0 on one side keeps the aspect ratio).
""", title="Faces & output", width=420)
    out = [g.add_api(route, key, C5, bound=bound, width=420) for key in ("face_model", "p0_faces", "p0_resize")]
    save = g.add_api(route, "p0_out", C5, bound=bound)
    g.group("Models", [intro, models, loader], GROUP_COLORS["models"])
    g.group(f"1. Generate ({work}²)", [pnote, pos, sampler, decode], GROUP_COLORS["sample"])
    g.group("2. Saliency", [bnote, saliency, heat], GROUP_COLORS["blocks"])
    g.group(f"3. Slice · classify · upscale ×{scale} · stitch", blocks, GROUP_COLORS["blocks"])
    g.group("4. Faces · resize · save", [fnote, *out, save], GROUP_COLORS["faces"])
    return g


def hires_2048_dype(specs) -> Graph:
    g = workflow("hires_2048_dype", specs)
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
    loader = loader_node(g, C0)
    pnote = g.note(C1, """
## Prompt
Large images reward detailed prompts: describe the background and the textures, not only the subject.
""", title="Prompt")
    pos = encode_node(g, C1, loader, "A vast alpine valley at sunrise, a turquoise lake in the foreground with a small "
                  "wooden cabin and a red canoe, pine forests, snow-capped peaks, mist in the valleys, crisp "
                  "detail, landscape photography", "Prompt")
    snote = g.note(C2, sampler_note("""
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
    g = workflow("upscale_existing_image", specs)
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
    route, bound = block_route("load"), {"load": load}
    bnote = g.note(C1, BLOCKS_NOTE, title="Blocks", width=380)
    saliency = g.add_api(route, "saliency", C1, bound=bound, width=380)
    heat = g.add("PreviewImage", C1, links={"images": (saliency, "heatmap")}, title="Saliency heat map",
                 width=380, height=380)
    slicer, classify, upscale, stitch = (g.add_api(route, key, C2, bound=bound, width=360)
                                         for key in ("slice", "classify", "upscale", "stitch"))
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
    g = workflow("native_graph_guidance", specs)
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
    route, bound = block_route("decode"), {"decode": decode}
    saliency, slicer, classify = (g.add_api(route, key, C4, bound=bound, width=380)
                                  for key in ("saliency", "slice", "classify"))
    upscale, stitch = (g.add_api(route, key, C5, bound=bound, width=420) for key in ("upscale", "stitch"))
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
    "controlnet_canny": controlnet_canny,
    "inpaint": inpaint,
}


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
