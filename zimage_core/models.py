"""Finding and loading a Z-Image model bundle from the files users actually have.

Two layouts are accepted:
  * a diffusers folder (Tongyi-MAI/Z-Image-Turbo: model_index.json, transformer/, text_encoder/, tokenizer/, vae/);
  * a ComfyUI `models/` folder: diffusion_models/*.safetensors (original key layout), text_encoders/qwen_3_4b*,
    vae/ae.safetensors, plus a tokenizer found per `find_tokenizer`.
Loading is lazy (each component loads on first use); asking for the same files and settings again returns the same
bundle while it is in use.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import shipped_config
from .errors import InputError, ModelFileError
from .fp8 import to_fp8_storage
from .loading import check_storage, load_text_encoder_file, load_transformer_file, load_vae_file
from .offload import MemoryPlan, Placement

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".gguf", ".pth", ".ckpt", ".bin")
TOKENIZER_ENV = "ZIMAGE_TOKENIZER"


@dataclass(frozen=True)
class ModelFiles:
    """Where each component lives. `layout` is 'diffusers' or 'comfy'."""

    layout: str
    transformer: Path
    text_encoder: Path
    vae: Path
    tokenizer: Path

    def cache_key(self) -> tuple:
        parts = []
        for p in (self.transformer, self.text_encoder, self.vae, self.tokenizer):
            st = p.stat()
            parts.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
        return (self.layout, *parts)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on GPU (what the weights ship in), fp32 on CPU (bf16 matmuls are slow and inexact there)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _pick(folder: Path, names: str | None, prefer: tuple[str, ...], what: str, searched: list[str],
          exact: tuple[str, ...] = ()) -> Path | None:
    searched.append(str(folder))
    if names:
        candidate = Path(names) if Path(names).is_absolute() else folder / names
        if not candidate.exists():
            raise ModelFileError(f"{what} file '{names}' not found in {folder}.")
        return candidate
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return None
    for name in exact:  # the canonical file names users have win over any substring match
        hits = [p for p in files if p.name.lower() == name]
        if hits:
            return hits[0]
    for word in prefer:
        hits = [p for p in files if word in p.name.lower()]
        if hits:
            return hits[0]
    if len(files) == 1:
        return files[0]
    raise ModelFileError(
        f"Several {what} files in {folder} ({', '.join(p.name for p in files[:6])}); choose one explicitly."
    )


def find_tokenizer(models_dir: Path | None, explicit: str | os.PathLike | None = None) -> Path:
    """Tokenizer folder: explicit path, $ZIMAGE_TOKENIZER, <models>/tokenizer, <models>/text_encoders/tokenizer,
    a diffusers folder's tokenizer/, then ComfyUI's bundled Qwen tokenizer (same BPE vocabulary)."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get(TOKENIZER_ENV):
        candidates.append(Path(os.environ[TOKENIZER_ENV]))
    if models_dir is not None:
        candidates += [models_dir / "tokenizer", models_dir / "text_encoders" / "tokenizer",
                       models_dir / "text_encoders" / "qwen_tokenizer"]
    spec = importlib.util.find_spec("comfy")  # locates ComfyUI's files without importing it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates += [Path(loc) / "text_encoders" / "qwen25_tokenizer",
                           Path(loc) / "text_encoders" / "qwen3_tokenizer"]
    for cand in candidates:
        if (cand / "tokenizer.json").is_file() or (cand / "vocab.json").is_file():
            return cand
    raise ModelFileError(
        "No Qwen tokenizer found. Searched: " + ", ".join(str(c) for c in candidates) + ". Put the tokenizer files "
        "(vocab.json + merges.txt, or tokenizer.json) in <models>/tokenizer/, set $ZIMAGE_TOKENIZER, or pass "
        "tokenizer=PATH. Inside ComfyUI the bundled comfy/text_encoders/qwen25_tokenizer is used automatically."
    )


def find_model_files(
    models: str | os.PathLike,
    *,
    transformer: str | None = None,
    text_encoder: str | None = None,
    vae: str | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> ModelFiles:
    """Resolve every component's location from a diffusers folder or a ComfyUI models folder."""
    root = Path(models).expanduser()
    if not root.exists():
        raise ModelFileError(
            f"Model folder not found: {root}. Give a ComfyUI 'models' folder (with diffusion_models/, "
            "text_encoders/, vae/) or a diffusers Z-Image-Turbo folder (with model_index.json)."
        )
    if (root / "model_index.json").is_file():
        parts = {name: root / name for name in ("transformer", "text_encoder", "vae")}
        missing = [str(p) for p in parts.values() if not (p / "config.json").is_file()]
        if missing:
            raise ModelFileError(f"Diffusers folder {root} is incomplete; missing: {', '.join(missing)}.")
        tok = find_tokenizer(root, tokenizer)
        return ModelFiles("diffusers", parts["transformer"], parts["text_encoder"], parts["vae"], tok)

    searched: list[str] = []
    dit = _pick(root / "diffusion_models", transformer, ("z_image", "zimage", "z-image"), "diffusion model", searched)
    if dit is None:
        dit = _pick(root / "unet", transformer, ("z_image", "zimage", "z-image"), "diffusion model", searched)
    te = _pick(root / "text_encoders", text_encoder, ("qwen_3_4b", "qwen3_4b", "qwen3-4b", "qwen"), "text encoder",
               searched)
    if te is None:
        te = _pick(root / "clip", text_encoder, ("qwen_3_4b", "qwen"), "text encoder", searched)
    ae = _pick(root / "vae", vae, ("flux", "z_image", "zimage"), "VAE", searched,
               exact=("ae.safetensors", "ae.sft", "diffusion_pytorch_model.safetensors"))
    missing = [n for n, p in (("diffusion model (z_image_turbo_bf16.safetensors → models/diffusion_models/)", dit),
                              ("text encoder (qwen_3_4b.safetensors → models/text_encoders/)", te),
                              ("VAE (ae.safetensors → models/vae/)", ae)) if p is None]
    if missing:
        raise ModelFileError(
            f"Z-Image model files missing under {root}: {'; '.join(missing)}. Searched: {', '.join(searched)}."
        )
    return ModelFiles("comfy", dit, te, ae, find_tokenizer(root, tokenizer))


class ModelBundle:
    """Transformer, text encoder + tokenizer, VAE and scheduler settings; each component loads on first access (on
    the CPU) and is placed on the compute device per the memory mode (see offload.Placement).

    storage: 'auto' | 'fp8' | 'full' (see loading.py); memory: 'auto' | 'gpu' | 'model' | 'block'."""

    def __init__(self, files: ModelFiles, device: torch.device, dtype: torch.dtype, storage: str = "auto",
                 memory: str = "auto", resident_blocks: int | None = None):
        self.files = files
        self.device = torch.device(device)
        self.dtype = dtype
        self.storage = check_storage(storage)
        self.placement = Placement(self.device, memory, resident_blocks)
        self.scheduler_config: dict[str, Any] = shipped_config("scheduler")
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {}
        self.prompt_encoder: Any = None  # generate.prompt_encoder's cached PromptEncoder (its embedding cache)

    def _get(self, name: str, loader) -> Any:
        with self._lock:
            if name not in self._parts:
                log.info("Loading %s from %s", name, getattr(self.files, name))
                part = loader()
                self._parts[name] = part.eval().requires_grad_(False) if isinstance(part, torch.nn.Module) else part
            return self._parts[name]

    @property
    def transformer(self):
        return self._get("transformer", self._load_transformer)

    @property
    def text_encoder(self):
        return self._get("text_encoder", self._load_text_encoder)

    @property
    def tokenizer(self):
        return self._get("tokenizer", lambda: load_tokenizer(self.files.tokenizer))

    @property
    def vae(self):
        return self._get("vae", self._load_vae)

    @property
    def shift(self) -> float:
        return float(self.scheduler_config.get("shift", 3.0))

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """The memory mode chosen for the last generation (None before the first)."""
        return self.placement.plan

    def is_loaded(self, name: str) -> bool:
        return name in self._parts

    def _models(self) -> dict[str, torch.nn.Module]:
        return {n: self._parts[n] for n in ("transformer", "text_encoder", "vae") if n in self._parts}

    def prepare(self, width: int, height: int, forwards: int = 1) -> MemoryPlan:
        """Load the DiT, text encoder and VAE (on the CPU) and choose the memory mode for a generation at this size
        (an error says which mode would fit when the requested one does not)."""
        parts = {"transformer": self.transformer, "text_encoder": self.text_encoder, "vae": self.vae}
        with self._lock:
            return self.placement.prepare(parts, width, height, forwards)

    def activate(self, name: str) -> torch.nn.Module:
        """Make one part ready to run on the compute device (moving or streaming per the memory mode)."""
        module = getattr(self, name)
        with self._lock:
            self.placement.activate(self._models(), name)
        return module

    def controlnet(self, path: str | os.PathLike) -> torch.nn.Module:
        """A Fun ControlNet for this bundle's transformer, in its dtype and storage; the last one used stays loaded
        (a graph re-run does not reload it, a different file replaces it)."""
        from .controlnet import load_controlnet_file

        path = Path(path)
        key = f"controlnet:{path.resolve()}:{path.stat().st_mtime_ns}"
        with self._lock:
            if key not in self._parts:
                for old in [k for k in self._parts if k.startswith("controlnet:")]:
                    del self._parts[old]
                log.info("Loading ControlNet from %s", path)
                self._parts[key] = load_controlnet_file(path, self.transformer, self.dtype, self.storage)
            return self._parts[key]

    def release(self, name: str) -> None:
        """Drop one component (e.g. the text encoder after encoding) to free memory; it reloads when needed."""
        with self._lock:
            self._parts.pop(name, None)
            if name in ("text_encoder", "tokenizer"):
                self.prompt_encoder = None  # the cached encoder holds the model too
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _load_transformer(self):
        if self.files.layout == "comfy":
            return load_transformer_file(self.files.transformer, self.dtype, storage=self.storage)
        from diffusers import ZImageTransformer2DModel

        model = _from_pretrained(ZImageTransformer2DModel, self.files.transformer, self.dtype)
        if list(model.config.axes_lens) != [1536, 512, 512] and model.config.dim == 3840:
            log.warning("transformer config axes_lens=%s; Turbo uses [1536, 512, 512]", model.config.axes_lens)
        if self.storage == "fp8":
            to_fp8_storage(model, self.dtype, lambda n: n.startswith(("layers.", "noise_refiner.", "context_refiner.")))
        return model

    def _load_text_encoder(self):
        if self.files.layout == "comfy":
            return load_text_encoder_file(self.files.text_encoder, self.dtype, storage=self.storage)
        from transformers import Qwen3Model

        model = _from_pretrained(Qwen3Model, self.files.text_encoder, self.dtype)
        if self.storage == "fp8":
            to_fp8_storage(model, self.dtype, lambda n: n.startswith("layers.") or n == "embed_tokens")
        return model

    def _load_vae(self):
        if self.files.layout == "comfy":
            return load_vae_file(self.files.vae, self.dtype)
        from diffusers import AutoencoderKL

        return _from_pretrained(AutoencoderKL, self.files.vae, self.dtype)


def _from_pretrained(cls, folder: Path, dtype: torch.dtype):
    try:
        return cls.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"Could not load {cls.__name__} from {folder}: {err}") from err


def load_tokenizer(folder: Path):
    """A fast Qwen tokenizer from local files; pad with <|endoftext|> (id 151643 in the real vocabulary)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception:
        if not (folder / "tokenizer.json").is_file():
            raise ModelFileError(f"Could not read the tokenizer in {folder}.") from None
        tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    if tok.pad_token is None:
        tok.pad_token = "<|endoftext|>"
    tok.padding_side = "right"
    return tok


# Bundles live as long as someone uses them (a ComfyUI node output, a server, a script); the cache only finds a
# live one again. It never keeps one alive itself: ComfyUI's /free drops its node outputs and expects the weights
# to go with them.
_BUNDLES: weakref.WeakValueDictionary[tuple, ModelBundle] = weakref.WeakValueDictionary()
_BUNDLES_LOCK = threading.Lock()


def load_models(
    models: str | os.PathLike,
    *,
    transformer: str | None = None,
    text_encoder: str | None = None,
    vae: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    storage: str = "auto",
    memory: str = "auto",
    resident_blocks: int | None = None,
) -> ModelBundle:
    """The lazily loaded bundle for these files (the same object while it is in use). Errors about missing files and
    bad options come now, not at first use. storage / memory / resident_blocks: see ModelBundle."""
    files = find_model_files(models, transformer=transformer, text_encoder=text_encoder, vae=vae, tokenizer=tokenizer)
    device = torch.device(device) if device is not None else default_device()
    dtype = parse_dtype(dtype) if dtype is not None else default_dtype(device)
    key = (files.cache_key(), str(device), str(dtype), storage, memory, resident_blocks)
    with _BUNDLES_LOCK:
        bundle = _BUNDLES.get(key)
        if bundle is None:
            bundle = ModelBundle(files, device, dtype, storage, memory, resident_blocks)
            _BUNDLES[key] = bundle
        return bundle


def clear_cache() -> None:
    with _BUNDLES_LOCK:
        _BUNDLES.clear()


def parse_dtype(value: torch.dtype | str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if value not in table:
        raise InputError(f"Unknown dtype '{value}'; choose one of {', '.join(table)}.")
    return table[value]
