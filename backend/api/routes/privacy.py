"""The policy in force (public), the transparency report and aggregates (auditors)."""
from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request

from backend.api.deps import PUBLIC_OPERATION
from backend.privacy import reports
from backend.privacy.access import Grant, require_access

router = APIRouter(tags=["privacy"])

IncidentAggregates = Annotated[Grant, require_access("alerts_incidents", target="agency", aggregate=True)]
FeatureAggregates = Annotated[Grant, require_access("derived_features", target="agency", aggregate=True)]


@router.get("/policy", summary="The data-use policy in force: version, SHA-256, pending changes (public)",
            openapi_extra=PUBLIC_OPERATION)
async def policy(request: Request, document: bool = Query(False, description="include the YAML text")) -> dict:
    privacy = request.app.state.runtime.privacy
    now = privacy.now()
    current = await privacy.policies.current(now)
    body = {**current.public(), "pending": [p.public() for p in await privacy.policies.pending(now)],
            "purposes": current.policy.purposes, "always_refused": sorted(current.policy.refused_purposes)}
    if document:
        body["document"] = current.policy.text
    return body


@router.get("/reports/transparency", summary="Transparency and fairness report of the caller's agency (auditors)")
async def transparency(request: Request, grant: IncidentAggregates,
                       since: dt.datetime | None = None, until: dt.datetime | None = None) -> dict:
    access = await grant.audited()
    privacy = request.app.state.runtime.privacy
    pending = [p.public() for p in await privacy.policies.pending(access.now)]
    return await reports.transparency_report(request.app.state.runtime.engine, access.policy, agency_id=access.caller.agency_id,
                                             since=since, until=until or access.now, pending_policies=pending)


@router.get("/aggregates/vitals", summary="Heart rate by activity over >= 10 officers, for model evaluation (auditors)")
async def vitals_aggregates(request: Request, grant: FeatureAggregates) -> dict:
    access = await grant.audited()
    start, end = reports.whole_buckets(access.policy, access.start or (access.end or access.now) - dt.timedelta(days=30),
                                       access.end or access.now)
    groups = await reports.vitals_aggregates(request.app.state.runtime.engine, access.policy, access.caller.agency_id, start, end)
    return {"agency_id": access.caller.agency_id, "start": start.isoformat(), "end": end.isoformat(),
            "min_group_officers": access.policy.min_group_officers, "bucket_hours": access.policy.bucket_hours, "groups": groups}
