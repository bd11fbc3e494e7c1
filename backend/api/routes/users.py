"""People's accounts: who may create whom is ``auth.MAY_CREATE`` (backend/identity/auth.py). An
officer's account is never created here: a fleet admin issues an enrolment code for the officer
(``POST /users/enrolments``) and the officer redeems it (``POST /auth/enrol``)."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from backend.identity import auth
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep

router = APIRouter(prefix=f"{API}/users", tags=["users"])


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # no officer_id: an account is bound to an officer only by enrolment

    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["officer", "supervisor", "fleet_admin", "auditor"]


def _actor(caller) -> str:
    return f"user:{caller.subject}"


@router.post("", summary="Create a fleet admin's or supervisor's account in the caller's agency", status_code=201)
async def create_user(runtime: RuntimeDep, caller: CallerDep, body: UserIn) -> dict:
    allowed = auth.MAY_CREATE.get(caller.role, frozenset())
    if body.role not in allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"a {caller.role} may create {', '.join(sorted(allowed)) or 'no'} accounts; an officer enrols "
                            "with a one-time code (POST /api/v1/users/enrolments), an auditor is created with `vigil user create`")
    try:
        user = await auth.create_user(runtime.engine, body.username, body.password, body.role, caller.agency_id,
                                      actor=_actor(caller))
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from exc  # the documented 422 shape
    return {"id": user.id, "username": user.username, "role": user.role, "agency": user.agency_id, "officer_id": user.officer_id}


@router.get("", summary="Accounts of the caller's agency")
async def list_users(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    return await auth.list_users(runtime.engine, caller.agency_id)


class EnrolmentIn(BaseModel):
    officer_id: int = Field(ge=0, le=2**31 - 1)


@router.post("/enrolments", summary="A one-time code (shown once) with which this officer creates their own account",
             status_code=201)
async def issue_enrolment(runtime: RuntimeDep, caller: CallerDep, body: EnrolmentIn) -> dict:
    issued = await auth.issue_enrolment(runtime.engine, caller.agency_id, body.officer_id, _actor(caller),
                                        runtime.settings.enrolment_code_ttl_s, dt.datetime.now(dt.timezone.utc))
    return {"officer_id": issued.officer_id, "code": issued.code, "expires_at": issued.expires_at.isoformat(),
            "note": "hand this code to the officer in person; they redeem it at POST /api/v1/auth/enrol"}


@router.post("/{user_id}/disable", summary="Disable an account; its tokens stop working at once", status_code=204)
async def disable_user(runtime: RuntimeDep, caller: CallerDep, user_id: int, request: Request) -> None:
    try:
        await auth.disable_user(runtime.engine, caller.agency_id, user_id, auth.MAY_DISABLE.get(caller.role, frozenset()),
                                _actor(caller))
    except PermissionError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    request.app.state.accounts.forget(user_id)
