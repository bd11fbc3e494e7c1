"""Alerts in PostgreSQL: every change of an incident written as the alert row plus its new
transitions, in order. A change is first appended to the local alert journal and fsynced
(:mod:`backend.incidents.journal`): from then on it survives a crash, and the frame that
carried it may be acknowledged. The writer stores changes oldest first; a write that fails is
kept and retried until the database is back (logged loudly once, counted), so the lifecycle
keeps working while it is away, and a hung database never holds up the next SOS. At start-up
what the journal holds is stored before anything else. Also the reads: recent incidents after
a restart, and the alert lists and details of the API."""
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
from backend.incidents.journal import AlertJournal
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
    stored: asyncio.Future | None = None  # set once written to PostgreSQL (not journaled)

    def __getstate__(self):  # what the journal keeps: the change, not the waiting
        return (self.alert_id, self.row, self.transitions, self.insert_only)

    def __setstate__(self, state):
        self.alert_id, self.row, self.transitions, self.insert_only = state
        self.stored = None


class AlertStore:
    """Writes incidents' changes, journaled first, and reads them back.

    ``journal`` None keeps changes in memory only until stored (tools and tests that need no
    durability); ``wait_s`` bounds how long :meth:`save` waits for PostgreSQL when asked to."""

    def __init__(self, engine: AsyncEngine, metrics: BackendMetrics, journal: AlertJournal | None = None,
                 wait_s: float = 2.0):
        self._engine = engine
        self._metrics = metrics
        self._journal = journal
        self._wait_s = wait_s
        self._pending: collections.deque[_Write] = collections.deque()
        self._storage_ok = True
        self._wake = asyncio.Event()
        self._recovered = journal is None
        self._loaded = False

    @property
    def pending(self) -> int:
        """Alerts with changes not yet stored."""
        return len({w.alert_id for w in self._pending})

    async def save(self, alert: Alert, insert_only: bool, wait: bool = True) -> None:
        """Journal the alert's row and the transitions not written yet, and queue them for the
        writer. Returns once journaled (the change survives a crash); with ``wait`` also waits
        up to ``wait_s`` for PostgreSQL, so that a read right after sees it (an API request);
        without (the event path) a slow database never delays the next frame."""
        new = [tr for tr in alert.transitions if not tr.get("_queued")]
        for tr in new:
            tr["_queued"] = True
        write = _Write(alert.id, alert.row(), [{k: v for k, v in tr.items() if k != "_queued"} for tr in new], insert_only)
        if self._journal is not None:
            await self._journal.append(write)
        write.stored = asyncio.get_running_loop().create_future()
        self._keep(write)
        if wait and self._storage_ok and self._recovered:
            try:
                await asyncio.wait_for(asyncio.shield(write.stored), self._wait_s)
            except asyncio.TimeoutError:
                pass  # kept, journaled: the writer stores it when the database answers

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

    async def recover(self) -> int:
        """Store what the journal holds from before a restart (call before loading incidents);
        raises a storage error while the database is away (call again). A change the database
        refuses for good (its device or agency no longer exists) is logged and set aside in
        ``<journal>.refused``. Returns how many changes were stored."""
        if self._recovered:
            return 0
        if not self._loaded:
            kept = self._journal.read()
            if kept:
                log.warning("alert journal %s holds %d change(s) not known to be stored; storing them",
                            self._journal.path, len(kept))
            # the changes saved since this process started are at the file's end and already
            # queued; the older ones go first, so a newer change is never overwritten by an older
            kept = kept[:len(kept) - len(self._pending)] if self._pending else kept
            self._pending.extendleft(reversed(kept))
            self._metrics.alerts_pending_storage.set(len(self._pending))
            self._loaded = True
        stored = 0
        while self._pending:
            write = self._pending[0]
            try:
                await self._store(write)
            except sa.exc.IntegrityError as exc:
                self._set_aside(write, exc)
            else:
                stored += 1
            self._pending.popleft()
            if write.stored is not None and not write.stored.done():  # a change made meanwhile
                write.stored.set_result(None)
            self._metrics.alerts_pending_storage.set(len(self._pending))
        self._journal.clear()
        self._recovered = True
        self._wake.set()  # the writer waited for this
        return stored

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every change queued so far is stored (True), or ``timeout_s`` passed (False):
        a graceful stop, and tests that read the tables."""
        last = self._pending[-1] if self._pending else None
        if last is None or last.stored is None:
            return not self._pending
        try:
            await asyncio.wait_for(asyncio.shield(last.stored), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def _set_aside(self, write: _Write, exc: sa.exc.IntegrityError) -> None:
        """A change the database refuses for good (its device or agency no longer exists):
        logged, counted, kept beside the journal for inspection, not retried for ever."""
        self._metrics.storage_failures.inc()
        where = f"{self._journal.path}.refused" if self._journal is not None else None
        log.error("alert change for %s refused by the database for good (%s)%s", write.alert_id,
                  (exc.orig or exc).__class__.__name__, f"; set aside in {where}" if where else "")
        if where:
            with open(where, "ab") as f:
                f.write(repr((write.alert_id, write.row, write.transitions)).encode() + b"\n")
        if write.stored is not None and not write.stored.done():
            write.stored.set_result(None)

    async def run_retry(self, stop: asyncio.Event, interval_s: float) -> None:
        """The writer: store queued changes, oldest first, as they come; while the database is
        away, retry every ``interval_s``. Empties the journal whenever everything is stored."""
        while not stop.is_set():
            if not self._pending or not self._recovered:
                self._wake.clear()
                await wait_for_any(stop, self._wake)
                continue
            try:
                while self._pending:
                    write = self._pending[0]
                    try:
                        await self._store(write)
                    except sa.exc.IntegrityError as exc:
                        self._set_aside(write, exc)
                    self._pending.popleft()
                    if write.stored is not None and not write.stored.done():
                        write.stored.set_result(None)
                    self._metrics.alerts_pending_storage.set(len(self._pending))
                if self._journal is not None:
                    self._journal.clear()
                if not self._storage_ok:
                    log.warning("database is back: all kept alert changes stored")
                    self._storage_ok = True
            except _STORAGE_ERRORS as exc:
                self._metrics.storage_failures.inc()
                if self._storage_ok:
                    log.error("DATABASE WRITE FAILED for alert %s; the change was pushed live, is journaled and kept "
                              "for retry: %s", self._pending[0].alert_id if self._pending else "?", exc.__class__.__name__)
                    self._storage_ok = False
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
            steps = await self._transitions(conn, [r["id"] for r in rows])
        return [row_public(r, steps.get(r["id"], [])) for r in rows]

    @staticmethod
    async def _transitions(conn, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict]]:
        """The stored steps of these alerts, each oldest first, times as ISO text."""
        out: dict[uuid.UUID, list[dict]] = collections.defaultdict(list)
        if not ids:
            return out
        c = t.alert_transitions.c
        for s in (await conn.execute(
            sa.select(c.alert_id, c.state, c.at, c.actor, c.note).where(c.alert_id.in_(ids)).order_by(c.alert_id, c.at)
        )).mappings():
            out[s["alert_id"]].append({"state": s["state"], "at": s["at"].isoformat(), "actor": s["actor"], "note": s["note"]})
        return out
