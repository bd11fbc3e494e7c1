from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from backend.identity import fleet
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.db import schema as t
from backend.privacy.access import OFFICER_ID_MAX, OfficerId, refuse_not_found

router = APIRouter(prefix=f"{API}/officers", tags=["officers"])


class OfficerIn(BaseModel):
    badge: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    unit: str = ""


def _query(agency_id: str):
    return sa.select(t.officers.c.id, t.officers.c.badge, t.officers.c.name, t.officers.c.unit).where(
        t.officers.c.agency_id == agency_id).order_by(t.officers.c.id)


@router.post("", summary="Create an officer in the caller's agency", status_code=201,
             responses={409: {"description": "the badge exists in the agency"}})
async def create_officer(runtime: RuntimeDep, caller: CallerDep, body: OfficerIn) -> dict:
    try:
        officer_id = await fleet.create_officer(runtime.engine, caller.agency_id, body.badge, body.name, body.unit)
    except sa.exc.IntegrityError as exc:
        raise HTTPException(409, f"badge {body.badge} exists in {caller.agency_id}") from exc
    return {"id": officer_id, **body.model_dump()}


@router.get("", summary="Officers of the caller's agency (an officer sees only themselves)")
async def list_officers(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    query = _query(caller.agency_id)
    if caller.role == "officer":
        query = query.where(t.officers.c.id == caller.officer_id)
    async with runtime.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


@router.get("/{officer_id}", summary="One officer of the caller's agency")
async def get_officer(request: Request, runtime: RuntimeDep, caller: CallerDep, officer_id: OfficerId) -> dict:
    if officer_id > OFFICER_ID_MAX:
        raise await refuse_not_found(request, caller, "officer", officer_id)
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(_query(caller.agency_id).where(t.officers.c.id == officer_id))).mappings().first()
        if row is None:
            elsewhere = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).scalar_one_or_none()
    if row is None:
        raise await refuse_not_found(request, caller, "officer", officer_id, elsewhere)
    return dict(row)
