from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import generate_latest, CONTENT_TYPE_LATEST

from backend.api.access import API
from backend.api.deps import RuntimeDep

router = APIRouter(prefix=API, tags=["health"])


@router.get("/health", summary="Liveness and the state of the broker and database links")
async def health(runtime: RuntimeDep) -> dict:
    return {
        "status": "ok",
        "broker_connected": runtime.ingest.connected.is_set(),
        "devices_loaded": runtime.registry.loaded,
        "storage_mode": runtime.storage_mode,
        "alerts_pending_storage": runtime.alerts.pending,
    }


metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
