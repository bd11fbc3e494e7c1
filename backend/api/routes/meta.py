"""What the dashboard's words mean, from their one definition (backend/incidents/rules.py)."""
from __future__ import annotations

from fastapi import APIRouter

from backend.api.access import API
from backend.api.deps import RuntimeDep
from backend.incidents.rules import OUTCOME_LABELS, PRIORITY_LABELS, STATE_LABELS

router = APIRouter(prefix=f"{API}/meta", tags=["meta"])


@router.get("/labels", summary=("Words for alert priorities, states and outcomes; the battery level that is low; "
                                 "the supervisor map's tile source"))
async def labels(runtime: RuntimeDep) -> dict:
    return {
        "priorities": PRIORITY_LABELS,
        "states": STATE_LABELS,
        "outcomes": OUTCOME_LABELS,
        "battery_low_pct": runtime.settings.battery_low_pct,
        # the supervisor's map: tiles from this template, or none (url null: a grid drawn in the page, offline)
        "map": {
            "tile_url": runtime.settings.map_tile_url,
            "attribution": runtime.settings.map_tile_attribution,
            "max_zoom": runtime.settings.map_tile_max_zoom,
        },
    }
