"""Prompt encoding: template, hidden layer, padding, long-prompt modes, cache, embedding files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zimage_core.encode import (MAX_CAPTION_TOKENS, PromptEncoder, format_prompt, load_embeddings, reduce_length,
                                save_embeddings)
from zimage_core.errors import InputError, ModelFileError


@pytest.fixture(scope="module")
def encoder(tiny_bundle) -> PromptEncoder:
    return PromptEncoder(tiny_bundle.text_encoder, tiny_bundle.tokenizer)


def _direct(encoder: PromptEncoder, prompt: str, layer: int = -2) -> torch.Tensor:
    ids = encoder.tokenizer(format_prompt(prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return encoder.model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]


def test_template_is_the_qwen3_string():
    assert format_prompt("a cat") == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"


def test_real_tokenizer_ids(qwen_tokenizer_dir):
    from zimage_core.models import load_tokenizer

    tok = load_tokenizer(qwen_tokenizer_dir)
    ids = tok(format_prompt("hi"), add_special_tokens=False)["input_ids"]
    assert tok.pad_token_id == 151643
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.convert_tokens_to_ids("<|im_end|>") in ids


def test_batch_pads_only_to_longest_and_keeps_real_tokens(encoder):
    short, long = "cat", "a very detailed photograph of a small cat sitting on a red chair by the window"
    cond = encoder.encode([short, long])
    assert cond.embeds[0].shape[0] == encoder.token_count(short)
    assert cond.embeds[1].shape[0] == encoder.token_count(long)
    # padding + mask must not change the real tokens: equal to encoding each alone
    torch.testing.assert_close(cond.embeds[0], _direct(encoder, short), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond.embeds[1], _direct(encoder, long), atol=1e-5, rtol=1e-5)


def test_hidden_layer_is_selectable(encoder):
    a = encoder.encode("cat", hidden_layer=-2).embeds[0]
    b = encoder.encode("cat", hidden_layer=-1).embeds[0]
    torch.testing.assert_close(b, _direct(encoder, "cat", -1))
    assert not torch.allclose(a, b)
    with pytest.raises(InputError, match="out of range"):
        encoder.encode("cat", hidden_layer=99)


def test_long_prompt_modes_respect_the_limit_and_their_definitions(encoder):
    prompt = " ".join(["sunset mountain lake reflection"] * 40)
    n_full = encoder.token_count(prompt)
    limit = 48
    assert n_full > limit
    full = _direct(encoder, prompt)
    outs = {m: encoder.encode(prompt, max_tokens=limit, long_mode=m).embeds[0] for m in
            ("truncate", "interpolate", "pool", "attention_pool")}
    for mode, out in outs.items():
        assert out.shape == (limit, full.shape[1]), mode
    # truncate: a causal encoder's prefix is unchanged; the chat suffix is kept at the end
    suffix_len = len(encoder._suffix_ids)
    torch.testing.assert_close(outs["truncate"][: limit - suffix_len], full[: limit - suffix_len], atol=1e-5, rtol=0)
    # interpolate: endpoints exact
    torch.testing.assert_close(outs["interpolate"][0], full[0])
    torch.testing.assert_close(outs["interpolate"][-1], full[-1])
    # pool: region means
    torch.testing.assert_close(outs["pool"], F.adaptive_avg_pool1d(full.T[None], limit)[0].T)


def test_attention_pool_favours_distinct_tokens():
    e = torch.zeros(8, 4)
    e[:, 0] = 1.0
    e[5] = torch.tensor([0.0, 3.0, 0.0, 0.0])  # one token unlike its neighbours
    pooled, avg = reduce_length(e, 2, "attention_pool"), reduce_length(e, 2, "pool")
    assert pooled[1, 1] > avg[1, 1] * 1.5  # the distinct token dominates its region
    torch.testing.assert_close(pooled[0], avg[0])  # a uniform region pools to its mean
    const = torch.ones(10, 3)
    torch.testing.assert_close(reduce_length(const, 4, "attention_pool"), torch.ones(4, 3))


def test_limit_and_mode_validation(encoder):
    with pytest.raises(InputError, match="1504"):
        encoder.encode("x", max_tokens=MAX_CAPTION_TOKENS + 1)
    with pytest.raises(InputError, match="long-prompt mode"):
        encoder.encode("x", long_mode="squash")


def test_cache_skips_the_model_on_repeat(encoder):
    calls = []
    handle = encoder.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = encoder.encode(["cache me", "and me"])
        n = len(calls)
        again = encoder.encode(["and me", "cache me"])
        assert len(calls) == n
        assert again.embeds[0] is first.embeds[1]
        encoder.encode(["cache me", "something new"])
        assert len(calls) == n + 1
    finally:
        handle.remove()


def test_embeddings_file_round_trip(encoder, tmp_path):
    cond = encoder.encode(["a", "b c"], long_mode="pool")
    path = save_embeddings(cond, tmp_path / "emb.safetensors")
    back = load_embeddings(path)
    assert back.prompts == ["a", "b c"] and back.info["long_mode"] == "pool"
    assert all(torch.equal(x, y) for x, y in zip(cond.embeds, back.embeds))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a Z-Image embeddings file"):
        load_embeddings(tmp_path / "other.safetensors")
