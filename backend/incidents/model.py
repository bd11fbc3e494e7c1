"""An incident as the lifecycle holds it, and the pure steps that change it.

No I/O here: the service (``alerts.py``) decides when a step happens, the store (``store.py``)
writes it, the live feed and the status board show it."""
from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field

from backend.detection.status import OpenIncident
from backend.incidents.rules import ALERT_TYPES, ESCALATED, NOTE, RESPONDER_ASSIGNED


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
    escalated: bool = False  # unacknowledged in time: every supervisor on duty told, dispatch flagged
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
        d.update(workflow(d["transitions"]))
        return d

    def row(self) -> dict:
        return dict(id=self.id, agency_id=self.agency_id, officer_id=self.officer_id, device_id=self.device_id,
                    kind=self.kind, priority=self.priority, state=self.state, raised_at=self.raised_at,
                    device_time=self.device_time, seq=self.seq, explanation=copy.deepcopy(self.explanation),
                    location=self.location, outcome=self.outcome, updated_at=self.updated_at or self.raised_at)


def incident_key(officer_id: int | None, device_id: int) -> tuple[str, int]:
    """One open incident per officer (per device while the device is unassigned)."""
    return ("officer", officer_id) if officer_id is not None else ("device", device_id)


def add_transition(incident: Alert, state: str, actor: str, note: str, at: dt.datetime) -> None:
    """Append one step. The stored unique key is (alert, state, at): two steps of one kind in
    one microsecond stay two, so a step never takes a time at or before the last one."""
    last = incident.transitions[-1]["at"] if incident.transitions else at
    if at <= last:
        at = last + dt.timedelta(microseconds=1)
    incident.transitions.append({"state": state, "at": at, "actor": actor, "note": note})
    incident.updated_at = at


def workflow(transitions: list[dict]) -> dict:
    """What a supervisor's steps make of an incident, read from its transitions (the one record):
    its notes, its responder, and its latest escalation, which stands until someone acknowledges
    the incident after it."""
    notes, responder, escalation, acknowledged = [], None, None, None
    for tr in transitions:
        state, at = tr["state"], tr["at"]
        at = at.isoformat() if isinstance(at, dt.datetime) else at
        if state == NOTE:
            notes.append({"at": at, "author": tr["actor"], "text": tr["note"]})
        elif state == RESPONDER_ASSIGNED:
            responder = {"name": tr["note"], "at": at, "by": tr["actor"]}
        elif state == ESCALATED:
            escalation = {"at": at, "by": tr["actor"], "reason": tr["note"], "manual": tr["actor"].startswith("user:")}
        elif state == "acknowledged":
            acknowledged = at
    if escalation is not None:
        escalation["standing"] = acknowledged is None or _instant(acknowledged) < _instant(escalation["at"])
    return {"notes": notes, "responder": responder, "escalation": escalation}


def _instant(at: str) -> dt.datetime:
    return dt.datetime.fromisoformat(at)


def escalation_standing(incident: Alert) -> bool:
    """Escalated, and nobody acknowledged the incident since (a second escalation would add nothing)."""
    found = workflow(incident.transitions)["escalation"]
    return bool(found and found["standing"])


def on_board(incident: Alert) -> OpenIncident | None:
    """What the officer status board shows of an incident (nothing once it is resolved)."""
    if not incident.is_open:
        return None
    return OpenIncident(str(incident.id), incident.kind, incident.priority, incident.state, incident.escalated)


def row_public(r, transitions: list[dict]) -> dict:
    """A stored alert row (with ``officer_name`` and ``escalated``) and its stored transitions
    (times as ISO text) as the API shows it: as :meth:`Alert.public` does."""
    d = dict(r)
    d["id"] = str(d["id"])
    d["title"] = ALERT_TYPES[d["kind"]].title
    for k in ("raised_at", "device_time", "updated_at"):
        d[k] = d[k].isoformat() if d[k] else None
    d["transitions"] = transitions
    d.update(workflow(transitions))
    return d
