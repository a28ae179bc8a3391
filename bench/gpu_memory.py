"""GPU memory modes on emulated 8/12/16/24 GiB cards (one real GPU, torch.cuda.set_per_process_memory_fraction):
for each card size and mode, does a 1024², 9-step generation run, with what peak VRAM and how many seconds.

Full-size Z-Image with random weights (built from the shipped configs, nothing downloaded). Modes: weights bf16 or
fp8 storage (auto = bf16 here) × memory gpu / model / block (1 and 4 resident blocks), plus 'auto' (what it picks).

    python bench/gpu_memory.py                    # needs a CUDA GPU with ≥ 24 GiB
    python bench/gpu_memory.py --tiny --device cpu # smoke test of this script with tiny models on the CPU

Writes bench/gpu_memory.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zimage_core.checkpoints import shipped_config  # noqa: E402
from zimage_core.errors import InputError  # noqa: E402
from zimage_core.generate import generate  # noqa: E402
from zimage_core.models import ModelBundle, ModelFiles  # noqa: E402
from zimage_core.offload import GIB  # noqa: E402

CARDS_GIB = (8, 12, 16, 24)
MODES = [("auto", "gpu", None), ("auto", "model", None), ("auto", "block", 1), ("auto", "block", 4),
         ("fp8", "gpu", None), ("fp8", "model", None), ("fp8", "block", 1), ("fp8", "auto", None),
         ("auto", "auto", None)]


class RandomBundle(ModelBundle):
    """A ModelBundle whose parts are random models built from configs (full size, or tiny with --tiny)."""

    def __init__(self, device, dtype, storage, memory, resident_blocks, tiny: bool, tokenizer: Path):
        files = ModelFiles("random", Path("transformer"), Path("text_encoder"), Path("vae"), tokenizer)
        super().__init__(files, device, dtype, storage, memory, resident_blocks)
        self.tiny = tiny

    def _load_transformer(self):
        from diffusers import ZImageTransformer2DModel

        from zimage_core.fp8 import COMPUTE_DTYPE_ATTR, to_fp8_storage
        from zimage_core.testing import tiny_transformer

        model = tiny_transformer(0) if self.tiny else ZImageTransformer2DModel.from_config(
            shipped_config("transformer"))
        model = model.to(self.dtype)
        setattr(model, COMPUTE_DTYPE_ATTR, self.dtype)
        if self.storage == "fp8":
            to_fp8_storage(model, self.dtype, lambda n: n.startswith(("layers.", "noise_refiner.", "context_refiner.")))
        return model

    def _load_text_encoder(self):
        from transformers import Qwen3Config, Qwen3Model

        from zimage_core.fp8 import COMPUTE_DTYPE_ATTR, to_fp8_storage
        from zimage_core.testing import tiny_text_encoder

        if self.tiny:
            model = tiny_text_encoder(0)
        else:
            cfg = shipped_config("text_encoder")
            cfg.pop("architectures", None)
            model = Qwen3Model(Qwen3Config(**cfg))
        model = model.to(self.dtype)
        setattr(model, COMPUTE_DTYPE_ATTR, self.dtype)
        if self.storage == "fp8":
            to_fp8_storage(model, self.dtype, lambda n: n.startswith("layers.") or n == "embed_tokens")
        return model

    def _load_vae(self):
        from diffusers import AutoencoderKL

        from zimage_core.testing import tiny_vae

        return (tiny_vae(0) if self.tiny else AutoencoderKL.from_config(shipped_config("vae"))).to(self.dtype)


def run_one(args, storage: str, memory: str, blocks, card_gib: int, tokenizer: Path) -> dict:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    row = {"card_gib": card_gib, "storage": storage, "memory": memory, "resident_blocks": blocks}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib * GIB / total), device)
        torch.cuda.reset_peak_memory_stats(device)
    bundle = RandomBundle(device, dtype, storage, memory, blocks, args.tiny, tokenizer)
    try:
        size = 64 if args.tiny else 1024
        generate(bundle, "a lighthouse at dusk", width=size, height=size, steps=2, seed=0)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        result = generate(bundle, "a lighthouse at dusk", width=size, height=size, steps=9, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row.update(ok=True, seconds=round(time.perf_counter() - t, 3), plan=result.notes[0])
        if device.type == "cuda":
            row["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
    except (InputError, torch.OutOfMemoryError) as err:
        row.update(ok=False, error=str(err).splitlines()[0][:200])
    finally:
        del bundle
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (smoke test)")
    ap.add_argument("--cards", default=",".join(map(str, CARDS_GIB)))
    args = ap.parse_args()
    from zimage_core.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer(Path(tempfile.mkdtemp(prefix="zimage_tok_")))
    rows = [run_one(args, s, m, k, int(c), tokenizer) for c in args.cards.split(",") for s, m, k in MODES]
    (REPO / "bench" / "gpu_memory.json").write_text(json.dumps({"device": str(args.device), "rows": rows}, indent=1))
    print("| card | weights | memory | runs | peak VRAM GiB | s (9 steps) | plan / error |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mode = r["memory"] + (f" ({r['resident_blocks']})" if r["resident_blocks"] else "")
        print(f"| {r['card_gib']} GiB | {r['storage']} | {mode} | {'yes' if r['ok'] else 'no'} | "
              f"{r.get('peak_vram_gib', '')} | {r.get('seconds', '')} | {r.get('plan', r.get('error', ''))} |")


if __name__ == "__main__":
    main()
