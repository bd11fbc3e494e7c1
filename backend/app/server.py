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
                            ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the caller owns signals
    task = asyncio.create_task(server.serve(), name="uvicorn")
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
        await asyncio.sleep(0.02)
    try:
        scheme = "https" if settings.ssl_certfile else "http"
        yield RunningBackend(f"{scheme}://{settings.http_host}:{settings.http_port}", server, app)
    finally:
        server.should_exit = True
        await task
