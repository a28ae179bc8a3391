"""Tiny random upscale models with the real architectures, written to disk like the files users have.

Tests (and demos) load these through the real loading code (spandrel for ESRGAN-family files, diffusers'
`StableDiffusionUpscalePipeline.from_pretrained(local_files_only=True)` for the SD x4 folder). Nothing is downloaded:
the CLIP tokenizer is a byte-level BPE written by hand (256 byte symbols, their end-of-word forms, no merges).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

# GPT-2/CLIP byte-to-unicode table: every byte gets a printable character so BPE can work on text as bytes.


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tiny_clip_tokenizer(folder: str | os.PathLike, model_max_length: int = 77) -> Path:
    """Write a minimal CLIP tokenizer (vocab.json, merges.txt, configs) that `CLIPTokenizer` loads offline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2),
        encoding="utf-8",
    )
    return folder


TINY_CLIP_VOCAB = 514  # 256 bytes + 256 end-of-word forms + bos + eos


def save_tiny_esrgan(path: str | os.PathLike, *, scale: int = 4, num_filters: int = 8, num_blocks: int = 1,
                     seed: int = 0) -> Path:
    """Save a tiny random RRDB ESRGAN (same key layout as real ESRGAN files) that spandrel detects as SR ×scale."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale)
    return _save_state_dict(model.state_dict(), path)


def save_tiny_compact(path: str | os.PathLike, *, scale: int = 4, num_feat: int = 8, num_conv: int = 2,
                      seed: int = 0) -> Path:
    """Save a tiny random SRVGGNetCompact (Real-ESRGAN 'compact' family) upscale model."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale)
    return _save_state_dict(model.state_dict(), path)


def _save_state_dict(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path


def save_tiny_sd_x4_upscaler(folder: str | os.PathLike, *, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion x4 upscaler as a diffusers folder (UNet, VAE, CLIP, tokenizer, schedulers).

    Same component classes and wiring as stabilityai/stable-diffusion-x4-upscaler (7-channel UNet input: 4 latent +
    3 low-res image channels, class-embedded noise level, v-prediction DDIM, VAE with a 4× decoder), tiny widths.
    """
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
        use_linear_projection=True,
        num_class_embeds=351,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        scaling_factor=0.08333,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=TINY_CLIP_VOCAB - 2, eos_token_id=TINY_CLIP_VOCAB - 1, pad_token_id=TINY_CLIP_VOCAB - 1,
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=TINY_CLIP_VOCAB, max_position_embeddings=77, projection_dim=16, hidden_act="gelu",
    ))
    tok_dir = write_tiny_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    low_res_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                      beta_start=0.0001, beta_end=0.02)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type="v_prediction", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          low_res_scheduler=low_res_scheduler, scheduler=scheduler,
                                          max_noise_level=350)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    import shutil

    shutil.rmtree(tok_dir, ignore_errors=True)
    return folder
