"""POST /generate and GET /health on Ray Serve: the contract of `zimage serve` (the same request parser, answers and
errors), served by model replicas — one per GPU, or CPU replicas — behind one light ingress. Needs the `ray` extra
(`pip install -e ".[ray]"`).

Ingress (one replica, no model): reads and validates the body (service.request), admits it while fewer than
replicas × max_ongoing + max_queued requests are outstanding — else 503 with a Retry-After measured from recent
answers —, forwards it to a model replica and answers with its JSON. A client that hangs up cancels its request
(queued: dropped; running: its batch stops between steps once every request in it has hung up); a replica that dies
mid-request gives a 503 (Ray starts a new one); a request past the timeout gives a 504.

Model replicas load the models once. `@serve.batch` hands a replica the requests that arrived together (up to
max_batch_size, waiting at most batch_wait_s for more): those that differ only in prompts and seeds share one
sampler batch (GenerationRunner.run_batch), each with its own seed, so every image equals the single-process
server's; the others run alone. Every answer says its `batch_size`.

    zimage serve --ray --models ~/ComfyUI/models --replicas 2 --batch 4        # one machine
    serve run zimage_core.service.ray_serve:app_builder models=/models replicas=4   # or a Serve config file
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
import uuid
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from .answers import error_body, job_failure
from .request import Limits, RequestError, parse_request

log = logging.getLogger("zimage_core.service")

MODEL_DEPLOYMENT = "ZImageModel"
RECENT = 32  # answers the Retry-After estimate averages over


@serve.deployment(name=MODEL_DEPLOYMENT)
class ZImageModel:
    """One model replica: a GenerationRunner over the models folder, fed by @serve.batch."""

    def __init__(self, models: str, runner_options: dict[str, Any], max_batch_size: int, batch_wait_s: float):
        from .runner import build_runner

        self.runner, self.label = build_runner(models, **runner_options)
        self.runner.preload()  # a replica is ready once its models are: no first request pays for loading
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_s)

    async def generate(self, req) -> dict[str, Any]:
        cancelled = asyncio.Event()
        try:
            return await self.generate_batch((req, cancelled))
        except asyncio.CancelledError:  # client gone or timed out: its batch stops once all of its requests are
            cancelled.set()
            raise

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def generate_batch(self, entries: list) -> list[dict[str, Any]]:
        """Answers (or {"failure": [status, message, field, headers]}) for requests that arrived together; the batch
        stops between steps when every one of them was cancelled."""
        requests = [req for req, _ in entries]
        flags = [flag for _, flag in entries]
        answers: list[Any] = [None] * len(requests)
        items, where = [], []
        for i, req in enumerate(requests):
            try:
                files = self.runner.resolve(req)
                items.append((self.runner.resolve_job_files(req), files))
                where.append(i)
            except RequestError as err:
                answers[i] = err

        def should_stop() -> bool:  # polled between steps from the worker thread; reading an Event's flag is safe
            return all(flag.is_set() for flag in flags)

        for i, answer in zip(where, await asyncio.to_thread(self.runner.run_batch, items, should_stop)):
            answers[i] = answer
        rid = uuid.uuid4().hex
        return [a if isinstance(a, dict) else {"failure": list(job_failure(a, rid))} for a in answers]

    async def health(self) -> dict[str, Any]:
        return {"models": self.label, "loaded": self.runner.loaded()}


@serve.deployment(name="ZImageIngress", num_replicas=1, ray_actor_options={"num_cpus": 0})
class ZImageIngress:
    """Validation, admission, timeouts and errors in front of the model replicas (see the module docstring)."""

    def __init__(self, model_handle, replicas: int, max_ongoing: int, max_queued: int, timeout_s: float,
                 limits: Limits):
        self.model, self.replicas, self.limits, self.timeout_s = model_handle, replicas, limits, timeout_s
        self.capacity = replicas * max_ongoing + max_queued
        self.outstanding = 0
        self.durations: collections.deque[float] = collections.deque(maxlen=RECENT)
        self.counts: collections.Counter[str] = collections.Counter()

    def retry_after(self) -> int:
        mean = sum(self.durations) / len(self.durations) if self.durations else 10.0
        return max(1, math.ceil(mean * self.outstanding / max(1, self.replicas)))

    def _error(self, status: int, message: str, field: str | None, rid: str,
               headers: dict[str, str] | None = None) -> JSONResponse:
        self.counts[str(status)] += 1
        return JSONResponse(error_body(message, field, rid), status_code=status,
                            headers={"X-Request-Id": rid, **(headers or {})})

    async def __call__(self, request: Request) -> JSONResponse:
        rid = uuid.uuid4().hex
        path = request.url.path.rstrip("/") or "/"
        if path == "/health" and request.method == "GET":
            return JSONResponse(await self._health())
        if path != "/generate":
            return self._error(404, f"no route {path}; use POST /generate or GET /health.", None, rid)
        if request.method != "POST":
            return self._error(405, "use POST for /generate.", None, rid, {"Allow": "POST"})
        try:
            req = parse_request(await self._read_json(request), self.limits)
        except RequestError as err:
            return self._error(err.status, err.message, err.field, rid)
        if self.outstanding >= self.capacity:
            return self._error(503, f"the queue is full ({self.outstanding} requests in flight); retry later.", None,
                               rid, {"Retry-After": str(self.retry_after())})
        return await self._forward(req, rid)

    async def _read_json(self, request: Request) -> object:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise RequestError("send the body as JSON with Content-Type: application/json.", "body", 415)
        raw = await request.body()
        if len(raw) > self.limits.max_body:
            raise RequestError(f"the request body is {len(raw)} bytes; the limit is {self.limits.max_body}.", "body",
                               413)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RequestError("the body is not valid UTF-8 JSON.", "body") from None

    async def _forward(self, req, rid: str) -> JSONResponse:
        import ray.exceptions

        self.outstanding += 1
        started = time.perf_counter()
        response = self.model.generate.remote(req)
        try:
            answer = await asyncio.wait_for(response, self.timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            return self._error(504, f"the request did not finish within {self.timeout_s:g} s; it was cancelled.",
                               None, rid)
        except asyncio.CancelledError:  # the client hung up: drop its work
            response.cancel()
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                serve.exceptions.RayServeException) as err:
            log.warning("request %s: the model replica failed (%s)", rid, type(err).__name__)
            return self._error(503, "the model replica serving this request stopped; Ray is starting a new one. Retry "
                               "shortly.", None, rid, {"Retry-After": "5"})
        finally:
            self.outstanding -= 1
        if "failure" in answer:
            status, message, field, headers = answer["failure"]
            return self._error(status, message, field, rid, headers)
        self.durations.append(time.perf_counter() - started)
        self.counts["200"] += 1
        return JSONResponse({**answer, "request_id": rid, "warnings": req.warnings}, headers={"X-Request-Id": rid})

    async def _health(self) -> dict[str, Any]:
        """The ingress's own figures at once; a replica's (models, loaded parts) when one answers within a second —
        busy replicas hold requests, and health must not wait behind them."""
        response = self.model.health.remote()
        try:
            replica = await asyncio.wait_for(response, 1.0)
        except asyncio.TimeoutError:
            response.cancel()
            replica = {"loaded": "busy"}
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        return {"status": "ok", "replicas": self.replicas, "outstanding": self.outstanding,
                "capacity": self.capacity, "counts": dict(self.counts),
                "mean_job_s": round(mean, 3) if mean is not None else None, **replica}


def build_app(models: str, *, replicas: int = 1, max_batch_size: int = 4, batch_wait_s: float = 0.05,
              max_queued: int = 8, timeout_s: float = 600.0, device: str | None = None,
              gpus_per_replica: float | None = None, cpus_per_replica: float = 1.0,
              limits: Limits | None = None, **runner_options: Any) -> serve.Application:
    """The Serve application: `replicas` model replicas (one GPU each when this machine has GPUs and device is not
    'cpu'; gpus_per_replica overrides) and the ingress. runner_options go to service.runner.build_runner
    (tokenizer, model_options, route_options, folders)."""
    if gpus_per_replica is None:
        import torch

        gpus_per_replica = 1.0 if (device != "cpu" and torch.cuda.is_available()) else 0.0
    max_ongoing = max(1, 2 * max_batch_size)  # a batch running and the next one gathering
    model = ZImageModel.options(
        num_replicas=replicas, max_ongoing_requests=max_ongoing, health_check_timeout_s=120,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
    ).bind(str(models), {"device": device, **runner_options}, max_batch_size, batch_wait_s)
    capacity = replicas * max_ongoing + max_queued
    # the ingress only awaits: it must hold every admitted request and still answer /health and the 503s
    ingress = ZImageIngress.options(max_ongoing_requests=capacity + 64)
    return ingress.bind(model, replicas, max_ongoing, max_queued, timeout_s, limits or Limits())


def app_builder(args: dict[str, str]) -> serve.Application:
    """For `serve run zimage_core.service.ray_serve:app_builder models=... replicas=...` and Serve config files."""
    numbers = {"replicas": int, "max_batch_size": int, "batch_wait_s": float, "max_queued": int, "timeout_s": float,
               "gpus_per_replica": float, "cpus_per_replica": float}
    kwargs = {k: numbers[k](v) if k in numbers else v for k, v in args.items()}
    return build_app(kwargs.pop("models"), **kwargs)


def serve_with_ray(models: str, *, host: str = "127.0.0.1", port: int = 8190, num_cpus: int | None = None,
                   **options: Any) -> None:
    """`zimage serve --ray`: a local Ray, the application on host:port, until interrupted."""
    import os

    import ray

    # Serve's proxy gets 5 s to start by default: too short on a machine busy loading models
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(models, **options), name="zimage", route_prefix="/")
    log.info("Z-Image API on Ray Serve at http://%s:%d (POST /generate, GET /health); Ctrl+C stops it.", host, port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


__all__ = ["ZImageIngress", "ZImageModel", "app_builder", "build_app", "serve_with_ray"]
