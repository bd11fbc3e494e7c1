from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from backend.identity import auth
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep

router = APIRouter(prefix=f"{API}/users", tags=["users"])


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=8)
    role: Literal["officer", "supervisor", "fleet_admin", "auditor"]
    officer_id: int | None = Field(None, description="required for the officer role: the officer this account is")


@router.post("", summary="Create a person's account in the caller's agency", status_code=201)
async def create_user(runtime: RuntimeDep, caller: CallerDep, body: UserIn) -> dict:
    try:
        user = await auth.create_user(runtime.engine, body.username, body.password, body.role, caller.agency_id, body.officer_id)
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from exc  # the documented 422 shape
    return {"id": user.id, "username": user.username, "role": user.role, "agency": user.agency_id, "officer_id": user.officer_id}


@router.get("", summary="Accounts of the caller's agency")
async def list_users(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    return [{"id": u.id, "username": u.username, "role": u.role, "officer_id": u.officer_id}
            for u in await auth.list_users(runtime.engine, caller.agency_id)]
