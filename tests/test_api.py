"""The headless HTTP API over real HTTP on loopback: good and bad requests, queue full, timeouts, health.

Generation uses tiny random models at 64-128 px (route_options shrink the working size and scale so a request takes
well under a second on CPU); queue/timeout behaviour uses an injected slow route so it is deterministic.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from zimage_core.pipeline import RouteResult
from zimage_core.service.app import create_app
from zimage_core.service.request import Limits, RequestError, parse_request
from zimage_core.testing.http import BackgroundServer

FAST_ROUTE = {"scale": 2, "work_max": 64}


def post(url: str, body: object, headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    """POST raw bytes or a JSON-able object; returns (status, headers, decoded JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tokenizer_source) -> Path:
    from zimage_core.testing import save_tiny_models
    from zimage_core.testing.upscalers import save_tiny_compact

    root = save_tiny_models(tmp_path_factory.mktemp("api") / "models", "comfy", tokenizer_source=tokenizer_source)
    (root / "upscale_models").mkdir()
    save_tiny_compact(root / "upscale_models" / "tiny_compact_x2.safetensors", scale=2)
    (root / "secret.safetensors").write_bytes(b"outside the upscaler folder")
    return root


@pytest.fixture(scope="module")
def server(models_dir):
    app = create_app(models_dir, queue_size=4, timeout_s=120, device="cpu", route_options=FAST_ROUTE)
    with BackgroundServer(app) as srv:
        yield srv


def _decode_jpeg(b64: str) -> Image.Image:
    raw = base64.b64decode(b64, validate=True)
    assert raw[:3] == b"\xff\xd8\xff"  # JPEG magic
    img = Image.open(io.BytesIO(raw))
    img.load()
    assert img.format == "JPEG"
    return img


# ------------------------------------------------------------------------------------------- real generation
def test_generate_good_request(server):
    body = {"prompts": ["a red cat on a chair"], "width": 64, "height": 96, "steps": 1, "seed": 7, "setps": 3}
    status, headers, out = post(server.url + "/generate", body, {"X-Request-Id": "good-1"})
    assert status == 200, out
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Request-Id"] == out["request_id"] == "good-1"
    assert (out["width"], out["height"], out["seed"]) == (64, 96, 7)
    assert _decode_jpeg(out["image"]).size == (64, 96)
    report = out["timing_report"]  # the stages that ran, and only those
    assert {"text_encode", "denoise", "decode", "faces", "total"} <= set(report), report
    assert not {"slicing", "stitching", "resize"} & set(report), report  # 64×96 fits the working size
    assert all(isinstance(v, float) and v >= 0 for v in report.values())
    assert report["total"] >= report["denoise"] > 0
    assert out["options"]["steps"] == 1 and out["options"]["nag_scale"] == 3.0 and "memory" not in out["options"]
    assert "images" not in out  # only for several prompts
    assert out["warnings"] == ["unknown fields ignored: setps"]

    again = post(server.url + "/generate", body)[2]  # same seed → same image (CPU is deterministic)
    assert again["image"] == out["image"]
    assert again["request_id"] != out["request_id"]


def test_seed_is_random_when_absent_and_echoed(server):
    seeds = []
    for _ in range(2):
        status, _, out = post(server.url + "/generate", {"prompts": ["a tree"], "width": 64, "height": 64, "steps": 1})
        assert status == 200, out
        assert isinstance(out["seed"], int) and 0 <= out["seed"] < 2**32
        seeds.append(out["seed"])
    assert seeds[0] != seeds[1]


def test_several_prompts_one_batch(server):
    status, _, out = post(server.url + "/generate",
                          {"prompts": ["a cat", "a dog"], "width": 96, "height": 64, "steps": 1, "seed": 2**63 - 1})
    assert status == 200, out
    assert out["images"][0] == out["image"] and len(out["images"]) == 2
    assert out["seeds"] == [2**63 - 1, 2**63]
    assert all(_decode_jpeg(b).size == (96, 64) for b in out["images"])


def test_heavy_model_by_name_inside_folder(server):
    status, _, out = post(server.url + "/generate", {"prompts": ["a house"], "width": 128, "height": 128,
                                                     "steps": 1, "heavy": "tiny_compact_x2.safetensors"})
    assert status == 200, out
    assert any("heavy path" in n for n in out["notes"]), out["notes"]
    assert out["notes"][0] == "generated at 64×64, upscaled ×2 through the block route, resized to 128×128"
    status, _, out = post(server.url + "/generate", {"prompts": ["a house"], "width": 64, "height": 64, "steps": 1,
                                                     "heavy": "tiny_compact_x2.safetensors"})
    assert status == 200 and out["notes"][0] == "generated at 64×64 as requested; no upscaling needed", out
    assert "heavy upscaler not used: no upscaling was needed" in out["notes"]


def test_negative_prompt_acts_through_nag_and_says_so(server):
    body = {"prompts": ["a cat"], "width": 64, "height": 64, "steps": 2, "seed": 3}
    status, _, out = post(server.url + "/generate", {**body, "negative_prompt": "blurry, watermark"})
    assert status == 200 and _decode_jpeg(out["image"]).size == (64, 64), out
    assert any("NAG" in n for n in out["notes"]), out["notes"]
    plain = post(server.url + "/generate", body)[2]
    assert plain["image"] != out["image"]  # the negative prompt changed the result


def test_request_chooses_model_files_by_name_inside_the_folders(server):
    body = {"prompts": ["a cat"], "width": 64, "height": 64, "steps": 1, "seed": 1}
    status, _, out = post(server.url + "/generate", {**body, "diffusion_model": "z_image_turbo_tiny.safetensors",
                                                     "vae": "ae_tiny.safetensors"})
    assert status == 200 and out["warnings"] == [], out
    assert out["image"] == post(server.url + "/generate", body)[2]["image"]  # the same files as the default
    for field, name in (("diffusion_model", "../vae/ae_tiny.safetensors"), ("text_encoder", "/etc/passwd"),
                        ("vae", "missing.safetensors")):
        status, _, out = post(server.url + "/generate", {**body, field: name})
        assert status == 400 and out["field"] == field, out


def test_fixed_model_set_servers_refuse_model_names():
    app = create_app(lambda: object(), queue_size=1, timeout_s=10, route=SlowRoute())
    with BackgroundServer(app) as srv:
        status, _, out = post(srv.url + "/generate", {"prompts": ["a"], "width": 64, "height": 64,
                                                      "diffusion_model": "x.safetensors"})
        assert status == 400 and out["field"] == "diffusion_model" and "fixed" in out["error"], out


@pytest.mark.parametrize("name", ["../secret.safetensors", "../diffusion_models/z_image_turbo_tiny.safetensors",
                                  "/etc/passwd", "missing.safetensors"])
def test_model_names_outside_folders_refused(server, name):
    for fld in ("heavy", "face_model"):
        status, _, out = post(server.url + "/generate", {"prompts": ["x"], "width": 64, "height": 64, fld: name})
        assert status == 400 and out["field"] == fld, out


# --------------------------------------------------------------------------------------------- bad requests
BAD = [
    (b"not json at all", "body"),
    (b"\xff\xfe{}", "body"),
    (b"[" * 50_000, "body"),  # deep nesting must not crash the parser
    (b'["a cat"]', "body"),
    ({"width": 64}, "prompts"),
    ({"prompt": "a cat"}, "prompts"),
    ({"prompts": "a cat"}, "prompts"),
    ({"prompts": []}, "prompts"),
    ({"prompts": ["a"] * 5}, "prompts"),
    ({"prompts": [3]}, "prompts"),
    ({"prompts": ["   "]}, "prompts"),
    ({"prompts": ["x" * 4001]}, "prompts"),
    ({"prompts": ["a"], "width": 100}, "width"),
    ({"prompts": ["a"], "height": 100}, "height"),
    ({"prompts": ["a"], "width": 4112}, "width"),
    ({"prompts": ["a"], "width": 32}, "width"),
    ({"prompts": ["a"], "width": "64"}, "width"),
    ({"prompts": ["a"], "width": 64.0}, "width"),
    ({"prompts": ["a"], "steps": 0}, "steps"),
    ({"prompts": ["a"], "steps": 101}, "steps"),
    ({"prompts": ["a"], "steps": True}, "steps"),
    ({"prompts": ["a"], "seed": -1}, "seed"),
    ({"prompts": ["a"], "seed": 2**64}, "seed"),
    ({"prompts": ["a"], "seed": 1.5}, "seed"),
    ({"prompts": ["a"], "negative_prompt": 5}, "negative_prompt"),
]


def test_bad_requests_are_400_json(server):
    for body, fld in BAD:
        status, headers, out = post(server.url + "/generate", body)
        assert status == 400, (body if isinstance(body, dict) else body[:20], out)
        assert out["field"] == fld and out["error"] and out["request_id"], out
        assert headers["Content-Type"].startswith("application/json")
    out = post(server.url + "/generate", {"prompts": ["a"], "width": 100})[2]
    assert "96" in out["error"] and "112" in out["error"]  # names the nearest valid sizes
    assert get(server.url + "/health")["counts"].get("accepted", 0) >= 0  # still alive


def test_huge_bodies_are_413_json(server):
    status, _, out = post(server.url + "/generate", b'{"prompts": ["' + b"x" * (2 << 20) + b'"]}')
    assert status == 413 and out["field"] == "body", out
    # chunked upload (no Content-Length): the stream is cut at the limit
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)
    conn.request("POST", "/generate", body=iter([b"x" * 65536] * 40), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["field"] == "body"
    conn.close()


def test_unknown_paths_and_methods_are_json(server):
    for url, code in ((server.url + "/nope", 404), (server.url + "/generate", 405)):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=10)
        assert info.value.code == code and "error" in json.loads(info.value.read())


def test_health(server, models_dir):
    h = get(server.url + "/health")
    assert h["status"] == "ok" and h["queue"] == 0 and h["busy"] is False
    assert h["models"] == models_dir.name and h["queue_size"] == 4  # never the server's absolute path
    assert set(h["loaded"]) == {"transformer", "text_encoder", "vae", "tokenizer"}


def test_parse_request_defaults_and_limits():
    req = parse_request({"prompts": ["a"], "seed": None})
    assert (req.width, req.height, req.steps) == (1024, 1024, 9) and 0 <= req.seed < 2**32
    with pytest.raises(RequestError, match="limit is 10"):
        parse_request({"prompts": ["x" * 11]}, Limits(max_prompt_chars=10))


def test_bad_configuration_fails_at_creation(tmp_path, models_dir):
    from zimage_core.errors import ModelFileError, ZImageError

    with pytest.raises(ModelFileError):
        create_app(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="route_options"):
        create_app(models_dir, route_options={"sacle": 2})
    with pytest.raises(ZImageError, match="work_max"):
        create_app(models_dir, route_options={"work_max": 100})
    with pytest.raises(ValueError, match="queue_size"):
        create_app(lambda: None, queue_size=0)


# -------------------------------------------------------------------------------- queue, timeouts, failures
class SlowRoute:
    """A fake route that holds the GPU until released (or told to stop), and records what it ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.stopped: list[str] = []

    def __call__(self, bundle, job, *, should_stop, **kwargs) -> RouteResult:
        prompts, seed = job.prompts, job.generation.seed
        self.started.append(prompts[0])
        if prompts[0] == "boom":
            raise RuntimeError("simulated crash")
        deadline = time.monotonic() + 30
        while not self.release.is_set() and time.monotonic() < deadline:
            if should_stop() and not prompts[0].startswith("stubborn"):  # stubborn: a stage that cannot stop
                self.stopped.append(prompts[0])
                from zimage_core.errors import Interrupted

                raise Interrupted("stopped between steps")
            time.sleep(0.01)
        image = torch.full((len(prompts), job.generation.height, job.generation.width, 3), 0.5)
        return RouteResult(image, {"total": 0.0}, ["fake"], seeds=[seed + i for i in range(len(prompts))])


def _wait_for(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_queue_full_is_503_and_loop_stays_responsive():
    route = SlowRoute()
    app = create_app(lambda: object(), queue_size=1, timeout_s=30, route=route)
    body = lambda p: {"prompts": [p], "width": 64, "height": 64}  # noqa: E731
    with BackgroundServer(app) as srv, ThreadPoolExecutor(4) as pool:
        running = pool.submit(post, srv.url + "/generate", body("first"))
        _wait_for(lambda: route.started == ["first"])
        queued = pool.submit(post, srv.url + "/generate", body("second"))
        _wait_for(lambda: get(srv.url + "/health")["queue"] == 1)
        health = get(srv.url + "/health")  # the event loop answers while the worker thread is held by the route
        assert health["busy"] is True
        status, headers, out = post(srv.url + "/generate", body("third"))
        assert status == 503 and int(headers["Retry-After"]) >= 1 and "queue is full" in out["error"], out
        route.release.set()
        assert running.result(30)[0] == 200 and queued.result(30)[0] == 200
        assert route.started == ["first", "second"]  # the rejected one never ran
        counts = get(srv.url + "/health")["counts"]
        assert counts == {"accepted": 2, "completed": 2, "rejected_full": 1}, counts


def test_timeout_is_504_and_cancels_the_job():
    route = SlowRoute()
    app = create_app(lambda: object(), queue_size=2, timeout_s=0.5, route=route)
    body = lambda p: {"prompts": [p], "width": 64, "height": 64}  # noqa: E731
    with BackgroundServer(app) as srv, ThreadPoolExecutor(2) as pool:
        status, _, out = post(srv.url + "/generate", body("slow"))
        assert status == 504 and "cancelled" in out["error"], out
        _wait_for(lambda: route.stopped == ["slow"])  # the running job stopped at its next step

        stubborn = pool.submit(post, srv.url + "/generate", body("stubborn"))
        _wait_for(lambda: route.started[-1] == "stubborn")
        waiting = pool.submit(post, srv.url + "/generate", body("waiting"))
        for fut in (stubborn, waiting):
            status, _, out = fut.result(10)
            assert status == 504, out
        route.release.set()
        status, _, out = post(srv.url + "/generate", body("after"))
        assert status == 200 and _decode_jpeg(out["image"]).size == (64, 64)
        assert route.started == ["slow", "stubborn", "after"]  # the job that timed out while queued never ran
        counts = get(srv.url + "/health")["counts"]
        assert counts["timed_out"] == 3 and counts["skipped"] == 1 and counts["completed"] == 2, counts


def test_route_crash_is_500_json_and_server_survives():
    route = SlowRoute()
    route.release.set()
    app = create_app(lambda: object(), queue_size=2, timeout_s=10, route=route)
    with BackgroundServer(app) as srv:
        status, _, out = post(srv.url + "/generate", {"prompts": ["boom"], "width": 64, "height": 64})
        assert status == 500 and "simulated crash" in out["error"], out
        assert post(srv.url + "/generate", {"prompts": ["fine"], "width": 64, "height": 64})[0] == 200


def test_blank_negative_prompt_is_absent():
    """A whitespace-only negative_prompt must not turn NAG on."""
    for blank in ("", " ", "  \t\n "):
        assert parse_request({"prompts": ["a"], "negative_prompt": blank}).negative_prompt is None
    assert parse_request({"prompts": ["a"], "negative_prompt": " blurry "}).negative_prompt == " blurry "
    with pytest.raises(RequestError, match="must be a string"):
        parse_request({"prompts": ["a"], "negative_prompt": 5})
