"""The audit log for auditors: entries of their agency and the deployment-wide ones (policy
versions, retention runs), and the chain's verification."""
from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from backend.db import schema as t
from backend.privacy import audit
from backend.privacy.access import Grant, require_access

router = APIRouter(tags=["audit"])

AgencyAudit = Annotated[Grant, require_access("audit_records", target="agency")]


@router.get("/audit", summary="Audit entries of the caller's agency, oldest first (auditors; purpose oversight_audit)")
async def list_audit(request: Request, grant: AgencyAudit, after_seq: int = Query(0, ge=0),
                     limit: int = Query(500, ge=1, le=10_000), action: str | None = None) -> list[dict]:
    access = await grant.audited()
    # the agency's entries and the deployment's (policy versions, retention), which concern every agency
    q = (sa.select(t.audit_log).where(t.audit_log.c.agency_id.in_([access.caller.agency_id, audit.DEPLOYMENT]),
                                      t.audit_log.c.seq > after_seq)
         .order_by(t.audit_log.c.seq).limit(limit))
    if action:
        q = q.where(t.audit_log.c.action == action)
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(q)).mappings().all()
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


@router.get("/audit/verify", summary="Verify the whole hash chain (auditors; purpose oversight_audit)")
async def verify(request: Request, grant: AgencyAudit) -> dict:
    await grant.audited()
    result = await audit.verify(request.app.state.runtime.engine)
    return {"ok": result.ok, "entries": result.entries, "head_seq": result.head_seq, "head_hash": result.head_hash,
            "problems": result.problems}
