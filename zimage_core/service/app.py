"""The headless HTTP API (aiohttp, no ComfyUI): `POST /generate` and `GET /health`.

Answer (200): `{"image": <base64 JPEG>, "width", "height", "seed", "timing_report": {stage: seconds},
"request_id", "notes", "warnings"}`. Several prompts run as one batch (prompt i gets seed + i): "image" is the
first prompt's image and, only then, "images" lists every image in prompt order with their "seeds".

Every error is JSON: `{"error": "...", "field": "<request field or null>", "request_id": "..."}`. Status codes:
400 invalid request, 403 Host/Origin not allowed, 408 body not received in time, 413 body over `max_body`, 415 not
JSON, 503 queue full (with a measured Retry-After) or shutting down, 504 per-request timeout (the job is
cancelled), 500 unexpected failure. Messages never show server paths (the server log keeps them).

Who may call it: the API has no authentication. Bound to a loopback address (the default) it answers only
requests whose Host header is a loopback name, and refuses requests a web page sends from another origin (a
browser adds an Origin header), so a page you visit can neither post jobs nor read answers through DNS rebinding.
A client that disconnects cancels its job (queued: dropped at once; running: stopped at its next step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from aiohttp import web

from ..pipeline import generate_route, plan_route
from .answers import job_failure, redact
from .connections import DEFAULT_HEADER_TIMEOUT_S, GuardedSite, track_requests
from .jobs import Job, JobQueue, QueueFull, ShuttingDown
from .request import Limits, RequestError, parse_request
from .runner import GenerationRunner, RouteFn, build_runner

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
BODY_TIMEOUT_S = 30.0
KEEPALIVE_S = 15.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class Service:
    """What the handlers share: the queue, the runner, the limits and the access policy."""

    queue: JobQueue
    runner: GenerationRunner
    limits: Limits
    timeout_s: float | None
    models_label: str
    allowed_hosts: frozenset[str] | None  # None: any Host (the server was exposed on purpose)
    body_timeout_s: float = BODY_TIMEOUT_S


SERVICE = web.AppKey("zimage_service", Service)


def _error(status: int, message: str, field: str | None, request_id: str | None,
           headers: dict[str, str] | None = None) -> web.Response:
    hdrs = dict(headers or {})
    if request_id:
        hdrs["X-Request-Id"] = request_id
    return web.json_response({"error": redact(message), "field": field, "request_id": request_id}, status=status,
                             headers=hdrs)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _host_name(value: str) -> str:
    """'localhost:8190' → 'localhost', '[::1]:8190' → '::1' (lower-case)."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own 404/405/413 answers are text; make every error JSON like ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        field = "body" if exc.status == 413 else None
        return _error(exc.status, exc.reason if exc.status != 413 else "the request body is too large.", field,
                      None, {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")})


@web.middleware
async def access_guard(request: web.Request, handler) -> web.StreamResponse:
    """Host and Origin checks (see the module docstring)."""
    allowed = request.app[SERVICE].allowed_hosts
    host = _host_name(request.host)
    if allowed is not None and host not in allowed:
        return _error(403, f"Host '{request.host}' is not allowed: this API answers {', '.join(sorted(allowed))} "
                      "(serve with --host/--allow-host to change that).", None, None)
    origin = request.headers.get("Origin")
    if origin is not None:
        origin_host = _host_name(urlsplit(origin).netloc) if origin != "null" else ""
        same_site = origin_host in allowed if allowed is not None else origin_host == host
        if not same_site:
            return _error(403, f"cross-origin requests are refused (Origin {origin[:80]}); call the API from a "
                          "program, not from a web page of another site.", None, None)
    return await handler(request)


async def _read_json(request: web.Request, limits: Limits, body_timeout_s: float) -> object:
    if request.content_type != "application/json":
        raise RequestError(f"send the body as JSON with Content-Type: application/json (got "
                           f"'{request.content_type}').", "body", 415)
    if request.content_length is not None and request.content_length > limits.max_body:
        raise RequestError(f"the request body is {request.content_length} bytes; the limit is {limits.max_body}.",
                           "body", 413)
    try:
        raw = await asyncio.wait_for(request.read(), body_timeout_s)  # client_max_size stops chunked bodies too
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"the request body is larger than the limit of {limits.max_body} bytes.", "body",
                           413) from None
    except asyncio.TimeoutError:
        raise RequestError(f"the request body did not arrive within {body_timeout_s:g} s.", "body", 408) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("the body is not valid UTF-8 JSON.", "body") from None


def _job_error(err: BaseException, rid: str) -> web.Response:
    """The answer for a job that failed (full detail goes to the server log, a redacted line to the client)."""
    status, message, field, headers = job_failure(err, rid)
    return _error(status, message, field, rid, headers)


async def handle_generate(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    rid = _request_id(request)
    try:
        req = parse_request(await _read_json(request, svc.limits, svc.body_timeout_s), svc.limits,
                            svc.runner.work_max)
        files = svc.runner.resolve(req)
        req = svc.runner.resolve_job_files(req)
        job = Job(rid, (req, files), asyncio.get_running_loop().create_future())
        svc.queue.submit(job)
    except RequestError as err:
        return _error(err.status, err.message, err.field, rid)
    except QueueFull as err:
        return _error(503, str(err), None, rid, {"Retry-After": str(svc.queue.retry_after())})
    except ShuttingDown as err:
        return _error(503, str(err), None, rid)
    try:
        payload = await asyncio.wait_for(asyncio.shield(job.future), svc.timeout_s)
    except asyncio.TimeoutError:
        svc.queue.cancel(job, "timed_out")
        return _error(504, f"the request did not finish within {svc.timeout_s:g} s; it was cancelled.", None, rid)
    except asyncio.CancelledError:  # the client went away: drop its job so the GPU serves the others
        svc.queue.cancel(job, "disconnected")
        raise
    except BaseException as err:  # noqa: BLE001 - every outcome becomes one JSON answer
        return _job_error(err, rid)
    payload = {**payload, "request_id": rid, "warnings": req.warnings}
    return web.json_response(payload, headers={"X-Request-Id": rid})


async def handle_health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    q = svc.queue
    return web.json_response({"status": "stopping" if q.stopping else "ok", "queue": q.waiting,
                              "queue_size": q.max_queued, "busy": q.busy is not None, "models": svc.models_label,
                              "loaded": svc.runner.loaded(), "counts": dict(q.counts),
                              "mean_job_s": round(q.mean_job_s(), 3) if q.measured else None})


def create_app(models: str | os.PathLike | Callable[[], Any], *, queue_size: int = 8, max_body: int = 1 << 20,
               timeout_s: float | None = 600.0, device: str | None = None, limits: Limits | None = None,
               route_options: dict[str, Any] | None = None, heavy_dirs: list[str | os.PathLike] | None = None,
               face_dirs: list[str | os.PathLike] | None = None, lora_dirs: list[str | os.PathLike] | None = None,
               control_dirs: list[str | os.PathLike] | None = None, route: RouteFn = generate_route,
               preload: bool = False, tokenizer: str | os.PathLike | None = None,
               allowed_hosts: set[str] | None = LOOPBACK_NAMES, body_timeout_s: float = BODY_TIMEOUT_S,
               model_options: dict[str, Any] | None = None) -> web.Application:
    """The aiohttp application.

    models: a ComfyUI models/ folder or a diffusers folder (files are checked now, weights load on the first job),
        or a callable returning a ModelBundle (called in the worker thread).
    route_options: server-side settings passed to `generate_route` (scale, work_max, heavy_ratio, heavy_options,
        face_fidelity), e.g. a smaller working size for CPU smoke tests.
    heavy_dirs/face_dirs/lora_dirs/control_dirs: the only folders request file names may come from (default
        <models>/upscale_models, <models>/facerestore_models, <models>/loras and <models>/model_patches +
        <models>/controlnet for a folder). route: injectable for tests and alternative pipelines.
    preload: load every model part at start-up (health shows busy until done) so the first request is not slow.
    allowed_hosts: Host names the API answers (default: loopback names); None answers any Host.
    body_timeout_s: a request body must arrive within this many seconds (408 otherwise).
    model_options: storage / memory / resident_blocks for load_models (weight format and offload).
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive or None; got {timeout_s}.")
    limits = limits or Limits(max_body=max_body)
    options = dict(route_options or {})
    runner, label = build_runner(models, device=device, tokenizer=tokenizer, model_options=model_options,
                                 route_options=options, route=route, heavy_dirs=heavy_dirs, face_dirs=face_dirs,
                                 lora_dirs=lora_dirs, control_dirs=control_dirs)
    plan_route(64, 64, scale=options.get("scale", 4.0), work_max=runner.work_max)  # bad options fail now
    queue = JobQueue(lambda job: runner.run(*job.payload, should_stop=job.should_stop), max_queued=queue_size,
                     on_start=runner.preload if preload else None, name="zimage-gpu")
    app = web.Application(client_max_size=limits.max_body, middlewares=[track_requests, json_errors, access_guard])
    app[SERVICE] = Service(queue, runner, limits, timeout_s, label,
                           frozenset(h.lower() for h in allowed_hosts) if allowed_hosts is not None else None,
                           body_timeout_s)
    app.router.add_post("/generate", handle_generate)
    app.router.add_get("/health", handle_health)

    async def _start(_app: web.Application) -> None:
        await queue.start()

    async def _stop(_app: web.Application) -> None:
        await queue.stop()

    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)
    return app


HANDLER_KWARGS: dict[str, Any] = {"keepalive_timeout": KEEPALIVE_S, "access_log": None}


async def start_site(app: web.Application, host: str, port: int, *, max_connections: int | None = None,
                     header_timeout: float = DEFAULT_HEADER_TIMEOUT_S) -> tuple[web.AppRunner, GuardedSite]:
    """Start `app` on host:port with handler cancellation (a client that hangs up cancels its handler) and the
    connection guard. Returns the runner (call `cleanup()` to stop) and the site (its `bound_port`)."""
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, **HANDLER_KWARGS)
    await runner.setup()
    site = GuardedSite(runner, host, port, handler_kwargs=HANDLER_KWARGS, max_connections=max_connections,
                       header_timeout=header_timeout)
    await site.start()
    return runner, site


def serve(models: str | os.PathLike | Callable[[], Any], host: str = "127.0.0.1", port: int = 8190,
          queue_size: int = 8, device: str | None = None, *, allow_hosts: list[str] | None = None,
          max_connections: int | None = None, **options: Any) -> None:
    """Run the API until interrupted. Loopback by default: there is no authentication, so expose it on purpose."""
    loopback = host in LOOPBACK_NAMES
    if not loopback:
        log.warning("Serving on %s: the API has no authentication; put it behind a proxy you control.", host)
    allowed = (set(LOOPBACK_NAMES) | set(allow_hosts or ())) if loopback else (set(allow_hosts) if allow_hosts
                                                                               else None)
    app = create_app(models, queue_size=queue_size, device=device, allowed_hosts=allowed, **options)

    async def main() -> None:
        runner, site = await start_site(app, host, port, max_connections=max_connections)
        log.info("Z-Image API on %s (POST /generate, GET /health); Ctrl+C stops it.", site.name)
        stop = asyncio.Event()
        # SIGTERM (docker stop, systemd) stops it cleanly; Windows event loops have no signal handlers, and there
        # Ctrl+C stops it through the KeyboardInterrupt below
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


__all__ = ["create_app", "serve", "start_site", "redact", "SERVICE", "LOOPBACK_NAMES", "Service"]
