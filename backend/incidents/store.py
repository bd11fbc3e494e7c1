"""Alerts in PostgreSQL: every change of an incident written as the alert row plus its new
transitions, in order; a write that fails is kept and retried until the database is back
(logged loudly once, counted), so the lifecycle keeps working while it is away. Also the reads:
recent incidents after a restart, and the alert lists and details of the API."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.metrics import BackendMetrics
from backend.app.waiting import wait_for_any
from backend.db import schema as t
from backend.incidents.model import Alert, row_public

log = logging.getLogger("vigil.alerts")

_STORAGE_ERRORS = (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError)
# Alert columns a later change of an incident may overwrite (the rest is fixed when raised).
_CHANGING = ("kind", "priority", "state", "explanation", "location", "outcome", "updated_at")


@dataclass(slots=True)
class _Write:
    """One change to store: the alert row as it was then, and the transitions it added."""
    alert_id: uuid.UUID
    row: dict
    transitions: list[dict]
    insert_only: bool  # the first write of an alert never overwrites a stored row


class AlertStore:
    def __init__(self, engine: AsyncEngine, metrics: BackendMetrics):
        self._engine = engine
        self._metrics = metrics
        self._pending: collections.deque[_Write] = collections.deque()
        self._storage_ok = True
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Alerts with changes not yet stored."""
        return len({w.alert_id for w in self._pending})

    async def save(self, alert: Alert, insert_only: bool) -> None:
        """Store the alert's row and the transitions not stored yet, or keep them for retry."""
        new = [tr for tr in alert.transitions if not tr.get("_queued")]
        for tr in new:
            tr["_queued"] = True
        write = _Write(alert.id, alert.row(), [{k: v for k, v in tr.items() if k != "_queued"} for tr in new], insert_only)
        if self._pending:  # keep order: never write a newer change before older ones
            self._keep(write)
            return
        try:
            await self._store(write)
            if not self._storage_ok:
                log.warning("database is back: alert storage recovered")
                self._storage_ok = True
        except _STORAGE_ERRORS as exc:
            self._metrics.storage_failures.inc()
            if self._storage_ok:
                log.error("DATABASE WRITE FAILED for alert %s (%s); the change was pushed live and is kept for retry: %s",
                          alert.id, alert.kind, exc.__class__.__name__)
                self._storage_ok = False
            self._keep(write)

    def _keep(self, write: _Write) -> None:
        self._pending.append(write)
        self._metrics.alerts_pending_storage.set(len(self._pending))
        self._wake.set()

    async def _store(self, write: _Write) -> None:
        async with self._engine.begin() as conn:
            stmt = pg_insert(t.alerts).values(**write.row)
            if write.insert_only:
                stmt = stmt.on_conflict_do_nothing(index_elements=["id"])
            else:
                stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={c: stmt.excluded[c] for c in _CHANGING})
            await conn.execute(stmt)
            if write.transitions:
                await conn.execute(
                    pg_insert(t.alert_transitions).values(
                        [{"alert_id": write.alert_id, **tr} for tr in write.transitions]
                    ).on_conflict_do_nothing(constraint="alert_transition_once")
                )

    async def run_retry(self, stop: asyncio.Event, interval_s: float) -> None:
        """Write kept changes, oldest first, until the queue is empty; wakes on new ones."""
        while not stop.is_set():
            if not self._pending:
                self._wake.clear()
                await wait_for_any(stop, self._wake)
                continue
            try:
                while self._pending:
                    await self._store(self._pending[0])
                    self._pending.popleft()
                    self._metrics.alerts_pending_storage.set(len(self._pending))
                log.warning("database is back: all kept alert changes stored")
                self._storage_ok = True
            except _STORAGE_ERRORS:
                self._metrics.storage_failures.inc()
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except asyncio.TimeoutError:
                    pass

    # ---- reading ----------------------------------------------------------------------------

    async def recent(self, since: dt.datetime) -> list[Alert]:
        """Alerts still open, and alerts raised since ``since``, oldest first, each with its
        stored transitions if it is open (what a restarted backend takes back)."""
        query = (
            sa.select(t.alerts, t.officers.c.name.label("officer_name"))
            .select_from(t.alerts.outerjoin(t.officers, t.officers.c.id == t.alerts.c.officer_id))
            .where((t.alerts.c.state != "resolved") | (t.alerts.c.raised_at >= since))
            .order_by(t.alerts.c.raised_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            ids = [r["id"] for r in rows if r["state"] != "resolved"]
            steps = collections.defaultdict(list)
            if ids:
                for tr in (await conn.execute(
                    sa.select(t.alert_transitions).where(t.alert_transitions.c.alert_id.in_(ids)).order_by(t.alert_transitions.c.at)
                )).mappings():
                    steps[tr["alert_id"]].append({"state": tr["state"], "at": tr["at"], "actor": tr["actor"], "note": tr["note"], "_queued": True})
        out = []
        for r in rows:
            alert = Alert(
                id=r["id"], agency_id=r["agency_id"], device_id=r["device_id"], officer_id=r["officer_id"],
                officer_name=r["officer_name"], kind=r["kind"], priority=r["priority"], state=r["state"],
                raised_at=r["raised_at"], device_time=r["device_time"], seq=r["seq"], explanation=r["explanation"],
                location=r["location"], outcome=r["outcome"], updated_at=r["updated_at"], transitions=steps.get(r["id"], []),
            )
            alert.escalated = any(tr["state"] == "escalated" for tr in alert.transitions)
            out.append(alert)
        return out

    async def list_alerts(self, agency_id: str, limit: int = 100, *, officer_id: int | None = None,
                          open_only: bool = False, alert: uuid.UUID | None = None) -> list[dict]:
        escalated = sa.exists().where(t.alert_transitions.c.alert_id == t.alerts.c.id, t.alert_transitions.c.state == "escalated")
        query = (
            sa.select(t.alerts, t.officers.c.name.label("officer_name"), escalated.label("escalated"))
            .select_from(t.alerts.outerjoin(t.officers, t.officers.c.id == t.alerts.c.officer_id))
            .where(t.alerts.c.agency_id == agency_id)
            .order_by(t.alerts.c.raised_at.desc())
            .limit(limit)
        )
        if officer_id is not None:
            query = query.where(t.alerts.c.officer_id == officer_id)
        if open_only:
            query = query.where(t.alerts.c.state != "resolved")
        if alert is not None:
            query = query.where(t.alerts.c.id == alert)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [row_public(r) for r in rows]

    async def transitions(self, alert: uuid.UUID) -> list[dict]:
        async with self._engine.connect() as conn:
            steps = (await conn.execute(
                sa.select(t.alert_transitions.c.state, t.alert_transitions.c.at, t.alert_transitions.c.actor, t.alert_transitions.c.note)
                .where(t.alert_transitions.c.alert_id == alert).order_by(t.alert_transitions.c.at)
            )).mappings().all()
        return [{**s, "at": s["at"].isoformat()} for s in steps]
