from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from backend.identity import auth
from backend.api.access import API
from backend.api.deps import PUBLIC_OPERATION, CallerDep, RuntimeDep
from backend.api.middleware import client_address
from backend.exceptions import AuthError

router = APIRouter(prefix=f"{API}/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str
    agency: str


def _throttled(request: Request, username: str, address: str | None) -> None:
    throttle = request.app.state.login_throttle  # backend/api/middleware.py: failures per username and per address
    wait = throttle.retry_after(username, address)
    if wait is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed attempts; try again later",
                            headers={"Retry-After": str(wait)})


@router.post("/token", summary="Sign in with username and password (OAuth2 password form)", response_model=TokenOut,
             openapi_extra=PUBLIC_OPERATION, responses={401: {"description": "wrong username or password, or a disabled account"},
                                                        429: {"description": "too many failed attempts; Retry-After says when to try again"}})
async def token(runtime: RuntimeDep, form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request) -> TokenOut:
    address = client_address(request.scope, runtime.settings.trusted_proxies)
    _throttled(request, form.username, address)
    try:
        issued, user = await auth.login(runtime.engine, runtime.settings.token_key.get_secret_value(),
                                        runtime.settings.token_ttl_s, form.username, form.password)
    except AuthError as exc:
        request.app.state.login_throttle.failed(form.username, address)
        await auth.record_failed_login(runtime.engine, form.username, address, str(exc))
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    request.app.state.login_throttle.succeeded(form.username)
    return TokenOut(access_token=issued, expires_in=runtime.settings.token_ttl_s, role=user.role, agency=user.agency_id)


class EnrolIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, description="the one-time code the officer was handed")
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=8, max_length=1024)


@router.post("/enrol", summary="An officer creates their own account with the one-time code they were handed",
             status_code=201, openapi_extra=PUBLIC_OPERATION,
             responses={400: {"description": "the code is unknown, used or expired, or the username is taken"},
                        429: {"description": "too many failed attempts; Retry-After says when to try again"}})
async def enrol(runtime: RuntimeDep, body: EnrolIn, request: Request) -> dict:
    address = client_address(request.scope, runtime.settings.trusted_proxies)
    _throttled(request, "enrolment", address)  # guesses at codes count like guesses at passwords
    try:
        user = await auth.redeem_enrolment(runtime.engine, body.code, body.username, body.password,
                                           dt.datetime.now(dt.timezone.utc))
    except AuthError as exc:
        request.app.state.login_throttle.failed("enrolment", address)
        await auth.record_failed_login(runtime.engine, "enrolment", address, str(exc))
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {"id": user.id, "username": user.username, "role": user.role, "agency": user.agency_id, "officer_id": user.officer_id}


@router.get("/me", summary="Who the token belongs to")
async def me(caller: CallerDep) -> dict:
    return {"subject": caller.subject, "role": caller.role, "agency": caller.agency_id, "officer_id": caller.officer_id}


@router.post("/logout", summary="Revoke the token used for this request", status_code=204,
             responses={400: {"description": "the token has no id and cannot be revoked (it expires on its own)"}})
async def logout(runtime: RuntimeDep, caller: CallerDep) -> None:
    if caller.token_id is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "this token has no id and cannot be revoked; it expires on its own")
    expires = dt.datetime.fromtimestamp(caller.token_expires or 0, dt.timezone.utc)
    await runtime.revoked.revoke(caller.token_id, expires, caller.subject)
