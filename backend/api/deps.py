"""Request dependencies: the runtime and the caller, as Annotated aliases."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, status

from backend.core.security import read_token
from backend.exceptions import AuthError
from backend.runtime import Runtime

ROLES = ("officer", "supervisor", "fleet_admin", "auditor")


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str
    role: str
    agency_id: str
    officer_id: int | None = None


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _caller_from_token(runtime: Runtime, token: str | None) -> Caller:
    if not token:
        raise AuthError("no access token")
    claims = read_token(runtime.settings.secret_key.get_secret_value(), token)
    if claims.get("role") not in ROLES or not claims.get("agency"):
        raise AuthError("token lacks a role or agency")
    return Caller(claims["sub"], claims["role"], claims["agency"], claims.get("officer_id"))


def get_caller(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else None
    try:
        return _caller_from_token(request.app.state.runtime, token)
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def websocket_caller(websocket: WebSocket) -> Caller:
    """Browsers cannot set headers on a WebSocket: the token comes as ?token=."""
    return _caller_from_token(websocket.app.state.runtime, websocket.query_params.get("token"))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]


def require_role(*roles: str):
    def check(caller: CallerDep) -> Caller:
        if caller.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {caller.role} may not call this; allowed: {', '.join(roles)}")
        return caller
    return Depends(check)
