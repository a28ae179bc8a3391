"""The HTTP API against hostile and sloppy clients: text that is not text, the wrong content type, foreign Host and
Origin headers, malformed HTTP, idle and slow sockets, more sockets than file descriptors, server paths in
errors, and the whole documented size range. Generation runs on tiny models; slowness is never timed."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import urllib.error
import urllib.request

import pytest
import torch

from zimage_core.pipeline import RouteResult, plan_route
from zimage_core.service.app import create_app, redact
from zimage_core.service.jobs import Job, JobQueue
from zimage_core.service.request import Limits, RequestError, parse_request
from zimage_core.sizes import check_size
from zimage_core.testing.http import BackgroundServer


def fake_route(bundle, job, *, should_stop, **kwargs) -> RouteResult:
    g = job.generation
    image = torch.full((len(job.prompts), g.height, g.width, 3), 0.5)
    return RouteResult(image, {"total": 0.0}, ["fake"], seeds=[g.seed + i for i in range(len(job.prompts))])


def raw_request(url: str, data: bytes, timeout: float = 10) -> tuple[int, dict]:
    """Send raw bytes, read one response; returns (status, decoded JSON body)."""
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            part = sock.recv(65536)
            if not part:
                break
            chunks.append(part)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), None)
                if length is not None and len(body) >= length:
                    break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def post_bytes(url: str, raw: bytes, content_type: str = "application/json", headers: dict | None = None
               ) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/generate", data=raw, method="POST",
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        assert err.headers["Content-Type"].startswith("application/json")
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening")
    (folder / "upscale_models").mkdir()
    app = create_app(lambda: object(), queue_size=4, timeout_s=30, route=fake_route,
                     heavy_dirs=[folder / "upscale_models"], face_dirs=[folder / "facerestore_models"],
                     body_timeout_s=0.5)
    with BackgroundServer(app, max_connections=6, header_timeout=0.5) as srv:
        srv.folder = folder
        yield srv


def test_strings_that_are_not_text_are_400_naming_the_field(server):
    good = b'{"prompts": ["a cat"], "width": 64, "height": 64'
    for field, raw in (("prompts", b'{"prompts": ["cat \\ud800"], "width": 64, "height": 64}'),
                       ("negative_prompt", good + b', "negative_prompt": "x\\udfff"}'),
                       ("heavy", good + b', "heavy": "a\\ud800.pth"}'),
                       ("face_model", good + b', "face_model": "\\udc80.pth"}')):
        status, out = post_bytes(server.url, raw)
        assert status == 400 and out["field"] == field and "not text" in out["error"], (field, out)


def test_json_only_and_null_is_not_a_value(server):
    status, out = post_bytes(server.url, b'{"prompts": ["a"]}', content_type="text/plain")
    assert status == 415 and "application/json" in out["error"], out
    status, out = post_bytes(server.url, b'{"prompts": ["a"], "width": 64, "height": 64, "steps": null}')
    assert status == 400 and out["field"] == "steps", out
    status, out = post_bytes(server.url, b'{"prompts": ["a"], "width": 64, "height": 64, "seed": null}')
    assert status == 200, out  # null seed = a random one, as documented


def test_foreign_host_and_origin_are_refused(server):
    port = server.url.rsplit(":", 1)[1]
    body = b'{"prompts": ["a"], "width": 64, "height": 64}'
    status, out = post_bytes(server.url, body, headers={"Host": f"evil.example:{port}"})
    assert status == 403 and "Host" in out["error"], out
    for origin in ("http://evil.example", "null", f"http://evil.example:{port}"):
        status, out = post_bytes(server.url, body, headers={"Origin": origin})
        assert status == 403 and "cross-origin" in out["error"], (origin, out)
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        assert post_bytes(server.url, body, headers={"Origin": origin})[0] == 200
    assert post_bytes(server.url, body, headers={"Host": f"localhost:{port}"})[0] == 200


def test_malformed_http_gets_json_and_one_log_line(server, caplog):
    with caplog.at_level(logging.INFO, logger="zimage_core.service.connections"):
        for junk in (b"GARBAGE\r\n\r\n", b"POST /generate HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n"):
            status, out = raw_request(server.url, junk)
            assert 400 <= status < 500 and out["error"].startswith("malformed HTTP request"), out
    records = [r for r in caplog.records if r.name == "zimage_core.service.connections"]
    assert len(records) == 3 and not any(r.exc_info for r in records)  # one line each, no traceback


def test_slow_body_is_408(server):
    host, port = server.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompts\"")
        data = sock.recv(65536)  # the server answers once the body deadline (0.5 s) has passed
    assert b" 408 " in data.split(b"\r\n", 1)[0] and b'"field": "body"' in data, data[:200]


def test_idle_sockets_are_closed_and_never_starve_health(server):
    host, port = server.url.split("//", 1)[1].split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(12)]  # twice the cap
    try:
        with urllib.request.urlopen(server.url + "/health", timeout=10) as resp:  # evicts the oldest idle socket
            assert json.loads(resp.read())["status"] == "ok"
        slow = idle[-1]
        slow.sendall(b"GET /health HTTP/1.1\r\n")  # half a header, then nothing: closed at the header deadline
        slow.settimeout(10)
        assert slow.recv(1) == b""  # the server closed it (a timeout here would raise instead)
    finally:
        for s in idle:
            s.close()


def test_client_errors_never_show_server_paths(server):
    status, out = post_bytes(server.url, b'{"prompts": ["a"], "width": 64, "height": 64, "heavy": "nope.pth"}')
    assert status == 400 and out["field"] == "heavy", out
    assert str(server.folder) not in out["error"] and "upscale_models" in out["error"], out
    assert redact("not found in /srv/models/vae/ae.safetensors.") == "not found in ae.safetensors."
    assert redact("Searched: C:\\models\\vae, /a/b.") == "Searched: vae, b."


def test_every_documented_size_is_accepted_or_names_the_clients_value():
    """The whole documented range (64..4096, multiples of 16: 64,009 sizes) plans to a size the sampler can make;
    sizes outside it get a 400 naming the field and the value the client sent."""
    sizes = range(64, 4097, 16)
    for side in sizes:  # each side value is accepted (the pair is judged by plan_route, which parse_request runs)
        assert parse_request({"prompts": ["a"], "width": side, "height": 1024}).width == side
        assert parse_request({"prompts": ["a"], "width": 1024, "height": side}).height == side
    for w, h in itertools.product(sizes, sizes):
        plan = plan_route(w, h, max_side=Limits().max_side)
        check_size(plan.work_width, plan.work_height)
        assert plan.work_width <= w and plan.work_height <= h
        assert abs((w / h) / (plan.work_width / plan.work_height) - 1) <= 0.02, (w, h, plan)
    for field, value in itertools.product(("width", "height"), (0, 48, 100, 4098, 4112, 8192, -16)):
        with pytest.raises(RequestError) as info:
            parse_request({"prompts": ["a"], field: value})
        assert info.value.field == field and f"{field}={value}" in info.value.message, info.value.message


def test_extreme_documented_sizes_generate(tmp_path, tokenizer_source):
    """The corners of the range through the real route on tiny models."""
    from zimage_core.testing import save_tiny_models

    root = save_tiny_models(tmp_path / "models", "comfy", tokenizer_source=tokenizer_source)
    app = create_app(root, queue_size=2, timeout_s=120, device="cpu", route_options={"scale": 2, "work_max": 128})
    with BackgroundServer(app) as srv:
        for w, h in ((4096, 64), (64, 4096), (1040, 64), (2048, 80)):
            raw = json.dumps({"prompts": ["a long strip"], "width": w, "height": h, "steps": 1}).encode()
            status, out = post_bytes(srv.url, raw)
            assert status == 200 and (out["width"], out["height"]) == (w, h), out


def test_retry_after_is_measured_from_the_queue():
    """Jobs that 'take' 7 s on an injected clock: Retry-After = what is left of the running job + the queue."""
    now = [0.0]
    ran: list[str] = []

    def run(job: Job) -> str:
        ran.append(job.id)
        now[0] += 7.0
        return job.id

    async def scenario() -> tuple[int, int, int]:
        q = JobQueue(run, max_queued=4, clock=lambda: now[0], first_estimate_s=10.0)
        await q.start()
        loop = asyncio.get_running_loop()
        before = q.retry_after()  # nothing measured yet: the first estimate
        for i in range(2):
            job = Job(str(i), None, loop.create_future())
            q.submit(job)
            await job.future
        q._running, q._running_since = Job("r", None, loop.create_future()), now[0] - 2.0  # running for 2 s
        for i in range(2):
            q.submit(Job(f"w{i}", None, loop.create_future()))
        measured = q.retry_after()
        await q.stop()
        return before, measured, int(q.mean_job_s())

    before, measured, mean = asyncio.run(scenario())
    assert (before, mean) == (10, 7)
    assert measured == (7 - 2) + 7 * 2  # 19 s, not the old fixed guesses
