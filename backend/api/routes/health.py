from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest, CONTENT_TYPE_LATEST

from backend.api.access import API
from backend.api.deps import PUBLIC_OPERATION, RuntimeDep

router = APIRouter(prefix=API, tags=["health"])

# Ingest may be away from the broker this long (a restart, a broker blip) before health fails.
INGEST_GRACE_S = 10.0
# Privacy start-up (grants, the policy in force) may take this long before health fails: until it
# is done, retention and the audit outbox do not run.
PRIVACY_GRACE_S = 30.0
# The broker's control topic may be unreachable this long (a broker restart) before health fails;
# ``broker_admin`` in the body says so from the first failure.
BROKER_ADMIN_GRACE_S = 30.0


def problems(runtime) -> list[str]:
    """What keeps this backend from paging reliably right now (empty: healthy)."""
    out = []
    if runtime.dead.is_set():
        out.append(f"the backend's tasks stopped: {runtime.fatal}")
    for task, why in sorted(runtime.supervisor.down.items()):
        out.append(f"task {task} is down ({why}); restarting it")
    since = runtime.ingest.disconnected_since
    if since is not None and time.monotonic() - since > INGEST_GRACE_S:
        out.append(f"ingest has had no broker connection for {time.monotonic() - since:.0f} s")
    if not runtime.privacy.ready.is_set() and time.monotonic() - runtime.started > PRIVACY_GRACE_S:
        out.append("privacy start-up has not completed: retention and the audit outbox are not running")
    if runtime.broker_admin is not None:
        out.extend(runtime.broker_admin.problems(BROKER_ADMIN_GRACE_S))
    if runtime.alerts.pending:
        out.append(f"{runtime.alerts.pending} alert(s) not yet stored: the database is not taking writes")
    return out


@router.get("/health", summary="Liveness and the state of the broker and database links",
            responses={503: {"description": "something keeps the backend from paging reliably; `problems` says what"}},
            openapi_extra=PUBLIC_OPERATION)
async def health(runtime: RuntimeDep) -> JSONResponse:
    found = problems(runtime)
    body = {
        "status": "ok" if not found else "failing",
        "problems": found,
        "broker_connected": runtime.ingest.connected.is_set(),
        "devices_loaded": runtime.registry.loaded,
        "storage_mode": runtime.storage_mode,
        "alerts_pending_storage": runtime.alerts.pending,
        "dead_letters": runtime.dead_letters.total,
        "privacy_ready": runtime.privacy.ready.is_set(),
        # the broker's dynamic security (None: this backend does not administer the broker)
        "broker_admin": runtime.broker_admin.state() if runtime.broker_admin is not None else None,
    }
    return JSONResponse(body, status_code=503 if found else 200)


metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response, openapi_extra=PUBLIC_OPERATION)
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
