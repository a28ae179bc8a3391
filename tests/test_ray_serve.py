"""The /generate contract on Ray Serve (local Ray, 2 CPUs, loopback, tiny models): a burst answered exactly once with
batches forming and images equal to the single-process server's; a replica killed mid-burst is replaced and every
request still gets an answer; back-pressure is a 503 with Retry-After (a gate, not the clock, holds the replica)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from zimage_core.job import GenerationJob  # noqa: E402
from zimage_core.pipeline import encode_jpeg_base64, generate_route  # noqa: E402
from zimage_core.service.ray_serve import MODEL_DEPLOYMENT, build_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 120  # no request may take longer: a hang fails the test instead of stalling the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_ENV = {
    # Ray's processes start slowly on a busy 2-core machine: give its proxy more than the default 5 s to come up
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
    # Ray runs its workers at nice 15: on a shared machine the replicas would starve behind any busy process, and
    # here they do all the work while this process only waits
    "RAY_worker_niceness": "0",
}


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as env:  # read by the processes ray.init starts; gone after this module
        for name, value in RAY_ENV.items():
            env.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def post(url: str, body: dict, timeout: float = WAIT_S) -> tuple[int, object, dict]:
    """(status, headers — case-insensitive —, decoded JSON body)."""
    req = urllib.request.Request(url + "/generate", json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def body(i: int) -> dict:
    return {"prompts": [f"a lighthouse, variant {i % 3}"], "width": 64, "height": 64, "steps": 2, "seed": 1000 + i}


def test_burst_is_answered_once_in_batches_equal_to_one_process(cluster, tiny_dirs, tiny_bundle):
    serve.run(build_app(str(tiny_dirs["comfy"]), replicas=2, max_batch_size=4, batch_wait_s=0.2, device="cpu"),
              name="zimage", route_prefix="/")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(cluster, body(i)), range(40)))
    assert [status for status, _, _ in answers] == [200] * 40, [a for s, _, a in answers if s != 200][:2]
    ids = {out["request_id"] for _, _, out in answers}
    assert len(ids) == 40  # every request answered exactly once
    sizes = [out["batch_size"] for _, _, out in answers]
    assert max(sizes) > 1, sizes
    print(f"Ray burst: 40 requests, batch sizes {sorted(set(sizes))}")
    for i in (0, 7, 39):  # the same image as the single-process route for the same request
        job = GenerationJob.build(body(i)["prompts"], {k: v for k, v in body(i).items() if k != "prompts"})
        expected = encode_jpeg_base64(generate_route(tiny_bundle, job).image)
        assert answers[i][2]["image"] == expected, i
        assert answers[i][2]["seed"] == 1000 + i
    health = json.loads(urllib.request.urlopen(cluster + "/health", timeout=30).read())
    assert health["replicas"] == 2 and health["counts"]["200"] >= 40
    status, _, out = post(cluster, {"prompts": ["x"], "width": 100})
    assert status == 400 and out["field"] == "width"


def _replica_names() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if f"#{MODEL_DEPLOYMENT}#" in a["name"] and a["name"].startswith("SERVE_REPLICA")]


def _outstanding(url: str) -> int:
    return json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())["outstanding"]


def _wait_until(condition, what, describe=lambda: "") -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} {describe()}"
        time.sleep(0.05)


def test_back_pressure_and_a_replica_killed_mid_request(cluster, tiny_dirs, tmp_path):
    """Replicas held at a gate (a file the test creates), so what is in flight is known, not raced: a client that
    hangs up is cancelled; past capacity a 503 with Retry-After; the requests of a killed replica a 503 saying so;
    Ray replaces the replica; the rest 200."""
    import functools

    from zimage_core.testing.http import file_gated_route

    gate = tmp_path / "open"
    route = functools.partial(file_gated_route, gate=str(gate))
    serve.run(build_app(str(tiny_dirs["comfy"]), replicas=2, max_batch_size=1, batch_wait_s=0.0, max_queued=1,
                        device="cpu", route=route), name="zimage", route_prefix="/")
    # a client that hangs up: its request leaves the replica's queue (outstanding falls back to 0)
    raw = json.dumps(body(299)).encode()
    port = int(cluster.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
        _wait_until(lambda: _outstanding(cluster) == 1, "the request did not arrive")
    _wait_until(lambda: _outstanding(cluster) == 0, "the hung-up client's request was not cancelled")
    capacity = 2 * 2 + 1  # replicas × max ongoing (2 × batch size) + queued
    with ThreadPoolExecutor(capacity) as pool:
        held = [pool.submit(post, cluster, body(300 + i)) for i in range(capacity)]
        _wait_until(lambda: _outstanding(cluster) == capacity, "the requests did not all reach the replicas",
                    lambda: f"(outstanding {_outstanding(cluster)}; answered: "
                            f"{[f.exception() or f.result()[2] for f in held if f.done()]})")
        status, headers, out = post(cluster, body(399))
        assert status == 503 and int(headers["Retry-After"]) >= 1 and "queue is full" in out["error"], out
        names = _replica_names()
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)  # it holds requests at the gate
        _wait_until(lambda: any(f.done() for f in held), "no request was answered after the kill")
        gate.touch()
        answers = [f.result(timeout=WAIT_S) for f in held]
    statuses = [status for status, _, _ in answers]
    print(f"back-pressure: 503 past {capacity} in flight; replica killed: {statuses.count(200)} × 200, "
          f"{statuses.count(503)} × 503")
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    for status, headers, out in answers:
        if status == 503:
            assert "replica" in out["error"] and int(headers["Retry-After"]) >= 1, out
    _wait_until(lambda: len(_replica_names()) == 2 and names[0] not in _replica_names(),
                "the killed replica was not replaced")
    assert post(cluster, body(400))[0] == 200
