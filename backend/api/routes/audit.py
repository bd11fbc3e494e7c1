"""The audit log for auditors: entries of their agency and the deployment-wide ones (policy
versions, retention runs), and the chain's verification."""
from __future__ import annotations

import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from backend.db import schema as t
from backend.identity.fleet import device_label
from backend.privacy import audit
from backend.privacy.access import Grant, refuse_not_found, require_access

router = APIRouter(tags=["audit"])

AgencyAudit = Annotated[Grant, require_access("audit_records", target="agency")]


@router.get("/audit", summary="Audit entries of the caller's agency, oldest first (newest first on request), each with "
                              "who and what in words (auditors; purpose oversight_audit)")
async def list_audit(request: Request, grant: AgencyAudit, after_seq: int = Query(0, ge=0),
                     before_seq: int | None = Query(None, ge=1, description="only entries before this one (paging back)"),
                     newest_first: bool = Query(False, description="newest first: pages of the latest entries"),
                     limit: int = Query(500, ge=1, le=10_000), action: str | None = None) -> list[dict]:
    access = await grant.audited()
    # the agency's entries and the deployment's (policy versions, retention), which concern every agency
    q = (sa.select(t.audit_log).where(t.audit_log.c.agency_id.in_([access.caller.agency_id, audit.DEPLOYMENT]),
                                      t.audit_log.c.seq > after_seq)
         .order_by(t.audit_log.c.seq.desc() if newest_first else t.audit_log.c.seq).limit(limit))
    if before_seq is not None:
        q = q.where(t.audit_log.c.seq < before_seq)
    if action:
        q = q.where(t.audit_log.c.action == action)
    async with request.app.state.runtime.engine.connect() as conn:
        rows = [{**dict(r), "at": r["at"].isoformat()} for r in (await conn.execute(q)).mappings().all()]
        return await labelled(conn, rows, access.caller.agency_id)


@router.get("/audit/incidents/{alert_id}",
            summary="One incident's audit timeline, oldest first: its transitions (who, when, notes) and every read of "
                    "its record, its evidence and the officer's vitals it opened, with the purpose declared "
                    "(auditors; purpose oversight_audit)",
            responses={404: {"description": "no such incident in the caller's agency (the refusal is audited)"}})
async def incident_timeline(request: Request, grant: AgencyAudit, alert_id: uuid.UUID) -> dict:
    access = await grant.audited()
    agency = access.caller.agency_id
    async with request.app.state.runtime.engine.connect() as conn:
        found = (await conn.execute(
            sa.select(t.alerts.c.id, t.alerts.c.kind, t.alerts.c.state, t.alerts.c.outcome, t.alerts.c.raised_at,
                      t.alerts.c.officer_id, t.officers.c.name.label("officer_name"))
            .select_from(t.alerts.outerjoin(t.officers, t.officers.c.id == t.alerts.c.officer_id))
            .where(t.alerts.c.id == alert_id, t.alerts.c.agency_id == agency))).mappings().first()
        if found is None:
            raise await refuse_not_found(request, access.caller, "alert", alert_id, data_class="audit_records")
        entries = await labelled(conn, await audit.incident_entries(conn, str(alert_id), agency, found["raised_at"]), agency)
    names = {"alert": {str(found["id"]): (found["kind"], found["raised_at"], found["officer_name"])}}
    return {"alert": {"id": str(found["id"]), "label": subject_label(f"alert:{alert_id}", names), "kind": found["kind"],
                      "state": found["state"], "outcome": found["outcome"], "raised_at": found["raised_at"].isoformat(),
                      "officer_id": found["officer_id"], "officer_name": found["officer_name"]},
            "entries": entries}


async def labelled(conn, rows: list[dict], agency_id: str) -> list[dict]:
    """Audit entries with who and what in words (``actor_label``, ``subject_label``)."""
    names = await _names(conn, rows, agency_id)
    return [{**r, "actor_label": actor_label(r["actor"], names), "subject_label": subject_label(r["subject"], names)}
            for r in rows]


def _split(value: str | None) -> tuple[str, str]:
    kind, _, rest = (value or "").partition(":")
    return kind, rest


async def _names(conn, rows: list[dict], agency_id: str) -> dict:
    """The names the entries' ids stand for, of the caller's agency only."""
    officers, users, alerts = set(), set(), set()
    for r in rows:
        for kind, rest in (_split(r["actor"]), _split(r["subject"])):
            if kind in ("officer", "officers") and rest.isdigit():
                officers.add(int(rest))
            elif kind == "user":
                users.add(rest)
            elif kind == "alert":
                alerts.add(rest)
    names: dict = {"officer": {}, "user": {}, "alert": {}}
    if officers:
        q = sa.select(t.officers.c.id, t.officers.c.name).where(t.officers.c.id.in_(officers), t.officers.c.agency_id == agency_id)
        names["officer"] = {r.id: r.name for r in await conn.execute(q)}
    if users:
        q = sa.select(t.users.c.username, t.users.c.role).where(t.users.c.username.in_(users))
        names["user"] = {r.username: r.role for r in await conn.execute(q)}
    valid = set()
    for a in alerts:
        try:
            valid.add(uuid.UUID(a))
        except ValueError:
            pass
    if valid:
        q = (sa.select(t.alerts.c.id, t.alerts.c.kind, t.alerts.c.raised_at, t.officers.c.name)
             .select_from(t.alerts.outerjoin(t.officers, t.officers.c.id == t.alerts.c.officer_id))
             .where(t.alerts.c.id.in_(valid), t.alerts.c.agency_id == agency_id))
        names["alert"] = {str(r.id): (r.kind, r.raised_at, r.name) for r in await conn.execute(q)}
    return names


def actor_label(actor: str | None, names: dict) -> str:
    """Who acted, in words: a person with their role, a device in hex, a direct database change named as such."""
    kind, rest = _split(actor)
    if kind == "user":
        role = names.get("user", {}).get(rest)
        return f"{rest} ({role.replace('_', ' ')})" if role else rest
    if kind == "device" and rest.isdigit():
        return f"device {device_label(int(rest))}"
    if kind == "gateway":
        return f"gateway {rest}"
    if kind == "db":
        return f"database role {rest} (a direct change, not through the API)"
    if kind == "cli":
        return f"command line, run by {rest}"
    return actor or "—"


def subject_label(subject: str | None, names: dict) -> str:
    """What the entry is about, in words: an officer by name, an alert by kind, time and officer, a device in hex."""
    kind, rest = _split(subject)
    if kind in ("officer", "officers") and rest.isdigit():
        name = names.get("officer", {}).get(int(rest))
        return f"{name} (officer #{rest})" if name else f"officer #{rest}"
    if kind == "alert":
        found = names.get("alert", {}).get(rest)
        if found:
            what, raised, who = found
            return f"{what.replace('_', ' ')} alert of {who or 'an unassigned device'}, raised {raised:%Y-%m-%d %H:%M} UTC"
        return f"alert {rest[:8]}…"
    if kind in ("devices", "device") and rest.isdigit():
        return f"device {device_label(int(rest))}"
    if kind == "gateways":
        return f"gateway {rest}"
    if kind == "users":
        return f"account #{rest}"
    if kind == "assignments":
        return f"device assignment #{rest}"
    if kind == "agency":
        return f"agency {rest}"
    if kind == "username":
        return f"sign-in as {rest}"
    return subject or "—"


@router.get("/audit/verify", summary="Verify the whole hash chain (auditors; purpose oversight_audit)")
async def verify(request: Request, grant: AgencyAudit) -> dict:
    await grant.audited()
    result = await audit.verify(request.app.state.runtime.engine)
    return {"ok": result.ok, "entries": result.entries, "head_seq": result.head_seq, "head_hash": result.head_hash,
            "problems": result.problems}
