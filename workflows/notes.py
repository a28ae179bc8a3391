"""The prose of the example workflows that more than one of them shows (models, sampling, blocks, faces)."""

from __future__ import annotations

from zimage_core.guidance.settings import NagSettings

NAG = NagSettings()  # its defaults are its "on" values

FILES = {
    "diffusion_model": "z_image_turbo_bf16.safetensors",
    "text_encoder": "qwen_3_4b.safetensors",
    "vae": "ae.safetensors",
    "image": "example.png",  # ships in ComfyUI's input/ folder
}

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


def sampler_note(extra: str = "") -> str:
    return f"""
## Z-Image Sampler
Turbo is distilled: **9 steps** (= model evaluations), **no CFG**, shift 3. Sizes snap to multiples of 16 (the
*aspect preset* combo under the widgets sets 18 common sizes; it is front-end only and not saved).

Guidance is attached to the model by the **Z-Image guidance nodes** (chain them between the loader and the
sampler; they also work on ComfyUI's own MODEL with KSampler):
- **negative** works through **NAG** (Normalized Attention Guidance); the *Z-Image NAG* node tunes it
  (scale 1 = off, 2-5 = on; τ {NAG.tau:g}, α {NAG.alpha:g}).
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
