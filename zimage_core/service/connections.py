"""Connection hygiene for the HTTP API: a cap on open connections, a deadline for a request's header, and JSON
answers to malformed HTTP — none of which aiohttp's own TCP site does.

Why: each idle socket costs a file descriptor; past the process limit `accept()` fails, the server can no longer
answer anyone (not even /health) and the log fills with errors. So:
  * at most `max_connections` are open; a new connection over the cap closes the longest-idle one (no request in
    progress), or, when every connection is busy, gets a one-line JSON 503 and is closed;
  * a connection must deliver a complete request header within `header_timeout` seconds of opening or of its
    previous response (slow-header and idle clients are closed);
  * malformed HTTP gets a JSON error body like every other error, logged as one line (no traceback).
Composed from aiohttp's public classes (a site and a request-handler subclass); nothing in aiohttp is patched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT_S = 15.0
SWEEP_INTERVAL_S = 0.5


def default_max_connections() -> int:
    """Half of the process's file-descriptor limit (the rest is for model files, logs and the GPU driver), at most
    256."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(4, min(256, soft // 2))


def _json_bytes(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message, "field": None, "request_id": None}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


class _Refused(asyncio.Protocol):
    """Answers a connection over the cap with a JSON 503 and closes it without reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_json_bytes(503, "Service Unavailable", "too many open connections; retry shortly."))  # type: ignore[attr-defined]
        transport.close()


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's request handler that reports to a ConnectionGuard and answers protocol errors with JSON."""

    def __init__(self, guard: "ConnectionGuard", manager: web.Server, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.in_flight = 0
        self.idle_since = time.monotonic()
        self.peer_transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer_transport = transport  # type: ignore[assignment]
        self.guard.opened(self)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def request_started(self) -> None:
        self.in_flight += 1

    def request_finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.idle_since = time.monotonic()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            text = "internal error while reading the request."
        else:
            text = f"malformed HTTP request: {getattr(exc, 'message', None) or message or exc or 'bad request'}"
            log.info("%s from %s", text, request.remote)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        resp = web.json_response({"error": text, "field": None, "request_id": None}, status=status)
        resp.force_close()
        return resp


class ConnectionGuard:
    """The protocol factory of a GuardedSite: creates request handlers, counts them and sweeps out slow ones."""

    def __init__(self, server: web.Server, handler_kwargs: dict[str, Any], *, max_connections: int,
                 header_timeout: float):
        if max_connections < 1 or header_timeout <= 0:
            raise ValueError("max_connections must be ≥ 1 and header_timeout > 0.")
        self.server, self.handler_kwargs = server, handler_kwargs
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.open: dict[GuardedRequestHandler, None] = {}  # insertion order = age
        self.refused = 0
        self.timed_out = 0
        self._sweeper: asyncio.Task | None = None

    def __call__(self) -> asyncio.Protocol:
        if len(self.open) >= self.max_connections and not self._evict_idle():
            self.refused += 1
            return _Refused()
        return GuardedRequestHandler(self, self.server, loop=asyncio.get_running_loop(), **self.handler_kwargs)

    def _evict_idle(self) -> bool:
        for handler in self.open:  # oldest first
            if handler.in_flight == 0 and handler.peer_transport is not None:
                handler.peer_transport.close()
                self.open.pop(handler, None)
                return True
        return False

    def opened(self, handler: GuardedRequestHandler) -> None:
        self.open[handler] = None

    def closed(self, handler: GuardedRequestHandler) -> None:
        self.open.pop(handler, None)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="zimage-connection-sweeper")

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            deadline = time.monotonic() - self.header_timeout
            for handler in list(self.open):
                if handler.in_flight == 0 and handler.idle_since < deadline and handler.peer_transport is not None:
                    self.timed_out += 1
                    handler.peer_transport.close()
                    self.open.pop(handler, None)


@web.middleware
async def track_requests(request: web.Request, handler) -> web.StreamResponse:
    """Marks the connection busy while a request is handled (so the guard never closes it mid-request)."""
    protocol = request.protocol
    if isinstance(protocol, GuardedRequestHandler):
        protocol.request_started()
        try:
            return await handler(request)
        finally:
            protocol.request_finished()
    return await handler(request)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ConnectionGuard (use instead of web.TCPSite)."""

    __slots__ = ("_host", "_port", "_guard", "_guard_options", "bound_port")

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, handler_kwargs: dict[str, Any],
                 max_connections: int | None = None, header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
                 backlog: int = 128):
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._guard_options = dict(handler_kwargs=handler_kwargs, header_timeout=header_timeout,
                                   max_connections=max_connections or default_max_connections())
        self._guard: ConnectionGuard | None = None
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port}"

    @property
    def guard(self) -> ConnectionGuard | None:
        return self._guard

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._guard = ConnectionGuard(server, **self._guard_options)
        self._server = await asyncio.get_running_loop().create_server(self._guard, self._host, self._port,
                                                                      backlog=self._backlog)
        self.bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
        self._guard.start()

    async def stop(self) -> None:
        if self._guard is not None:
            self._guard.stop()
        await super().stop()


__all__ = ["ConnectionGuard", "GuardedRequestHandler", "GuardedSite", "default_max_connections", "track_requests",
           "DEFAULT_HEADER_TIMEOUT_S"]
