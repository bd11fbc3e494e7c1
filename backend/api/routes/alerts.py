from __future__ import annotations

import asyncio
import uuid
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from backend.incidents.rules import OUTCOMES
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep

router = APIRouter(prefix=API, tags=["alerts"])


class AcknowledgeIn(BaseModel):
    note: str = Field("", max_length=500)


class ResolveIn(BaseModel):
    outcome: Literal[OUTCOMES]  # type: ignore[valid-type]
    note: str = Field("", max_length=500)


def _own(caller) -> int | None:
    """Officers see only their own alerts; everyone else the whole agency."""
    return caller.officer_id if caller.role == "officer" else None


@router.get("/alerts", summary="Alerts of the caller's agency, newest first (an officer: their own)")
async def list_alerts(runtime: RuntimeDep, caller: CallerDep, limit: int = Query(100, ge=1, le=1000),
                      open: bool = Query(False, description="only incidents not yet resolved")) -> list[dict]:
    if caller.role == "officer" and caller.officer_id is None:
        return []
    try:
        return await runtime.alerts.list_alerts(caller.agency_id, limit, officer_id=_own(caller), open_only=open)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(503, "alert history is unavailable while the database is down; live alerts still flow on the WebSocket") from exc


@router.get("/alerts/{alert_id}", summary="One alert with every transition (who, when)")
async def get_alert(runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID) -> dict:
    if caller.role == "officer" and caller.officer_id is None:
        raise HTTPException(404, f"alert {alert_id}")
    return await runtime.alerts.get_alert(caller.agency_id, alert_id, _own(caller))


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge: the officer's device is told help is coming")
async def acknowledge(runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID, body: AcknowledgeIn | None = None) -> dict:
    incident = await runtime.alerts.acknowledge(alert_id, f"user:{caller.subject}", caller.agency_id, (body or AcknowledgeIn()).note)
    return incident.public()


@router.post("/alerts/{alert_id}/resolve", summary="Resolve with an outcome")
async def resolve(runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID, body: ResolveIn) -> dict:
    incident = await runtime.alerts.resolve(alert_id, f"user:{caller.subject}", caller.agency_id, body.outcome, body.note)
    return incident.public()


async def deliver(runtime, event: dict, subject: str) -> None:
    """After an event went out on a supervisor's connection: a raised alert is now delivered."""
    if event["type"] == "alert" and event["data"].get("state") == "raised":
        await runtime.alerts.mark_delivered(uuid.UUID(event["data"]["id"]), f"user:{subject}")


@router.websocket("/ws")
async def live(websocket: WebSocket, caller: CallerDep, last_event_id: int | None = None) -> None:
    """Live alert and officer-status events of the caller's agency (?token=, resume with ?last_event_id=)."""
    await websocket.accept()
    runtime = websocket.app.state.runtime
    sub, backlog = runtime.hub.subscribe(caller.agency_id, last_event_id)

    async def push() -> None:
        for event in backlog:
            await websocket.send_json(event)
            await deliver(runtime, event, caller.subject)
        while True:
            event = await sub.next()
            await websocket.send_json(event)
            await deliver(runtime, event, caller.subject)

    async def watch_for_close() -> None:
        # The client only reads; receiving is how we learn it went away.
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    try:
        pusher = asyncio.create_task(push())
        watcher = asyncio.create_task(watch_for_close())
        done, pending = await asyncio.wait({pusher, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if not isinstance(task.exception(), (WebSocketDisconnect, type(None))):
                raise task.exception()
    except WebSocketDisconnect:
        pass
    finally:
        sub.close()
