from __future__ import annotations

import time

from fastapi import APIRouter

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
