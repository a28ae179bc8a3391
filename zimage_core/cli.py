"""Command line: `python -m zimage_core {generate,upscale,make-tiny,serve}`. Prints a JSON timing report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .errors import ZImageError


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="text to image with Z-Image-Turbo")
    p.add_argument("--prompt", required=True, action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--negative", default=None, help="negative prompt (acts through NAG: scale 3, τ 2.5, α 0.25)")
    p.add_argument("--models", required=True, help="a ComfyUI models/ folder or a diffusers Z-Image folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (else <models>/tokenizer, $ZIMAGE_TOKENIZER)")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--steps", type=int, default=9, help="number of model evaluations (Turbo: 8-9)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shift", type=float, default=None, help="schedule shift (default 3.0)")
    p.add_argument("--batch", type=int, default=1, help="images per prompt")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"])
    _add_memory_options(p)
    p.add_argument("--out", default="out/zimage.png", help="output PNG (index appended for batches)")
    p.add_argument("--upscale", action="store_true", help="run the block upscaling route + faces after generating")
    p.add_argument("--heavy", default=None, help="heavy upscaler for --upscale: spandrel file or SD x4 folder")
    p.add_argument("--face-model", default=None, help="GFPGAN v1.4 file for face restoration (--upscale)")


def _add_memory_options(p) -> None:
    p.add_argument("--weights", default="auto", choices=["auto", "fp8", "full"],
                   help="weight storage: auto keeps the file's format (fp8 and GGUF stay compact), fp8 stores bf16 "
                        "weights as fp8, full expands everything to --dtype")
    p.add_argument("--memory", default="auto", choices=["auto", "gpu", "model", "block"],
                   help="where weights live: gpu (all resident), model (one part at a time), block (stream the "
                        "transformer blocks from CPU memory), auto (the lightest mode that fits the free VRAM)")
    p.add_argument("--resident-blocks", type=int, default=None,
                   help="blocks kept on the GPU at a time with --memory block (auto: the most that fit)")


def _add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="saliency-routed block upscale (+ optional faces) of an existing image")
    p.add_argument("image", help="input image (PNG/JPEG/WebP)")
    p.add_argument("--out", default="out/upscaled.png")
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--heavy", default=None, help="spandrel upscale model file or SD x4 upscaler diffusers folder")
    p.add_argument("--heavy-ratio", type=float, default=None, help="target share of blocks on the heavy path (0-1)")
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--face-model", default=None, help="GFPGAN v1.4 .safetensors/.pth (faces are skipped without)")
    p.add_argument("--width", type=int, default=None, help="final width (default: scale × input)")
    p.add_argument("--height", type=int, default=None, help="final height (default: scale × input)")
    p.add_argument("--device", default=None)


def _add_make_tiny(sub) -> None:
    p = sub.add_parser("make-tiny", help="write tiny random Z-Image models (for smoke tests)")
    p.add_argument("--layout", choices=["comfy", "diffusers"], default="comfy")
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default=None, help="copy these tokenizer files instead of training a tiny one")
    p.add_argument("--seed", type=int, default=0)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="headless HTTP API (POST /generate, GET /health)")
    p.add_argument("--models", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8190)
    p.add_argument("--queue", type=int, default=8, help="max queued requests (503 beyond)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request before 504 (0 = none)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="request body size cap in bytes (413 beyond)")
    p.add_argument("--preload", action="store_true", help="load every model part at start-up")
    p.add_argument("--device", default=None)
    _add_memory_options(p)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (else <models>/tokenizer, $ZIMAGE_TOKENIZER)")
    p.add_argument("--allow-host", action="append", default=None,
                   help="extra Host name the API answers (repeatable; loopback names are always allowed on loopback)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections at most (default: half the file-descriptor limit, at most 256)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zimage_core", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_upscale, _add_make_tiny, _add_serve):
        add(sub)
    return parser


def _out_paths(out: str, n: int) -> list[Path]:
    path = Path(out)
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i:02d}{path.suffix}") for i in range(n)]


def _check_common(args) -> None:
    """Checks that need no model, run before any weight loads."""
    from .checks import check_device, check_number, check_text
    from .images import check_output_path

    if getattr(args, "out", None) is not None:
        check_output_path(args.out)
    check_device(getattr(args, "device", None), "--device")
    for prompt in getattr(args, "prompt", None) or ():
        check_text(prompt, "--prompt")
    if getattr(args, "negative", None):
        check_text(args.negative, "--negative")
    if getattr(args, "shift", None) is not None:
        check_number("--shift", args.shift, lo=0.1, hi=20.0)


def cmd_generate(args) -> dict:
    from .generate import generate
    from .images import save_image_atomic, to_pil
    from .models import load_models
    from .sizes import check_size

    _check_common(args)
    check_size(args.width, args.height)
    bundle = load_models(args.models, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype,
                         storage=args.weights, memory=args.memory, resident_blocks=args.resident_blocks)
    t0 = time.perf_counter()
    make_denoiser = None
    if args.negative:
        from .generate import prompt_encoder
        from .guidance import GuidanceOptions, guided_denoiser
        from .guidance.settings import NagSettings

        neg = prompt_encoder(bundle).encode([args.negative])  # one negative for every image
        nag = NagSettings()
        make_denoiser = guided_denoiser(GuidanceOptions(negative=neg, nag_scale=nag.scale, nag_tau=nag.tau,
                                                        nag_alpha=nag.alpha))
    result = generate(bundle, args.prompt, width=args.width, height=args.height, steps=args.steps, seed=args.seed,
                      shift=args.shift, images_per_prompt=args.batch, make_denoiser=make_denoiser)
    timings = {"load": time.perf_counter() - t0 - result.timings["total"], **result.timings}
    images = result.images
    if args.upscale:
        from .pipeline import upscale_route

        routed = upscale_route(images, heavy=args.heavy, face_model=args.face_model)
        images = routed.image
        timings.update({f"upscale_{k}": v for k, v in routed.timings.items()})
    paths = _out_paths(args.out, images.shape[0])
    for i, p in enumerate(paths):
        save_image_atomic(to_pil(images, i), p)
    return {"outputs": [str(p) for p in paths], "seeds": result.seeds, "notes": result.notes, "timing_report": timings}


def cmd_upscale(args) -> dict:
    from .images import load_image, save_image_atomic, to_pil
    from .pipeline import upscale_route

    _check_common(args)
    image = load_image(args.image)
    result = upscale_route(image, scale=args.scale, heavy=args.heavy, heavy_ratio=args.heavy_ratio, block=args.block,
                           overlap=args.overlap, face_model=args.face_model, out_width=args.width,
                           out_height=args.height, device=args.device)
    paths = _out_paths(args.out, result.image.shape[0])
    for i, p in enumerate(paths):
        save_image_atomic(to_pil(result.image, i), p)
    return {"outputs": [str(p) for p in paths], "width": result.image.shape[2], "height": result.image.shape[1],
            "notes": result.notes, "timing_report": result.timings}


def cmd_make_tiny(args) -> dict:
    from .testing import save_tiny_models

    out = save_tiny_models(args.out, args.layout, tokenizer_source=Path(args.tokenizer) if args.tokenizer else None,
                           seed=args.seed)
    return {"written": str(out), "layout": args.layout,
            "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())}


def cmd_serve(args) -> dict:
    from .checks import check_device
    from .service.app import serve

    check_device(args.device, "--device")
    serve(args.models, host=args.host, port=args.port, queue_size=args.queue, device=args.device,
          timeout_s=args.timeout or None, max_body=args.max_body, preload=args.preload, tokenizer=args.tokenizer,
          allow_hosts=args.allow_host, max_connections=args.max_connections,
          model_options={"storage": args.weights, "memory": args.memory, "resident_blocks": args.resident_blocks})
    return {"stopped": True}


COMMANDS = {"generate": cmd_generate, "upscale": cmd_upscale, "make-tiny": cmd_make_tiny, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        report = COMMANDS[args.command](args)
    except ZImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2))
    return 0
