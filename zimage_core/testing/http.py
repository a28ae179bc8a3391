"""Run an aiohttp app on a real loopback socket in a background thread (tests, notebooks), through the same
`start_site` the `serve` command uses: `with BackgroundServer(app) as server: ... server.url ...`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from aiohttp import web

from ..service.app import start_site


class BackgroundServer:
    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0, **site_options: Any):
        self.app, self.host, self.port, self.site_options = app, host, port, site_options
        self.site = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        ready: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                runner, self.site = loop.run_until_complete(start_site(self.app, self.host, self.port,
                                                                       **self.site_options))
                self.port = self.site.bound_port
            except BaseException as err:  # noqa: BLE001
                ready.set_exception(err)
                return
            ready.set_result(True)
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="zimage-api", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BackgroundServer"]


def file_gated_route(bundle, job, *, should_stop, gate: str, **kwargs):
    """The real route, held until the file `gate` exists: a slow server whose slowness a test controls (across
    processes, e.g. Ray replicas), instead of racing the clock."""
    import time
    from pathlib import Path

    from ..errors import Interrupted
    from ..pipeline import generate_route

    while not Path(gate).exists():
        if should_stop():
            raise Interrupted("stopped while held at the gate.")
        time.sleep(0.02)
    return generate_route(bundle, job, should_stop=should_stop, **kwargs)

