"""The headless HTTP API under load, timeouts and clients that hang up, on loopback with real tiny models.

Load: N requests at concurrency C against a queue smaller than C, so the server must push back with 503 +
Retry-After and the clients retry: every request answered exactly once with its own id, no 5xx but the intended
503s, server-side counters agree, RSS stays flat. Bounded in count and in wall time.

Slowness is never a race against the clock: the "slow" jobs run the real route with a first denoising step that
waits until the job is told to stop (a gate), so the outcome does not depend on how fast this machine is.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from zimage_core.pipeline import generate_route
from zimage_core.service.app import SERVICE, create_app
from zimage_core.testing.http import BackgroundServer

REQUESTS, CONCURRENCY, QUEUE_SIZE, WARMUP = 32, 4, 2, 4
TIME_LIMIT_S = 60.0
RSS_GROWTH_LIMIT = 64 << 20  # bytes over the warmed-up baseline


def _post(url: str, body: dict, rid: str) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Request-Id": rid})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


GATE_LIMIT_S = 30.0  # a gated step gives up after this long: a broken cancellation fails the test, never hangs it


class GatedRoute:
    """The real route; for prompts starting with "gated", the first denoising step waits until the job is told to
    stop. Records how many steps each gated job finished after its stop flag was set."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.steps_after_stop: dict[str, int] = {}
        self.at_gate = threading.Event()

    def __call__(self, bundle, job, *, should_stop, **kwargs):
        name = job.prompts[0]
        self.started.append(name)
        if not name.startswith("gated"):
            return generate_route(bundle, job, should_stop=should_stop, **kwargs)
        self.steps_after_stop[name] = 0

        def gate(info) -> None:
            if should_stop():
                self.steps_after_stop[name] += 1
                return
            self.at_gate.set()
            end = time.monotonic() + GATE_LIMIT_S
            while not should_stop() and time.monotonic() < end:
                time.sleep(0.005)
            self.steps_after_stop[name] += 1  # the step that was waiting at the gate

        return generate_route(bundle, job, should_stop=should_stop, callback=gate, **kwargs)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, tokenizer_source):
    from zimage_core.testing import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("http_load") / "models", "comfy", tokenizer_source=tokenizer_source)


@pytest.fixture(scope="module")
def server(models_root):
    app = create_app(models_root, queue_size=QUEUE_SIZE, timeout_s=30, device="cpu", preload=True,
                     route_options={"scale": 2, "work_max": 128})
    with BackgroundServer(app) as srv:
        yield srv


def test_load_every_request_answered_once_memory_flat(server):
    url = server.url + "/generate"
    statuses: Counter = Counter()
    answers: dict[str, list[int]] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + TIME_LIMIT_S

    def client(i: int, tag: str) -> str:
        rid = f"{tag}-{i:03d}"
        body = {"prompts": [f"load test image {i}"], "width": 64, "height": 64 + 16 * (i % 3), "steps": 1, "seed": i}
        while True:
            assert time.monotonic() < deadline, "load test exceeded its time limit"
            status, headers, out = _post(url, body, rid)
            assert out["request_id"] == rid  # never someone else's answer
            with lock:
                statuses[status] += 1
                answers.setdefault(rid, []).append(status)
            if status == 503:  # intended back-pressure: honour Retry-After, capped so the test stays short
                time.sleep(min(float(headers["Retry-After"]), 0.2))
                continue
            assert status == 200, out
            assert (out["width"], out["height"], out["seed"]) == (body["width"], body["height"], i)
            return rid

    with ThreadPoolExecutor(CONCURRENCY) as pool:  # warm-up: weights, allocator pools, first-call overheads
        list(pool.map(lambda i: client(i, "warm"), range(WARMUP)))
    gc.collect()
    proc = psutil.Process()
    rss_before = proc.memory_info().rss

    t0 = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        done = list(pool.map(lambda i: client(i, "load"), range(REQUESTS)))
    elapsed = time.monotonic() - t0
    gc.collect()
    rss_after = proc.memory_info().rss

    load_ids = {k: v for k, v in answers.items() if k.startswith("load-")}
    assert sorted(done) == sorted(load_ids) and len(load_ids) == REQUESTS
    assert all(v.count(200) == 1 and v[-1] == 200 for v in load_ids.values()), load_ids  # exactly one success each
    assert set(statuses) <= {200, 503}, statuses
    with urllib.request.urlopen(server.url + "/health", timeout=10) as resp:
        health = json.loads(resp.read())
    counts = health["counts"]
    assert counts["completed"] == counts["accepted"] == REQUESTS + WARMUP, counts
    assert counts.get("rejected_full", 0) == statuses[503] and "failed" not in counts, counts
    assert health["queue"] == 0 and health["busy"] is False
    growth = rss_after - rss_before
    print(f"\nHTTP load: {REQUESTS} requests (+{WARMUP} warm-up), concurrency {CONCURRENCY}, queue {QUEUE_SIZE}: "
          f"{elapsed:.2f} s, {statuses[503]} intended 503s; RSS {rss_before / 2**20:.1f} -> "
          f"{rss_after / 2**20:.1f} MiB ({growth / 2**20:+.1f} MiB)")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_timeout_cancels_the_real_route_between_steps(models_root):
    """504 on a request whose step cannot finish before it is stopped; the real sampler sees should_stop at its
    next step and gives the worker back (counted as failed: stopped by Interrupted, not completed)."""
    route = GatedRoute()
    app = create_app(models_root, queue_size=2, timeout_s=0.3, device="cpu", route=route,
                     route_options={"scale": 2, "work_max": 128})
    with BackgroundServer(app) as srv:
        service = srv.app[SERVICE]
        status, _, out = _post(srv.url + "/generate", {"prompts": ["gated long"], "width": 128, "height": 128,
                                                       "steps": 50}, "cancel-1")
        assert status == 504 and out["request_id"] == "cancel-1", out
        end = time.monotonic() + GATE_LIMIT_S
        while service.queue.busy is not None or service.queue.counts["failed"] == 0:
            assert time.monotonic() < end, "the cancelled job kept the worker busy"
            time.sleep(0.02)
        assert service.queue.counts["failed"] == 1 and service.queue.counts["timed_out"] == 1
        assert route.steps_after_stop == {"gated long": 1}  # stopped at the very next step boundary
        service.timeout_s = 30
        status, _, out = _post(srv.url + "/generate", {"prompts": ["after"], "width": 64, "height": 64, "steps": 1},
                               "after-1")
        assert status == 200, out  # healthy afterwards


def _hang_up_after_send(url: str, body: dict) -> socket.socket:
    """Send a complete POST /generate and keep the socket open without reading (close it to hang up)."""
    host, port = url.split("//", 1)[1].split(":")
    raw = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    return sock


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return json.loads(resp.read())


def _until(predicate, what: str, limit: float = 20.0) -> None:
    end = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for: {what}"
        time.sleep(0.01)


def test_clients_that_hang_up_cancel_their_jobs_and_free_the_queue(models_root):
    """Three clients fill the worker and a 2-slot queue, then hang up. Their jobs are cancelled at once (queued:
    dropped; running: stopped at its gated step, so it runs at most one more step) and a waiting client is served
    straight away, with no 503 and no wait for the abandoned work (which would block at its gate for 30 s)."""
    route = GatedRoute()
    app = create_app(models_root, queue_size=2, timeout_s=60, device="cpu", route=route,
                     route_options={"scale": 2, "work_max": 128})
    with BackgroundServer(app) as srv:
        body = {"width": 64, "height": 64, "steps": 4}
        sockets = [_hang_up_after_send(srv.url, {**body, "prompts": ["gated 0"]})]
        _until(route.at_gate.is_set, "the first job at its gate")
        for i in (1, 2):
            sockets.append(_hang_up_after_send(srv.url, {**body, "prompts": [f"gated {i}"]}))
        _until(lambda: _health(srv.url)["queue"] == 2, "two queued jobs")
        status, headers, out = _post(srv.url + "/generate", {**body, "prompts": ["legit"]}, "full-1")
        assert status == 503 and int(headers["Retry-After"]) >= 1, out  # the queue really was full
        for sock in sockets:
            sock.close()
        _until(lambda: _health(srv.url)["counts"].get("disconnected", 0) == 3, "three cancellations")
        t0 = time.monotonic()
        status, _, out = _post(srv.url + "/generate", {**body, "prompts": ["legit"]}, "legit-1")
        waited = time.monotonic() - t0
        assert status == 200, out
        counts = _health(srv.url)["counts"]
    assert route.started == ["gated 0", "legit"]  # the queued abandoned jobs never ran
    assert route.steps_after_stop == {"gated 0": 1}  # the running one stopped at its next step boundary
    assert counts["disconnected"] == 3 and counts["skipped"] == 2 and counts["failed"] == 1, counts
    assert counts["completed"] == 1 and waited < GATE_LIMIT_S, (counts, waited)
    print(f"\nhang-ups: 3 cancelled (2 dropped from the queue, 1 stopped after 1 step); the waiting client was "
          f"answered in {waited:.2f} s")
