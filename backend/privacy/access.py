"""The one API dependency that enforces the policy: ``require_access(data_class)``.

It reads the declared purpose (``?purpose=`` or ``X-Vigil-Purpose``), gathers the facts the
policy needs from the database (the officer's agency and open incidents), asks the pure engine,
audits the grant or the refusal, and either hands the route an :class:`Access` (with the time
span it may read) or answers 403 with the rule that refused. No read is served unaudited: if
the audit entry cannot be written, the request fails with 503."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import Depends, Header, HTTPException, Query, Request, status

from backend.privacy import audit
from backend.api.deps import CallerDep
from backend.db import schema as t
from backend.privacy.engine import AccessRequest, Decision, Facts, Incident, decide
from backend.privacy.loader import Policy

Target = Literal["path", "self", "agency"]

# officers.id is a PostgreSQL integer: a larger id names nobody (and would fail as a query argument).
OFFICER_ID_MAX = 2**31 - 1


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


def require_access(data_class: str, *, target: Target = "path", aggregate: bool = False):
    """Dependency factory: the route reads ``data_class`` about the officer in the path
    (``target="path"``, parameter ``officer_id``), about the caller (``"self"``), or about the
    caller's agency as a whole (``"agency"``; with ``aggregate=True`` for aggregate-only routes)."""

    async def check(
        request: Request,
        caller: CallerDep,
        purpose: Annotated[str | None, Query(description="declared purpose of this read (or header X-Vigil-Purpose)")] = None,
        x_vigil_purpose: Annotated[str | None, Header(include_in_schema=False)] = None,
        start: Annotated[dt.datetime | None, Query(description="start of the span to read")] = None,
        end: Annotated[dt.datetime | None, Query(description="end of the span to read")] = None,
    ) -> Access:
        runtime = request.app.state.runtime
        privacy = runtime.privacy
        now = privacy.now()
        declared = purpose or x_vigil_purpose
        if target == "path":
            raw = request.path_params.get("officer_id")
            officer_id = int(raw) if raw is not None and str(raw).isdigit() else None
            if officer_id is not None and officer_id > OFFICER_ID_MAX:  # found by fuzzing: was a 503
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"officer {raw}")
        elif target == "self":
            officer_id = caller.officer_id
        else:
            officer_id = None
        try:
            current = await privacy.policies.current(now)
            policy = current.policy
            async with runtime.engine.connect() as conn:
                facts = await gather_facts(conn, policy, officer_id, now)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "policy facts unavailable while the database is down") from exc
        if target == "self" and officer_id is None:
            decision = Decision(False, "ownership.no_officer", "this account is not an officer's; there is no own data to read")
        else:
            decision = decide(policy, AccessRequest(
                role=caller.role, agency_id=caller.agency_id, caller_officer_id=caller.officer_id, purpose=declared,
                data_class=data_class, aggregate=aggregate, target_officer_id=officer_id,
                start=_aware(start), end=_aware(end)), facts)
        subject = f"officer:{officer_id}" if officer_id is not None else f"agency:{caller.agency_id}"
        details = {"data_class": data_class, "rule": decision.rule, "reason": decision.reason, "role": caller.role,
                   "path": request.url.path, "policy": policy.version, "policy_sha256": policy.sha256,
                   "start": decision.start.isoformat() if decision.start else None,
                   "end": decision.end.isoformat() if decision.end else None,
                   "incidents": list(decision.incidents), "caller_agency": caller.agency_id}
        try:
            seq = await audit.record(runtime.engine, f"user:{caller.subject}", "access", subject, declared or "",
                                     "granted" if decision.granted else "refused", details,
                                     agency_id=facts.target_agency_id or caller.agency_id)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no read is served unaudited; the audit log is unavailable") from exc
        if not decision.granted:
            raise HTTPException(status.HTTP_403_FORBIDDEN, {**decision.refusal(), "audit_seq": seq, "policy": policy.version})
        return Access(caller, declared, data_class, decision.rule, officer_id, decision.start, decision.end, policy, now, seq)

    return Depends(check)
