"""Throughput of `zimage serve --ray` on this machine (tiny models, CPU): 1 replica unbatched vs 1 replica batched
vs 2 replicas batched, one burst per configuration on one local Ray.

    python bench/ray_serve.py [--requests 48] [--concurrency 8] [--size 128] [--steps 4]

Prints a markdown table (requests/s, p50 / p95 latency, batch sizes seen) and writes bench/ray_serve.json. On the
CPU the batch-invariant path computes a batch's images one by one (so images never depend on batch position):
batching there saves the shared per-request work, not the model time. On a GPU a batch runs as one forward.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = (("1 replica, unbatched", 1, 1), ("1 replica, batch 4", 1, 4), ("2 replicas, batch 4", 2, 4))


def post(url: str, body: dict) -> tuple[float, dict]:
    req = urllib.request.Request(url + "/generate", json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        return time.perf_counter() - start, json.loads(resp.read())


def burst(url: str, n: int, concurrency: int, size: int, steps: int) -> dict:
    bodies = [{"prompts": [f"a lighthouse at dusk {i % 4}"], "width": size, "height": size, "steps": steps,
               "seed": i} for i in range(n)]
    post(url, bodies[0])  # warm: the first request pays for loading
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda b: post(url, b), bodies))
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    return {"requests": n, "seconds": round(wall, 3), "requests_per_s": round(n / wall, 2),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[max(0, int(0.95 * n) - 1)], 3),
            "batch_sizes": sorted({out["batch_size"] for _, out in results})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    import ray
    from ray import serve

    from zimage_core.service.ray_serve import build_app
    from zimage_core.testing import save_tiny_models

    models = save_tiny_models(Path(tempfile.mkdtemp()) / "models", "comfy")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = []
    for label, replicas, batch in CONFIGS:
        serve.run(build_app(str(models), replicas=replicas, max_batch_size=batch, batch_wait_s=0.05, device="cpu",
                            max_queued=args.requests), name="zimage", route_prefix="/")
        rows.append({"config": label, **burst(f"http://127.0.0.1:{port}", args.requests, args.concurrency,
                                               args.size, args.steps)})
        serve.delete("zimage")
    serve.shutdown()
    ray.shutdown()
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "size": args.size, "steps": args.steps, "concurrency": args.concurrency, "rows": rows}
    (REPO / "bench" / "ray_serve.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"| configuration ({args.size}², {args.steps} steps, {args.requests} requests, concurrency "
          f"{args.concurrency}) | requests/s | p50 s | p95 s | batch sizes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | {r['batch_sizes']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
