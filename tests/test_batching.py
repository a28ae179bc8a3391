"""Requests a server receives together (GenerationRunner.run_batch, what Ray replicas call): those that differ only
in prompts and seeds share one generation batch and each still gets the image it would get alone; the others run
alone through the server's route; a stop request reaches every one of them."""

from __future__ import annotations

from zimage_core.errors import Interrupted
from zimage_core.pipeline import encode_jpeg_base64, generate_route
from zimage_core.service.request import parse_request
from zimage_core.service.runner import build_runner


def request(prompt: str, seed: int, **options):
    return parse_request({"prompts": [prompt], "width": 64, "height": 64, "steps": 2, "seed": seed, **options})


def test_compatible_requests_share_a_batch_and_keep_their_own_images(tiny_bundle):
    runner, _ = build_runner(lambda: tiny_bundle)
    reqs = [request("a lighthouse", 7), request("a red fox in snow", 21), request("a lighthouse", 7, steps=3)]
    answers = runner.run_batch([(req, runner.resolve(req)) for req in reqs])
    assert [a["batch_size"] for a in answers] == [2, 2, 1]
    for req, answer in zip(reqs, answers):
        assert answer["seed"] == req.job.generation.seed
        assert answer["image"] == encode_jpeg_base64(generate_route(tiny_bundle, req.job).image)


def test_requests_run_alone_through_the_servers_route_and_stop_together(tiny_bundle):
    seen = []

    def route(bundle, job, *, should_stop, **kwargs):
        seen.append(job.prompts)
        return generate_route(bundle, job, should_stop=should_stop, **kwargs)

    runner, _ = build_runner(lambda: tiny_bundle, route=route)
    reqs = [request("a lighthouse", 7), request("a red fox in snow", 21)]
    answers = runner.run_batch([(req, runner.resolve(req)) for req in reqs])
    assert seen == [["a lighthouse"], ["a red fox in snow"]]  # a custom route is never bypassed by batching
    assert [a["batch_size"] for a in answers] == [1, 1]
    stopped = runner.run_batch([(req, runner.resolve(req)) for req in reqs], should_stop=lambda: True)
    assert all(isinstance(a, Interrupted) for a in stopped), stopped
    assert len(seen) == 2
