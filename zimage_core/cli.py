"""The `zimage` command (also `python -m zimage_core`): generate, upscale, make-tiny, serve.

Every generation option comes from the options model (settings.py, guidance/settings.py), so the flags, their
ranges, defaults and help are the HTTP API's and the nodes'. Checks that need no model run before torch is even
imported; the JSON report on stdout echoes the effective options and the time of every stage that ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import InputError, MissingDependencyError, ZImageError
from .settings import RouteSettings

ALIASES = {"negative_prompt": ("--negative",)}  # short spellings users reach for first
CONFIG_KEYS = ("prompts", "models", "tokenizer", "out", "device", "dtype", "loras", "hires_passes", "init_image",
               "mask", "control_image", "control_model", "upscale", "heavy", "face_model")
GROUP_TITLES = {"GenerationSettings": "generation", "PromptSettings": "prompt and presets",
                "EncodeSettings": "prompt encoding", "NagSettings": "NAG (how a negative prompt acts)",
                "SlgSettings": "skip-layer guidance", "DypeSettings": "DyPE (sizes above 1024²)",
                "CfgSettings": "classic CFG (non-distilled checkpoints)", "DiversitySettings": "seed diversity",
                "HiresSettings": "hi-res passes", "ControlSettings": "control (Fun ControlNet)",
                "InpaintSettings": "inpainting (--init-image + --mask)", "MemorySettings": "memory and weight storage",
                "RouteSettings": "block route (upscale, and generate --upscale)"}


SPELLINGS = {"prompts": "--prompt", "loras": "--lora", "hires_passes": "--hires"}


def flag(name: str) -> str:
    """How the command line spells an option name."""
    return SPELLINGS.get(name, "--" + name.replace("_", "-"))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every default: options carry theirs in the help text (from the options model); the rest get
    '(default: X)' unless they have none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is argparse.SUPPRESS
                or action.default is False or not action.option_strings):
            return text
        return f"{text} (default: {action.default})"


def _add_option_flags(parser: argparse.ArgumentParser, groups) -> None:
    for group in groups:
        section = parser.add_argument_group(GROUP_TITLES.get(group.__name__, group.__name__))
        for option in group.options():
            kind = {int: int, float: float}.get(option.type, str)
            section.add_argument(flag(option.name), *ALIASES.get(option.name, ()), dest=option.name, type=kind,
                                 default=argparse.SUPPRESS, help=option.describe(),
                                 metavar=None if option.choices else option.type.__name__.upper(),
                                 choices=option.choices if option.choices and "" not in option.choices else None)


def _add_generate(sub) -> None:
    from .job import OPTION_GROUPS

    p = sub.add_parser("generate", help="text (or image) to image with Z-Image-Turbo", formatter_class=HelpFormatter,
                       description="Generate images; prints a JSON report (outputs, seeds, effective options, notes, "
                                   "seconds per stage).")
    p.add_argument("--prompt", action="append", dest="prompts", help="prompt text (repeat for several prompts)")
    p.add_argument("--config", help="TOML or JSON file with any of these settings by name (nag_scale = 4.0, prompts = "
                                    "[...], loras = [\"file:0.8\"], ...); flags given here win")
    p.add_argument("--models", help="a ComfyUI models/ folder or a diffusers Z-Image folder")
    p.add_argument("--tokenizer", help="Qwen3 tokenizer folder (default: <models>/tokenizer or $ZIMAGE_TOKENIZER)")
    p.add_argument("--lora", action="append", dest="loras", metavar="FILE[:STRENGTH]",
                   help="apply a Z-Image LoRA (repeatable; strength default 1)")
    p.add_argument("--hires", action="append", dest="hires_passes", metavar="SCALE:STEPS:STRENGTH",
                   help="a hi-res pass after the base image, e.g. 2:6:0.45 (repeatable; add --dype-method vision_yarn "
                        "for passes above 1024²)")
    p.add_argument("--init-image", dest="init_image", help="start image for image-to-image (use with --strength < 1) "
                                                        "or for inpainting (with --mask)")
    p.add_argument("--mask", help="inpaint mask for --init-image: white = repaint, black = keep (any image; its first "
                                  "channel is read)")
    p.add_argument("--control-image", dest="control_image", help="control image (an edge / depth / pose map, or any "
                                                                 "picture with --control-type canny)")
    p.add_argument("--control-model", dest="control_model", help="Z-Image-Turbo Fun ControlNet (Union) file, e.g. "
                                                                 "models/model_patches/Z-Image-Turbo-Fun-Controlnet-"
                                                                 "Union-2.1.safetensors")
    p.add_argument("--out", default=None, help="output image; the format follows the extension (.png, .jpg, .jpeg, "
                                              ".webp); several images get _00, _01, ... (default: out/zimage.png)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the GPU when there is one)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="compute dtype (default: bf16 on GPUs, fp32 on "
                                                                     "the CPU)")
    p.add_argument("--upscale", action="store_true", default=None,
                   help="after generating, run the block upscaling route and faces (see the block route options)")
    p.add_argument("--heavy", help="heavy upscaler for --upscale: a spandrel file or an SD x4 upscaler folder "
                                   "(default: LANCZOS everywhere)")
    p.add_argument("--face-model", dest="face_model", help="GFPGAN v1.4 file for face restoration with --upscale "
                                                           "(default: faces are only detected and reported)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_option_flags(p, (*OPTION_GROUPS, RouteSettings))


def _add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="saliency-routed block upscale (+ faces) of an existing image",
                       formatter_class=HelpFormatter, description="Upscale an image through the block route; needs no "
                                                                  "Z-Image weights.")
    p.add_argument("image", help="input image (PNG, JPEG, WebP, BMP, TIFF or GIF)")
    p.add_argument("--out", default="out/upscaled.png", help="output image; the format follows the extension")
    p.add_argument("--heavy", help="spandrel upscale model file or SD x4 upscaler diffusers folder (default: LANCZOS)")
    p.add_argument("--face-model", dest="face_model", help="GFPGAN v1.4 .safetensors/.pth (default: faces are only "
                                                           "detected and reported)")
    p.add_argument("--width", type=int, help="final width (default: scale × input, or from --height keeping the "
                                             "shape)")
    p.add_argument("--height", type=int, help="final height (default: scale × input, or from --width keeping the "
                                              "shape)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: where the image is, the CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_option_flags(p, (RouteSettings,))


def _add_make_tiny(sub) -> None:
    p = sub.add_parser("make-tiny", help="write tiny random Z-Image models (for smoke tests)",
                       formatter_class=HelpFormatter)
    p.add_argument("--layout", choices=["comfy", "diffusers"], default="comfy",
                   help="comfy: a ComfyUI models/ tree of single files; diffusers: a diffusers pipeline folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--tokenizer", help="copy these Qwen3 tokenizer files instead of training a tiny tokenizer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")


def _add_serve(sub) -> None:
    from .settings import MemorySettings

    p = sub.add_parser("serve", help="headless HTTP API (POST /generate, GET /health)", formatter_class=HelpFormatter,
                       description="Serve POST /generate (every generation option as a JSON field) and GET /health.")
    p.add_argument("--models", required=True, help="a ComfyUI models/ folder or a diffusers Z-Image folder")
    p.add_argument("--tokenizer", help="Qwen3 tokenizer folder (default: <models>/tokenizer or $ZIMAGE_TOKENIZER)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback unless you mean to expose it: "
                                                      "there is no authentication)")
    p.add_argument("--port", type=int, default=8190, help="port to listen on (0 = any free port)")
    p.add_argument("--queue", type=int, default=8, help="requests waiting at most (503 beyond)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request before 504 (0 = none)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="request body size cap in bytes (413 beyond)")
    p.add_argument("--preload", action="store_true", help="load every model part at start-up")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the GPU when there is one)")
    p.add_argument("--allow-host", action="append", default=None,
                   help="extra Host name the API answers (repeatable; loopback names are always allowed on loopback)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections at most (default: half the file-descriptor limit, at most 256)")
    ray = p.add_argument_group("Ray Serve (pip install -e \".[ray]\"): replicas, batching, back-pressure")
    ray.add_argument("--ray", action="store_true", help="serve on a local Ray: model replicas behind one ingress")
    ray.add_argument("--replicas", type=int, default=1, help="model replicas (one GPU each on a GPU machine)")
    ray.add_argument("--batch", type=int, default=4, help="requests a replica may generate in one batch")
    ray.add_argument("--batch-wait", type=float, default=0.05, help="seconds a replica waits to fill a batch")
    _add_option_flags(p, (MemorySettings,))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zimage", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details, including native library logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,upscale,make-tiny,serve}")
    for add in (_add_generate, _add_upscale, _add_make_tiny, _add_serve):
        add(sub)
    return parser


# ------------------------------------------------------------------------------------------- checks before loading


def read_config(path: str) -> dict[str, Any]:
    """A --config file (TOML by its .toml extension, else JSON) as {name: value}; unknown names are an error."""
    from .job import all_options

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"--config {path}: {err.strerror or err}.") from None
    try:
        if file.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as err:
        raise InputError(f"--config {file.name} is not valid {'TOML' if file.suffix == '.toml' else 'JSON'}: "
                         f"{err}.") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {file.name} must hold a table / object of settings.")
    known = set(CONFIG_KEYS) | {o.name for o in all_options()} | {o.name for o in RouteSettings.options()}
    unknown = sorted(k for k in data if k.replace("-", "_") not in known)
    if unknown:
        raise InputError(f"--config {file.name}: unknown setting(s) {', '.join(unknown)}; use the option names of "
                         "`zimage generate --help` with underscores (nag_scale, negative_prompt, ...).")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _given(args: argparse.Namespace, config: dict[str, Any], names) -> dict[str, Any]:
    """Values for `names` from the command line, else the config file (only those given anywhere)."""
    out = {name: config[name] for name in names if name in config}
    out.update({name: getattr(args, name) for name in names if hasattr(args, name)})
    return out


def _job_inputs(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Prompts, LoRAs, hi-res passes and the start image from the flags, else the config."""
    from .job import parse_hires, parse_lora

    prompts = args.prompts or _as_list(config.get("prompts", []))
    if not prompts:
        raise InputError("give a prompt: --prompt \"a red fox in snow\" (or prompts = [...] in --config).")
    loras = []
    for entry in args.loras or _as_list(config.get("loras", [])):
        loras.append((entry["name"], float(entry.get("strength", 1.0))) if isinstance(entry, dict)
                     else parse_lora(str(entry)))
    passes = [p if isinstance(p, dict) else parse_hires(str(p)) for p in
              (args.hires_passes or _as_list(config.get("hires_passes", [])))]
    return {"prompts": prompts, "loras": loras, "hires_passes": passes,
            **{name: getattr(args, name) or config.get(name)
               for name in ("init_image", "mask", "control_image", "control_model")}}


def _setting(args: argparse.Namespace, config: dict[str, Any], name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    return value if value is not None else config.get(name, default)


def _out_paths(out: str, n: int) -> list[Path]:
    path = Path(out)
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i:02d}{path.suffix}") for i in range(n)]


def _check_folder(path: str | None, spelled: str) -> None:
    if path is None:
        raise InputError(f"{spelled} is required: a ComfyUI models/ folder or a diffusers Z-Image folder.")
    if not Path(path).is_dir():
        raise InputError(f"Model folder not found: {path} ({spelled}).")


def _check_file_or_folder(path: str | None, spelled: str) -> None:
    if path is not None and not Path(path).exists():
        raise InputError(f"{spelled} {path}: no such file or folder.")


# ------------------------------------------------------------------------------------------------------ commands


def _progress(args: argparse.Namespace):
    from .progress import ProgressBars

    return ProgressBars(enabled=not getattr(args, "quiet", False) and sys.stderr.isatty())


def cmd_generate(args: argparse.Namespace) -> dict:
    from .checks import check_output_path, check_text
    from .job import GenerationJob, all_options

    config = read_config(args.config) if args.config else {}
    inputs = _job_inputs(args, config)
    job = GenerationJob.build(inputs["prompts"], _given(args, config, [o.name for o in all_options()]), flag,
                              loras=inputs["loras"], hires_passes=inputs["hires_passes"],
                              init_image=inputs["init_image"], mask=inputs["mask"],
                              control_image=inputs["control_image"], control_model=inputs["control_model"])
    route = RouteSettings.from_values(_given(args, config, [o.name for o in RouteSettings.options()]), flag)
    out = _setting(args, config, "out", "out/zimage.png")
    check_text(out, "--out")
    check_output_path(out)
    upscale = bool(_setting(args, config, "upscale", False))
    heavy, face_model = _setting(args, config, "heavy"), _setting(args, config, "face_model")
    _check_file_or_folder(heavy, "--heavy")
    _check_file_or_folder(face_model, "--face-model")
    if not upscale and (heavy or face_model):
        raise InputError("--heavy and --face-model act in the block route: add --upscale.")
    # Everything above needs neither a model nor torch; the device check imports torch, then weights load.
    from .checks import check_device

    device = _setting(args, config, "device")
    check_device(device, "--device")
    models = _setting(args, config, "models")
    _check_folder(models, "--models")
    from .images import save_image_atomic, to_pil
    from .job import run_job
    from .models import load_models
    from .timing import StageTimer

    memory = job.memory
    bundle = load_models(models, tokenizer=_setting(args, config, "tokenizer"), device=device,
                         dtype=_setting(args, config, "dtype"), storage=memory.weights, memory=memory.memory,
                         resident_blocks=memory.resident_blocks)
    bars = _progress(args)
    with bars:
        result = run_job(bundle, job, callback=bars.steps, on_decode_tile=bars.counter("decode tiles"))
        timer = StageTimer()
        timer.merge(result.timings)
        images, notes = result.images, list(result.notes)
        if upscale:
            from .pipeline import upscale_route

            routed = upscale_route(images, scale=route.scale, heavy=heavy, heavy_ratio=route.heavy_ratio,
                                   block=route.block, overlap=route.overlap, face_model=face_model,
                                   face_fidelity=route.face_fidelity, on_progress=bars.counter("blocks"))
            images = routed.image
            timer.merge(routed.timings, prefix="upscale_")
            notes += routed.notes
    paths = _out_paths(out, images.shape[0])
    for i, p in enumerate(paths):
        save_image_atomic(to_pil(images, i), p)
    options = job.values()
    if upscale:
        options.update(route.values())
    return {"outputs": [str(p) for p in paths], "width": int(images.shape[2]), "height": int(images.shape[1]),
            "seeds": result.seeds, "options": options, "notes": notes, "timing_report": timer.report()}


def cmd_upscale(args: argparse.Namespace) -> dict:
    from .checks import check_output_path

    route = RouteSettings.from_values(_given(args, {}, [o.name for o in RouteSettings.options()]), flag)
    if not Path(args.image).is_file():
        raise InputError(f"image {args.image}: no such file.")
    check_output_path(args.out)
    _check_file_or_folder(args.heavy, "--heavy")
    _check_file_or_folder(args.face_model, "--face-model")
    from .checks import check_device
    from .images import load_image, save_image_atomic, to_pil
    from .pipeline import upscale_route

    check_device(args.device, "--device")
    image = load_image(args.image)
    bars = _progress(args)
    with bars:
        result = upscale_route(image, scale=route.scale, heavy=args.heavy, heavy_ratio=route.heavy_ratio,
                               block=route.block, overlap=route.overlap, face_model=args.face_model,
                               face_fidelity=route.face_fidelity, out_width=args.width, out_height=args.height,
                               device=args.device, on_progress=bars.counter("blocks"))
    paths = _out_paths(args.out, result.image.shape[0])
    for i, p in enumerate(paths):
        save_image_atomic(to_pil(result.image, i), p)
    return {"outputs": [str(p) for p in paths], "width": result.image.shape[2], "height": result.image.shape[1],
            "options": route.values(), "notes": result.notes, "timing_report": result.timings}


def cmd_make_tiny(args: argparse.Namespace) -> dict:
    from .testing import save_tiny_models

    out = save_tiny_models(args.out, args.layout, tokenizer_source=Path(args.tokenizer) if args.tokenizer else None,
                           seed=args.seed)
    return {"written": str(out), "layout": args.layout,
            "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())}


def cmd_serve(args: argparse.Namespace) -> dict:
    from .settings import MemorySettings

    memory = MemorySettings.from_values(_given(args, {}, [o.name for o in MemorySettings.options()]), flag)
    _check_folder(args.models, "--models")
    from .checks import check_device

    check_device(args.device, "--device")
    model_options = {"storage": memory.weights, "memory": memory.memory, "resident_blocks": memory.resident_blocks}
    if args.ray:
        try:
            from .service.ray_serve import serve_with_ray
        except ImportError as err:
            raise MissingDependencyError(f"--ray needs Ray Serve ({err}): pip install -e \".[ray]\".") from None
        serve_with_ray(args.models, host=args.host, port=args.port, replicas=args.replicas,
                       max_batch_size=args.batch, batch_wait_s=args.batch_wait, max_queued=args.queue,
                       timeout_s=args.timeout or 600.0, device=args.device, tokenizer=args.tokenizer,
                       model_options=model_options)
        return {"stopped": True}
    from .service.app import serve

    serve(args.models, host=args.host, port=args.port, queue_size=args.queue, device=args.device,
          timeout_s=args.timeout or None, max_body=args.max_body, preload=args.preload, tokenizer=args.tokenizer,
          allow_hosts=args.allow_host, max_connections=args.max_connections,
          model_options=model_options)
    return {"stopped": True}


COMMANDS = {"generate": cmd_generate, "upscale": cmd_upscale, "make-tiny": cmd_make_tiny, "serve": cmd_serve}


def _configure_logging(verbose: bool, command: str) -> None:
    """Warnings only, except the server's own start and request lines; -v shows everything, native logs included."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if command == "serve":
        logging.getLogger("zimage_core.service").setLevel(logging.INFO)
    if verbose:  # MediaPipe's native start-up lines are shown only at DEBUG (see faces.detect)
        logging.getLogger("zimage_core.faces.detect").setLevel(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose, args.command)
    try:
        report = COMMANDS[args.command](args)
    except ZImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
