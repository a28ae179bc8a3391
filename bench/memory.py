"""Memory figures for compact weights and offload (no GPU needed).

    python bench/memory.py footprint          # full-size configs on the meta device: bytes per mode (seconds)
    python bench/memory.py fp8-file [--dir D] # a full-size random fp8 DiT file (~6 GB, written here, never kept in
                                              # git): peak RSS while loading it, fp8 storage, RSS after release
    python bench/memory.py tiny               # tiny models: image error of each compact format vs fp32, and
                                              # model/block offload vs all-resident (bit-identical on the CPU)

Writes bench/memory.json (merged per subcommand) and prints markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zimage_core.checkpoints import shipped_config  # noqa: E402
from zimage_core.offload import (GIB, block_footprint, dit_activation_bytes, vae_decode_bytes,  # noqa: E402
                                 weight_bytes)

OUT = REPO / "bench" / "memory.json"
# bytes per stored value (GGUF block formats: block bytes / values per block)
BPV = {"F32": 4.0, "BF16": 2.0, "F16": 2.0, "FP8": 1.0, "Q8_0": 34 / 32, "Q6_K": 210 / 256, "Q5_K": 176 / 256,
       "Q4_K": 144 / 256}


def meta_models():
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    te_cfg = shipped_config("text_encoder")
    te_cfg.pop("architectures", None)
    with torch.device("meta"):
        dit = ZImageTransformer2DModel.from_config(shipped_config("transformer"))
        te = Qwen3Model(Qwen3Config(**te_cfg))
    return dit.to(torch.bfloat16), te.to(torch.bfloat16)


def stored_bytes(model: torch.nn.Module, rule) -> int:
    """Σ numel × bytes-per-value(rule(name, param))."""
    return int(sum(p.numel() * BPV[rule(n, p)] for n, p in model.named_parameters()))


def dit_rules() -> dict:
    block = re.compile(r"^(layers|noise_refiner|context_refiner)\.\d+\.")
    main = re.compile(r"^layers\.\d+\.")

    def fp8(n, p):  # what storage='fp8' does: block Linear weights fp8, the rest bf16
        return "FP8" if p.ndim == 2 and block.match(n) else "BF16"

    def gguf(q, qkv=None, w2=None, blocks=main):  # ComfyUI-GGUF: 2-D main-layer weights quantised, 1-D F32
        def rule(n, p):
            if p.ndim == 1:
                return "F32"
            if p.ndim == 2 and blocks.match(n):
                if qkv and ".attention.to_" in n and "to_out" not in n:
                    return qkv
                if w2 and n.endswith("feed_forward.w2.weight"):
                    return w2
                return q
            return "BF16"
        return rule

    return {"bf16": lambda n, p: "BF16", "fp8 (storage fp8 / fp8 file)": fp8, "GGUF Q8_0": gguf("Q8_0"),
            "GGUF Q4_K_M (ComfyUI-GGUF layout: refiners bf16)": gguf("Q4_K", "Q5_K", "Q6_K"),
            "GGUF Q4_K (main layers; refiners bf16)": gguf("Q4_K"),
            "GGUF Q4_K (every block weight, refiners too)": gguf("Q4_K", blocks=block)}


def te_rules() -> dict:
    fp8 = re.compile(r"^(layers\.\d+\..+|embed_tokens)\.weight$")
    return {"bf16": lambda n, p: "BF16",
            "fp8 (storage fp8 / fp8 file)": lambda n, p: "FP8" if p.ndim == 2 and fp8.match(n) else "BF16",
            "GGUF Q8_0": lambda n, p: "Q8_0" if p.ndim == 2 else "F32",
            "GGUF Q4_K_M (≈ Q4_K layers, Q6_K embedding)": lambda n, p: (
                "Q6_K" if n.startswith("embed_tokens") else "Q4_K") if p.ndim == 2 else "F32"}


def footprint() -> dict:
    dit, te = meta_models()
    rows: dict = {"dit": {}, "text_encoder": {}, "activations": {}, "block_offload": {}}
    for name, rule in dit_rules().items():
        rows["dit"][name] = stored_bytes(dit, rule)
    for name, rule in te_rules().items():
        rows["text_encoder"][name] = stored_bytes(te, rule)
    bf16_ratio = weight_bytes(dit) / rows["dit"]["bf16"]  # meta bf16: weight_bytes counts 2 bytes per value
    for k in (1, 2, 4):
        rows["block_offload"][f"{k} resident"] = {
            "dit bf16": block_footprint(dit, k) / bf16_ratio,
            "dit fp8": block_footprint(dit, k) / bf16_ratio / 2 + 24e6,  # non-block parts stay bf16 (≈ 24 MB)
            "text encoder bf16": block_footprint(te, k)}
    for size in (1024, 2048):
        rows["activations"][f"{size}²"] = {"dit (1 image)": dit_activation_bytes(size, size),
                                          "vae decode": vae_decode_bytes(size, size)}
    return rows


def print_footprint(rows: dict) -> None:
    gib = lambda b: f"{b / GIB:.2f}"  # noqa: E731
    print("| component | mode | resident GiB |\n|---|---|---|")
    for comp in ("dit", "text_encoder"):
        for mode, b in rows[comp].items():
            print(f"| {comp} | {mode} | {gib(b)} |")
    for k, d in rows["block_offload"].items():
        for what, b in d.items():
            print(f"| block offload, {k} | {what} | {gib(b)} |")
    for size, d in rows["activations"].items():
        for what, b in d.items():
            print(f"| activations {size} | {what} | {gib(b)} |")


# ------------------------------------------------------------------------------------------------ fp8 file
def write_fp8_dit(path: Path) -> int:
    """A full-size Z-Image DiT in the original layout with random fp8 weights (2-D) and bf16 norms, written tensor
    by tensor (never more than one tensor in memory)."""
    from zimage_core.testing import transformer_to_original

    dit, _ = meta_models()
    shapes = {k: list(v.shape) for k, v in transformer_to_original(dit.state_dict()).items()}
    entries, offset = {}, 0
    for key, shape in shapes.items():
        dtype = "F8_E4M3" if len(shape) == 2 and not key.endswith("pad_token") else "BF16"
        nbytes = math.prod(shape) * (1 if dtype == "F8_E4M3" else 2)
        entries[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = json.dumps(entries).encode()
    header += b" " * (-len(header) % 8)
    gen = torch.Generator().manual_seed(0)
    with open(path, "wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header)
        for key, e in entries.items():
            t = torch.randn(e["shape"], generator=gen) * 0.02
            t = t.to(torch.float8_e4m3fn) if e["dtype"] == "F8_E4M3" else t.to(torch.bfloat16)
            fh.write(t.contiguous().view(torch.uint8).numpy().tobytes())
    return path.stat().st_size


CHILD = r"""
import gc, json, sys, torch
sys.path.insert(0, sys.argv[2])
from pathlib import Path
def status():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            d[k] = int(v.split()[0]) * 1024
    return d
from zimage_core.loading import load_transformer_file
from zimage_core.fp8 import is_fp8
from zimage_core.offload import weight_bytes
import diffusers.loaders.single_file_utils  # the libraries' own import cost belongs to the baseline, not the weights
from diffusers import ZImageTransformer2DModel
before = status()
model = load_transformer_file(Path(sys.argv[1]), torch.bfloat16)
loaded = status()
fp8 = sum(p.numel() for p in model.parameters() if is_fp8(p))
stored = weight_bytes(model)
del model
gc.collect()
print(json.dumps({"before": before, "loaded": loaded, "released": status(), "fp8_values": fp8, "stored": stored}))
"""


def fp8_file(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "z_image_turbo_random_fp8_e4m3fn.safetensors"
    t = time.perf_counter()
    size = path.stat().st_size if path.is_file() else write_fp8_dit(path)
    written = time.perf_counter() - t
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(REPO)], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    child = json.loads(out.strip().splitlines()[-1])
    peak = child["loaded"]["VmHWM"]
    base = child["before"]["VmRSS"]
    result = {"file_bytes": size, "write_s": written, "load_s": time.perf_counter() - t,
              "rss_before": base, "peak_rss": peak, "peak_growth": peak - base,
              "peak_growth_over_file": (peak - base) / size, "rss_after_release": child["released"]["VmRSS"],
              "release_vs_before": child["released"]["VmRSS"] / base, "fp8_values": child["fp8_values"],
              "stored_bytes": child["stored"], "rss_anon_loaded": child["loaded"]["RssAnon"]}
    return result


# ------------------------------------------------------------------------------------------------ tiny
def tiny() -> dict:
    import shutil
    import tempfile

    from safetensors.torch import load_file, save_file

    from zimage_core.fp8 import quantize_fp8
    from zimage_core.generate import generate
    from zimage_core.models import load_models
    from zimage_core.testing import save_tiny_models

    root = Path(tempfile.mkdtemp(prefix="zimage_mem_"))
    ref_dir = save_tiny_models(root / "ref", "comfy")
    kw = dict(width=64, height=64, steps=3, seed=5)
    prompt = "a red chair on a hill"
    ref = generate(load_models(ref_dir, device="cpu", dtype="fp32", memory="gpu"), prompt, **kw).images
    dit_rel = "diffusion_models/z_image_turbo_tiny.safetensors"

    def variant(name, edit):
        d = root / name
        shutil.copytree(ref_dir, d)
        save_file(edit(load_file(str(d / dit_rel))), str(d / dit_rel))
        return d

    def scaled(sd):
        out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
        for k, v in sd.items():
            if v.ndim == 2 and k.startswith("layers."):
                out[k], s = quantize_fp8(v)
                out[k[:-len(".weight")] + ".scale_weight"] = s.reshape(1)
            else:
                out[k] = v
        return out

    cases = {"fp8 file": (variant("fp8", lambda sd: {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 and
                                                    not k.endswith("pad_token") else v for k, v in sd.items()}), {}),
             "scaled fp8 file": (variant("scaled", scaled), {}),
             "fp32 file stored as fp8": (ref_dir, {"storage": "fp8"})}
    # K-quants need rows of a multiple of 256 values: a second tiny tree whose DiT (dim 768) and text encoder
    # (hidden 256) allow them; its fp32 files are the reference of the GGUF cases
    from zimage_core.testing import tiny_tokenizer, tiny_vae, transformer_to_original, vae_to_original, TINY_VAE
    from zimage_core.testing.gguf import kquant_tiny_text_encoder, kquant_tiny_transformer, save_gguf_transformer

    kq = root / "kquant_ref"
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (kq / sub).mkdir(parents=True)
    dit_sd = transformer_to_original(kquant_tiny_transformer(0).state_dict())
    save_file(dit_sd, str(kq / "diffusion_models" / "z_image_kquant.safetensors"))
    save_file({"model." + k: v.contiguous() for k, v in kquant_tiny_text_encoder(0, 151936).state_dict().items()},
              str(kq / "text_encoders" / "qwen_3_4b_kquant.safetensors"))
    save_file(vae_to_original(tiny_vae(0).state_dict(), len(TINY_VAE["block_out_channels"])),
              str(kq / "vae" / "ae.safetensors"))
    tiny_tokenizer(kq / "tokenizer")
    kq_ref = generate(load_models(kq, device="cpu", dtype="fp32"), prompt, **kw).images
    gguf_cases = {}
    for q in ("Q8_0", "Q4_K"):
        d = root / q
        shutil.copytree(kq, d)
        (d / "diffusion_models" / "z_image_kquant.safetensors").unlink()
        save_gguf_transformer(dit_sd, d / "diffusion_models" / f"z_image_kquant-{q}.gguf", qtype=q)
        gguf_cases[f"GGUF {q} DiT (dim 768)"] = (d, {})
    errors = {}
    for group, reference in ((cases, ref), (gguf_cases, kq_ref)):
        for name, (folder, opts) in group.items():
            img = generate(load_models(folder, device="cpu", dtype="fp32", **opts), prompt, **kw).images
            errors[name] = {"mean_abs": float((img - reference).abs().mean()),
                            "max_abs": float((img - reference).abs().max())}
    identical = {}
    for memory, blocks in (("model", None), ("block", 1), ("block", 2)):
        img = generate(load_models(ref_dir, device="cpu", dtype="fp32", memory=memory, resident_blocks=blocks),
                       prompt, **kw).images
        identical[f"{memory}{'' if blocks is None else f' ({blocks})'}"] = bool(torch.equal(img, ref))
    shutil.rmtree(root, ignore_errors=True)
    return {"image_error_vs_fp32": errors, "offload_bit_identical": identical}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["footprint", "fp8-file", "tiny"])
    ap.add_argument("--dir", default="/tmp/zimage_bench_memory", help="where fp8-file writes its 6 GB file")
    args = ap.parse_args()
    data = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if args.what == "footprint":
        data["footprint"] = footprint()
        print_footprint(data["footprint"])
    elif args.what == "fp8-file":
        data["fp8_file"] = fp8_file(Path(args.dir))
        print(json.dumps(data["fp8_file"], indent=1))
    else:
        data["tiny"] = tiny()
        print(json.dumps(data["tiny"], indent=1))
    OUT.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
