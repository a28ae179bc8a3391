"""The only place the pack touches ComfyUI: model folders, memory manager, progress/preview, interrupt, server, and
the NextDiT internals of the native guidance adapter.

Every ComfyUI import is guarded (all of them in guards.py), so the nodes also run with no ComfyUI at all (tests,
headless use): model folders then come from $ZIMAGE_MODELS_DIR (a ComfyUI-style `models/` tree), progress is a
no-op, torch modules stay where zimage_core put them, and interrupts use a flag of this package
(`request_interrupt`).

Why one package: peers that reach into ComfyUI from everywhere (or monkey-patch it) break on host updates; here the
surface we depend on is small, listed, and each use degrades to a plain-torch fallback when it is missing.
"""

from __future__ import annotations

from .execution import (Progress, current_prompt_id, interrupt_exception, interruptible, latent_previewer,
                        pop_timings, raise_interrupted, record_timing, request_interrupt, should_stop, timed)
from .folders import (FACE_FOLDER, MODEL_SUFFIXES, MODELS_DIR_ENV, directory_by_type, folder_paths_for, full_path,
                      list_dirs, list_files, models_dir, register_folder, temp_dir)
from .guards import inside_comfyui
from .memory import compute_device, free_memory_for, load_device, models_ready, soft_empty_cache
from .nextdit import (calc_cond_batch, comfy_version, model_patcher_class, nextdit_class, pad_to_patch_size,
                      repeat_to_batch_size, rope, wrapper_type)
from .server import prompt_server, save_previews, server_base_url

__all__ = ["FACE_FOLDER", "MODELS_DIR_ENV", "MODEL_SUFFIXES", "Progress", "calc_cond_batch", "comfy_version",
           "compute_device", "current_prompt_id", "directory_by_type", "folder_paths_for", "free_memory_for",
           "full_path", "inside_comfyui", "interrupt_exception", "interruptible", "latent_previewer", "list_dirs",
           "list_files", "load_device", "model_patcher_class", "models_dir", "models_ready", "nextdit_class",
           "pad_to_patch_size", "pop_timings", "prompt_server", "raise_interrupted", "record_timing",
           "register_folder", "repeat_to_batch_size", "request_interrupt", "rope", "save_previews",
           "server_base_url", "should_stop", "soft_empty_cache", "temp_dir", "timed", "wrapper_type"]
