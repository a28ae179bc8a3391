"""One generation as any interface asks for it — prompts, every declared option (settings.py,
guidance/settings.py), LoRAs, hi-res passes and a start image — checked before anything loads, then run the same
way whichever interface built it (CLI, HTTP, Python).

`GenerationJob.build` runs every check that needs no model (ranges, sizes, presets, files that must exist and be
readable) without importing torch, so a typo costs milliseconds, not a model load. Values arrive keyed by option
name (nag_scale, width, ...) with a `spell` function saying how the interface in use writes a name, so errors
read `--nag-scale` on the command line and `nag_scale` over HTTP.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .checks import check_text
from .errors import InputError
from .guidance.settings import GROUPS as GUIDANCE_GROUPS
from .guidance.settings import GuidanceSettings
from .options import Option, Settings, Spelling
from .presets import apply_style, aspect_size
from .settings import (ControlSettings, EncodeSettings, GenerationSettings, HiresPass, HiresSettings, InpaintSettings,
                       MemorySettings, PromptSettings, parse_passes, plan_sizes)

if TYPE_CHECKING:
    import torch

    from .generate import GenerationResult

OPTION_GROUPS: tuple[type[Settings], ...] = (GenerationSettings, PromptSettings, EncodeSettings, *GUIDANCE_GROUPS,
                                             HiresSettings, ControlSettings, InpaintSettings, MemorySettings)
# Chosen when the models load (a server chooses them at start-up), not per generation.
MODEL_OPTION_GROUPS: tuple[type[Settings], ...] = (MemorySettings,)


def all_options() -> list[Option]:
    """Every option of a generation, in a stable order (what the CLI, the HTTP API and the docs offer)."""
    return [o for group in OPTION_GROUPS for o in group.options()]


def parse_lora(text: str, spelled: str = "--lora") -> tuple[str, float]:
    """'FILE:STRENGTH' or 'FILE' (strength 1) → (file, strength). A ':' that is not followed by a number belongs to
    the file name (a Windows drive letter)."""
    name, sep, tail = text.rpartition(":")
    strength = 1.0
    if sep:
        try:
            strength = float(tail)
        except ValueError:
            name = text
    else:
        name = text
    if not name.strip():
        raise InputError(f"{spelled} needs FILE[:STRENGTH], e.g. detail.safetensors:0.8; got {text!r}.")
    return name, strength


def parse_hires(text: str, spelled: str = "--hires") -> dict[str, Any]:
    """'SCALE:STEPS:STRENGTH' → one hi-res pass (checked later with the pass's declared ranges)."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        return {"scale": float(parts[0]), "steps": int(parts[1]), "strength": float(parts[2])}
    except ValueError:
        raise InputError(f"{spelled} needs SCALE:STEPS:STRENGTH, e.g. 2:6:0.45; got {text!r}.") from None


def _readable_file(path: str | os.PathLike, what: str, option: str) -> Path:
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise InputError(f"{what} {path}: {problem}.", option)
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable (check its permissions).", option)
    return path


def _check_image_inputs(generation: GenerationSettings, passes: tuple, init_image: Any, mask: Any,
                        control_image: Any, control_model: Path | None, spell: Spelling) -> None:
    """How the start image, the mask, the control image and hi-res passes may be combined."""
    if generation.strength < 1.0 and init_image is None:
        raise InputError(f"{spell('strength')} below 1 is image-to-image: give a start image "
                         f"({spell('init_image')}).", "strength")
    if init_image is not None and mask is None and generation.strength >= 1.0:
        raise InputError(f"a start image needs {spell('strength')} below 1 (at 1 it is replaced entirely by "
                         f"noise; 0.5-0.8 keeps its layout), or a {spell('mask')} to inpaint.", "strength")
    if mask is not None and init_image is None:
        raise InputError(f"{spell('mask')} marks what to repaint in a start image: give {spell('init_image')} too.",
                         "mask")
    if (control_image is None) != (control_model is None):
        missing = "control_model" if control_model is None else "control_image"
        raise InputError(f"a control needs both {spell('control_image')} and {spell('control_model')} (a Fun "
                         f"ControlNet file); {spell(missing)} is missing.", missing)
    if passes and (init_image is not None or control_image is not None):
        raise InputError("hi-res passes start from text: leave out the start image / control image, or the hi-res "
                         "passes.", "hires_passes")


@dataclass
class GenerationJob:
    """A checked generation request (see the module docstring). Images (`init_image`, `mask` — 1 = repaint —,
    `control_image`) are file paths or tensors; `control_model` is a Fun ControlNet file."""

    prompts: list[str]
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    hires: HiresSettings = field(default_factory=HiresSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    inpaint: InpaintSettings = field(default_factory=InpaintSettings)
    hires_passes: tuple[HiresPass, ...] = ()
    loras: tuple[tuple[Path, float], ...] = ()
    init_image: Any = None
    mask: Any = None
    control_image: Any = None
    control_model: Path | None = None
    spell: Spelling = field(default=lambda name: name, compare=False, repr=False)  # for errors found while running

    @classmethod
    def build(cls, prompts: Sequence[str], values: dict[str, Any] | None = None, spell: Spelling = lambda n: n, *,
              loras: Sequence[tuple[str | os.PathLike, float]] = (), hires_passes: Sequence[dict | HiresPass] = (),
              init_image: Any = None, mask: Any = None, control_image: Any = None,
              control_model: str | os.PathLike | None = None) -> "GenerationJob":
        """Check and assemble; raises InputError / ModelFileError naming the option as `spell` writes it."""
        prompts = list(prompts)
        if not prompts:
            raise InputError(f"{spell('prompts')} needs at least one prompt.", "prompts")
        for p in prompts:
            check_text(p, spell("prompts"))
            if not p.strip():
                raise InputError(f"{spell('prompts')}: a prompt is empty.", "prompts")
        values = dict(values or {})
        unknown = sorted(set(values) - {o.name for o in all_options()})
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(spell(n) for n in unknown)}.")
        prompt = PromptSettings.from_values(values, spell)
        if prompt.aspect:
            clash = [spell(k) for k in ("width", "height") if k in values]
            if clash:
                raise InputError(f"{spell('aspect')} sets the size: leave out {' and '.join(clash)}.", "aspect")
            values["width"], values["height"] = aspect_size(prompt.aspect)
        generation = GenerationSettings.from_values(values, spell)
        try:
            passes = tuple(parse_passes(list(hires_passes)))
            plan_sizes(generation.width, generation.height, passes)
        except InputError as err:
            raise InputError(str(err), "hires_passes") from None
        init_image, mask, control_image = (
            _readable_file(v, what, name) if isinstance(v, (str, os.PathLike)) else v
            for v, what, name in ((init_image, "start image", "init_image"), (mask, "mask", "mask"),
                                  (control_image, "control image", "control_image")))
        if control_model is not None:
            control_model = _readable_file(control_model, "ControlNet", "control_model")
        _check_image_inputs(generation, passes, init_image, mask, control_image, control_model, spell)
        checked_loras = tuple((_readable_file(path, "LoRA file", "loras"), float(strength)) for path, strength in loras)
        return cls(prompts, generation, prompt, EncodeSettings.from_values(values, spell),
                   GuidanceSettings.from_values(values, spell), HiresSettings.from_values(values, spell),
                   MemorySettings.from_values(values, spell), ControlSettings.from_values(values, spell),
                   InpaintSettings.from_values(values, spell), passes, checked_loras, init_image, mask, control_image,
                   control_model, spell)

    @property
    def styled_prompts(self) -> list[str]:
        return [apply_style(p, self.prompt.style) for p in self.prompts]

    @property
    def image_count(self) -> int:
        return len(self.prompts) * self.generation.batch

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images: the last hi-res pass's size, else width × height."""
        return plan_sizes(self.generation.width, self.generation.height, self.hires_passes)[-1]

    def values(self) -> dict[str, Any]:
        """The effective options, as reports echo them back."""
        out: dict[str, Any] = {}
        for group in (self.generation, self.prompt, self.encode):
            out.update(group.values())
        out.update(self.guidance.values())
        out.update(self.hires.values())
        out.update(self.control.values())
        out.update(self.inpaint.values())
        out.update(self.memory.values())
        out["loras"] = [{"name": path.name, "strength": strength} for path, strength in self.loras]
        out["hires_passes"] = [p.values() for p in self.hires_passes]
        out["init_image"] = self.init_image is not None
        out["mask"] = self.mask is not None
        out["control_image"] = self.control_image is not None
        out["control_model"] = self.control_model.name if self.control_model is not None else None
        return out

    def at_size(self, width: int, height: int) -> "GenerationJob":
        """The same job at another size (the upscale route generates at its working size)."""
        return replace(self, generation=replace(self.generation, width=width, height=height))


@dataclass
class _Images:
    """The job's images ready for the model: start image at the job's size, pixel mask, control image."""

    init: "torch.Tensor | None" = None
    mask: "torch.Tensor | None" = None
    control: "torch.Tensor | None" = None
    notes: list[str] = field(default_factory=list)


def _read(image: Any) -> "torch.Tensor":
    from .images import as_image_batch, load_image

    return load_image(image) if isinstance(image, Path) else as_image_batch(image)


def _images(job: GenerationJob) -> _Images:
    """Read, resize and shape the job's images (before any weight loads, so a bad file costs nothing)."""
    from .blocks import lanczos_resize

    out = _Images()
    g = job.generation
    size = (g.height, g.width)
    if job.init_image is not None:
        image = _read(job.init_image)
        out.init = lanczos_resize(image, size).clamp(0, 1) if tuple(image.shape[1:3]) != size else image
    if job.mask is not None:
        from .inpaint import as_mask, prepare_mask

        mask = as_mask(_read(job.mask) if isinstance(job.mask, Path) else job.mask)
        out.mask = prepare_mask(mask, g.width, g.height, grow=job.inpaint.grow, feather=job.inpaint.feather,
                                notes=out.notes)
    if job.control_image is not None:
        from .controlnet import check_controlnet_file

        check_controlnet_file(job.control_model)
        out.control = _read(job.control_image)
        if job.control.type == "canny":
            from .preprocess import canny

            out.control = canny(out.control, job.control.canny_low, job.control.canny_high)
    return out


def batch_key(job: GenerationJob) -> str | None:
    """Jobs with equal keys differ only in prompts and seeds, so they can share one generation batch; None for a job
    that runs alone (start image, mask, control, hi-res passes, or seed diversity, which is seeded per batch)."""
    if (job.init_image is not None or job.mask is not None or job.control_image is not None or job.hires_passes
            or job.guidance.diversity.strength > 0):
        return None
    values = {k: v for k, v in job.values().items() if k != "seed"}
    return json.dumps(values, sort_keys=True, default=str)


def merge_jobs(jobs: Sequence[GenerationJob]) -> tuple[GenerationJob, list[int] | None]:
    """One job generating every image of `jobs` (equal batch keys) in order, and each image's seed (None for a single
    job: its own seeds)."""
    if len(jobs) == 1:
        return jobs[0], None
    prompts = [p for job in jobs for p in job.prompts for _ in range(job.generation.batch)]
    seeds = [job.generation.seed + i for job in jobs for i in range(job.image_count)]
    merged = replace(jobs[0], prompts=prompts, generation=replace(jobs[0].generation, batch=1))
    return merged, seeds


def run_job(bundle: Any, job: GenerationJob, *, callback: Callable | None = None,
            should_stop: Callable[[], bool] | None = None,
            on_decode_tile: Callable[[int, int], None] | None = None,
            seeds: Sequence[int] | None = None) -> "GenerationResult":
    """Run a job on a ModelBundle: start image, model loading (timed as 'load' when it happens), encoding with the
    style applied, LoRAs, guidance, hi-res passes. `callback` sees every denoising step, `on_decode_tile` a tiled
    decode's tiles; `seeds` gives each image its own seed (requests batched together). Returns the GenerationResult
    (a HiresResult with hi-res passes)."""
    from .generate import generate, prompt_encoder
    from .guidance import guided_denoiser
    from .lora import LoraSpec, apply_loras, loaded_loras
    from .timing import StageTimer

    timer = StageTimer(sync_cuda=bundle.device.type == "cuda")
    g, e = job.generation, job.encode
    images = _images(job)
    if not all(bundle.is_loaded(p) for p in ("transformer", "text_encoder", "vae", "tokenizer")):
        with timer.stage("load"):
            for part in ("tokenizer", "text_encoder", "transformer", "vae"):
                getattr(bundle, part)
    with timer.stage("text_encode"):
        encoder = prompt_encoder(bundle)
        encode = {"hidden_layer": e.hidden_layer, "max_tokens": e.max_tokens, "long_mode": e.long_prompt_mode}
        cond = encoder.encode(job.styled_prompts, **encode)
        negative = None
        if job.prompt.negative_prompt.strip() or job.guidance.cfg.scale > 0:  # CFG without one: the empty prompt
            negative = encoder.encode([job.prompt.negative_prompt], **encode)  # one negative for every image
    transformer = bundle.transformer
    if job.loras or loaded_loras(transformer):
        with timer.stage("lora"):
            apply_loras(transformer, [LoraSpec(path, strength) for path, strength in job.loras])
    n_layers = len(transformer.layers)

    def denoiser_for(guidance: GuidanceSettings, width: int, height: int):
        try:  # the checks that need the model (SLG layers against its depth)
            options = guidance.options_for(width=width, height=height, seed=g.seed, negative=negative,
                                           n_layers=n_layers)
        except InputError as err:
            raise InputError(f"{job.spell(err.option)}: {err}" if err.option else str(err), err.option) from None
        return guided_denoiser(options)

    if job.hires_passes:
        from .hires import generate_hires

        dype = job.guidance.dype
        per_pass = replace(job.guidance, dype=replace(dype, method="off"))  # generate_hires adds DyPE per pass
        result = generate_hires(
            bundle, cond, width=g.width, height=g.height, steps=g.steps, seed=g.seed, passes=list(job.hires_passes),
            upscale=job.hires.upscale, latent_resampler=job.hires.resampler, dype=dype, shift=g.shift,
            images_per_prompt=g.batch,
            make_denoiser_for=lambda w, h: denoiser_for(per_pass, w, h), callback=callback, should_stop=should_stop,
            on_decode_tile=on_decode_tile)
    else:
        controls = []
        if images.control is not None:
            from .control import Control

            c = job.control
            with timer.stage("load"):
                controlnet = bundle.controlnet(job.control_model)
            controls.append(Control(controlnet, images.control, c.scale, c.start, c.end))
        result = generate(bundle, cond, width=g.width, height=g.height, steps=g.steps, seed=g.seed, shift=g.shift,
                          images_per_prompt=g.batch, init_image=images.init,
                          strength=g.strength if images.init is not None else 1.0,
                          make_denoiser=denoiser_for(job.guidance, g.width, g.height), callback=callback,
                          should_stop=should_stop, on_decode_tile=on_decode_tile, mask=images.mask,
                          controls=controls, seeds=seeds)
        result.notes = [*images.notes, *result.notes]
    timer.merge({k: v for k, v in result.timings.items() if k != "text_encode"})
    result.timings = timer.report()
    result.notes = [*result.notes, *job.guidance.describe(bool(job.prompt.negative_prompt.strip()))]
    return result


__all__ = ["GenerationJob", "MODEL_OPTION_GROUPS", "OPTION_GROUPS", "all_options", "batch_key", "merge_jobs",
           "parse_hires", "parse_lora", "run_job"]
