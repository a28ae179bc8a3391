"""The full-pipeline graph of our nodes for a request, in ComfyUI's API format: what `POST /zimage/generate` queues
and what the full_pipeline example workflow is laid out from. One builder, so the HTTP route and the example
cannot differ; `zimage_core.pipeline.generate_route` runs the same stages in Python (same working size, seeds,
block route, faces and resize). Pure data: nothing here touches ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from zimage_core.job import GenerationJob
from zimage_core.model_choice import AUTO
from zimage_core.pipeline import WORK_MAX, describe_route, plan_route
from zimage_core.settings import RouteSettings

GUIDANCE_NODES = {"nag": "ZImageNAG", "slg": "ZImageSLG", "dype": "ZImageDyPE", "cfg": "ZImageCFG",
                  "diversity": "ZImageSeedDiversity"}


@dataclass
class RouteGraph:
    """An API-format graph ({id: {"class_type", "inputs"}}, links as [id, output index]) and its output node ids (one
    per prompt, in prompt order)."""

    nodes: dict[str, dict]
    outputs: list[str]
    notes: list[str]  # what the route does for this request (its answer's first note)


def build_route_graph(job: GenerationJob, *, diffusion_model: str, text_encoder: str, vae: str, heavy: str = AUTO,
                      face_model: str = AUTO, loras: Sequence[tuple[str, float]] = (),
                      route: dict[str, Any] | None = None, output: str = "PreviewImage",
                      output_widgets: dict[str, Any] | None = None, saliency_preview: bool = False,
                      work_max: int = WORK_MAX) -> RouteGraph:
    """The full-pipeline graph for a job whose width × height is the final size (one branch per prompt; prompt i's
    images get seeds from seed + i·batch, as the headless route gives them).

    Loader → LoRA Loader per LoRA → one guidance node per guidance group that differs from its defaults → per
    branch: Qwen3 Encode → Z-Image Sampler (at the route's working size) → VAE Decode → [Saliency + Slicer →
    Classifier → Block Upscaler → Feather Stitch] → Face Restore → [Resize to width×height] → `output` (with
    `output_widgets`). A request that fits the working size is sampled at its own size and skips the bracketed
    nodes. saliency_preview adds a PreviewImage of the saliency heat map (the example workflow shows it); work_max is
    the working size's longest side (as generate_route's).
    """
    settings = RouteSettings.from_values(route or {})
    width, height = job.generation.width, job.generation.height
    plan = plan_route(width, height, scale=settings.scale, work_max=work_max)
    gen, enc = job.generation, job.encode
    g: dict[str, dict] = {
        "loader": {"class_type": "ZImageLoader", "inputs": {
            "diffusion_model": diffusion_model, "text_encoder": text_encoder, "vae": vae, "weight_dtype": "auto"}},
        "face_model": {"class_type": "ZImageFaceRestoreModelLoader", "inputs": {"model_name": face_model}},
    }
    model = ["loader", 0]
    for i, (name, strength) in enumerate(loras):
        g[f"lora{i}"] = {"class_type": "ZImageLoraLoader", "inputs": {"model": model, "lora_name": name,
                                                                       "strength": strength}}
        model = [f"lora{i}", 0]
    for group, class_type in GUIDANCE_NODES.items():
        settings_group = getattr(job.guidance, group)
        if settings_group != type(settings_group)():  # only what the request changed: defaults act without a node
            fields = {name[len(settings_group.PREFIX) + 1:]: value for name, value in settings_group.values().items()}
            g[group] = {"class_type": class_type, "inputs": {"model": model, **fields}}
            model = [group, 0]
    encode = {"text_encoder": ["loader", 1], **enc.values()}
    if job.prompt.negative_prompt or job.guidance.cfg.scale > 0:
        g["negative"] = {"class_type": "ZImageEncode", "inputs": {**encode, "text": job.prompt.negative_prompt}}
    outputs = []
    for i, text in enumerate(job.styled_prompts):
        p = f"p{i}_"
        g[p + "encode"] = {"class_type": "ZImageEncode", "inputs": {**encode, "text": text}}
        g[p + "sample"] = {"class_type": "ZImageSampler", "inputs": {
            "model": model, "positive": [p + "encode", 0], "width": plan.work_width, "height": plan.work_height,
            "steps": gen.steps, "seed": gen.seed + i * gen.batch, "shift": gen.shift, "denoise": 1.0,
            "batch_size": gen.batch, **({"negative": ["negative", 0]} if "negative" in g else {})}}
        g[p + "decode"] = {"class_type": "ZImageVAEDecode", "inputs": {"vae": ["loader", 2],
                                                                        "samples": [p + "sample", 0]}}
        last = [p + "decode", 0]
        if plan.upscale:
            last = add_block_route(g, p, last, heavy, settings)
            if saliency_preview:
                g[p + "heatmap"] = {"class_type": "PreviewImage", "inputs": {"images": [p + "saliency", 1]}}
        g[p + "faces"] = {"class_type": "ZImageFaceRestore", "inputs": {
            "image": last, "face_model": ["face_model", 0], "fidelity": settings.face_fidelity, "detector": "auto",
            "min_confidence": 0.5, "max_faces": 0}}
        last = [p + "faces", 0]
        if plan.upscale:
            g[p + "resize"] = {"class_type": "ZImageResize", "inputs": {"image": last, "width": width,
                                                                         "height": height}}
            last = [p + "resize", 0]
        g[p + "out"] = {"class_type": output, "inputs": {**(output_widgets or {}), "images": last}}
        outputs.append(p + "out")
    scale_used = min(8, max(1, math.ceil(settings.scale))) if plan.upscale else settings.scale
    return RouteGraph(g, outputs, [describe_route(plan.work_width, plan.work_height, width, height, scale_used)])


def add_block_route(g: dict[str, dict], p: str, image: list, heavy: str, route: RouteSettings) -> list:
    """Add saliency + slicer → classifier → block upscaler → feather stitch (ids prefixed with `p`) for the image
    link `image`; returns the stitched image link. The Block Upscaler takes a whole factor (1-8): a fractional route
    scale rounds up and the final resize sets the size."""
    g[p + "saliency"] = {"class_type": "ZImageSaliencyMap", "inputs": {"image": image}}
    g[p + "slice"] = {"class_type": "ZImageBlockSlicer", "inputs": {"image": image, "block_size": route.block,
                                                                     "overlap": route.overlap}}
    g[p + "classify"] = {"class_type": "ZImageBlockClassifier", "inputs": {
        "blocks": [p + "slice", 0], "saliency": [p + "saliency", 0],
        "heavy_ratio": -1.0 if route.heavy_ratio is None else route.heavy_ratio}}
    g[p + "upscale"] = {"class_type": "ZImageBlockUpscaler", "inputs": {
        "blocks": [p + "classify", 0], "heavy_model": heavy, "scale": min(8, max(1, math.ceil(route.scale))),
        "batch_size": 8}}
    g[p + "stitch"] = {"class_type": "ZImageFeatherStitch", "inputs": {"blocks": [p + "upscale", 0]}}
    return [p + "stitch", 0]


__all__ = ["GUIDANCE_NODES", "RouteGraph", "add_block_route", "build_route_graph"]
