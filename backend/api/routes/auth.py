from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from backend.identity import auth
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.exceptions import AuthError

router = APIRouter(prefix=f"{API}/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str
    agency: str


@router.post("/token", summary="Sign in with username and password (OAuth2 password form)", response_model=TokenOut)
async def token(runtime: RuntimeDep, form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request) -> TokenOut:
    throttle = request.app.state.login_throttle  # backend/api/middleware.py: failures per username and client
    key = throttle.key(form.username, request.client.host if request.client else None)
    wait = throttle.retry_after(key)
    if wait is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed sign-ins; try again later",
                            headers={"Retry-After": str(wait)})
    try:
        issued, user = await auth.login(runtime.engine, runtime.settings.secret_key.get_secret_value(),
                                        runtime.settings.token_ttl_s, form.username, form.password)
    except AuthError as exc:
        throttle.failed(key)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    throttle.succeeded(key)
    return TokenOut(access_token=issued, expires_in=runtime.settings.token_ttl_s, role=user.role, agency=user.agency_id)


@router.get("/me", summary="Who the token belongs to")
async def me(caller: CallerDep) -> dict:
    return {"subject": caller.subject, "role": caller.role, "agency": caller.agency_id, "officer_id": caller.officer_id}


@router.post("/logout", summary="Revoke the token used for this request", status_code=204)
async def logout(runtime: RuntimeDep, caller: CallerDep) -> None:
    if caller.token_id is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "this token has no id and cannot be revoked; it expires on its own")
    expires = dt.datetime.fromtimestamp(caller.token_expires or 0, dt.timezone.utc)
    await runtime.revoked.revoke(caller.token_id, expires, caller.subject)
