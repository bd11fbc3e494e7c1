"""Request dependencies: the runtime and the caller, as Annotated aliases.

``authorize`` is the one place a request is let in or refused: it reads the route's rule from
backend/api/access.py, identifies the caller (person token or gateway token), checks the role
and, where the rule says so, that the path names the caller's own record. Routes receive the
Caller and scope every query by its agency (and, for officers, by their own officer id).
A person's token counts only while its account exists, is enabled and still matches it."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request, status
from starlette.requests import HTTPConnection

from backend.api.access import rule_for
from backend.identity.auth import GATEWAY_TOKEN_PREFIX, gateway_for_token
from backend.identity.security import read_token
from backend.exceptions import AuthError
from backend.app.runtime import Runtime
from backend.privacy import audit

log = logging.getLogger("vigil.api")

# openapi_extra of a route the access table lets anyone call (access.PUBLIC): the OpenAPI document
# asks no token for it (the document's default is the bearer token)
PUBLIC_OPERATION = {"security": []}

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
    user_id: int | None = None

    def owns(self, param: str, value: str) -> bool:
        mine = {"officer_id": self.officer_id, "gateway_id": self.gateway_id}.get(param)
        return mine is not None and str(mine) == str(value)


class WebSocketRefused(Exception):
    """A WebSocket refused with a close code and a reason the browser can read: the app accepts
    the handshake and closes at once (a refused handshake would show the page only "failed")."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def _caller_from_token(conn: HTTPConnection, runtime: Runtime, token: str | None) -> Caller:
    if not token:
        raise AuthError("no access token")
    claims = read_token(runtime.settings.token_key.get_secret_value(), token)
    if claims["jti"] in runtime.revoked:
        raise AuthError("token was revoked")
    account = await conn.app.state.accounts.get(runtime.engine, claims["uid"])
    if account is None or (account.username, account.role, account.agency_id, account.officer_id) != (
            claims["sub"], claims["role"], claims["agency"], claims.get("officer_id")):
        raise AuthError("the token's account is disabled, gone or changed; sign in again")
    return Caller(account.username, account.role, account.agency_id, account.officer_id, claims["jti"], claims["exp"],
                  user_id=account.id)


async def _caller(conn: HTTPConnection, runtime: Runtime, token: str | None) -> Caller:
    if token and token.startswith(GATEWAY_TOKEN_PREFIX):
        gateway_id, agency = await gateway_for_token(runtime.engine, token)
        return Caller(f"gateway:{gateway_id}", "gateway", agency, gateway_id=gateway_id)
    return await _caller_from_token(conn, runtime, token)


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


async def _websocket_caller(conn: HTTPConnection) -> Caller:
    """A WebSocket authenticates with a one-time ticket (POST /api/v1/live/ticket): browsers
    cannot set headers on one, and a token in the URL would land in every access log."""
    if "token" in conn.query_params:
        raise AuthError("a token in the URL is refused (URLs are logged); "
                        "fetch a one-time ticket with POST /api/v1/live/ticket and connect with ?ticket=")
    ticket = conn.query_params.get("ticket")
    if not ticket:
        raise AuthError("no live ticket: fetch one with POST /api/v1/live/ticket and connect with ?ticket=")
    caller = conn.app.state.live_tickets.redeem(ticket)
    runtime = conn.app.state.runtime
    if caller.user_id is not None and await conn.app.state.accounts.get(runtime.engine, caller.user_id) is None:
        raise AuthError("the ticket's account is disabled or gone")
    return caller


async def authorize(conn: HTTPConnection) -> Caller | None:
    """Router-level, for HTTP and WebSocket routes alike: enforce the access table for this
    route. None for public routes. A WebSocket is refused by closing it (4401 / 4403, with the
    reason); it authenticates with a one-time ticket, never a token in its URL."""
    websocket = conn.scope["type"] == "websocket"
    method = "WEBSOCKET" if websocket else conn.scope["method"]
    rule = rule_for(method, getattr(conn.scope.get("route"), "path_format", ""), conn.url.path)

    def refuse(code: int, detail: str, **kw):
        if websocket:
            return WebSocketRefused(4000 + code, detail)
        return HTTPException(code, detail, **kw)

    if rule is None:
        raise refuse(status.HTTP_403_FORBIDDEN, "this route is not in the access table")
    if "anonymous" in rule.roles:
        return None
    try:
        if websocket:
            caller = await _websocket_caller(conn)
        else:
            caller = await _caller(conn, conn.app.state.runtime, _bearer(conn))
    except AuthError as exc:
        raise refuse(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    if caller.role not in rule.roles:
        why = f"role {caller.role} may not call this; allowed: {', '.join(sorted(rule.roles))}"
        await _audit_refusal(conn, caller, "route_table.role", why)
        raise refuse(status.HTTP_403_FORBIDDEN, why)
    if rule.own and caller.role == rule.own[0] and not caller.owns(rule.own[1], conn.path_params.get(rule.own[1], "")):
        why = f"a {caller.role} may only use its own {rule.own[1]}"
        await _audit_refusal(conn, caller, "route_table.ownership", why)
        raise refuse(status.HTTP_403_FORBIDDEN, why)
    return caller


async def _audit_refusal(conn: HTTPConnection, caller: Caller, rule: str, reason: str) -> None:
    """Every refusal of a known caller enters the audit chain, those of the route table too. The
    request is refused whether or not the entry could be written (nothing is served either way)."""
    details = {"rule": rule, "reason": reason, "role": caller.role, "path": conn.url.path,
               "method": conn.scope.get("method", "WEBSOCKET"), "caller_agency": caller.agency_id}
    try:
        await audit.record(conn.app.state.runtime.engine, caller.subject if caller.role == "gateway" else f"user:{caller.subject}",
                           "access", conn.url.path, "", "refused", details, agency_id=caller.agency_id)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        log.error("refusal of %s on %s not audited (%s)", caller.subject, conn.url.path,
                                             type(exc).__name__)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(authorize)]
Authorized = [Depends(authorize)]
