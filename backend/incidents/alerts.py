"""Alert incidents and their lifecycle: push first, store second, never drop.

An alert goes to the supervisors' live feed before the database is touched; every change of an
incident (raised, delivered, upgraded, escalated, acknowledged, resolved, ...) is stored by the
alert store (``store.py``: the row plus a transition with who and when, kept and retried in
order while the database is away). The parts that react to an incident (downlink, dispatch)
hear it through :class:`~backend.incidents.events.IncidentEvents`.

One incident per officer at a time: an alert for an officer who already has an open incident
joins it (upgrading its kind and priority when it outranks it) instead of paging again."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
import uuid
from typing import Callable

from backend.app.metrics import BackendMetrics
from backend.detection.status import StatusBoard
from backend.exceptions import Conflict, NotFound
from backend.incidents import events as ev
from backend.incidents.hub import LiveHub
from backend.incidents.model import Alert, add_transition, escalation_standing, incident_key, on_board, workflow
from backend.incidents.rules import (ALERT_TYPES, CANCELLABLE, ESCALATED, EVENT_CANCEL, EVENT_TRANSITIONS, NOTE,
                                     OUTCOMES, RESPONDER_ASSIGNED, alert_id, outranks)
from backend.incidents.store import AlertStore

log = logging.getLogger("vigil.alerts")

# How many recent alert ids are remembered to suppress a second page for the same event.
RECENT_IDS = 100_000
# Ids of alerts raised this long before a restart are reloaded, so an event the broker
# redelivers after the restart cannot page again.
DEDUPE_RELOAD = dt.timedelta(days=1)


class AlertService:
    def __init__(self, store: AlertStore, hub: LiveHub, metrics: BackendMetrics, events: ev.IncidentEvents,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc), *,
                 status: StatusBoard, escalate_after_s: float = 30.0, cancel_grace_s: float = 60.0):
        self.store = store
        self._hub = hub
        self._status = status  # the officer board: an incident's changes show on it
        self._metrics = metrics
        self._events = events
        self._now = now
        self.escalate_after_s = escalate_after_s
        self.cancel_grace_s = cancel_grace_s
        self._recent: collections.OrderedDict[uuid.UUID, Alert] = collections.OrderedDict()
        self._open: dict[tuple[str, int], Alert] = {}

    # ---- what is open, what is waiting -------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alerts with changes not yet stored."""
        return self.store.pending

    def open_incidents(self, agency_id: str | None = None) -> list[Alert]:
        return [a for a in self._open.values() if agency_id is None or a.agency_id == agency_id]

    def find(self, alert: uuid.UUID) -> Alert | None:
        found = self._recent.get(alert)
        return found if found is not None and found.id == alert else None

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
        key = incident_key(officer_id, device_id)
        incident = self._open.get(key)
        if incident is not None:
            self._remember(aid, incident)
            self._join(incident, kind, explanation, location, device_id, now)
            self._metrics.alerts_raised.labels(kind).inc()
            await self.store.save(incident, insert_only=False, wait=False)
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
        self._events.emit(ev.RAISED, alert)
        await self.store.save(alert, insert_only=True, wait=False)
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
            self._events.emit(ev.UPGRADED, incident)  # colleagues nearby are told of a man-down that began as a fall
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
        await self.store.save(incident, insert_only=False, wait=False)

    async def acknowledge(self, alert: uuid.UUID, actor: str, agency_id: str, note: str = "") -> Alert:
        incident = self._open_for(alert, agency_id)
        if incident.state == "acknowledged":
            raise Conflict(f"alert {alert} is already acknowledged")
        incident.state = "acknowledged"
        self._transition(incident, "acknowledged", actor, note, self._now())
        self._publish(incident, "acknowledged")
        self._events.emit(ev.ACKNOWLEDGED, incident)
        await self.store.save(incident, insert_only=False)
        return incident

    async def resolve(self, alert: uuid.UUID, actor: str, agency_id: str, outcome: str, note: str = "") -> Alert:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        incident = self._open_for(alert, agency_id)
        self._close(incident, actor, outcome, note)
        await self.store.save(incident, insert_only=False)
        return incident

    # ---- a supervisor's steps (issue 21): each one a transition, journaled and stored like the rest

    async def escalate(self, alert: uuid.UUID, actor: str, agency_id: str, reason: str) -> Alert:
        """A supervisor escalates an open incident by hand, saying why: every supervisor on duty
        sees it at the top of the queue and dispatch is told, as when nobody acknowledged in time."""
        incident = self._open_for(alert, agency_id)
        if escalation_standing(incident):
            raise Conflict(f"alert {alert} is already escalated and not acknowledged since")
        incident.escalated = True
        self._transition(incident, ESCALATED, actor, reason, self._now())
        self._publish(incident, ESCALATED)
        log.warning("incident %s escalated by %s: %s", incident.id, actor, reason)
        self._events.emit(ev.ESCALATED, incident)
        await self.store.save(incident, insert_only=False)
        return incident

    async def add_note(self, alert: uuid.UUID, actor: str, agency_id: str, text: str) -> Alert:
        """Append a note to an open incident (notes are never edited: a correction is a new note)."""
        incident = self._open_for(alert, agency_id)
        self._transition(incident, NOTE, actor, text, self._now())
        self._publish(incident, NOTE)
        await self.store.save(incident, insert_only=False)
        return incident

    async def assign_responder(self, alert: uuid.UUID, actor: str, agency_id: str, responder: str) -> Alert:
        """Name who goes to the officer (a person, a unit); a later assignment replaces it."""
        incident = self._open_for(alert, agency_id)
        current = workflow(incident.transitions)["responder"]
        if current is not None and current["name"] == responder:
            raise Conflict(f"alert {alert} already has {responder!r} as its responder")
        self._transition(incident, RESPONDER_ASSIGNED, actor, responder, self._now())
        self._publish(incident, RESPONDER_ASSIGNED)
        await self.store.save(incident, insert_only=False)
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
        self._open.pop(incident_key(incident.officer_id, incident.device_id), None)
        self._publish(incident, "resolved")
        log.info("incident %s resolved by %s: %s", incident.id, actor, outcome)

    async def device_event(self, *, device_id: int, officer_id: int | None, seq: int, code: int) -> Alert | None:
        """A device event that is not an alert: the officer cancelling a pre-alert, the pre-alert
        starting, the officer confirming "help is coming". Acts on the open incident, if any."""
        marker = alert_id(device_id, seq, f"event-{code}")
        if marker in self._recent:
            return None
        incident = self._open.get(incident_key(officer_id, device_id))
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
        await self.store.save(incident, insert_only=False, wait=False)
        return incident

    async def escalate_due(self) -> list[Alert]:
        """Escalate every incident left unacknowledged for escalate_after_s: to every supervisor
        on duty of its agency, flagged for dispatch, and sent to the dispatch webhook."""
        now = self._now()
        due = [a for a in self._open.values()
               if a.state in ("raised", "delivered") and not a.escalated
               and (now - a.raised_at).total_seconds() >= self.escalate_after_s]
        for incident in due:
            incident.escalated = True
            self._transition(incident, "escalated", "system",
                             f"unacknowledged for {self.escalate_after_s:g} s: all supervisors on duty, dispatch flagged", now)
            self._publish(incident, "escalated")
            log.warning("incident %s unacknowledged after %.0f s: escalated", incident.id, self.escalate_after_s)
            self._events.emit(ev.ESCALATED, incident)
            await self.store.save(incident, insert_only=False, wait=False)
        return due

    async def record(self, alert: uuid.UUID, state: str, actor: str, note: str) -> None:
        """A side step of an incident (dispatch notified, help sent / its result)."""
        incident = self.find(alert)
        if incident is None:
            return
        self._transition(incident, state, actor, note, self._now())
        self._publish(incident, state)
        await self.store.save(incident, insert_only=False, wait=False)

    async def run_escalation(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            await self.escalate_due()
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except asyncio.TimeoutError:
                pass

    def _transition(self, incident: Alert, state: str, actor: str, note: str, at: dt.datetime) -> None:
        add_transition(incident, state, actor, note, at)

    def _publish(self, incident: Alert, change: str) -> None:
        data = incident.public()
        data["change"] = change
        self._hub.publish(incident.agency_id, "alert", data)
        if incident.officer_id is not None:
            status = self._status.incident_changed(incident.device_id, incident.agency_id, incident.officer_id,
                                                   incident.officer_name, on_board(incident), self._now().timestamp())
            if status is not None:
                self._hub.publish(incident.agency_id, "officer_status", status.to_json())

    def _remember(self, aid: uuid.UUID, alert: Alert) -> None:
        self._recent[aid] = alert
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    async def load_open(self) -> int:
        """After a restart: take back the open incidents (with their transitions) and the ids
        of recent alerts, so the lifecycle continues where it stopped."""
        reopened = 0
        for alert in await self.store.recent(self._now() - DEDUPE_RELOAD):
            if alert.id in self._recent:
                continue
            self._remember(alert.id, alert)
            if alert.is_open:
                self._open.setdefault(incident_key(alert.officer_id, alert.device_id), alert)
                if alert.officer_id is not None:
                    self._status.incidents[alert.officer_id] = on_board(alert)
                reopened += 1
        if reopened:
            log.warning("%d open incidents taken back after a restart", reopened)
        return reopened

    # ---- reading ----------------------------------------------------------------------------

    async def list_alerts(self, agency_id: str, limit: int = 100, *, officer_id: int | None = None,
                          open_only: bool = False) -> list[dict]:
        return await self.store.list_alerts(agency_id, limit, officer_id=officer_id, open_only=open_only)

    async def get_alert(self, agency_id: str, alert: uuid.UUID, officer_id: int | None = None) -> dict:
        """One alert with its transitions; open incidents come from memory (also while the
        database is down), others from the database."""
        found = self.find(alert)
        if found is not None and found.agency_id == agency_id and (officer_id is None or found.officer_id == officer_id):
            return found.public()
        rows = await self.store.list_alerts(agency_id, 1, officer_id=officer_id, alert=alert)
        if not rows:
            raise NotFound(f"alert {alert}")
        return rows[0]
