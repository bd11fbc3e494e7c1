"""Messages to officers' wearables, felt as haptic patterns (backend/incidents/messages.py), and
where officers are (backend/incidents/nearby.py): supervisors only.

A message is accepted (202) once it is queued for the downlink; its progress (sent, delivered to
the device, confirmed by the officer, or why not) is read back from the list routes, which also
show the "colleague needs help" messages the backend sent for an incident."""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.db import schema as t
from backend.incidents import messages as msg
from backend.incidents.nearby import officer_positions
from backend.privacy import access as gate
from backend.privacy.access import OFFICER_ID_MAX, OfficerId

router = APIRouter(prefix=API, tags=["messages"])

NOT_ON_SHIFT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the officer has no device on shift, or the incident's device is assigned to no one: nothing to send to"}}
DB_DOWN: dict[int | str, dict[str, Any]] = {503: {"description": "the database is down and the answer needs it"}}


_KINDS = "what the officer feels: " + "; ".join(f"{k} = {msg.KIND_LABELS[k][0]} ({msg.KIND_LABELS[k][1]})"
                                                 for k in msg.SUPERVISOR_KINDS)


class MessageIn(BaseModel):
    kind: Literal[msg.SUPERVISOR_KINDS] = Field(description=_KINDS)  # type: ignore[valid-type]
    alert_id: uuid.UUID | None = Field(None, description="the incident the message is about (shown in its timeline)")


class NotOnShift(HTTPException):
    def __init__(self, officer: str):
        super().__init__(409, f"officer {officer} has no device on shift: assign one before sending a message")


def _device_on_shift(runtime, agency_id: str, officer_id: int):
    for d in runtime.registry.devices.values():
        if d.agency_id == agency_id and d.officer_id == officer_id and d.status == "active":
            return d
    return None


async def _alert_of_agency(request: Request, runtime, caller, alert_id: uuid.UUID) -> gate.AlertFacts:
    try:
        found = await gate.alert_facts(runtime, alert_id)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(503, "the incident cannot be looked up while the database is down") from exc
    if found is None or found.agency_id != caller.agency_id:
        raise await gate.refuse_not_found(request, caller, "alert", alert_id, found.agency_id if found else None,
                                          data_class="alerts_incidents")
    return found


async def _officer_of_agency(request: Request, runtime, caller, officer_id: int) -> None:
    """404 unless the officer is the caller's agency's (the registry answers for those on shift)."""
    if officer_id > OFFICER_ID_MAX:
        raise await gate.refuse_not_found(request, caller, "officer", officer_id)
    if _device_on_shift(runtime, caller.agency_id, officer_id) is not None:
        return
    try:
        async with runtime.engine.connect() as conn:
            agency = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).scalar_one_or_none()
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(503, "the officer cannot be looked up while the database is down") from exc
    if agency != caller.agency_id:
        raise await gate.refuse_not_found(request, caller, "officer", officer_id, agency)


def _send(runtime, caller, officer_id: int, body: MessageIn) -> dict:
    device = _device_on_shift(runtime, caller.agency_id, officer_id)
    if device is None:
        raise NotOnShift(str(officer_id))
    message = runtime.downlink.send_message(caller.agency_id, officer_id, device.officer_name, device.device_id, body.kind,
                                            f"user:{caller.subject}", body.alert_id)
    return message.public()


@router.get("/messages/kinds", summary="The messages a supervisor can send, and what the officer feels for each")
async def message_kinds(caller: CallerDep) -> list[dict]:
    return [{"kind": k, "label": msg.KIND_LABELS[k][0], "pattern": msg.KIND_LABELS[k][1], "supervisor": k in msg.SUPERVISOR_KINDS}
            for k in msg.MESSAGE_KINDS]


@router.post("/officers/{officer_id}/messages", status_code=202,
             summary="Send a message to the officer's wearable (a haptic pattern); its progress is in the list",
             responses={**NOT_ON_SHIFT, **DB_DOWN})
async def send_to_officer(request: Request, runtime: RuntimeDep, caller: CallerDep, officer_id: OfficerId,
                          body: MessageIn) -> dict:
    await _officer_of_agency(request, runtime, caller, officer_id)
    if body.alert_id is not None:
        await _alert_of_agency(request, runtime, caller, body.alert_id)
    return _send(runtime, caller, officer_id, body)


@router.get("/officers/{officer_id}/messages", summary="Messages sent to the officer's wearable, newest first, with their progress",
            responses=DB_DOWN)
async def officer_messages(request: Request, runtime: RuntimeDep, caller: CallerDep, officer_id: OfficerId,
                           limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    await _officer_of_agency(request, runtime, caller, officer_id)
    found = await runtime.downlink.messages.listed(caller.agency_id, officer_id=officer_id, limit=limit)
    return [m.public() for m in found]


class IncidentMessageIn(BaseModel):
    kind: Literal[msg.SUPERVISOR_KINDS] = Field(description=_KINDS)  # type: ignore[valid-type]


@router.post("/alerts/{alert_id}/messages", status_code=202,
             summary="Send a message to the wearable of the officer whose incident this is",
             responses={**NOT_ON_SHIFT, **DB_DOWN})
async def send_to_incident(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID,
                           body: IncidentMessageIn) -> dict:
    found = await _alert_of_agency(request, runtime, caller, alert_id)
    if found.officer_id is None:
        raise HTTPException(409, f"alert {alert_id} is from a device assigned to no officer: there is no one to send to")
    return _send(runtime, caller, found.officer_id, MessageIn(kind=body.kind, alert_id=alert_id))


@router.get("/alerts/{alert_id}/messages",
            summary="Messages about this incident: the supervisors' and 'colleague needs help' to officers nearby, "
                    "each sent / delivered / confirmed with times",
            responses=DB_DOWN)
async def incident_messages(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID) -> list[dict]:
    await _alert_of_agency(request, runtime, caller, alert_id)
    found = await runtime.downlink.messages.listed(caller.agency_id, alert_id=alert_id)
    return [m.public() for m in found]


@router.get("/live/positions",
            summary="Officers' last known positions (the position of the gateway that last heard their device, with "
                    "the age of that fix) and the gateways' own")
async def positions(runtime: RuntimeDep, caller: CallerDep) -> dict:
    now = time.time()
    downlink = runtime.downlink
    officers = officer_positions(runtime.registry, runtime.status, downlink.positions, caller.agency_id)
    return {
        "officers": [p.public(now) for p in officers],
        "gateways": [{"gateway_id": g.gateway_id, "lat": g.lat, "lon": g.lon, "source": g.source,
                      "age_s": round(max(0.0, now - g.at), 1)} for g in downlink.positions.of_agency(caller.agency_id)],
        "nearby_radius_m": runtime.settings.nearby_radius_m,
    }
