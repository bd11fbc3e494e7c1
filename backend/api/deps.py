"""Request dependencies: the runtime and the caller, as Annotated aliases.

``authorize`` is the one place a request is let in or refused: it reads the route's rule from
backend/api/access.py, identifies the caller (person token or gateway token), checks the role
and, where the rule says so, that the path names the caller's own record. Routes receive the
Caller and scope every query by its agency (and, for officers, by their own officer id)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocketException, status
from starlette.requests import HTTPConnection

from backend.api.access import rule_for
from backend.identity.auth import GATEWAY_TOKEN_PREFIX, gateway_for_token
from backend.identity.security import read_token
from backend.exceptions import AuthError
from backend.app.runtime import Runtime

ROLES = ("officer", "supervisor", "fleet_admin", "auditor")


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str
    role: str
    agency_id: str
    officer_id: int | None = None
    token_id: str | None = None
    token_expires: int | None = None
    gateway_id: str | None = None

    def owns(self, param: str, value: str) -> bool:
        mine = {"officer_id": self.officer_id, "gateway_id": self.gateway_id}.get(param)
        return mine is not None and str(mine) == str(value)


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _caller_from_token(runtime: Runtime, token: str | None) -> Caller:
    if not token:
        raise AuthError("no access token")
    claims = read_token(runtime.settings.secret_key.get_secret_value(), token)
    if claims.get("role") not in ROLES or not claims.get("agency"):
        raise AuthError("token lacks a role or agency")
    jti = claims.get("jti")
    if jti is not None and jti in runtime.revoked:
        raise AuthError("token was revoked")
    return Caller(claims["sub"], claims["role"], claims["agency"], claims.get("officer_id"), jti, claims.get("exp"))


async def _caller(runtime: Runtime, token: str | None) -> Caller:
    if token and token.startswith(GATEWAY_TOKEN_PREFIX):
        gateway_id, agency = await gateway_for_token(runtime.engine, token)
        return Caller(f"gateway:{gateway_id}", "gateway", agency, gateway_id=gateway_id)
    return _caller_from_token(runtime, token)


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


async def authorize(conn: HTTPConnection) -> Caller | None:
    """Router-level, for HTTP and WebSocket routes alike: enforce the access table for this
    route. None for public routes. A WebSocket is refused by closing it (4401 / 4403): browsers
    cannot set headers on one, so its token comes as ?token=."""
    websocket = conn.scope["type"] == "websocket"
    method = "WEBSOCKET" if websocket else conn.scope["method"]
    rule = rule_for(method, getattr(conn.scope.get("route"), "path_format", ""), conn.url.path)

    def refuse(code: int, detail: str, **kw):
        if websocket:
            return WebSocketException(4000 + code, detail)
        return HTTPException(code, detail, **kw)

    if rule is None:
        raise refuse(status.HTTP_403_FORBIDDEN, "this route is not in the access table")
    if "anonymous" in rule.roles:
        return None
    token = conn.query_params.get("token") if websocket else _bearer(conn)
    try:
        caller = await _caller(conn.app.state.runtime, token)
    except AuthError as exc:
        raise refuse(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    if caller.role not in rule.roles:
        raise refuse(status.HTTP_403_FORBIDDEN, f"role {caller.role} may not call this; allowed: {', '.join(sorted(rule.roles))}")
    if rule.own and caller.role == rule.own[0] and not caller.owns(rule.own[1], conn.path_params.get(rule.own[1], "")):
        raise refuse(status.HTTP_403_FORBIDDEN, f"a {caller.role} may only use its own {rule.own[1]}")
    return caller


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(authorize)]
Authorized = [Depends(authorize)]
