"""Incident events: what the lifecycle tells the parts that react to it (the downlink sends
"help is coming" on acknowledgement, dispatch is told of escalations), so none of them is wired
into the others. Subscribers are called in order, synchronously, and must only queue work; one
that raises is logged with its traceback and counted, and the others still hear the event."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

from backend.app.metrics import BackendMetrics
from backend.incidents.model import Alert

log = logging.getLogger("vigil.incidents")

RAISED = "raised"              # a new incident began (not a join to an open one)
ACKNOWLEDGED = "acknowledged"  # a supervisor took it: help is coming
ESCALATED = "escalated"        # unacknowledged in time
UPGRADED = "upgraded"          # a more serious alert joined an open incident (e.g. a fall, then a man-down alarm)

# record(alert id, state, actor, note): how a reacting part adds a side step to an incident
# (help sent and its result, dispatch notified): AlertService.record
RecordStep = Callable[[uuid.UUID, str, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    change: str
    incident: Alert


class IncidentEvents:
    def __init__(self, metrics: BackendMetrics | None = None) -> None:
        self._subscribers: list[Callable[[IncidentEvent], None]] = []
        self._metrics = metrics  # vigil_task_failures{task="incident-events"}: shown beside the loops'
        self.failures = 0

    def subscribe(self, subscriber: Callable[[IncidentEvent], None]) -> None:
        self._subscribers.append(subscriber)

    def emit(self, change: str, incident: Alert) -> None:
        event = IncidentEvent(change, incident)
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # one broken reaction must not stop the lifecycle or the others
                self.failures += 1
                if self._metrics is not None:
                    self._metrics.task_failures.labels("incident-events").inc()
                log.exception("incident %s: a subscriber failed on %r", incident.id, change)
