"""The FastAPI application: REST under /api/v1, live events on /api/v1/ws, metrics at /metrics."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

import sqlalchemy as sa
from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse

from backend.api.deps import Authorized, WebSocketRefused
from backend.api.middleware import LoginThrottle, SecureHeaders
from backend.api.routes import alerts, auth, devices, events, gateways, health, live, messages, meta, officers, users
from backend.exceptions import Conflict, NotFound
from backend import dashboard
from backend.app.config import BackendSettings
from backend.app.runtime import Runtime
from backend.identity.auth import ActiveAccounts, LiveTickets
from backend.api.routes import audit as audit_routes, privacy, vitals

log = logging.getLogger("vigil.backend")


def create_app(settings: BackendSettings | None = None) -> FastAPI:
    settings = settings or BackendSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime(settings)
        app.state.runtime = runtime
        # its failure is kept in runtime.fatal and sets runtime.dead: the server stops (server.py)
        task = asyncio.create_task(runtime.run_until_failed(), name="vigil-runtime")
        with contextlib.suppress(OSError, asyncio.TimeoutError, sa.exc.DBAPIError):
            # tokens checkable from the start, and while the database is away later
            await asyncio.wait_for(app.state.accounts.reload(runtime.engine), 5)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runtime.close()

    # /docs is served from local files by the dashboard (backend/dashboard/pages.py): no CDN
    app = FastAPI(title="Vigil", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Officer-safety alerts. Biometric data serves officer safety only.")
    # Every router goes through ``authorize``: the access table (backend/api/access.py) decides.
    for module in (health, auth, users, officers, devices, gateways, alerts, messages, events, live, meta):
        app.include_router(module.router, dependencies=Authorized, responses=REFUSALS)  # paths carry /api/v1 themselves
    for router in (privacy.router, vitals.router, audit_routes.router):  # purpose-checked by require_access
        app.include_router(router, prefix="/api/v1", responses=REFUSALS)
    app.include_router(health.metrics_router, dependencies=Authorized)
    _error_answers(app)
    # hardening (backend/api/middleware.py): secure headers on every answer, sign-in throttling
    app.add_middleware(SecureHeaders)
    app.state.login_throttle = LoginThrottle(settings.login_max_failures, settings.login_max_failures_per_address,
                                             settings.login_window_s)
    # identity (backend/identity/auth.py): the accounts tokens may act for, the live feed's tickets
    app.state.accounts = ActiveAccounts(settings.registry_refresh_s)
    app.state.live_tickets = LiveTickets(settings.live_ticket_ttl_s)
    dashboard.install(app, settings.map_tile_url)  # the web pages and /static; the pages fetch everything from /api/v1
    _bearer_in_openapi(app)
    return app


# What every route may answer besides its own: documented once, for every route (issue 21).
REFUSALS = {
    401: {"description": "no token, or one that expired or was revoked (sign in: POST /api/v1/auth/token)"},
    403: {"description": "refused for this role or purpose; the detail gives the reason, the policy rule and the audit entry"},
}


def _bearer_in_openapi(app: FastAPI) -> None:
    """The OpenAPI document declares the bearer token the routes take (the access table checks it)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "a person's token from POST /api/v1/auth/token, or a gateway's API token"}}
            schema["security"] = [{"bearer": []}]
            for path, operations in schema.get("paths", {}).items():
                if "{" in path:  # a route naming one record answers 404 when it is not the caller's agency's
                    for op in operations.values():
                        op.setdefault("responses", {}).setdefault(
                            "404", {"description": "no such record in the caller's agency (the refusal is audited)"})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _error_answers(app: FastAPI) -> None:
    """Backend errors mapped to HTTP at the boundary."""

    @app.exception_handler(WebSocketRefused)
    async def _websocket_refused(websocket: WebSocket, exc: WebSocketRefused) -> None:
        await websocket.accept()
        await websocket.close(exc.code, exc.reason[:120])  # a close frame's reason holds 123 bytes

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _bad_argument(request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        # a value the database cannot take (an id beyond its column's range): the caller's error
        if "invalid input for query argument" in str(exc.orig):
            return JSONResponse({"detail": [{"loc": ["path"], "msg": "a value is out of range", "type": "value_error"}]},
                                status_code=422)
        return await _storage_down(request, exc)

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    @app.exception_handler(OSError)
    async def _storage_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the database is unavailable; live alerts still flow on /api/v1/ws and /api/v1/events"},
                            status_code=503)
