"""Run the backend's HTTP server in-process (for ``vigil backend run``, the demo and tests)."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import uvicorn

from backend.app.config import BackendSettings
from backend.api.app import create_app
from backend.app.runtime import Runtime


@dataclass
class RunningBackend:
    url: str
    server: uvicorn.Server
    app: object

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime


@contextlib.asynccontextmanager
async def serve(settings: BackendSettings, log_level: str = "warning"):
    """Start the backend on settings.http_host:http_port; stop it on exit."""
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level=log_level, lifespan="on", ws="websockets-sansio",
                            # the client's address is the peer's: X-Forwarded-For counts only from configured
                            # proxies (backend/api/middleware.py client_address), never from uvicorn's loopback default
                            proxy_headers=False,
                            ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the caller owns signals
    task = asyncio.create_task(server.serve(), name="uvicorn")
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
        await asyncio.sleep(0.02)
    runtime: Runtime = app.state.runtime

    async def stop_when_dead() -> None:  # never an API serving on while its tasks are dead
        await runtime.dead.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_dead(), name="stop-when-dead")
    try:
        scheme = "https" if settings.ssl_certfile else "http"
        yield RunningBackend(f"{scheme}://{settings.http_host}:{settings.http_port}", server, app)
    finally:
        watcher.cancel()
        server.should_exit = True
        await task
