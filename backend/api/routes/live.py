from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.db import schema as t

router = APIRouter(prefix=f"{API}/live", tags=["live"])


@router.get("/officers", summary="Officers on duty now: device, last seen, battery, open incident (no heart rate)")
async def officers_on_duty(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    on_duty = [d for d in runtime.registry.devices.values()
               if d.agency_id == caller.agency_id and d.officer_id is not None and d.status == "active"]
    status: dict[int, dict] = {}
    try:  # device status as stored by ingest; the registry alone answers while the database is away
        async with runtime.engine.connect() as conn:
            rows = await conn.execute(sa.select(t.devices.c.id, t.devices.c.last_seen, t.devices.c.battery_pct, t.devices.c.firmware)
                                      .where(t.devices.c.id.in_([d.device_id for d in on_duty])))
            status = {r.id: {"last_seen": r.last_seen.isoformat() if r.last_seen else None,
                             "battery_pct": r.battery_pct, "firmware": r.firmware} for r in rows}
    except (sa.exc.SQLAlchemyError, OSError):
        pass
    incidents = {a.officer_id: a for a in runtime.alerts.open_incidents(caller.agency_id)}
    out = []
    for d in sorted(on_duty, key=lambda d: d.officer_id):
        incident = incidents.get(d.officer_id)
        out.append({
            "officer_id": d.officer_id, "officer_name": d.officer_name, "unit": d.officer_unit, "device_id": d.device_id,
            "gateway": runtime.alerts.last_gateway.get(d.device_id),
            **status.get(d.device_id, {"last_seen": None, "battery_pct": None, "firmware": None}),
            "status": "incident" if incident else "ok",
            "incident": None if incident is None else {"id": str(incident.id), "kind": incident.kind,
                                                       "priority": incident.priority, "state": incident.state,
                                                       "escalated": incident.escalated},
        })
    return out
