"""The FastAPI application: REST under /api/v1, live events on /api/v1/ws, metrics at /metrics."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from backend.api.routes import alerts, health
from backend.core.config import BackendSettings
from backend.runtime import Runtime

log = logging.getLogger("vigil.backend")


def create_app(settings: BackendSettings | None = None) -> FastAPI:
    settings = settings or BackendSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime(settings)
        app.state.runtime = runtime
        task = asyncio.create_task(runtime.run(), name="vigil-runtime")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await runtime.close()

    app = FastAPI(title="Vigil", version="0.1.0", lifespan=lifespan,
                  description="Officer-safety alerts. Biometric data serves officer safety only.")
    app.include_router(health.router, prefix="/api/v1")
    app.include_router(alerts.router, prefix="/api/v1")
    app.include_router(health.metrics_router)
    return app
