"""Raising alerts: push first, store second, never drop.

An alert goes to the supervisors' live feed before the database is touched; if the write
fails it is kept in order and retried until the database is back (logged loudly)."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.alert_rules import ALERT_TYPES, alert_id
from backend.core import tables as t
from backend.hub import LiveHub
from backend.metrics import BackendMetrics

log = logging.getLogger("vigil.alerts")

# How many recent alert ids are remembered to suppress a second page for the same event.
RECENT_IDS = 100_000


@dataclass(slots=True)
class Alert:
    id: uuid.UUID
    agency_id: str
    device_id: int
    officer_id: int | None
    officer_name: str | None
    kind: str
    priority: int
    state: str
    raised_at: dt.datetime
    device_time: dt.datetime | None
    seq: int
    explanation: dict
    location: dict | None = None
    outcome: str | None = None
    transitions: list[dict] = field(default_factory=list)

    def public(self) -> dict:
        d = asdict(self)
        d["id"] = str(self.id)
        d["title"] = ALERT_TYPES[self.kind].title
        for k in ("raised_at", "device_time"):
            d[k] = d[k].isoformat() if d[k] else None
        for tr in d["transitions"]:
            tr["at"] = tr["at"].isoformat()
        return d


class AlertService:
    def __init__(self, engine: AsyncEngine, hub: LiveHub, metrics: BackendMetrics,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)):
        self._engine = engine
        self._hub = hub
        self._metrics = metrics
        self._now = now
        self._pending: collections.deque[Alert] = collections.deque()
        self._recent: collections.OrderedDict[uuid.UUID, Alert] = collections.OrderedDict()
        self._storage_ok = True
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def raise_alert(self, *, agency_id: str, device_id: int, seq: int, kind: str,
                          officer_id: int | None, officer_name: str | None, explanation: dict,
                          device_time: dt.datetime | None = None, location: dict | None = None,
                          received_monotonic: float | None = None) -> Alert | None:
        """Raise one alert; returns None when this event already raised it."""
        aid = alert_id(device_id, seq, kind)
        if aid in self._recent:
            return None
        now = self._now()
        alert = Alert(
            id=aid, agency_id=agency_id, device_id=device_id, officer_id=officer_id,
            officer_name=officer_name, kind=kind, priority=ALERT_TYPES[kind].priority,
            state="raised", raised_at=now, device_time=device_time, seq=seq,
            explanation=explanation, location=location,
            transitions=[{"state": "raised", "at": now, "actor": f"device:{device_id}", "note": ""}],
        )
        self._remember(alert)
        self._hub.publish(agency_id, "alert", alert.public())
        if received_monotonic is not None:
            self._metrics.event_to_push.observe(time.monotonic() - received_monotonic)
        self._metrics.alerts_raised.labels(kind).inc()
        log.info("alert %s raised: %s for device %d (officer %s)", aid, kind, device_id, officer_name or "unassigned")
        await self._store_or_keep(alert)
        return alert

    def _remember(self, alert: Alert) -> None:
        self._recent[alert.id] = alert
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    async def _store_or_keep(self, alert: Alert) -> None:
        if self._pending:  # keep order: never write a newer alert before older ones
            self._keep(alert)
            return
        try:
            await self._store(alert)
            if not self._storage_ok:
                log.warning("database is back: alert storage recovered")
                self._storage_ok = True
        except (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
            self._metrics.storage_failures.inc()
            if self._storage_ok:
                log.error("DATABASE WRITE FAILED for alert %s (%s); the alert was pushed live and is kept for retry: %s",
                          alert.id, alert.kind, exc.__class__.__name__)
                self._storage_ok = False
            self._keep(alert)

    def _keep(self, alert: Alert) -> None:
        self._pending.append(alert)
        self._metrics.alerts_pending_storage.set(len(self._pending))
        self._wake.set()

    async def _store(self, alert: Alert) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(t.alerts).values(
                    id=alert.id, agency_id=alert.agency_id, officer_id=alert.officer_id,
                    device_id=alert.device_id, kind=alert.kind, priority=alert.priority,
                    state=alert.state, raised_at=alert.raised_at, device_time=alert.device_time,
                    seq=alert.seq, explanation=alert.explanation, location=alert.location,
                    outcome=alert.outcome, updated_at=alert.raised_at,
                ).on_conflict_do_nothing(index_elements=["id"])
            )
            await conn.execute(
                pg_insert(t.alert_transitions).values(
                    [{"alert_id": alert.id, **tr} for tr in alert.transitions]
                ).on_conflict_do_nothing(constraint="alert_transition_once")
            )

    async def run_storage_retry(self, stop: asyncio.Event, interval_s: float) -> None:
        """Write kept alerts, oldest first, until the queue is empty; wakes on new ones."""
        while not stop.is_set():
            if not self._pending:
                self._wake.clear()
                await _wait_either(stop, self._wake)
                continue
            try:
                while self._pending:
                    await self._store(self._pending[0])
                    self._pending.popleft()
                    self._metrics.alerts_pending_storage.set(len(self._pending))
                log.warning("database is back: all kept alerts stored")
                self._storage_ok = True
            except (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError):
                self._metrics.storage_failures.inc()
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except asyncio.TimeoutError:
                    pass

    async def list_alerts(self, agency_id: str, limit: int = 100) -> list[dict]:
        query = (
            sa.select(t.alerts, t.officers.c.name.label("officer_name"))
            .select_from(t.alerts.outerjoin(t.officers, t.officers.c.id == t.alerts.c.officer_id))
            .where(t.alerts.c.agency_id == agency_id)
            .order_by(t.alerts.c.raised_at.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d["id"] = str(d["id"])
            d["title"] = ALERT_TYPES[d["kind"]].title
            for k in ("raised_at", "device_time", "updated_at"):
                d[k] = d[k].isoformat() if d[k] else None
            out.append(d)
        return out


async def _wait_either(a: asyncio.Event, b: asyncio.Event) -> None:
    ta, tb = asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())
    try:
        await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ta.cancel()
        tb.cancel()
