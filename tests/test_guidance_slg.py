"""SLG: the σ window fires at N = 8 and 9 (exact steps), skipped layers really are skipped (hook counts, the block
returns its input), scale 0 is exactly the plain sampler with no extra forward, the scale acts linearly, and bad
layer indices name the valid range."""

from __future__ import annotations

import pytest
import torch
from guidance_fixtures import conditioning, latents, run

from zimage_core.errors import InputError
from zimage_core.guidance import GuidanceOptions, guided_denoiser, parse_layers, skip_layers, slg_active
from zimage_core.guidance.slg import SkippedLayer
from zimage_core.sample import TransformerDenoiser
from zimage_core.schedule import flow_sigmas

LAYERS = (1, 2)  # the tiny model has 4 main layers


def active_steps(steps: int, **window) -> list[int]:
    return [i for i, s in enumerate(flow_sigmas(steps)[:-1].tolist()) if slg_active(s, **window)]


def test_window_rule_fires_at_8_and_9_steps():
    assert active_steps(8) == [1, 2, 3]  # σ .9545 .9 .8333 (σ = 1 and .75 are outside 0.80..0.99)
    assert active_steps(9) == [1, 2, 3]  # σ .96 .913 .857 (.7895 is outside)
    # both ends inclusive: bounds typed from the printed N = 8 schedule include those steps
    assert active_steps(8, start=0.9, end=0.75) == [2, 3, 4]
    assert active_steps(8, start=1.0, end=0.0) == list(range(8))


class Counter:
    """Forward hooks on the real blocks: calls per layer, plus inputs and outputs for the identity check."""

    def __init__(self, transformer):
        self.calls = [0] * len(transformer.layers)
        self.inputs: list[list[torch.Tensor]] = [[] for _ in transformer.layers]
        self.outputs: list[list[torch.Tensor]] = [[] for _ in transformer.layers]
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(transformer.layers)]

    def _hook(self, i):
        def hook(module, args, output):
            self.calls[i] += 1
            self.inputs[i].append(args[0])
            self.outputs[i].append(output)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("steps", [8, 9])
def test_skip_pass_runs_on_the_window_steps_and_really_skips(dit, steps):
    made = []

    def make(t, c):
        made.append(guided_denoiser(GuidanceOptions(slg_scale=2.0, slg_layers=LAYERS))(t, c))
        return made[-1]

    counter = Counter(dit)
    try:
        run(dit, conditioning(12), make, steps=steps, width=64, height=64)
    finally:
        counter.remove()
    assert made[0].slg_steps == [1, 2, 3]
    # 3 skip passes: unskipped layers ran N + 3 times, skipped layers only N times (never in a skip pass)
    assert counter.calls == [steps + 3, steps, steps, steps + 3]
    # true identity: in each skip pass, layer 3 received exactly what layer 0 produced (layers 1-2 returned input)
    # (layers 0 and 3 run once per pass, so their k-th calls belong to the same pass; passes per step: plain, skip)
    layer0_out, layer3_in = counter.outputs[0], counter.inputs[3]
    same = [torch.equal(layer3_in[k], layer0_out[k]) for k in range(steps + 3)]
    assert [k for k, eq in enumerate(same) if eq] == [2, 4, 6]  # the skip passes of steps 1, 2, 3
    assert all(not isinstance(layer, SkippedLayer) for layer in dit.layers)


def test_scale_zero_is_exactly_the_plain_sampler_with_no_extra_forward(dit):
    cond = conditioning(12, 40)
    counter = Counter(dit)
    try:
        off = run(dit, cond, guided_denoiser(GuidanceOptions(slg_scale=0.0, slg_layers=LAYERS)), steps=3)
    finally:
        counter.remove()
    assert counter.calls == [3, 3, 3, 3]
    assert torch.equal(off, run(dit, cond, steps=3))


def test_scale_changes_the_output_linearly(dit):
    cond, x = conditioning(12), latents(1)
    v = {}
    with torch.no_grad():
        for s in (0.0, 1.0, 2.5):
            v[s] = guided_denoiser(GuidanceOptions(slg_scale=s, slg_layers=LAYERS))(dit, cond)(x, 0.9, 2)
        with skip_layers(dit, LAYERS):
            v_skip = TransformerDenoiser(dit, cond)(x, 0.9, 2)
    assert (v[1.0] - v[0.0]).abs().max() > 1e-3
    torch.testing.assert_close(v[1.0], v[0.0] + (v[0.0] - v_skip), atol=1e-6, rtol=0)  # v = v_c + s·(v_c − v_skip)
    torch.testing.assert_close(v[2.5] - v[0.0], 2.5 * (v[1.0] - v[0.0]), atol=1e-5, rtol=0)


def test_layer_spec_and_bad_layers_name_the_valid_range(dit):
    assert parse_layers("7-12") == (7, 8, 9, 10, 11, 12)
    assert parse_layers("3, 1-2,3") == (1, 2, 3) and parse_layers(5) == (5,) and parse_layers([2, 1]) == (1, 2)
    cond = conditioning(5)
    for bad in ((1, 4), (-1,), "7-12"):
        with pytest.raises(InputError, match=r"valid indices are 0\.\.3"):
            guided_denoiser(GuidanceOptions(slg_scale=1.0, slg_layers=bad))(dit, cond)
    with pytest.raises(InputError, match="valid indices 0..3"):
        guided_denoiser(GuidanceOptions(slg_scale=1.0, slg_layers=()))(dit, cond)
    with pytest.raises(InputError, match="backwards"):
        parse_layers("12-7")
    with pytest.raises(InputError, match="window"):
        guided_denoiser(GuidanceOptions(slg_scale=1.0, slg_layers=LAYERS, slg_start=0.5, slg_end=0.8))(dit, cond)
    # SLG off: the Turbo default layers 7-12 are not checked against a 4-layer model
    guided_denoiser(GuidanceOptions(slg_scale=0.0))(dit, cond)


def test_layers_are_restored_after_an_error(dit):
    originals = list(dit.layers)
    with pytest.raises(RuntimeError):
        with skip_layers(dit, [0, 3]):
            assert isinstance(dit.layers[0], SkippedLayer) and isinstance(dit.layers[3], SkippedLayer)
            raise RuntimeError("boom")
    assert all(a is b for a, b in zip(dit.layers, originals))
