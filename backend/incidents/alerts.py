"""Alert incidents and their lifecycle: push first, store second, never drop.

An alert goes to the supervisors' live feed before the database is touched; every change of an
incident (raised, delivered, upgraded, escalated, acknowledged, resolved, ...) is stored as the
alert row plus a transition with who and when. A write that fails is kept in order and retried
until the database is back (logged loudly), so the lifecycle keeps working while it is away.

One incident per officer at a time: an alert for an officer who already has an open incident
joins it (upgrading its kind and priority when it outranks it) instead of paging again."""
from __future__ import annotations

import asyncio
import collections
import copy
import datetime as dt
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.incidents.rules import (ALERT_TYPES, CANCELLABLE, EVENT_CANCEL, EVENT_TRANSITIONS, OUTCOMES,
                                 alert_id, outranks)
from backend.db import schema as t
from backend.detection.status import OpenIncident, StatusBoard
from backend.exceptions import Conflict, NotFound
from backend.incidents.hub import LiveHub
from backend.app.metrics import BackendMetrics
from backend.app.waiting import wait_for_any

if TYPE_CHECKING:
    from backend.incidents.dispatch import DispatchWebhook
    from backend.incidents.downlink import DownlinkService

log = logging.getLogger("vigil.alerts")

# How many recent alert ids are remembered to suppress a second page for the same event.
RECENT_IDS = 100_000
# Ids of alerts raised this long before a restart are reloaded, so an event the broker
# redelivers after the restart cannot page again.
DEDUPE_RELOAD = dt.timedelta(days=1)
_STORAGE_ERRORS = (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError)


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
    escalated: bool = False
    dispatch: bool = False
    updated_at: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.state != "resolved"

    def public(self) -> dict:
        d = asdict(self)
        d["id"] = str(self.id)
        d["title"] = ALERT_TYPES[self.kind].title
        for k in ("raised_at", "device_time", "updated_at"):
            d[k] = d[k].isoformat() if d[k] else None
        d["transitions"] = [{k: (v.isoformat() if k == "at" else v) for k, v in tr.items() if k != "_queued"}
                            for tr in d["transitions"]]
        return d

    def row(self) -> dict:
        return dict(id=self.id, agency_id=self.agency_id, officer_id=self.officer_id, device_id=self.device_id,
                    kind=self.kind, priority=self.priority, state=self.state, raised_at=self.raised_at,
                    device_time=self.device_time, seq=self.seq, explanation=copy.deepcopy(self.explanation),
                    location=self.location, outcome=self.outcome, updated_at=self.updated_at or self.raised_at)


@dataclass(slots=True)
class _Write:
    """One change to store: the alert row as it was then, and the transitions it added."""
    alert_id: uuid.UUID
    row: dict
    transitions: list[dict]
    insert_only: bool  # the first write of an alert never overwrites a stored row


def _incident_key(officer_id: int | None, device_id: int) -> tuple[str, int]:
    return ("officer", officer_id) if officer_id is not None else ("device", device_id)


class AlertService:
    def __init__(self, engine: AsyncEngine, hub: LiveHub, metrics: BackendMetrics,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc), *,
                 status: StatusBoard, escalate_after_s: float = 30.0, cancel_grace_s: float = 60.0):
        self._engine = engine
        self._hub = hub
        self._status = status  # the officer board: an incident's changes show on it
        self._metrics = metrics
        self._now = now
        self.escalate_after_s = escalate_after_s
        self.cancel_grace_s = cancel_grace_s
        self._pending: collections.deque[_Write] = collections.deque()
        self._recent: collections.OrderedDict[uuid.UUID, Alert] = collections.OrderedDict()
        self._open: dict[tuple[str, int], Alert] = {}
        self._storage_ok = True
        self._wake = asyncio.Event()
        self.dispatch: DispatchWebhook | None = None
        self.downlink: DownlinkService | None = None

    # ---- what is open, what is waiting -------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alerts with changes not yet stored."""
        return len({w.alert_id for w in self._pending})

    def open_incidents(self, agency_id: str | None = None) -> list[Alert]:
        return [a for a in self._open.values() if agency_id is None or a.agency_id == agency_id]

    def find(self, alert: uuid.UUID) -> Alert | None:
        found = self._recent.get(alert)
        return found if found is not None and found.id == alert else None

    def note_gateway(self, device_id: int, gateway: str) -> None:
        """Nothing: the status board records the gateway of every frame (StatusBoard.seen).
        Kept only until ingest stops calling it."""

    # ---- raising ----------------------------------------------------------------------------

    async def raise_alert(self, *, agency_id: str, device_id: int, seq: int, kind: str,
                          officer_id: int | None, officer_name: str | None, explanation: dict,
                          device_time: dt.datetime | None = None, location: dict | None = None,
                          received_monotonic: float | None = None) -> Alert | None:
        """Raise one alert, or join it to the officer's open incident. Returns the incident, or
        None when this event was already handled."""
        aid = alert_id(device_id, seq, kind)
        if aid in self._recent:
            return None
        now = self._now()
        key = _incident_key(officer_id, device_id)
        incident = self._open.get(key)
        if incident is not None:
            self._remember(aid, incident)
            self._join(incident, kind, explanation, location, device_id, now)
            self._metrics.alerts_raised.labels(kind).inc()
            await self._store_or_keep(incident, insert_only=False)
            return incident
        alert = Alert(
            id=aid, agency_id=agency_id, device_id=device_id, officer_id=officer_id,
            officer_name=officer_name, kind=kind, priority=ALERT_TYPES[kind].priority,
            state="raised", raised_at=now, device_time=device_time, seq=seq,
            explanation=explanation, location=location, updated_at=now,
            transitions=[{"state": "raised", "at": now, "actor": f"device:{device_id}", "note": kind}],
        )
        self._remember(aid, alert)
        self._open[key] = alert
        self._publish(alert, "raised")
        if received_monotonic is not None:
            self._metrics.event_to_push.observe(time.monotonic() - received_monotonic)
        self._metrics.alerts_raised.labels(kind).inc()
        log.info("alert %s raised: %s for device %d (officer %s)", aid, kind, device_id, officer_name or "unassigned")
        if self.downlink is not None:
            self.downlink.prepare(device_id)  # reserve command seqs now, while the database answers
        await self._store_or_keep(alert, insert_only=True)
        return alert

    def _join(self, incident: Alert, kind: str, explanation: dict, location: dict | None,
              device_id: int, now: dt.datetime) -> None:
        related = incident.explanation.setdefault("related", [])
        related.append({"kind": kind, "at": now.isoformat(), "explanation": explanation})
        if location:
            incident.location = location
        if outranks(kind, incident.kind):
            note = f"{incident.kind} -> {kind}"
            incident.kind = kind
            incident.priority = min(incident.priority, ALERT_TYPES[kind].priority)
            self._transition(incident, "upgraded", f"device:{device_id}", note, now)
            self._publish(incident, "upgraded")
            log.warning("incident %s upgraded: %s", incident.id, note)
        else:
            self._transition(incident, "merged", f"device:{device_id}", kind, now)
            self._publish(incident, "merged")

    # ---- the lifecycle -----------------------------------------------------------------------

    async def mark_delivered(self, alert: uuid.UUID, actor: str) -> None:
        """The incident was written to at least one supervisor's live connection."""
        incident = self.find(alert)
        if incident is None or incident.state != "raised":
            return
        incident.state = "delivered"
        self._transition(incident, "delivered", actor, "", self._now())
        self._publish(incident, "delivered")
        await self._store_or_keep(incident, insert_only=False)

    async def acknowledge(self, alert: uuid.UUID, actor: str, agency_id: str, note: str = "") -> Alert:
        incident = self._open_for(alert, agency_id)
        if incident.state == "acknowledged":
            raise Conflict(f"alert {alert} is already acknowledged")
        incident.state = "acknowledged"
        self._transition(incident, "acknowledged", actor, note, self._now())
        self._publish(incident, "acknowledged")
        if self.downlink is not None:
            self.downlink.help_coming(incident)
        await self._store_or_keep(incident, insert_only=False)
        return incident

    async def resolve(self, alert: uuid.UUID, actor: str, agency_id: str, outcome: str, note: str = "") -> Alert:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        incident = self._open_for(alert, agency_id)
        self._close(incident, actor, outcome, note)
        await self._store_or_keep(incident, insert_only=False)
        return incident

    def _open_for(self, alert: uuid.UUID, agency_id: str) -> Alert:
        incident = self.find(alert)
        if incident is None or incident.agency_id != agency_id:
            raise NotFound(f"no open alert {alert}")
        if not incident.is_open:
            raise Conflict(f"alert {alert} is already resolved ({incident.outcome})")
        return incident

    def _close(self, incident: Alert, actor: str, outcome: str, note: str) -> None:
        incident.state = "resolved"
        incident.outcome = outcome
        self._transition(incident, "resolved", actor, note or outcome, self._now())
        self._open.pop(_incident_key(incident.officer_id, incident.device_id), None)
        self._publish(incident, "resolved")
        log.info("incident %s resolved by %s: %s", incident.id, actor, outcome)

    async def device_event(self, *, device_id: int, officer_id: int | None, seq: int, code: int) -> Alert | None:
        """A device event that is not an alert: the officer cancelling a pre-alert, the pre-alert
        starting, the officer confirming "help is coming". Acts on the open incident, if any."""
        marker = alert_id(device_id, seq, f"event-{code}")
        if marker in self._recent:
            return None
        incident = self._open.get(_incident_key(officer_id, device_id))
        if incident is None:
            return None
        self._remember(marker, incident)
        now = self._now()
        actor = f"device:{device_id}"
        if code == EVENT_CANCEL:
            within_grace = (now - incident.raised_at).total_seconds() <= self.cancel_grace_s
            if incident.kind in CANCELLABLE and within_grace:
                self._close(incident, actor, "cancelled_by_officer", "the officer cancelled the pre-alert")
            else:
                why = "after the grace window" if not within_grace else f"a {incident.kind} needs a person to resolve it"
                self._transition(incident, "merged", actor, f"cancel ignored: {why}", now)
                self._publish(incident, "merged")
        elif code in EVENT_TRANSITIONS:
            self._transition(incident, EVENT_TRANSITIONS[code], actor, "", now)
            self._publish(incident, EVENT_TRANSITIONS[code])
        else:
            return None
        await self._store_or_keep(incident, insert_only=False)
        return incident

    async def escalate_due(self) -> list[Alert]:
        """Escalate every incident left unacknowledged for escalate_after_s: to every supervisor
        on duty of its agency, flagged for dispatch, and sent to the dispatch webhook."""
        now = self._now()
        due = [a for a in self._open.values()
               if a.state in ("raised", "delivered") and not a.escalated
               and (now - a.raised_at).total_seconds() >= self.escalate_after_s]
        for incident in due:
            incident.escalated = incident.dispatch = True
            self._transition(incident, "escalated", "system",
                             f"unacknowledged for {self.escalate_after_s:g} s: all supervisors on duty, dispatch flagged", now)
            self._publish(incident, "escalated")
            log.warning("incident %s unacknowledged after %.0f s: escalated", incident.id, self.escalate_after_s)
            if self.dispatch is not None:
                self.dispatch.notify(incident)
            await self._store_or_keep(incident, insert_only=False)
        return due

    async def record(self, alert: uuid.UUID, state: str, actor: str, note: str) -> None:
        """A side step of an incident (dispatch notified, help sent / its result)."""
        incident = self.find(alert)
        if incident is None:
            return
        self._transition(incident, state, actor, note, self._now())
        self._publish(incident, state)
        await self._store_or_keep(incident, insert_only=False)

    async def run_escalation(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            await self.escalate_due()
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except asyncio.TimeoutError:
                pass

    def _transition(self, incident: Alert, state: str, actor: str, note: str, at: dt.datetime) -> None:
        # the unique key is (alert, state, at): two steps of one kind in one microsecond stay two
        last = incident.transitions[-1]["at"] if incident.transitions else at
        if at <= last:
            at = last + dt.timedelta(microseconds=1)
        incident.transitions.append({"state": state, "at": at, "actor": actor, "note": note})
        incident.updated_at = at

    def _publish(self, incident: Alert, change: str) -> None:
        data = incident.public()
        data["change"] = change
        self._hub.publish(incident.agency_id, "alert", data)
        if incident.officer_id is not None:
            status = self._status.incident_changed(incident.device_id, incident.agency_id, incident.officer_id,
                                                   incident.officer_name, _on_board(incident), self._now().timestamp())
            if status is not None:
                self._hub.publish(incident.agency_id, "officer_status", status.to_json())

    def _remember(self, aid: uuid.UUID, alert: Alert) -> None:
        self._recent[aid] = alert
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    # ---- storage ----------------------------------------------------------------------------

    async def _store_or_keep(self, alert: Alert, insert_only: bool) -> None:
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
                changed = ("kind", "priority", "state", "explanation", "location", "outcome", "updated_at")
                stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={c: stmt.excluded[c] for c in changed})
            await conn.execute(stmt)
            if write.transitions:
                await conn.execute(
                    pg_insert(t.alert_transitions).values(
                        [{"alert_id": write.alert_id, **tr} for tr in write.transitions]
                    ).on_conflict_do_nothing(constraint="alert_transition_once")
                )

    async def run_storage_retry(self, stop: asyncio.Event, interval_s: float) -> None:
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

    async def load_open(self) -> int:
        """After a restart: take back the open incidents (with their transitions) and the ids
        of recent alerts, so the lifecycle continues where it stopped."""
        since = self._now() - DEDUPE_RELOAD
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
        reopened = 0
        for r in rows:
            alert = Alert(
                id=r["id"], agency_id=r["agency_id"], device_id=r["device_id"], officer_id=r["officer_id"],
                officer_name=r["officer_name"], kind=r["kind"], priority=r["priority"], state=r["state"],
                raised_at=r["raised_at"], device_time=r["device_time"], seq=r["seq"], explanation=r["explanation"],
                location=r["location"], outcome=r["outcome"], updated_at=r["updated_at"], transitions=steps.get(r["id"], []),
            )
            alert.escalated = alert.dispatch = any(tr["state"] == "escalated" for tr in alert.transitions)
            if alert.id in self._recent:
                continue
            self._remember(alert.id, alert)
            if alert.is_open:
                self._open.setdefault(_incident_key(alert.officer_id, alert.device_id), alert)
                if alert.officer_id is not None:
                    self._status.incidents[alert.officer_id] = _on_board(alert)
                reopened += 1
        if reopened:
            log.warning("%d open incidents taken back after a restart", reopened)
        return reopened

    # ---- reading ----------------------------------------------------------------------------

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
        return [_row_public(r) for r in rows]

    async def get_alert(self, agency_id: str, alert: uuid.UUID, officer_id: int | None = None) -> dict:
        """One alert with its transitions; open incidents come from memory (also while the
        database is down), others from the database."""
        found = self.find(alert)
        if found is not None and found.agency_id == agency_id and (officer_id is None or found.officer_id == officer_id):
            return found.public()
        rows = await self.list_alerts(agency_id, 1, officer_id=officer_id, alert=alert)
        match = rows[0] if rows else None
        if match is None:
            raise NotFound(f"alert {alert}")
        async with self._engine.connect() as conn:
            steps = (await conn.execute(
                sa.select(t.alert_transitions.c.state, t.alert_transitions.c.at, t.alert_transitions.c.actor, t.alert_transitions.c.note)
                .where(t.alert_transitions.c.alert_id == alert).order_by(t.alert_transitions.c.at)
            )).mappings().all()
        match["transitions"] = [{**s, "at": s["at"].isoformat()} for s in steps]
        return match


def _on_board(incident: Alert) -> OpenIncident | None:
    if not incident.is_open:
        return None
    return OpenIncident(str(incident.id), incident.kind, incident.priority, incident.state, incident.escalated)


def _row_public(r) -> dict:
    d = dict(r)
    d["id"] = str(d["id"])
    d["title"] = ALERT_TYPES[d["kind"]].title
    d["dispatch"] = d.get("escalated", False)
    for k in ("raised_at", "device_time", "updated_at"):
        d[k] = d[k].isoformat() if d[k] else None
    return d

