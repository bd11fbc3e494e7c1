from __future__ import annotations

import asyncio
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, WebSocket, WebSocketDisconnect

from backend.api.deps import Caller, RuntimeDep, require_role, websocket_caller
from backend.exceptions import AuthError

router = APIRouter(tags=["alerts"])

Supervisor = Annotated[Caller, require_role("supervisor")]


@router.get("/alerts", summary="Alerts of the caller's agency, newest first")
async def list_alerts(runtime: RuntimeDep, caller: Supervisor, limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    try:
        return await runtime.alerts.list_alerts(caller.agency_id, limit)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(503, "alert history is unavailable while the database is down; live alerts still flow on the WebSocket") from exc


@router.websocket("/ws")
async def live(websocket: WebSocket, last_event_id: int | None = None) -> None:
    """Live alert and officer-status events of the caller's agency. Resume with ?last_event_id=."""
    try:
        caller = websocket_caller(websocket)
    except AuthError as exc:
        await websocket.close(code=4401, reason=str(exc))
        return
    if caller.role != "supervisor":
        await websocket.close(code=4403, reason="supervisors only")
        return
    await websocket.accept()
    hub = websocket.app.state.runtime.hub
    sub, backlog = hub.subscribe(caller.agency_id, last_event_id)

    async def push() -> None:
        for event in backlog:
            await websocket.send_json(event)
        while True:
            await websocket.send_json(await sub.next())

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
