"""Bounded load test of the headless HTTP API on loopback (issue 7 item 3).

Real tiny models, real sockets: N requests at concurrency C against a queue smaller than C, so the server must push
back with 503 + Retry-After and the clients retry. Shows: every request answered exactly once with its own id, no
5xx but the intended 503s, server-side counters agree, and RSS stays flat. Bounded in count and in wall time.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from zimage_core.api import BackgroundServer, create_app

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


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer_source):
    from zimage_core.testing import save_tiny_models

    root = save_tiny_models(tmp_path_factory.mktemp("http_load") / "models", "comfy", tokenizer_source=tokenizer_source)
    app = create_app(root, queue_size=QUEUE_SIZE, timeout_s=30, device="cpu", preload=True,
                     route_options={"scale": 2, "work_min": 64, "work_max": 128})
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


def test_timeout_cancels_the_real_route_between_steps(server):
    """504 on a 50-step request; the real sampler sees should_stop and gives the GPU back (counted as failed)."""
    from zimage_core.api import SERVICE

    url = server.url

    service = server.app[SERVICE]  # same app, shorter timeout for this one request (read per request)
    old_timeout, service.timeout_s = service.timeout_s, 0.3
    try:
        failed_before = service.counts["failed"]
        status, _, out = _post(url + "/generate", {"prompts": ["long"], "width": 128, "height": 128, "steps": 50},
                               "cancel-1")
        assert status == 504 and out["request_id"] == "cancel-1", out
        end = time.monotonic() + 30
        while service.busy is not None or service.counts["failed"] == failed_before:
            assert time.monotonic() < end, "the cancelled job kept the worker busy"
            time.sleep(0.05)
        assert service.counts["failed"] == failed_before + 1  # stopped by Interrupted, not completed
    finally:
        service.timeout_s = old_timeout
    status, _, out = _post(url + "/generate", {"prompts": ["after"], "width": 64, "height": 64, "steps": 1}, "after-1")
    assert status == 200, out  # healthy afterwards
