"""The control and inpaint example workflows: a Canny edge map steering Z-Image through a Fun ControlNet, and
repainting the middle of an image."""

from __future__ import annotations

from litegraph import Graph
from notes import FILES, MODELS_NOTE, SEED, sampler_note
from parts import C0, C1, C2, C3, C4, CONTROLNET_FILE, GROUP_COLORS, encode_node, loader_node, workflow

CONTROL_PROMPT = ("A bronze statue of an astronaut in a sunlit museum hall, polished marble floor, soft skylight, "
                  "detailed metal texture")
INPAINT_PROMPT = "A bouquet of bright sunflowers in a glass vase"
SIZE = 1024


def controlnet_canny(specs) -> Graph:
    g = workflow("controlnet_canny", specs)
    intro = g.note(C0, f"""
# Z-Image Turbo: ControlNet (Canny)
Load Image → **Z-Image Canny** (edges) → **Z-Image Apply Control** with a Fun ControlNet → Z-Image Sampler → Save.
The composition follows the edges of the input; the prompt decides what fills them.

**ControlNet file**: `model_patches/{CONTROLNET_FILE}` (alibaba-pai, Z-Image-Turbo-Fun-Controlnet-Union; 1.0, 2.0,
2.1 and the lite files all load: the version is read from the file). Offered for download when missing.
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = loader_node(g, C0)
    cnote = g.note(C1, """
## Control image
**Z-Image Canny** turns any picture into white edges on black (low/high thresholds). Depth, pose, line or
gray maps made by a preprocessor pack connect straight to Apply Control instead.

**Apply Control**: *scale* 0.65-0.9 as the model cards suggest; *start/end* limit it to a σ window (end 0.3-0.5
leaves the fine detail free). Chain several Apply Control nodes to combine controls; guidance nodes still apply.
""", title="Control", width=380)
    load = g.add("LoadImage", C1, widgets={"image": FILES["image"]}, height=360, width=380)
    edges = g.add("ZImageCanny", C1, links={"image": (load, "IMAGE")}, width=380)
    preview = g.add("PreviewImage", C1, links={"images": (edges, "edges")}, title="Edges", width=380, height=380)
    cn = g.add("ZImageControlNetLoader", C2, widgets={"controlnet_name": CONTROLNET_FILE}, width=400)
    apply = g.add("ZImageApplyControl", C2, links={"model": (loader, "model"), "controlnet": (cn, "controlnet"),
                                                   "image": (edges, "edges")}, width=400)
    pos = encode_node(g, C2, loader, CONTROL_PROMPT, "Prompt")
    snote = g.note(C3, sampler_note(), title="Sampling", width=360)
    sampler = g.add("ZImageSampler", C3, links={"model": (apply, "model"), "positive": (pos, "conditioning")},
                    widgets={"width": SIZE, "height": SIZE, "steps": 9, "seed": SEED})
    decode = g.add("ZImageVAEDecode", C4, links={"vae": (loader, "vae"), "samples": (sampler, "latent")}, width=420)
    save = g.add("SaveImage", C4, links={"images": (decode, "image")}, widgets={"filename_prefix": "zimage_control"})
    g.group("1. Models", [intro, models, loader], GROUP_COLORS["models"])
    g.group("2. Control image", [cnote, load, edges, preview], GROUP_COLORS["blocks"])
    g.group("3. ControlNet + prompt", [cn, apply, pos], GROUP_COLORS["prompt"])
    g.group("4. Sample, decode, save", [snote, sampler, decode, save], GROUP_COLORS["sample"])
    return g


def inpaint(specs) -> Graph:
    g = workflow("inpaint", specs)
    half = SIZE // 2
    intro = g.note(C0, f"""
# Z-Image Turbo: inpainting
Load Image → a mask (here a {half}² square in the middle; paint your own with the Mask Editor of Load Image and connect
its MASK instead) → Z-Image Sampler with the image, the mask and **denoise 1** → VAE Decode → paste onto the original
with the mask → Save.

The sampler keeps everything outside the mask after every step (as diffusers' inpaint pipeline does), so only the
masked area is repainted; **Image Composite Masked** then restores the original pixels outside it exactly.
""", title="About this workflow")
    models = g.note(C0, MODELS_NOTE, title="Models")
    loader = loader_node(g, C0)
    load = g.add("LoadImage", C1, widgets={"image": FILES["image"]}, height=360)
    scale = g.add("ImageScale", C1, links={"image": (load, "IMAGE")},
                  widgets={"upscale_method": "lanczos", "width": SIZE, "height": SIZE, "crop": "center"})
    mnote = g.note(C1, """
## Mask
1 (white) = repaint. **mask_grow** widens it (cover a halo), **mask_feather** softens its edge so the new content
fades into the old (0 = a hard edge).
""", title="Mask")
    keep = g.add("SolidMask", C1, widgets={"value": 0.0, "width": SIZE, "height": SIZE}, title="Keep everything")
    hole = g.add("SolidMask", C1, widgets={"value": 1.0, "width": half, "height": half}, title="Repaint square")
    mask = g.add("MaskComposite", C2, links={"destination": (keep, "MASK"), "source": (hole, "MASK")},
                 widgets={"x": half // 2, "y": half // 2, "operation": "add"})
    pos = encode_node(g, C2, loader, INPAINT_PROMPT, "What to paint in the mask")
    sampler = g.add("ZImageSampler", C3, links={"model": (loader, "model"), "positive": (pos, "conditioning"),
                                                "image": (scale, "IMAGE"), "mask": (mask, "MASK")},
                    widgets={"width": SIZE, "height": SIZE, "steps": 9, "seed": SEED, "denoise": 1.0,
                             "mask_feather": 16})
    decode = g.add("ZImageVAEDecode", C3, links={"vae": (loader, "vae"), "samples": (sampler, "latent")})
    paste = g.add("ImageCompositeMasked", C4, links={"destination": (scale, "IMAGE"), "source": (decode, "image"),
                                                     "mask": (mask, "MASK")}, width=420)
    save = g.add("SaveImage", C4, links={"images": (paste, "IMAGE")}, widgets={"filename_prefix": "zimage_inpaint"})
    g.group("1. Models", [intro, models, loader], GROUP_COLORS["models"])
    g.group("2. Image and mask", [load, scale, mnote, keep, hole, mask], GROUP_COLORS["blocks"])
    g.group("3. Repaint", [pos, sampler, decode], GROUP_COLORS["sample"])
    g.group("4. Paste back and save", [paste, save], GROUP_COLORS["output"])
    return g


__all__ = ["controlnet_canny", "inpaint"]
