from __future__ import annotations

import time

from fastapi import APIRouter, Request

from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep

router = APIRouter(prefix=f"{API}/live", tags=["live"])


@router.get("/officers", summary="Officers on duty now: device, last seen, battery, open incident (no heart rate)")
async def officers_on_duty(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    """Each as the ``officer_status`` live event describes an officer (backend/detection/status.py)."""
    on_duty = sorted((d for d in runtime.registry.devices.values()
                      if d.agency_id == caller.agency_id and d.officer_id is not None and d.status == "active"),
                     key=lambda d: d.officer_id)
    return [s.to_json() for s in await runtime.status.on_duty(on_duty, time.time())]


@router.post("/ticket", summary="A one-time ticket that opens the live feed: /api/v1/ws?ticket=…")
async def live_ticket(caller: CallerDep, request: Request) -> dict:
    """The WebSocket never carries the access token (its URL would land in access logs); this
    ticket opens one connection, within ``live_ticket_ttl_s``, for the caller who fetched it."""
    tickets = request.app.state.live_tickets
    return {"ticket": tickets.issue(caller), "expires_in": tickets.ttl_s}
