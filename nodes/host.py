"""The only place the pack touches ComfyUI: model folders, memory manager, progress/preview, interrupt, server.

Every ComfyUI import is guarded, so the nodes also run with no ComfyUI at all (tests, headless use): model folders
then come from $ZIMAGE_MODELS_DIR (a ComfyUI-style `models/` tree), progress is a no-op, torch modules stay where
zimage_core put them, and interrupts use a flag in this module (`request_interrupt`).

Why a single module: peers that reach into ComfyUI from everywhere (or monkey-patch it) break on host updates; here
the surface we depend on is small, listed, and each use degrades to a plain-torch fallback when it is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from zimage_core.errors import Interrupted

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "ZIMAGE_MODELS_DIR"
MODEL_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin", ".gguf")
FACE_FOLDER = "facerestore_models"

# ----------------------------------------------------------------------------------------------- guarded imports
try:  # ComfyUI's model folders
    import folder_paths as _fp  # type: ignore
except Exception:  # noqa: BLE001 - any failure means "not inside ComfyUI"
    _fp = None

try:  # memory manager + interrupt flag
    import comfy.model_management as _mm  # type: ignore
except Exception:  # noqa: BLE001
    _mm = None

try:
    import comfy.model_patcher as _patcher  # type: ignore
except Exception:  # noqa: BLE001
    _patcher = None

try:
    import comfy.utils as _cutils  # type: ignore
except Exception:  # noqa: BLE001
    _cutils = None


def inside_comfyui() -> bool:
    """True when ComfyUI's folder and memory modules are importable (i.e. the pack runs as a custom node)."""
    return _fp is not None and _mm is not None


# ----------------------------------------------------------------------------------------------- model folders
def models_dir() -> Path:
    """ComfyUI's models/ folder, else $ZIMAGE_MODELS_DIR, else ./models."""
    if _fp is not None:
        return Path(_fp.models_dir)
    return Path(os.environ.get(MODELS_DIR_ENV) or "models").expanduser()


def register_folder(name: str) -> None:
    """Make `name` a ComfyUI model folder (models/<name>, weight-file extensions) unless something registered it
    already (e.g. `facerestore_models`, which facerestore packs also register)."""
    if _fp is None:
        return
    if name not in _fp.folder_names_and_paths:
        _fp.folder_names_and_paths[name] = ([os.path.join(_fp.models_dir, name)], set(_fp.supported_pt_extensions))


def folder_paths_for(folder: str) -> list[Path]:
    """Every directory ComfyUI searches for `folder` (extra_model_paths included); outside ComfyUI models/<folder>
    (plus models/unet for diffusion_models and models/clip for text_encoders, like ComfyUI)."""
    if _fp is not None:
        try:
            return [Path(p) for p in _fp.get_folder_paths(folder)]
        except Exception:  # noqa: BLE001 - unknown folder name
            return []
    root = models_dir()
    legacy = {"diffusion_models": ["unet"], "text_encoders": ["clip"]}.get(folder, [])
    return [root / folder] + [root / extra for extra in legacy]


def list_files(folder: str) -> list[str]:
    """Model files in a folder, relative names (what the combo widgets show). GGUF files are included: ComfyUI's own
    list leaves them out (its loaders do not read them), ours do."""
    found: set[str] = set()
    if _fp is not None:
        try:
            found.update(_fp.get_filename_list(folder))
        except Exception:  # noqa: BLE001 - unknown folder name
            return []
    suffixes = (".gguf",) if _fp is not None else MODEL_SUFFIXES
    for base in folder_paths_for(folder):
        if base.is_dir():
            for p in base.rglob("*"):
                if p.is_file() and p.suffix.lower() in suffixes:
                    found.add(p.relative_to(base).as_posix())
    return sorted(found)


def list_dirs(folder: str, marker: str = "model_index.json") -> list[str]:
    """Sub-folders (up to two levels deep) of a model folder that contain `marker` (diffusers folders)."""
    found: set[str] = set()
    for base in folder_paths_for(folder):
        if not base.is_dir():
            continue
        for depth in ("*", "*/*"):
            for p in base.glob(f"{depth}/{marker}"):
                found.add(p.parent.relative_to(base).as_posix())
    return sorted(found)


def full_path(folder: str, name: str) -> Path:
    """Absolute path of a listed file or folder; a clear error when it is gone."""
    if _fp is not None:
        hit = _fp.get_full_path(folder, name)
        if hit is not None:
            return Path(hit)
    for base in folder_paths_for(folder):
        cand = base / name
        if cand.exists():
            return cand
    from zimage_core.errors import ModelFileError

    raise ModelFileError(f"'{name}' not found in the {folder} model folder(s): "
                         f"{', '.join(str(p) for p in folder_paths_for(folder)) or '(none registered)'}. "
                         "Refresh the node list (R) after adding or removing files.")


def temp_dir() -> Path:
    """Where preview images go (ComfyUI's temp folder, else a folder in the system temp dir)."""
    if _fp is not None:
        return Path(_fp.get_temp_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "zimage_previews"


def directory_by_type(kind: str) -> Path | None:
    """ComfyUI's output / temp / input folder (None outside ComfyUI)."""
    if _fp is None:
        return None
    d = _fp.get_directory_by_type(kind)
    return Path(d) if d else None


# ----------------------------------------------------------------------------------------------- devices
def compute_device() -> torch.device:
    """Where models run: ComfyUI's torch device, else CUDA when present, else CPU."""
    if _mm is not None:
        return torch.device(_mm.get_torch_device())
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_device() -> torch.device:
    """Where freshly loaded weights are placed. Inside ComfyUI: its offload device (the memory manager moves them
    to the GPU on use); outside: the compute device."""
    if _mm is not None:
        return torch.device(_mm.unet_offload_device())
    return compute_device()


class _Holder(torch.nn.Module):
    """A plain container around one of our modules, so ComfyUI's ModelPatcher can write its bookkeeping attributes
    (`device`, memory counters) without touching the diffusers/transformers module (whose `device` is read-only)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device


_PATCHER_ATTR = "_zimage_comfy_patcher"
_PATCHERS_LOCK = threading.Lock()


def _patcher_for(module: torch.nn.Module):
    """One ModelPatcher per module, stored on the module itself so it lives and dies with it (a global registry
    would keep every model ever loaded alive in RAM, even after ComfyUI's /free)."""
    with _PATCHERS_LOCK:
        patcher = module.__dict__.get(_PATCHER_ATTR)
        if patcher is None:
            device = next(module.parameters()).device
            # the holder references the module; the module references the patcher: a cycle the GC frees together
            patcher = _patcher.ModelPatcher(_Holder(module, device), load_device=_mm.get_torch_device(),
                                            offload_device=_mm.unet_offload_device())
            module.__dict__[_PATCHER_ATTR] = patcher
        return patcher


def _stream_wanted(mods: list[torch.nn.Module], extra_bytes: int, device: torch.device) -> bool:
    """Block streaming instead of full residency: when ComfyUI runs with --lowvram / --novram, or when the modules
    and their working memory could not fit the device even with everything else unloaded."""
    from zimage_core.offload import weight_bytes

    if device.type != "cuda":
        return False
    state = getattr(_mm, "vram_state", None)
    if state is not None and getattr(state, "name", "") in ("LOW_VRAM", "NO_VRAM"):
        return True
    need = sum(weight_bytes(m) for m in mods) + extra_bytes + _mm.minimum_inference_memory()
    return need > _mm.get_total_memory(device)


def _unload_ours(patchers: list) -> None:
    """Take our patchers out of ComfyUI's loaded set (their weights go back to the CPU), keeping every other model."""
    ours = {id(p) for p in patchers}
    keep = [e for e in getattr(_mm, "current_loaded_models", []) if id(getattr(e, "model", None)) not in ours]
    _mm.free_memory(1e30, compute_device(), keep_loaded=keep)


@contextlib.contextmanager
def models_ready(*modules: torch.nn.Module | None, extra_bytes: int = 0) -> Iterator[str]:
    """Make these modules ready on the compute device for the work inside the block; yields the mode used.

    Outside ComfyUI: 'local' (they already are where zimage_core placed them). Inside ComfyUI:
      'full'   through the memory manager: one ModelPatcher each, sized by the bytes actually stored (fp8 and GGUF
               count their compact bytes); other models are offloaded to make room, ours when others need it;
      'block'  with --lowvram / --novram, or when they cannot fit the device: the DiT and the text encoder stream
               their blocks from CPU memory (zimage_core.offload), ComfyUI frees room for one block group plus the
               working memory, and modules without blocks (the VAE) are moved for the work and back after it.
    """
    from zimage_core.offload import block_footprint, disable_block_offload, enable_block_offload

    mods = [m for m in modules if m is not None]
    if not mods or _mm is None or _patcher is None:
        yield "local"
        return
    device = compute_device()
    patchers = [_patcher_for(m) for m in mods]
    if not _stream_wanted(mods, extra_bytes, device):
        for m, patcher in zip(mods, patchers):
            disable_block_offload(m)
            patcher.size = 0  # re-measured on load: LoRA adapters added since the last use must count too
        _mm.load_models_gpu(patchers, memory_required=extra_bytes, force_full_load=True)
        yield "full"
        return
    _unload_ours(patchers)
    streamed = [m for m in mods if any(isinstance(c, torch.nn.ModuleList) for c in m.children())]
    moved = [m for m in mods if m not in streamed]
    _mm.free_memory(sum(block_footprint(m, 1) for m in streamed) + sum(_bytes(m) for m in moved) + extra_bytes,
                    device)
    for m in streamed:
        enable_block_offload(m, device, resident_blocks=1)
    for m in moved:
        m.to(device)
    try:
        yield "block"
    finally:
        for m in moved:
            m.to(load_device())


def _bytes(module: torch.nn.Module) -> int:
    from zimage_core.offload import weight_bytes

    return weight_bytes(module)


def free_memory_for(module: torch.nn.Module) -> None:
    """Ask ComfyUI to free room for a module we move ourselves (upscale/face models, like its upscale node)."""
    if _mm is None:
        return
    _mm.free_memory(_bytes(module) * 2, _mm.get_torch_device())


def soft_empty_cache() -> None:
    if _mm is not None:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- interrupt
_interrupt = threading.Event()


def request_interrupt(value: bool = True) -> None:
    """Outside ComfyUI: ask running nodes to stop at the next step (inside, ComfyUI's own flag is used too)."""
    if value:
        _interrupt.set()
    else:
        _interrupt.clear()
    if _mm is not None:
        _mm.interrupt_current_processing(value)


def should_stop() -> bool:
    """Polled by zimage_core between steps / tiles / block batches."""
    if _mm is not None and _mm.processing_interrupted():
        return True
    return _interrupt.is_set()


def interrupt_exception() -> type[BaseException]:
    """ComfyUI's InterruptProcessingException (shown as "interrupted", not as an error), else Interrupted."""
    if _mm is not None:
        return _mm.InterruptProcessingException
    return Interrupted


def raise_interrupted(err: BaseException | None = None) -> None:
    """Clear the flag and raise the host's interrupt exception."""
    _interrupt.clear()
    exc = interrupt_exception()
    if _mm is not None:
        _mm.interrupt_current_processing(False)
    if err is not None:
        raise exc(str(err)) from err
    raise exc("Interrupted by the user.")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn zimage_core's Interrupted into the host's interrupt exception."""
    try:
        yield
    except Interrupted as err:
        raise_interrupted(err)


# ----------------------------------------------------------------------------------------------- progress + preview
class Progress:
    """ComfyUI progress bar (with optional preview images); a no-op outside ComfyUI."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.bar = _cutils.ProgressBar(self.total) if _cutils is not None and inside_comfyui() else None

    def update(self, done: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = max(1, int(total))
        if self.bar is not None:
            self.bar.update_absolute(min(int(done), self.total), self.total, preview)


def latent_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function model-space latents (B,16,h,w) → ComfyUI preview payload, using ComfyUI's own previewer for the
    Flux latent format (TAESD 'taef1' when installed and chosen, else its linear latent→RGB factors, per the
    user's --preview-method). None outside ComfyUI or with previews off."""
    if not inside_comfyui():
        return None
    try:
        import latent_preview  # type: ignore
        from comfy import latent_formats  # type: ignore

        previewer = latent_preview.get_previewer(_mm.get_torch_device(), latent_formats.Flux())
    except Exception as err:  # noqa: BLE001 - previews are a nicety; never fail a run for them
        log.debug("No latent previewer: %s", err)
        return None
    if previewer is None:
        return None
    return lambda x0: previewer.decode_latent_to_preview_image("JPEG", x0)


# ----------------------------------------------------------------------------------------------- timing report
_TIMINGS: "OrderedDict[str | None, dict[str, float]]" = OrderedDict()
_TIMINGS_LOCK = threading.Lock()
_TIMINGS_KEEP = 64


def current_prompt_id() -> str | None:
    """The id of the prompt ComfyUI is executing (None outside ComfyUI)."""
    try:
        from comfy_execution.utils import get_executing_context  # type: ignore

        ctx = get_executing_context()
        if ctx is not None:
            return ctx.prompt_id
    except Exception:  # noqa: BLE001
        pass
    server = prompt_server()
    return getattr(server, "last_prompt_id", None) if server is not None else None


def record_timing(stage: str, seconds: float) -> None:
    """Add seconds to a stage of the current prompt's timing report (read back by /zimage/generate)."""
    pid = current_prompt_id()
    with _TIMINGS_LOCK:
        report = _TIMINGS.setdefault(pid, {})
        report[stage] = report.get(stage, 0.0) + float(seconds)
        _TIMINGS.move_to_end(pid)
        while len(_TIMINGS) > _TIMINGS_KEEP:
            _TIMINGS.popitem(last=False)


def pop_timings(prompt_id: str | None) -> dict[str, float]:
    with _TIMINGS_LOCK:
        return _TIMINGS.pop(prompt_id, {})


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Time a node's work for the timing report (GPU work is synchronised so the seconds are real)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        record_timing(stage, time.perf_counter() - t)


# ----------------------------------------------------------------------------------------------- server
def prompt_server():
    """ComfyUI's PromptServer instance, or None (no ComfyUI, or ComfyUI without its server, e.g. in scripts)."""
    if not inside_comfyui():
        return None
    try:
        import server  # type: ignore

        return getattr(server.PromptServer, "instance", None)
    except Exception:  # noqa: BLE001
        return None


def server_base_url(server) -> str:
    """Loopback URL of ComfyUI's own HTTP server (to queue prompts through the same code path as POST /prompt)."""
    address = getattr(server, "address", None) or "127.0.0.1"
    port = getattr(server, "port", None) or 8188
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    elif address == "::":
        address = "::1"
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    scheme = "http"
    try:
        from comfy.cli_args import args  # type: ignore

        if getattr(args, "tls_keyfile", None) and getattr(args, "tls_certfile", None):
            scheme = "https"
    except Exception:  # noqa: BLE001
        pass
    return f"{scheme}://{address}:{port}"


# ----------------------------------------------------------------------------------------------- previews
def save_previews(images: torch.Tensor, prefix: str = "zimage_preview") -> list[dict]:
    """Write (B,H,W,3) images as PNGs to ComfyUI's temp folder and return the `ui.images` entries that show them
    on the node. Outside ComfyUI nothing is written (there is no UI to show them)."""
    if not inside_comfyui():
        return []
    import uuid

    from zimage_core.images import to_pil

    folder = temp_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    out = []
    for i in range(images.shape[0]):
        name = f"{prefix}_{tag}_{i:05d}.png"
        to_pil(images, i).save(folder / name, compress_level=1)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out


# ----------------------------------------------------------------------------------------------- native Z-Image model
# What nodes/native.py needs to put our guidance on ComfyUI's own Z-Image MODEL (a ModelPatcher around
# comfy/ldm/lumina/model.py's NextDiT): the wrapper slots, NextDiT's class, and the helpers its forward uses.
try:
    import comfy.ldm.common_dit as _common_dit  # type: ignore
    import comfy.ldm.flux.math as _flux_math  # type: ignore
    import comfy.ldm.lumina.model as _lumina  # type: ignore
    import comfy.patcher_extension as _pext  # type: ignore
    import comfy.samplers as _samplers  # type: ignore
except Exception:  # noqa: BLE001
    _common_dit = _flux_math = _lumina = _pext = _samplers = None


def _native(module: Any, what: str) -> Any:
    if module is None or _cutils is None:
        from zimage_core.errors import MissingDependencyError

        raise MissingDependencyError(f"{what} is only available inside ComfyUI (its 'comfy' package could not be "
                                     "imported).")
    return module


def comfy_version() -> str:
    """ComfyUI's version string ('unknown' outside ComfyUI or when it does not say)."""
    try:
        import comfyui_version  # type: ignore

        return str(comfyui_version.__version__)
    except Exception:  # noqa: BLE001
        return "unknown"


def model_patcher_class() -> type | None:
    """comfy.model_patcher.ModelPatcher (what a MODEL socket carries), or None outside ComfyUI."""
    return _patcher.ModelPatcher if _patcher is not None else None


def nextdit_class() -> type | None:
    """comfy.ldm.lumina.model.NextDiT (Lumina 2 and Z-Image), or None outside ComfyUI."""
    return _lumina.NextDiT if _lumina is not None else None


def wrapper_type(name: str) -> str:
    """The ModelPatcher wrapper slot WrappersMP.<name> (e.g. 'DIFFUSION_MODEL', 'OUTER_SAMPLE')."""
    return getattr(_native(_pext, "ComfyUI's model wrappers").WrappersMP, name)


def pad_to_patch_size(x: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """comfy.ldm.common_dit.pad_to_patch_size: the padding NextDiT's forward applies to its input latents."""
    return _native(_common_dit, "NextDiT's patch padding").pad_to_patch_size(x, patch_size)


def repeat_to_batch_size(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """comfy.utils.repeat_to_batch_size, as NextDiT lines its caption up with the image batch."""
    return _native(_cutils, "ComfyUI's batch helper").repeat_to_batch_size(x, batch_size)


def rope(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """comfy.ldm.flux.math.rope: one axis of NextDiT's rotary embedding, (B, L) → (B, L, dim/2, 2, 2)."""
    return _native(_flux_math, "ComfyUI's RoPE").rope(pos, dim, theta)


def calc_cond_batch(model: Any, conds: list, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> list:
    """comfy.samplers.calc_cond_batch: evaluate the model on conditionings as the sampler does."""
    return _native(_samplers, "ComfyUI's sampler").calc_cond_batch(model, conds, x, sigma, model_options)
