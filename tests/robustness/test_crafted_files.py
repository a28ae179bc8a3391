"""Model files with the right container and the wrong insides, for every loader: ModelFileError every time.

Families (hypothesis, derandomised, counted):
  header    a safetensors header that is valid JSON of the wrong structure (a list, a number, entries without dtype,
            shapes that are not lists of sizes, offsets outside the file or not matching the shape, a length past
            the end of the file)
  missing   a real (tiny) file with one tensor removed
  rank      a real file with one tensor given another rank (flattened, scalar, or an extra axis)
  shape     a real file with one tensor's size changed along one axis
  bytes     a real file truncated at an arbitrary point, or random bytes under the right name
Loaders: DiT, Qwen3 text encoder, Flux AE, heavy upscaler (spandrel), GFPGAN face model, LoRA, embeddings, and the
GGUF DiT loader (header and bytes families: a GGUF holds no safetensors to edit).
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from zimage_core.errors import ModelFileError

CASES: dict[str, int] = {}
EXAMPLES = {"header": 12, "missing": 6, "rank": 6, "shape": 6, "bytes": 6}


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------------------- loaders
def _loaders(tiny: dict[str, Path], transformer) -> dict:
    from zimage_core.blocks.upscale import load_heavy_upscaler
    from zimage_core.loading import load_text_encoder_file, load_transformer_file, load_vae_file
    from zimage_core.encode import load_embeddings
    from zimage_core.faces.restore import load_gfpgan
    from zimage_core.gguf_files import load_transformer_gguf
    from zimage_core.lora import read_lora

    return {
        "dit": (tiny["dit"], lambda p: load_transformer_file(p, torch.float32)),
        "text_encoder": (tiny["te"], lambda p: load_text_encoder_file(p, torch.float32)),
        "vae": (tiny["vae"], lambda p: load_vae_file(p, torch.float32)),
        "upscaler": (tiny["upscaler"], lambda p: load_heavy_upscaler(p, device="cpu")),
        "face": (tiny["face"], lambda p: load_gfpgan(p)),
        "lora": (tiny["lora"], lambda p: read_lora(p, transformer)),
        "embeddings": (tiny["embeddings"], lambda p: load_embeddings(p)),
        "dit_gguf": (tiny["dit_gguf"], lambda p: load_transformer_gguf(p, torch.float32)),
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_dirs):
    from zimage_core.encode import Conditioning, save_embeddings
    from zimage_core.testing import tiny_transformer
    from zimage_core.testing.lora import make_tiny_lora
    from zimage_core.testing.upscalers import save_tiny_compact

    root = tmp_path_factory.mktemp("crafted_src")
    comfy = tiny_dirs["comfy"]
    transformer = tiny_transformer(0)
    lora, _ = make_tiny_lora(transformer, style="comfy", alpha=4.0)
    save_file(lora, str(root / "lora.safetensors"))
    save_tiny_compact(root / "upscaler.safetensors", scale=2)
    save_embeddings(Conditioning([torch.randn(5, 32)], ["a"], {}), root / "embeddings.safetensors")
    from zimage_core.testing import transformer_to_original
    from zimage_core.testing.gguf import save_gguf_transformer

    save_gguf_transformer(transformer_to_original(transformer.state_dict()), root / "dit.gguf", qtype="Q8_0")
    # a small GFPGAN-looking dict (the real one is 86 M parameters): its mutations must be refused just as clearly
    face = {"conv_body_first.weight": torch.randn(8, 3, 1, 1), "toRGB.0.weight": torch.randn(3, 8, 1, 1),
            "stylegan_decoder.style_mlp.1.weight": torch.randn(8, 8)}
    save_file(face, str(root / "face.safetensors"))
    tiny = {"dit": next((comfy / "diffusion_models").glob("*.safetensors")),
            "te": next((comfy / "text_encoders").glob("*.safetensors")),
            "vae": next((comfy / "vae").glob("*.safetensors")),
            "upscaler": root / "upscaler.safetensors", "face": root / "face.safetensors",
            "lora": root / "lora.safetensors", "embeddings": root / "embeddings.safetensors",
            "dit_gguf": root / "dit.gguf"}
    return _loaders(tiny, transformer)


LOADERS = ("dit", "text_encoder", "vae", "upscaler", "face", "lora", "embeddings")
ALL_LOADERS = LOADERS + ("dit_gguf",)  # GGUF files take the header and bytes families (no safetensors inside)
# sizes a loader reads as a free parameter of the architecture (any vocabulary size makes a valid Qwen3)
FREE_SIZES = {"text_encoder": {"model.embed_tokens.weight"}}
OPTIONAL = (".alpha",)  # a LoRA's alpha may be absent (then the rank is the scale)


def _expect_model_file_error(load, path: Path, family: str) -> None:
    try:
        load(path)
    except ModelFileError as err:
        message = str(err)
        assert message and "Traceback" not in message, message
        CASES[family] = CASES.get(family, 0) + 1
        return
    except Exception as err:  # noqa: BLE001 - the property under test
        pytest.fail(f"{family}: {type(err).__name__} instead of ModelFileError: {err}")
    pytest.fail(f"{family}: the crafted file loaded without an error")


def _write_raw(path: Path, header: object, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# ------------------------------------------------------------------------------------------------- families
json_scalars = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.booleans(), st.none(), st.floats(allow_nan=False))
bad_entries = st.one_of(
    json_scalars, st.lists(st.integers(0, 4), max_size=3),
    st.fixed_dictionaries({"shape": st.lists(st.integers(0, 4), max_size=3)}),  # no dtype
    st.fixed_dictionaries({"dtype": st.just("F32"), "shape": st.one_of(st.text(max_size=3), st.integers(),
                                                                       st.lists(st.integers(-3, -1), min_size=1)),
                           "data_offsets": st.just([0, 4])}),
    st.fixed_dictionaries({"dtype": st.just("F32"), "shape": st.just([2, 2]),
                           "data_offsets": st.one_of(st.just([0, 4]), st.just([0, 1 << 40]), st.just([8, 0]),
                                                     st.lists(st.integers(0, 99), max_size=3))}),
)
headers = st.one_of(
    st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5),
    st.dictionaries(st.sampled_from(["a", "x_embedder.weight", "encoder.conv_out.weight", "params",
                                     "layers.0.attention.qkv.weight", "__metadata__"]), bad_entries, min_size=1,
                    max_size=3),
)


@pytest.mark.parametrize("loader", ALL_LOADERS)
def test_wrong_header_structure(loader, sources, tmp_path):
    _, load = sources[loader]
    path = tmp_path / "crafted.safetensors"

    @_settings(EXAMPLES["header"])
    @given(header=headers)
    def check(header) -> None:
        _expect_model_file_error(load, _write_raw(path, header, b"\0" * 16), "header")

    check()
    path.write_bytes(struct.pack("<Q", 1 << 30) + b"{}")  # a header length past the end of the file
    _expect_model_file_error(load, path, "header")


def _mutated(src: Path, dst: Path, mutate) -> Path:
    sd = load_file(str(src))
    save_file(mutate(dict(sd)), str(dst))
    return dst


@pytest.mark.parametrize("loader", LOADERS)
def test_real_file_with_a_tensor_missing_reshaped_or_resized(loader, sources, tmp_path):
    src, load = sources[loader]
    keys = sorted(load_file(str(src)))
    needed = [k for k in keys if not k.endswith(OPTIONAL)]
    path = tmp_path / "crafted.safetensors"

    def drop(i):
        return lambda sd: {k: v for k, v in sd.items() if k != needed[i % len(needed)]}

    def rerank(i, how):
        def apply(sd):
            key = needed[i % len(needed)]
            t = sd[key]
            sd[key] = {0: t.flatten(), 1: t.flatten()[:1].reshape(()), 2: t.unsqueeze(0)}[how].contiguous()
            if sd[key].shape == t.shape:  # a 1-D tensor flattened is still 1-D: add an axis instead
                sd[key] = t.unsqueeze(-1).contiguous()
            return sd
        return apply

    free = FREE_SIZES.get(loader, set())

    def resize(i, grow):
        def apply(sd):
            key = next((k for k in needed[i % len(needed):] + needed
                        if sd[k].ndim >= 1 and sd[k].shape[0] > 1 and k not in free), needed[0])
            t = sd[key]
            sd[key] = torch.cat([t, t[:1]]) if grow or t.shape[0] < 2 else t[:-1].contiguous()
            return sd
        return apply

    @_settings(EXAMPLES["missing"])
    @given(i=st.integers(0, 10_000))
    def missing(i):
        _expect_model_file_error(load, _mutated(src, path, drop(i)), "missing")

    @_settings(EXAMPLES["rank"])
    @given(i=st.integers(0, 10_000), how=st.integers(0, 2))
    def rank(i, how):
        _expect_model_file_error(load, _mutated(src, path, rerank(i, how)), "rank")

    @_settings(EXAMPLES["shape"])
    @given(i=st.integers(0, 10_000), grow=st.booleans())
    def shape(i, grow):
        _expect_model_file_error(load, _mutated(src, path, resize(i, grow)), "shape")

    if loader != "embeddings":  # an embeddings file holds any number of any-shaped prompts: only damage is wrong
        missing()
        rank()
        shape()


@pytest.mark.parametrize("loader", ALL_LOADERS)
def test_truncated_and_random_bytes(loader, sources, tmp_path):
    src, load = sources[loader]
    data = src.read_bytes()
    path = tmp_path / "crafted.safetensors"

    @_settings(EXAMPLES["bytes"])
    @given(cut=st.integers(0, len(data) - 1), noise=st.booleans(), seed=st.integers(0, 2**16))
    def check(cut, noise, seed):
        body = random.Random(seed).randbytes(min(cut, 4096)) if noise else data[:cut]
        path.write_bytes(body)
        _expect_model_file_error(load, path, "bytes")

    check()


def test_every_family_ran():
    """The families above really ran (a silently shrunk run cannot pass unnoticed)."""
    if len(CASES) < 5:
        pytest.skip("run with the family tests above")
    n = len(ALL_LOADERS)
    assert CASES["header"] >= n * EXAMPLES["header"] and CASES["bytes"] >= n * EXAMPLES["bytes"], CASES
    for family in ("missing", "rank", "shape"):
        assert CASES[family] >= (len(LOADERS) - 1) * EXAMPLES[family], CASES
    print(f"\ncrafted files refused with ModelFileError: {CASES}")
