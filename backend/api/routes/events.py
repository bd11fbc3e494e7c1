from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.api.routes.alerts import deliver
from backend.incidents.hub import FellBehind

router = APIRouter(prefix=API, tags=["live"])

# A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0


@router.get("/events", summary="Server-sent events: alert changes and officer status (resume with Last-Event-ID)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "id:, event: and data: lines per event"}})
async def events(runtime: RuntimeDep, caller: CallerDep,
                 last_event_id: str | None = Header(None, description="the last id the client saw; events after it are replayed"),
                 after: int | None = Query(None, description="the same as Last-Event-ID, for clients that cannot set headers")) -> StreamingResponse:
    resume = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
    sub, backlog = runtime.hub.subscribe(caller.agency_id, resume)

    async def stream():
        try:
            yield "retry: 2000\n\n"
            for event in backlog:
                yield _frame(event)
                await deliver(runtime, event, caller.subject)
            while True:
                try:
                    event = await asyncio.wait_for(sub.next(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                except FellBehind as exc:  # said, then the stream ends; the client resumes with Last-Event-ID
                    yield f"event: closed\ndata: {json.dumps({'reason': str(exc)})}\n\n"
                    return
                yield _frame(event)
                await deliver(runtime, event, caller.subject)
        finally:
            sub.close()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _frame(event: dict) -> str:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event['data'], separators=(',', ':'))}\n\n"
