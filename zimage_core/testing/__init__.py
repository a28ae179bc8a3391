"""Tiny random Z-Image models with the real architectures, saved in the layouts users have.

Used by the tests and by `python -m zimage_core make-tiny` (smoke tests of the whole stack, also inside ComfyUI).
The text encoder keeps the real vocabulary size (151936) so the real Qwen tokenizer works with it. Files go through
the same loaders as real weights: a diffusers folder, or ComfyUI single files in their original key layouts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..checkpoints import axes_dims_for, shipped_config

QWEN_VOCAB_SIZE = 151936
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY_TRANSFORMER = dict(dim=64, n_heads=2, n_kv_heads=2, n_layers=4, n_refiner_layers=1, cap_feat_dim=32,
                        axes_dims=axes_dims_for(32))
TINY_TEXT_ENCODER = dict(hidden_size=32, num_hidden_layers=2, max_window_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, intermediate_size=64, vocab_size=QWEN_VOCAB_SIZE)
TINY_VAE = dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, norm_num_groups=32)


def tiny_transformer(seed: int = 0, **overrides):
    from diffusers import ZImageTransformer2DModel

    cfg = shipped_config("transformer")
    cfg.update(TINY_TRANSFORMER, **overrides)
    torch.manual_seed(seed)
    model = ZImageTransformer2DModel.from_config(cfg)
    with torch.no_grad():  # pad tokens start as zeros/empty: give them values so padding paths are exercised
        model.x_pad_token.normal_(0, 0.5)
        model.cap_pad_token.normal_(0, 0.5)
        for p in model.parameters():  # adaLN/final layers are zero-initialised in training code; keep them active
            if p.ndim == 2 and torch.count_nonzero(p) == 0:
                p.normal_(0, 0.02)
    return model.eval()


def tiny_text_encoder(seed: int = 0, causal_lm: bool = False):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    cfg = shipped_config("text_encoder")
    cfg.pop("architectures")
    cfg.update(TINY_TEXT_ENCODER)
    torch.manual_seed(seed)
    model = (Qwen3ForCausalLM if causal_lm else Qwen3Model)(Qwen3Config(**cfg))
    return model.eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    cfg = shipped_config("vae")
    cfg.update(TINY_VAE)
    torch.manual_seed(seed)
    return AutoencoderKL.from_config(cfg).eval()


def tiny_tokenizer(out_dir: Path, source: Path | None = None) -> Path:
    """Write a tokenizer folder: a copy of real Qwen tokenizer files if `source` is given, else a small byte-level
    BPE trained offline with the Qwen special tokens (ids stay far below the 151936 vocabulary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if source is not None:
        for f in Path(source).iterdir():
            if f.is_file():
                shutil.copy2(f, out_dir / f.name)
        return out_dir
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "a photo of a cat sitting on a red chair in the sunlight", "portrait of an astronaut, studio lighting",
        "a watercolor painting of mountains and a lake at dawn", "cinematic shot of a city street at night, rain",
        "user assistant system", "blurry, low quality, watermark, text, deformed hands",
    ] * 4
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
        "model_max_length": 131072,
    }, indent=1))
    return out_dir


# ------------------------------------------------------------------------------------- original (ComfyUI) layouts


def transformer_to_original(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """diffusers ZImageTransformer2DModel keys -> original Z-Image keys (fused qkv), the inverse of diffusers'
    single-file converter."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            base = key.replace(".attention.to_q.weight", "")
            out[f"{base}.attention.qkv.weight"] = torch.cat(
                [sd[f"{base}.attention.to_q.weight"], sd[f"{base}.attention.to_k.weight"],
                 sd[f"{base}.attention.to_v.weight"]], dim=0)
            continue
        new = (key.replace("all_final_layer.2-1.", "final_layer.").replace("all_x_embedder.2-1.", "x_embedder.")
               .replace(".attention.to_out.0.", ".attention.out.").replace(".attention.norm_k.", ".attention.k_norm.")
               .replace(".attention.norm_q.", ".attention.q_norm."))
        out[new] = value
    return {prefix + k: v.contiguous() for k, v in out.items()}


def vae_to_original(sd: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> original ldm/Flux AE keys (attention as 1x1 convs)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = key
        for coder in ("encoder", "decoder"):
            new = new.replace(f"{coder}.conv_norm_out.", f"{coder}.norm_out.")
            new = new.replace(f"{coder}.mid_block.resnets.0.", f"{coder}.mid.block_1.")
            new = new.replace(f"{coder}.mid_block.resnets.1.", f"{coder}.mid.block_2.")
            new = new.replace(f"{coder}.mid_block.attentions.0.", f"{coder}.mid.attn_1.")
        if new.startswith("encoder.down_blocks."):
            parts = new.split(".")
            i = parts[2]
            rest = ".".join(parts[3:]).replace("resnets.", "block.").replace("downsamplers.0.", "downsample.")
            new = f"encoder.down.{i}.{rest}"
        if new.startswith("decoder.up_blocks."):
            parts = new.split(".")
            i = n_blocks - 1 - int(parts[2])
            rest = ".".join(parts[3:]).replace("resnets.", "block.").replace("upsamplers.0.", "upsample.")
            new = f"decoder.up.{i}.{rest}"
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in new:
            new = (new.replace("group_norm.", "norm.").replace("to_q.", "q.").replace("to_k.", "k.")
                   .replace("to_v.", "v.").replace("to_out.0.", "proj_out."))
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[new] = value.contiguous()
    return out


def save_tiny_models(out_dir: str | Path, layout: str = "comfy", *, tokenizer_source: Path | None = None,
                     seed: int = 0, transformer_prefix: str = "", dtype: torch.dtype = torch.float32) -> Path:
    """Write tiny random models. layout='comfy' writes a ComfyUI models/ tree (diffusion_models/, text_encoders/,
    vae/, tokenizer/); layout='diffusers' writes a Z-Image-Turbo-style diffusers folder. Same seed -> same weights
    in both layouts, so both must give the same image."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dit, te, vae = tiny_transformer(seed), tiny_text_encoder(seed, causal_lm=(layout == "diffusers")), tiny_vae(seed)
    if layout == "diffusers":
        from diffusers import FlowMatchEulerDiscreteScheduler

        dit.to(dtype).save_pretrained(out / "transformer")
        te.to(dtype).save_pretrained(out / "text_encoder")
        vae.to(dtype).save_pretrained(out / "vae")
        FlowMatchEulerDiscreteScheduler.from_config(shipped_config("scheduler")).save_pretrained(out / "scheduler")
        tiny_tokenizer(out / "tokenizer", tokenizer_source)
        (out / "model_index.json").write_text(json.dumps({
            "_class_name": "ZImagePipeline", "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "Qwen3Model"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "transformer": ["diffusers", "ZImageTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
        }, indent=1))
    elif layout == "comfy":
        for sub in ("diffusion_models", "text_encoders", "vae"):
            (out / sub).mkdir(exist_ok=True)
        to = lambda sd: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}  # noqa: E731
        save_file(to(transformer_to_original(dit.state_dict(), transformer_prefix)),
                  str(out / "diffusion_models" / "z_image_turbo_tiny.safetensors"))
        save_file(to({"model." + k: v.contiguous() for k, v in te.state_dict().items()}),
                  str(out / "text_encoders" / "qwen_3_4b_tiny.safetensors"))
        save_file(to(vae_to_original(vae.state_dict(), len(TINY_VAE["block_out_channels"]))),
                  str(out / "vae" / "ae_tiny.safetensors"))
        tiny_tokenizer(out / "tokenizer", tokenizer_source)
    else:
        raise ValueError(f"layout must be 'comfy' or 'diffusers', got {layout!r}")
    return out
