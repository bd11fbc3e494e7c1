"""Biometric reads: an officer's derived features and raw waveforms, and an officer's own data.

Every route here takes a Grant from ``require_access`` (backend/privacy/access.py): the purpose
was declared and the policy granted it; the route's first line audits the grant (only now, with
every parameter validated), and ``access.start`` / ``access.end`` bound what may be returned (for
a supervisor: the open incident's span)."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.privacy import audit
from backend.db import schema as t
from backend.privacy.access import Access, Grant, OfficerId, require_access

router = APIRouter(tags=["vitals"])

# An officer reading their own data without a span gets the last day.
DEFAULT_SELF_SPAN = dt.timedelta(hours=24)
MAX_ROWS = 100_000

DerivedFeatures = Annotated[Grant, require_access("derived_features")]
RawWaveforms = Annotated[Grant, require_access("raw_waveforms")]
MyDerivedFeatures = Annotated[Grant, require_access("derived_features", target="self")]
MyRawWaveforms = Annotated[Grant, require_access("raw_waveforms", target="self")]
MyAuditRecords = Annotated[Grant, require_access("audit_records", target="self")]
MyIncidents = Annotated[Grant, require_access("alerts_incidents", target="self")]
MyAlertEvidence = Annotated[Grant, require_access("alert_evidence", target="self")]


def _span(access: Access) -> tuple[dt.datetime, dt.datetime]:
    end = access.end or access.now
    start = access.start or end - DEFAULT_SELF_SPAN
    return start, end


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, dt.datetime):
            v = v.isoformat()
        elif isinstance(v, uuid.UUID):
            v = str(v)
        out[k] = v
    return out


async def _features(conn: AsyncConnection, officer_id: int, start: dt.datetime | None, end: dt.datetime | None, limit: int) -> list[dict]:
    q = sa.select(t.features).where(t.features.c.officer_id == officer_id)
    if start is not None:
        q = q.where(t.features.c.time >= start)
    if end is not None:
        q = q.where(t.features.c.time <= end)
    rows = (await conn.execute(q.order_by(t.features.c.time).limit(limit))).mappings().all()
    return [_jsonable(dict(r)) for r in rows]


async def _raw_windows(conn: AsyncConnection, officer_id: int, start: dt.datetime | None, end: dt.datetime | None, limit: int) -> list[dict]:
    if not (await conn.execute(sa.text("select to_regclass('public.raw_windows') is not null"))).scalar_one():
        return []  # no raw store in this deployment
    clauses, params = ["officer_id = :o"], {"o": officer_id, "n": limit}
    if start is not None:
        clauses.append("time >= :s")
        params["s"] = start
    if end is not None:
        clauses.append("time <= :e")
        params["e"] = end
    rows = (await conn.execute(sa.text(f"select * from raw_windows where {' and '.join(clauses)} order by time limit :n"), params)).mappings().all()
    return [_jsonable(dict(r)) for r in rows]


def _envelope(access: Access, rows: list[dict], start, end) -> dict:
    return {"officer_id": access.officer_id, "purpose": access.purpose, "rule": access.rule, "policy": access.policy.version,
            "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
            "audit_seq": access.audit_seq, "rows": rows}


@router.get("/officers/{officer_id}/vitals", summary="Derived features of one officer (purpose required)")
async def officer_vitals(request: Request, officer_id: OfficerId, grant: DerivedFeatures,
                         limit: int = Query(10_000, ge=1, le=MAX_ROWS)) -> dict:
    access = await grant.audited()
    start, end = _span(access)
    async with request.app.state.runtime.engine.connect() as conn:
        return _envelope(access, await _features(conn, access.officer_id, start, end, limit), start, end)


@router.get("/officers/{officer_id}/raw-windows", summary="Raw waveform windows of one officer (purpose required)")
async def officer_raw_windows(request: Request, officer_id: OfficerId, grant: RawWaveforms,
                              limit: int = Query(1_000, ge=1, le=MAX_ROWS)) -> dict:
    access = await grant.audited()
    start, end = _span(access)
    async with request.app.state.runtime.engine.connect() as conn:
        return _envelope(access, await _raw_windows(conn, officer_id, start, end, limit), start, end)


@router.get("/me/vitals", summary="My own derived features (purpose: officer_self_access)")
async def my_vitals(request: Request, grant: MyDerivedFeatures, limit: int = Query(10_000, ge=1, le=MAX_ROWS)) -> dict:
    access = await grant.audited()
    start, end = _span(access)
    async with request.app.state.runtime.engine.connect() as conn:
        return _envelope(access, await _features(conn, access.officer_id, start, end, limit), start, end)


@router.get("/me/raw-windows", summary="My own raw waveform windows (purpose: officer_self_access)")
async def my_raw_windows(request: Request, grant: MyRawWaveforms, limit: int = Query(1_000, ge=1, le=MAX_ROWS)) -> dict:
    access = await grant.audited()
    start, end = _span(access)
    async with request.app.state.runtime.engine.connect() as conn:
        return _envelope(access, await _raw_windows(conn, access.officer_id, start, end, limit), start, end)


async def access_report(conn: AsyncConnection, officer_id: int) -> list[dict]:
    """Who read (or tried to read) this officer's data, when, for what purpose, and the answer."""
    rows = (await conn.execute(
        sa.select(t.audit_log.c.seq, t.audit_log.c.at, t.audit_log.c.actor, t.audit_log.c.purpose,
                  t.audit_log.c.outcome, t.audit_log.c.details)
        .where(t.audit_log.c.action == "access", t.audit_log.c.subject == f"officer:{officer_id}")
        .order_by(t.audit_log.c.seq)
    )).mappings().all()
    return [{"seq": r["seq"], "at": r["at"].isoformat(), "who": r["actor"], "role": r["details"].get("role"),
             "purpose": r["purpose"], "outcome": r["outcome"], "data_class": r["details"].get("data_class"),
             "rule": r["details"].get("rule"), "span": [r["details"].get("start"), r["details"].get("end")]} for r in rows]


@router.get("/me/access-report", summary="Who read my data, when and why (purpose: officer_self_access)")
async def my_access_report(request: Request, grant: MyAuditRecords) -> dict:
    access = await grant.audited()
    async with request.app.state.runtime.engine.connect() as conn:
        return {"officer_id": access.officer_id, "accesses": await access_report(conn, access.officer_id)}


@router.get("/me/export", summary="Everything Vigil holds about me (right of access; purpose: officer_self_access)",
            responses={404: {"description": "the account is linked to no officer record"}})
async def my_export(request: Request, features: MyDerivedFeatures, raw: MyRawWaveforms, incidents: MyIncidents,
                    evidence: MyAlertEvidence, reads: MyAuditRecords) -> dict:
    for grant in (raw, incidents, evidence, reads):
        await grant.audited()
    features = await features.audited()
    officer_id = features.officer_id
    async with request.app.state.runtime.engine.connect() as conn:
        officer = (await conn.execute(sa.select(t.officers).where(t.officers.c.id == officer_id))).mappings().first()
        if officer is None:
            raise HTTPException(404, "no officer record for this account")
        alerts = (await conn.execute(sa.select(t.alerts).where(t.alerts.c.officer_id == officer_id).order_by(t.alerts.c.raised_at))).mappings().all()
        ids = [a["id"] for a in alerts]
        steps = (await conn.execute(sa.select(t.alert_transitions).where(t.alert_transitions.c.alert_id.in_(ids))
                                    .order_by(t.alert_transitions.c.at))).mappings().all() if ids else []
        cohorts = (await conn.execute(sa.select(t.officer_cohorts).where(t.officer_cohorts.c.officer_id == officer_id))).mappings().all()
        return {
            "exported_at": features.now.isoformat(), "policy": features.policy.version, "policy_sha256": features.policy.sha256,
            "officer": _jsonable(dict(officer)),
            "cohorts": [_jsonable(dict(c)) for c in cohorts],
            "alerts": [_jsonable(dict(a)) for a in alerts],
            "alert_transitions": [_jsonable(dict(s)) for s in steps],
            "features": await _features(conn, officer_id, None, None, MAX_ROWS * 30),
            "raw_windows": await _raw_windows(conn, officer_id, None, None, MAX_ROWS),
            "access_report": await access_report(conn, officer_id),
        }
