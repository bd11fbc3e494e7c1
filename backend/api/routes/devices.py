from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from backend.identity import fleet
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.db import schema as t
from backend.exceptions import NotFound
from backend.privacy.access import DEVICE_ID_MAX, DeviceId, refuse_not_found
from models.thresholds import PRODUCT_PLACEMENT

router = APIRouter(prefix=f"{API}/devices", tags=["devices"])


class DeviceIn(BaseModel):
    device_id: int = Field(ge=0, le=0xFFFFFFFF, description="the id in the device's frames")
    placement: str = Field(PRODUCT_PLACEMENT, description=f"one of {', '.join(fleet.PLACEMENTS)}")


class AssignmentIn(BaseModel):
    officer_id: int
    starts_at: dt.datetime | None = Field(None, description="start of the shift; now when omitted")
    ends_at: dt.datetime | None = Field(None, description="end of the shift; open when omitted")


def _listing(agency_id: str):
    current = (
        sa.select(t.assignments.c.device_id, t.assignments.c.officer_id, t.assignments.c.starts_at, t.assignments.c.ends_at)
        .where(t.assignments.c.ends_at.is_(None) | (t.assignments.c.ends_at > sa.func.now()))
        .where(t.assignments.c.starts_at <= sa.func.now())
        .subquery()
    )
    return (
        sa.select(t.devices.c.id.label("device_id"), t.devices.c.placement, t.devices.c.status, t.devices.c.firmware,
                  t.devices.c.battery_pct, t.devices.c.last_seen, t.devices.c.created_at, t.devices.c.retired_at,
                  current.c.officer_id, t.officers.c.name.label("officer_name"),
                  current.c.starts_at.label("shift_starts_at"), current.c.ends_at.label("shift_ends_at"))
        .select_from(t.devices.outerjoin(current, current.c.device_id == t.devices.c.id)
                     .outerjoin(t.officers, t.officers.c.id == current.c.officer_id))
        .where(t.devices.c.agency_id == agency_id)
        .order_by(t.devices.c.id)
    )


async def _device(request: Request, runtime, caller, device_id: int) -> dict:
    """The device of the caller's agency; otherwise 404, audited (also under the device's own agency),
    the id in the answer as the pages show it."""
    if device_id > DEVICE_ID_MAX:
        refusal = await refuse_not_found(request, caller, "device", device_id)
        raise NotFound(f"device {device_id} (not a 32-bit device id)") from refusal
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(_listing(caller.agency_id).where(t.devices.c.id == device_id))).mappings().first()
        if row is None:
            elsewhere = (await conn.execute(sa.select(t.devices.c.agency_id).where(t.devices.c.id == device_id))).scalar_one_or_none()
    if row is None:
        refusal = await refuse_not_found(request, caller, "device", device_id, elsewhere)
        raise NotFound(f"device {fleet.device_label(device_id)}") from refusal
    return dict(row)


@router.post("", summary="Provision a device: creates it and its key. The key is shown ONCE.", status_code=201,
             responses={409: {"description": "a device with this id exists"}})
async def provision(runtime: RuntimeDep, caller: CallerDep, body: DeviceIn) -> dict:
    try:
        device = await fleet.provision_device(runtime.engine, runtime.settings.secret_key.get_secret_value(),
                                              caller.agency_id, body.device_id, body.placement)
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from exc  # the documented 422 shape
    except sa.exc.IntegrityError as exc:
        raise HTTPException(409, f"device {fleet.device_label(body.device_id)} exists") from exc
    await runtime.registry.refresh()
    return {"device_id": device.device_id, "agency": device.agency_id, "placement": body.placement,
            "key_hex": device.key.hex(), "note": "the key is shown once: write it onto the wearable now"}


@router.get("", summary="Devices of the caller's agency: firmware, battery, last seen, assigned officer")
async def list_devices(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    async with runtime.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(_listing(caller.agency_id))).mappings()]


@router.get("/firmware", summary="The fleet's firmware: each version with its count of devices, the current release, "
                                 "and the devices (with the officer wearing each) on an older one")
async def firmware(runtime: RuntimeDep, caller: CallerDep) -> dict:
    """The current release is VIGIL_FIRMWARE_CURRENT when set, else the newest version any active
    device of the agency reports (``current_source`` says which). Retired devices are left out;
    a device that never sent a status frame counts as ``unknown``, not outdated."""
    async with runtime.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(_listing(caller.agency_id).where(t.devices.c.status != "retired"))).mappings()]
    counts: dict[str | None, int] = {}
    for row in rows:
        counts[row["firmware"]] = counts.get(row["firmware"], 0) + 1
    known = sorted((v for v in counts if v is not None), key=_version, reverse=True)
    current = runtime.settings.firmware_current or (known[0] if known else None)
    source = "setting" if runtime.settings.firmware_current else "newest seen" if current else None

    def standing(version: str | None) -> str:
        if version is None:
            return "unknown"
        if current is None or _version(version) == _version(current):
            return "current"
        return "outdated" if _version(version) < _version(current) else "newer"

    outdated = [{"device_id": r["device_id"], "firmware": r["firmware"],
                 "officer_id": r["officer_id"], "officer_name": r["officer_name"], "last_seen": r["last_seen"],
                 "status": r["status"]}
                for r in rows if standing(r["firmware"]) == "outdated"]
    outdated.sort(key=lambda d: (_version(d["firmware"]), d["device_id"]))
    return {"current": current, "current_source": source,
            "versions": [{"version": v, "devices": counts[v], "standing": standing(v)}
                         for v in known + ([None] if None in counts else [])],
            "outdated": outdated, "devices": len(rows)}


def _version(text: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2): versions compare by number, not as text."""
    return tuple(int(part) for part in text.split("."))


@router.get("/{device_id}", summary="One device of the caller's agency")
async def get_device(request: Request, runtime: RuntimeDep, caller: CallerDep, device_id: DeviceId) -> dict:
    return await _device(request, runtime, caller, device_id)


@router.put("/{device_id}/assignment", summary="Assign the device to an officer for a shift (ends any current assignment; "
                                                "taken_from names whom it was taken from)",
            responses={409: {"description": "another agency's officer, or a retired device"}})
async def assign(request: Request, runtime: RuntimeDep, caller: CallerDep, device_id: DeviceId, body: AssignmentIn) -> dict:
    """The answer names the officer who wore the device until now (``taken_from``), who is now without it."""
    before = await _device(request, runtime, caller, device_id)
    now = dt.datetime.now(dt.timezone.utc)
    starts = _utc(body.starts_at) or now
    ends = _utc(body.ends_at)
    if ends is not None and ends <= max(starts, now):
        # such a shift is over before it starts: the device would silently be left unassigned
        said = "in the past" if ends <= now else "before its start"
        raise HTTPException(422, [{"loc": ["body", "ends_at"], "type": "value_error",
                                   "msg": f"the shift's end {ends:%Y-%m-%d %H:%M} UTC is {said}; give a later end or none"}])
    try:
        await fleet.assign_device(runtime.engine, device_id, body.officer_id, body.starts_at, body.ends_at)
    except ValueError as exc:  # another agency's officer, or a retired device
        raise HTTPException(409, str(exc)) from exc
    await runtime.registry.refresh()
    after = await _device(request, runtime, caller, device_id)
    taken = before["officer_id"] is not None and before["officer_id"] != body.officer_id
    after["taken_from"] = {"officer_id": before["officer_id"], "officer_name": before["officer_name"]} if taken else None
    return after


@router.delete("/{device_id}/assignment", summary="End the device's current assignment now")
async def unassign(request: Request, runtime: RuntimeDep, caller: CallerDep, device_id: DeviceId) -> dict:
    await _device(request, runtime, caller, device_id)
    await fleet.unassign_device(runtime.engine, device_id)
    await runtime.registry.refresh()
    return await _device(request, runtime, caller, device_id)


@router.post("/{device_id}/retire", summary="Retire the device: its frames are refused from now on",
             responses={409: {"description": "the device was already retired"}})
async def retire(request: Request, runtime: RuntimeDep, caller: CallerDep, device_id: DeviceId) -> dict:
    """Refused (409) for a device already retired: its ``retired_at`` stays when it was retired.
    The answer names the officer who wore it on shift (``retired_from``), who is now without a device."""
    before = await _device(request, runtime, caller, device_id)
    if before["status"] == "retired":
        raise HTTPException(409, f"device {fleet.device_label(device_id)} was already retired at "
                                 f"{before['retired_at']:%Y-%m-%d %H:%M} UTC")
    await fleet.retire_device(runtime.engine, device_id)
    await runtime.registry.refresh()
    after = await _device(request, runtime, caller, device_id)
    worn = before["officer_id"] is not None
    after["retired_from"] = {"officer_id": before["officer_id"], "officer_name": before["officer_name"]} if worn else None
    return after


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time as given; one without a zone is taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)
