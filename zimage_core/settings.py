"""Generation, prompt-encoding and memory settings, declared once (see options.py); guidance settings live in
guidance/settings.py. Nodes, the CLI, the HTTP API and the docs derive their inputs from these declarations."""

from __future__ import annotations

from dataclasses import dataclass

from .encode import LONG_PROMPT_MODES, MAX_CAPTION_TOKENS
from .loading import STORAGE_MODES
from .offload import MEMORY_MODES
from .options import Settings, opt
from .schedule import DEFAULT_SHIFT
from .sizes import MAX_SIZE, MIN_SIZE, check_size

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class GenerationSettings(Settings):
    width: int = opt(1024, "Image width in pixels (a multiple of 16)", min=MIN_SIZE, max=MAX_SIZE, step=16)
    height: int = opt(1024, "Image height in pixels (a multiple of 16)", min=MIN_SIZE, max=MAX_SIZE, step=16)
    steps: int = opt(9, "Number of model evaluations (Turbo is distilled for 8-9)", min=1, max=100)
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
class EncodeSettings(Settings):
    hidden_layer: int = opt(-2, "Which Qwen3 hidden state is the conditioning: -2 (second to last) is what Z-Image "
                            "was trained with; other layers change the style", min=-37, max=36, advanced=True)
    long_prompt_mode: str = opt("truncate", "What happens past max tokens: truncate (drop the tail), interpolate "
                                "(resample the token sequence), pool (average neighbouring tokens), attention_pool "
                                "(average, weighting distinctive tokens more)", choices=LONG_PROMPT_MODES)
    max_tokens: int = opt(MAX_CAPTION_TOKENS, f"Caption length limit in tokens (at most {MAX_CAPTION_TOKENS}, the "
                          "model's positional limit)", min=1, max=MAX_CAPTION_TOKENS, advanced=True)


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


__all__ = ["EncodeSettings", "GenerationSettings", "MAX_SEED", "MemorySettings"]
