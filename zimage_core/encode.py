"""Prompt encoding with Qwen3: the exact Z-Image chat string, a selectable hidden layer, no 512-token padding,
long-prompt handling up to the 1504-token caption limit, an LRU cache, and embedding files.

Why format the prompt ourselves: a tokenizer's own chat_template may differ from what Z-Image was trained with (the
Qwen2.5 template injects a default system prompt). Why pad only to the longest prompt: diffusers pads every prompt
to 512 tokens before the 36-layer forward, which is wasted work; only the real tokens are kept anyway.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import InputError, ModelFileError
from .offload import execution_device
from .settings import DEFAULT_HIDDEN_LAYER, DEFAULT_LONG_MODE, LONG_PROMPT_MODES, MAX_CAPTION_TOKENS

PROMPT_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PROMPT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
EMBEDDINGS_FORMAT = "zimage-embeddings-v1"


@dataclass
class Conditioning:
    """Per-prompt caption embeddings (each (tokens, dim), only real tokens) plus how they were made."""

    embeds: list[torch.Tensor]
    prompts: list[str]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.embeds)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        return Conditioning([e.to(device=device, dtype=dtype or e.dtype) for e in self.embeds], self.prompts,
                            dict(self.info))

    def repeat_each(self, n: int) -> "Conditioning":
        """Each prompt n times in a row (images per prompt)."""
        return Conditioning([e for e in self.embeds for _ in range(n)], [p for p in self.prompts for _ in range(n)],
                            dict(self.info))


def format_prompt(prompt: str) -> str:
    return PROMPT_TEMPLATE.format(prompt)


def reduce_length(embeds: torch.Tensor, length: int, mode: str) -> torch.Tensor:
    """Shorten a (tokens, dim) sequence to `length` tokens along the sequence.

    interpolate: linear resampling (first and last tokens kept exactly); pool: adaptive average over equal regions;
    attention_pool: inside each pooled region, tokens weigh more the more they differ from their neighbours, so
    distinctive words survive pooling better than filler.
    """
    if mode not in LONG_PROMPT_MODES:
        raise InputError(f"Unknown long-prompt mode '{mode}'; choose one of {', '.join(LONG_PROMPT_MODES)}.")
    n = embeds.shape[0]
    if n <= length:
        return embeds
    x = embeds.float().T[None]  # (1, dim, tokens)
    if mode == "truncate":
        out = embeds[:length]
    elif mode == "interpolate":
        out = F.interpolate(x, size=length, mode="linear", align_corners=True)[0].T
    elif mode == "pool":
        out = F.adaptive_avg_pool1d(x, length)[0].T
    else:
        out = _attention_pool(embeds.float(), length)
    return out.to(embeds.dtype)


def _attention_pool(e: torch.Tensor, length: int) -> torch.Tensor:
    n = e.shape[0]
    padded = torch.cat([e[:1], e, e[-1:]])
    neighbours = 0.5 * (padded[:-2] + padded[2:])
    distinct = 1.0 - F.cosine_similarity(e, neighbours, dim=-1)  # 0 = like its neighbours, up to 2 = opposite
    out = []
    for i in range(length):  # same region boundaries as adaptive_avg_pool1d
        start, end = (i * n) // length, -((-(i + 1) * n) // length)
        w = torch.softmax(distinct[start:end] * 8.0, dim=0)
        out.append((w[:, None] * e[start:end]).sum(0))
    return torch.stack(out)


class PromptEncoder:
    """Encodes prompts with a Qwen3 model + tokenizer; caches results (LRU) per prompt and settings."""

    def __init__(self, text_encoder: torch.nn.Module, tokenizer, cache_size: int = 64,
                 on_use: Callable[[], None] | None = None):
        self.model = text_encoder
        self.on_use = on_use  # called before the model runs (not on cache hits): e.g. move it to the GPU
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._suffix_ids = tokenizer(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def _check_layer(self, hidden_layer: int) -> None:
        n = self.num_layers
        if not -(n + 1) <= hidden_layer <= n:
            raise InputError(f"hidden_layer {hidden_layer} is out of range for a {n}-layer encoder: use -{n + 1}..{n} "
                             "(-2, the second-to-last, is what Z-Image was trained with).")

    def token_count(self, prompt: str) -> int:
        return len(self.tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def encode(self, prompts: str | list[str], *, hidden_layer: int = DEFAULT_HIDDEN_LAYER,
               max_tokens: int = MAX_CAPTION_TOKENS, long_mode: str = DEFAULT_LONG_MODE) -> Conditioning:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise InputError("No prompt given.")
        if long_mode not in LONG_PROMPT_MODES:
            raise InputError(f"Unknown long-prompt mode '{long_mode}'; choose one of {', '.join(LONG_PROMPT_MODES)}.")
        if not 1 <= max_tokens <= MAX_CAPTION_TOKENS:
            raise InputError(f"max_tokens must be 1..{MAX_CAPTION_TOKENS} (the caption RoPE limit); got {max_tokens}.")
        self._check_layer(hidden_layer)
        keys = [(p, hidden_layer, max_tokens, long_mode) for p in prompts]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        if todo:
            fresh = self._encode_uncached([k[0] for k in todo], hidden_layer, max_tokens, long_mode)
            with self._lock:
                for k, emb in zip(todo, fresh):
                    found[k] = emb
                    self._cache[k] = emb
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        info = {"hidden_layer": hidden_layer, "max_tokens": max_tokens, "long_mode": long_mode}
        return Conditioning([found[k] for k in keys], prompts, info)

    def _token_ids(self, prompt: str, max_tokens: int, long_mode: str) -> list[int]:
        ids = self.tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]
        if long_mode == "truncate" and len(ids) > max_tokens:
            keep = max(max_tokens - len(self._suffix_ids), 1)
            ids = ids[:keep] + self._suffix_ids[: max_tokens - keep]
        return ids

    def _encode_uncached(self, prompts: list[str], hidden_layer: int, max_tokens: int,
                         long_mode: str) -> list[torch.Tensor]:
        ids = [self._token_ids(p, max_tokens, long_mode) for p in prompts]
        longest = max(len(i) for i in ids)
        pad = self.tokenizer.pad_token_id
        if self.on_use is not None:
            self.on_use()
        device = execution_device(self.model)
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.bool)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        hidden = out.hidden_states[hidden_layer]
        result = []
        for row in range(len(ids)):
            emb = hidden[row][mask[row].to(device)]
            result.append(reduce_length(emb, max_tokens, long_mode))
        return result


def save_embeddings(cond: Conditioning, path: str | os.PathLike) -> Path:
    """Write embeddings + prompts to .safetensors (encode on one machine, generate on another)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"embedding_{i}": e.detach().to("cpu").contiguous() for i, e in enumerate(cond.embeds)}
    meta = {"format": EMBEDDINGS_FORMAT, "prompts": json.dumps(cond.prompts), "info": json.dumps(cond.info)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_embeddings(path: str | os.PathLike) -> Conditioning:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Embeddings file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != EMBEDDINGS_FORMAT:
                raise ModelFileError(f"{path.name} is not a Z-Image embeddings file (format {meta.get('format')!r}).")
            count = len([k for k in fh.keys() if k.startswith("embedding_")])
            embeds = [fh.get_tensor(f"embedding_{i}") for i in range(count)]
    except ModelFileError:
        raise
    except Exception as err:
        raise ModelFileError(f"Could not read embeddings {path}: {err}") from err
    return Conditioning(embeds, json.loads(meta.get("prompts", "[]")), json.loads(meta.get("info", "{}")))
