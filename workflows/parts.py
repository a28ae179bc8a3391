"""What the example workflows share: official download locations, the column layout, group colours, and the Z-Image
Loader and Qwen3 Encode nodes as every example sets them."""

from __future__ import annotations

from litegraph import Graph, Node
from notes import FILES

from zimage_core.settings import EncodeSettings

# Official download locations (Hugging Face, so ComfyUI's front end offers a Download button for a missing file):
# {file name: (url, models/ folder)}. The optional heavy upscaler and face model are listed at the workflow's top
# level: the graph uses "auto", which picks them up once downloaded.
HF = "https://huggingface.co/"
CONTROLNET_FILE = "Z-Image-Turbo-Fun-Controlnet-Union-2.1.safetensors"  # published beside 2.0 by alibaba-pai
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
    CONTROLNET_FILE: (HF + "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union-2.0/resolve/main/" + CONTROLNET_FILE,
                      "model_patches"),
}
OPTIONAL_DOWNLOADS = {"blocks": "RealESRGAN_x4plus.safetensors", "faces": "GFPGANv1.4.pth"}
GROUP_COLORS = {"models": "#3f789e", "prompt": "#8A8", "sample": "#a1309b", "blocks": "#b58b2a",
                "faces": "#88A", "output": "#444"}


C0, C1, C2, C3, C4, C5 = 0, 420, 860, 1320, 1800, 2260


def workflow(name: str, specs) -> Graph:
    return Graph(name, specs, DOWNLOADS)


def loader_node(g: Graph, col: int) -> Node:
    return g.add("ZImageLoader", col, width=430, widgets={
        "diffusion_model": FILES["diffusion_model"], "text_encoder": FILES["text_encoder"], "vae": FILES["vae"],
        "weight_dtype": "auto"})


def encode_node(g: Graph, col: int, loader: Node, text: str, title: str) -> Node:
    return g.add("ZImageEncode", col, links={"text_encoder": (loader, "text_encoder")}, title=title,
                 widgets={"text": text, **EncodeSettings().values()})
