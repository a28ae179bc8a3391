"""Generation, prompt, encoding, hi-res and memory settings, declared once (see options.py); guidance settings live
in guidance/settings.py. Nodes, the CLI, the HTTP API and the docs derive their inputs from these declarations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import InputError
from .options import Settings, opt
from .presets import ASPECTS, STYLE_NONE, STYLES
from .sizes import MAX_SIZE, MIN_SIZE, check_size, snap

# The vocabulary the options are declared with lives here, not in the torch modules that use it, so parsing and
# checking options never imports torch (a bad flag is refused before the 1-2 s torch import, let alone a model).
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
DEFAULT_SHIFT = 3.0  # Z-Image-Turbo's scheduler shift
MAX_CAPTION_TOKENS = 1504  # the RoPE caption axis is 1536 long; captions are padded to a multiple of 32
LONG_PROMPT_MODES = ("truncate", "interpolate", "pool", "attention_pool")
DEFAULT_LONG_MODE = "truncate"
DEFAULT_HIDDEN_LAYER = -2  # the second-to-last Qwen3 hidden state: what Z-Image was trained with
DEFAULT_ROUTE_SCALE = 4.0  # the heavy upscalers are ×4 models
STORAGE_MODES = ("auto", "fp8", "full")
MEMORY_MODES = ("auto", "gpu", "model", "block")
MAX_STEPS = 100
UPSCALE_MODES = ("latent", "pixel")
LATENT_RESAMPLERS = ("bicubic", "bilinear", "bislerp")
DEFAULT_BLOCK = 128  # what the heavy upscalers see best
DEFAULT_OVERLAP = 32  # hides seams between 128 px blocks


@dataclass(frozen=True)
class GenerationSettings(Settings):
    width: int = opt(1024, "Image width in pixels (a multiple of 16)", min=MIN_SIZE, max=MAX_SIZE, step=16)
    height: int = opt(1024, "Image height in pixels (a multiple of 16)", min=MIN_SIZE, max=MAX_SIZE, step=16)
    steps: int = opt(9, "Number of model evaluations (Turbo is distilled for 8-9)", min=1, max=MAX_STEPS)
    seed: int = opt(0, "Noise seed; image i of a batch uses seed + i (the same image at any batch position, on the "
                    "CPU or a GPU)", min=0, max=MAX_SEED)
    shift: float = opt(DEFAULT_SHIFT, "Flow-match schedule shift (3.0 for Turbo): higher spends more steps at high "
                       "noise (composition), lower on detail", min=0.1, max=20.0, step=0.05)
    batch: int = opt(1, "Images per prompt (seeds seed … seed + n − 1)", min=1, max=64)
    strength: float = opt(1.0, "Denoise: 1 = generate from pure noise; below 1 (image-to-image, needs a start "
                          "image) how much of the input is replaced", min=0.0, max=1.0, step=0.01)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size(self.width, self.height)


@dataclass(frozen=True)
class PromptSettings(Settings):
    negative_prompt: str = opt("", "Negative prompt: acts through NAG (Turbo has no CFG), or through CFG when a CFG "
                               "scale is set; empty = none")
    style: str = opt(STYLE_NONE, "Style preset appended to every prompt (the presets of the ComfyUI front end)",
                     choices=tuple(STYLES))
    aspect: str = opt("", "Aspect preset that sets width and height: a ratio for the ~1024² class (e.g. 16:9 = "
                      "1360×768) or <ratio>-2k for ~2048²; empty = use width and height",
                      choices=("",) + tuple(ASPECTS))


@dataclass(frozen=True)
class EncodeSettings(Settings):
    hidden_layer: int = opt(DEFAULT_HIDDEN_LAYER, "Which Qwen3 hidden state is the conditioning: -2 (second to "
                            "last) is what Z-Image was trained with; other layers change the style", min=-37, max=36,
                            advanced=True)
    long_prompt_mode: str = opt(DEFAULT_LONG_MODE, "What happens past max tokens: truncate (drop the tail), "
                                "interpolate (resample the token sequence), pool (average neighbouring tokens), "
                                "attention_pool "
                                "(average, weighting distinctive tokens more)", choices=LONG_PROMPT_MODES)
    max_tokens: int = opt(MAX_CAPTION_TOKENS, f"Caption length limit in tokens (at most {MAX_CAPTION_TOKENS}, the "
                          "model's positional limit)", min=1, max=MAX_CAPTION_TOKENS, advanced=True)


@dataclass(frozen=True)
class HiresSettings(Settings):
    PREFIX = "hires"
    upscale: str = opt("latent", "How each hi-res pass enlarges the previous result: latent (resize the latents) or "
                       "pixel (decode, LANCZOS, encode: sharper, two VAE passes)", choices=UPSCALE_MODES)
    resampler: str = opt("bicubic", "Latent resize used by hi-res passes with upscale=latent",
                         choices=LATENT_RESAMPLERS, advanced=True)


@dataclass(frozen=True)
class HiresPass(Settings):
    """One hi-res pass: enlarge the previous result by `scale`, then refine it image-to-image."""

    scale: float = opt(2.0, "Enlargement over the previous pass", min=0.25, max=8.0, step=0.05)
    steps: int = opt(6, "Length of the pass's schedule", min=1, max=MAX_STEPS)
    strength: float = opt(0.45, "Share of the schedule that runs (img2img denoise)", min=0.01, max=1.0, step=0.01)


def parse_passes(passes: Sequence[dict | HiresPass]) -> list[HiresPass]:
    """Validate a hi-res pass list; errors name the pass and the allowed range."""
    out = []
    for i, p in enumerate(passes, 1):
        if isinstance(p, HiresPass):
            out.append(p)
            continue
        if not isinstance(p, dict):
            raise InputError(f"hi-res pass {i} must be an object with scale, steps, strength; got {p!r}.")
        unknown = set(p) - {"scale", "steps", "strength"}
        if unknown:
            raise InputError(f"hi-res pass {i} has unknown keys {sorted(unknown)}; use scale, steps, strength.")
        out.append(HiresPass.from_values(p, lambda name, i=i: f"hi-res pass {i}: {name}"))
    return out


def plan_sizes(width: int, height: int, passes: Sequence[HiresPass]) -> list[tuple[int, int]]:
    """[(w, h)] for the base and every hi-res pass, each snapped to 16 px and checked."""
    check_size(width, height)
    sizes = [(width, height)]
    for i, p in enumerate(passes, 1):
        w, h = snap(sizes[-1][0] * p.scale), snap(sizes[-1][1] * p.scale)
        try:
            check_size(w, h)
        except InputError as err:
            raise InputError(f"hi-res pass {i} (×{p.scale:g}) would give {w}×{h}: {err}") from None
        sizes.append((w, h))
    return sizes


@dataclass(frozen=True)
class RouteSettings(Settings):
    """The block-upscale route: slice → saliency → heavy or LANCZOS per block → feather stitch → faces."""

    scale: float = opt(DEFAULT_ROUTE_SCALE, "Upscale factor of the route (the heavy models are ×4 natively)",
                       min=0.125, max=16.0, step=0.125)
    block: int = opt(DEFAULT_BLOCK, "Block side in pixels (128 = what the heavy upscalers see best)", min=16,
                     max=2048, step=8)
    overlap: int = opt(DEFAULT_OVERLAP, "Pixels shared by neighbouring blocks (smaller than the block); 32 for 128 px "
                       "blocks hides seams", min=0, max=1024)
    heavy_ratio: float | None = opt(None, "Target share of blocks on the heavy path (auto: subject and detail blocks "
                                    "heavy, flat ones LANCZOS)", min=0.0, max=1.0, step=0.01, optional=True)
    face_fidelity: float = opt(1.0, "How much of a restored face to keep: 1 = GFPGAN's face, 0 = the original",
                               min=0.0, max=1.0, step=0.01)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.overlap >= self.block:
            raise InputError(f"overlap={self.overlap} must be smaller than block={self.block}.", "overlap")


CONTROL_TYPES = ("raw", "canny")


@dataclass(frozen=True)
class ControlSettings(Settings):
    """How a control image steers the generation through a Fun ControlNet."""

    PREFIX = "control"
    scale: float = opt(0.75, "ControlNet strength (the Fun ControlNet Union cards suggest 0.65-0.9); 0 = off",
                       min=0.0, max=2.0, step=0.05)
    start: float = opt(1.0, "The control acts while σ ≤ this (1 = from the first step)", min=0.0, max=1.0,
                       step=0.01)
    end: float = opt(0.0, "The control acts while σ ≥ this (0 = to the last step; 0.3-0.5 leaves the fine detail "
                     "free)", min=0.0, max=1.0, step=0.01)
    type: str = opt("raw", "What the control image is: raw (a depth / pose / edge / line map made elsewhere, used as "
                    "is) or canny (any picture; its Canny edges are computed here)",
                    choices=CONTROL_TYPES)
    canny_low: int = opt(100, "Canny: edges weaker than this are dropped", min=0, max=255, advanced=True)
    canny_high: int = opt(200, "Canny: edges stronger than this are kept (between the two: kept when connected)",
                          min=0, max=255, advanced=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.end > self.start:
            raise InputError(f"control_end={self.end:g} must not exceed control_start={self.start:g} (σ window, "
                             "1 = pure noise).", "control_end")
        if self.canny_low > self.canny_high:
            raise InputError(f"control_canny_low={self.canny_low} is above control_canny_high={self.canny_high}.",
                             "control_canny_low")


@dataclass(frozen=True)
class InpaintSettings(Settings):
    """How the inpaint mask (1 = repaint) is shaped before use."""

    PREFIX = "mask"
    grow: int = opt(0, "Grow the mask by this many pixels (covers a seam or a halo around the object)", min=0,
                    max=256)
    feather: int = opt(0, "Soften the mask edge over this many pixels (0 = a hard edge, as diffusers)", min=0,
                       max=256)


@dataclass(frozen=True)
class MemorySettings(Settings):
    weights: str = opt("auto", "Weight storage: auto keeps the file's format (fp8 and GGUF stay compact), fp8 stores "
                       "16-bit weights as fp8 (half the memory, upcast per layer), full expands everything to the "
                       "compute dtype", choices=STORAGE_MODES)
    memory: str = opt("auto", "Where weights live: gpu (all resident), model (one part at a time), block (stream "
                      "the transformer blocks from CPU memory), auto (the lightest mode that fits the free VRAM)",
                      choices=MEMORY_MODES)
    resident_blocks: int | None = opt(None, "Blocks kept on the GPU at a time with memory=block (auto: the most "
                                      "that fit)", min=1, max=64, optional=True, advanced=True)


__all__ = ["DEFAULT_SHIFT", "EncodeSettings", "GenerationSettings", "HiresPass", "HiresSettings", "LATENT_RESAMPLERS",
           "LONG_PROMPT_MODES", "MAX_CAPTION_TOKENS", "MAX_SEED", "MAX_STEPS", "MEMORY_MODES", "MemorySettings",
           "ControlSettings", "InpaintSettings", "PromptSettings", "RouteSettings", "STORAGE_MODES", "UPSCALE_MODES",
           "parse_passes", "plan_sizes"]
