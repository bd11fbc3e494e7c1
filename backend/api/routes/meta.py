"""What the dashboard's words mean, from their one definition (backend/incidents/rules.py)."""
from __future__ import annotations

from fastapi import APIRouter

from backend.api.access import API
from backend.api.deps import RuntimeDep
from backend.incidents.rules import OUTCOME_LABELS, PRIORITY_LABELS, STATE_LABELS

router = APIRouter(prefix=f"{API}/meta", tags=["meta"])


@router.get("/labels", summary="Words for alert priorities, states and outcomes; the battery level that is low")
async def labels(runtime: RuntimeDep) -> dict:
    return {
        "priorities": PRIORITY_LABELS,
        "states": STATE_LABELS,
        "outcomes": OUTCOME_LABELS,
        "battery_low_pct": runtime.settings.battery_low_pct,
    }
