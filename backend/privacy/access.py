"""The purpose gate: how the API enforces the policy, and audits every answer it gives.

- ``declared_purpose``: the one purpose a request declares (``?purpose=`` or ``X-Vigil-Purpose``);
  more than one, repeated or different, in any mix, is refused with 400 and audited.
- ``parse_id``: ids in paths are ASCII digits, checked at the boundary (422 with a reason).
- ``require_access(data_class)``: the dependency of the biometric, audit and report routes. It
  gathers the facts (the officer's agency and open incidents), asks the pure engine, audits a
  refusal at once (403 with the rule) and hands the route a :class:`Grant`. The route calls
  ``await grant.audited()`` first thing: FastAPI runs a route's body only once every parameter
  validated, so a request answered 422 never leaves a "granted" entry.
- ``judge`` / ``record``: the same decision and audit for routes that find their target
  themselves (alerts and their evidence, backend/api/routes/alerts.py).
- ``refuse_not_found``: a 404 is a refusal too, audited under the caller's agency and, when
  the target exists elsewhere, under the target's.

No read is served unaudited: if the audit entry cannot be written, the request fails with 503."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from pydantic import BeforeValidator

from backend.api.deps import CallerDep
from backend.db import schema as t
from backend.exceptions import NotFound
from backend.privacy import audit
from backend.privacy.engine import AccessRequest, Decision, Facts, Incident, decide
from backend.privacy.loader import Policy

Target = Literal["path", "self", "agency"]

PURPOSE_HEADER = "x-vigil-purpose"
# officers.id is a PostgreSQL integer: a larger id names nobody (and would fail as a query argument).
OFFICER_ID_MAX = 2**31 - 1
DEVICE_ID_MAX = 2**32 - 1
_ASCII_ID = re.compile(r"[0-9]{1,19}")


_ID_RULE = "an id is 1 to 19 ASCII digits 0-9"


def parse_id(raw: str | None, name: str) -> int | None:
    """An id from a path: ASCII digits only ('²', '١', '+1', ' 1', '1_0' are not ids): 422 otherwise."""
    if raw is None:
        return None
    if not _ASCII_ID.fullmatch(raw):
        raise HTTPException(422, [{"loc": ["path", name], "msg": _ID_RULE, "type": "value_error"}])
    return int(raw)


def _ascii_digits(value):
    if isinstance(value, str) and not _ASCII_ID.fullmatch(value):
        raise ValueError(_ID_RULE)
    return value


# Path ids for routes: integers in the API's schema, ASCII digits on the wire (pydantic alone takes '+1', ' 1', '1_0').
OfficerId = Annotated[int, BeforeValidator(_ascii_digits), Path(description="officer id (ASCII digits)")]
DeviceId = Annotated[int, BeforeValidator(_ascii_digits), Path(description="device id as in its frames (ASCII digits)")]


def declared_purpose(request: Request) -> str | None:
    """The purpose the request declares, or None. Raises :class:`Ambiguous` for more than one."""
    values = [*request.query_params.getlist("purpose"), *request.headers.getlist(PURPOSE_HEADER)]
    purposes = [p.strip() for v in values for p in v.split(",")]  # a proxy may fold repeated headers into one
    if len(purposes) > 1:
        raise Ambiguous(purposes)
    return purposes[0] if purposes else None


class Ambiguous(Exception):
    def __init__(self, purposes: list[str]):
        super().__init__(purposes)
        self.purposes = purposes


def _ambiguous_decision(purposes: list[str]) -> Decision:
    return Decision(False, "purpose.ambiguous",
                    f"a read declares one purpose; this one declared {len(purposes)}: {', '.join(repr(p) for p in purposes)}")


@dataclass(frozen=True, slots=True)
class Access:
    caller: object  # backend.api.deps.Caller
    purpose: str
    data_class: str
    rule: str
    officer_id: int | None
    start: dt.datetime | None
    end: dt.datetime | None
    policy: Policy
    now: dt.datetime
    audit_seq: int


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


async def gather_facts(conn, policy: Policy, officer_id: int | None, now: dt.datetime) -> Facts:
    if officer_id is None:
        return Facts()
    agency = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).scalar_one_or_none()
    rows = (await conn.execute(
        sa.select(t.alerts.c.id, t.alerts.c.raised_at)
        .where(t.alerts.c.officer_id == officer_id, t.alerts.c.state.not_in(sorted(policy.closed_incident_states)))
        .order_by(t.alerts.c.raised_at)
    )).all()
    lead = dt.timedelta(seconds=policy.incident_lead_s)
    return Facts(agency, tuple(Incident(str(r.id), r.raised_at - lead, now) for r in rows))


@dataclass(frozen=True, slots=True)
class AlertFacts:
    id: uuid.UUID
    agency_id: str
    officer_id: int | None
    state: str
    raised_at: dt.datetime


async def alert_facts(runtime, alert_id: uuid.UUID) -> AlertFacts | None:
    """Where an alert belongs, whichever agency: the live incident first (stored a moment later)."""
    live = runtime.alerts.find(alert_id)
    if live is not None:
        return AlertFacts(live.id, live.agency_id, live.officer_id, live.state, live.raised_at)
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(sa.select(t.alerts.c.id, t.alerts.c.agency_id, t.alerts.c.officer_id, t.alerts.c.state,
                                            t.alerts.c.raised_at).where(t.alerts.c.id == alert_id))).first()
    return AlertFacts(row.id, row.agency_id, row.officer_id, row.state, row.raised_at) if row else None


async def evidence_facts(runtime, policy: Policy, alert: AlertFacts, now: dt.datetime) -> Facts:
    """The open incidents that open this alert's evidence: its officer's, or the alert itself when
    its device was not assigned to anyone."""
    if alert.officer_id is not None:
        async with runtime.engine.connect() as conn:
            found = await gather_facts(conn, policy, alert.officer_id, now)
        return Facts(alert.agency_id, found.open_incidents)
    is_open = alert.state not in policy.closed_incident_states
    lead = dt.timedelta(seconds=policy.incident_lead_s)
    return Facts(alert.agency_id, (Incident(str(alert.id), alert.raised_at - lead, now),) if is_open else ())


def judge(policy: Policy, caller, purpose: str | None, data_class: str, facts: Facts, *, officer_id: int | None = None,
          alert: str | None = None, aggregate: bool = False, start: dt.datetime | None = None,
          end: dt.datetime | None = None) -> tuple[str, Decision]:
    """(the purpose the read is for, the decision). A purpose left undeclared takes the one the
    policy implies for this role and data class, if any (never for biometric data)."""
    purpose = purpose or policy.implied_purpose(caller.role, data_class) or ""
    return purpose, decide(policy, AccessRequest(
        role=caller.role, agency_id=caller.agency_id, caller_officer_id=caller.officer_id, purpose=purpose or None,
        data_class=data_class, aggregate=aggregate, target_officer_id=officer_id, target_alert=alert,
        start=_aware(start), end=_aware(end)), facts)


async def record(request: Request, caller, policy: Policy, purpose: str, data_class: str, decision: Decision, subject: str,
                 agency_id: str | None, **extra) -> int:
    """Audit one answer (granted or refused) about ``subject``; 503 if the log cannot take it."""
    details = {"data_class": data_class, "rule": decision.rule, "reason": decision.reason, "role": caller.role,
               "path": request.url.path, "policy": policy.version, "policy_sha256": policy.sha256,
               "start": decision.start.isoformat() if decision.start else None,
               "end": decision.end.isoformat() if decision.end else None,
               "incidents": list(decision.incidents), "caller_agency": caller.agency_id, **extra}
    try:
        return await audit.record(request.app.state.runtime.engine, f"user:{caller.subject}", "access", subject, purpose,
                                  "granted" if decision.granted else "refused", details, agency_id=agency_id or caller.agency_id)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no read is served unaudited; the audit log is unavailable") from exc


async def refuse(request: Request, caller, policy: Policy, purpose: str, data_class: str, decision: Decision, subject: str,
                 agency_id: str | None, code: int = status.HTTP_403_FORBIDDEN, **extra) -> HTTPException:
    """Audit a refusal (under the caller's agency, and under the target's when that differs) and
    return the HTTP error to raise (detail: rule, reason, audit entry)."""
    seq = await record(request, caller, policy, purpose, data_class, decision, subject, caller.agency_id, **extra)
    if agency_id is not None and agency_id != caller.agency_id:
        await record(request, caller, policy, purpose, data_class, decision, subject, agency_id, **extra)
    return HTTPException(code, {**decision.refusal(), "audit_seq": seq, "policy": policy.version})


async def current_policy(request: Request) -> tuple[Policy, dt.datetime]:
    privacy = request.app.state.runtime.privacy
    now = privacy.now()
    try:
        return (await privacy.policies.current(now)).policy, now
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the policy is unavailable while the database is down") from exc


async def single_purpose(request: Request, caller, data_class: str, subject: str) -> str | None:
    """The declared purpose; more than one is refused (400), audited as refused."""
    try:
        return declared_purpose(request)
    except Ambiguous as exc:
        policy, _ = await current_policy(request)
        raise await refuse(request, caller, policy, ",".join(exc.purposes), data_class, _ambiguous_decision(exc.purposes),
                           subject, None, code=status.HTTP_400_BAD_REQUEST) from None


async def refuse_not_found(request: Request, caller, kind: str, ident: object, target_agency: str | None = None,
                           data_class: str = "device_fleet") -> NotFound:
    """A 404 is a refusal: audited under the caller's agency and, when the target exists in
    another agency, under that agency too (its auditors see who looked). Returns the error to raise."""
    policy, _ = await current_policy(request)
    purpose = declared_purpose_or_none(request)
    decision = Decision(False, "not_found", f"no {kind} {ident} in the caller's agency")
    subject = f"{kind}:{ident}"
    await record(request, caller, policy, purpose, data_class, decision, subject, caller.agency_id)
    if target_agency is not None and target_agency != caller.agency_id:
        await record(request, caller, policy, purpose, data_class, decision, subject, target_agency)
    return NotFound(f"{kind} {ident}")


def declared_purpose_or_none(request: Request) -> str:
    try:
        return declared_purpose(request) or ""
    except Ambiguous as exc:
        return ",".join(exc.purposes)


class Grant:
    """A granted read, audited by ``await grant.audited()`` when the route's body begins."""

    def __init__(self, request: Request, access: Access, decision: Decision, subject: str, agency_id: str | None):
        self._request, self._access, self._decision, self._subject, self._agency_id = request, access, decision, subject, agency_id

    async def audited(self) -> Access:
        a = self._access
        seq = await record(self._request, a.caller, a.policy, a.purpose, a.data_class, self._decision, self._subject, self._agency_id)
        return replace(a, audit_seq=seq)


def require_access(data_class: str, *, target: Target = "path", aggregate: bool = False):
    """Dependency factory: the route reads ``data_class`` about the officer in the path
    (``target="path"``, parameter ``officer_id``), about the caller (``"self"``), or about the
    caller's agency as a whole (``"agency"``; with ``aggregate=True`` for aggregate-only routes)."""

    async def check(
        request: Request,
        caller: CallerDep,
        purpose: Annotated[str | None, Query(description="declared purpose of this read (or header X-Vigil-Purpose; one only)")] = None,
        x_vigil_purpose: Annotated[str | None, Header(include_in_schema=False)] = None,
        start: Annotated[dt.datetime | None, Query(description="start of the span to read")] = None,
        end: Annotated[dt.datetime | None, Query(description="end of the span to read")] = None,
    ) -> Grant:
        runtime = request.app.state.runtime
        if target == "path":
            officer_id = parse_id(request.path_params.get("officer_id"), "officer_id")
        elif target == "self":
            officer_id = caller.officer_id
        else:
            officer_id = None
        subject = f"officer:{officer_id}" if officer_id is not None else f"agency:{caller.agency_id}"
        declared = await single_purpose(request, caller, data_class, subject)
        policy, now = await current_policy(request)
        if officer_id is not None and officer_id > OFFICER_ID_MAX:  # names nobody (found by fuzzing: was a 503)
            raise await refuse_not_found(request, caller, "officer", officer_id, data_class=data_class)
        try:
            async with runtime.engine.connect() as conn:
                facts = await gather_facts(conn, policy, officer_id, now)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "policy facts unavailable while the database is down") from exc
        if target == "self" and officer_id is None:
            used = declared or ""
            decision = Decision(False, "ownership.no_officer", "this account is not an officer's; there is no own data to read")
        else:
            used, decision = judge(policy, caller, declared, data_class, facts, officer_id=officer_id, aggregate=aggregate,
                                   start=start, end=end)
        agency = facts.target_agency_id or caller.agency_id
        if not decision.granted:
            raise await refuse(request, caller, policy, used, data_class, decision, subject, agency)
        access = Access(caller, used, data_class, decision.rule, officer_id, decision.start, decision.end, policy, now, 0)
        return Grant(request, access, decision, subject, agency)

    return Depends(check)
