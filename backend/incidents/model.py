"""An incident as the lifecycle holds it, and the pure steps that change it.

No I/O here: the service (``alerts.py``) decides when a step happens, the store (``store.py``)
writes it, the live feed and the status board show it."""
from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field

from backend.detection.status import OpenIncident
from backend.incidents.rules import ALERT_TYPES


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


def on_board(incident: Alert) -> OpenIncident | None:
    """What the officer status board shows of an incident (nothing once it is resolved)."""
    if not incident.is_open:
        return None
    return OpenIncident(str(incident.id), incident.kind, incident.priority, incident.state, incident.escalated)


def row_public(r) -> dict:
    """A stored alert row (with ``officer_name`` and ``escalated``) as the API shows it."""
    d = dict(r)
    d["id"] = str(d["id"])
    d["title"] = ALERT_TYPES[d["kind"]].title
    for k in ("raised_at", "device_time", "updated_at"):
        d[k] = d[k].isoformat() if d[k] else None
    return d
