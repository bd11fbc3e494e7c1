"""Computer-aided dispatch (CAD) integration: escalated incidents POSTed to a webhook.

Never blocks the alert lifecycle: it hears escalations as incident events and only queues; one
worker posts in order and retries failures with capped, jittered backoff (logged once per
outage, not per attempt), and records each delivery as a step of the incident."""
from __future__ import annotations

import asyncio
import collections
import logging
import uuid

import httpx

from backend.app.waiting import wait_for_any
from backend.incidents import events as ev
from backend.incidents.model import Alert, workflow
from backend.ingest.mqtt import reconnect_delay

log = logging.getLogger("vigil.dispatch")

# A CAD endpoint that does not answer in this long is treated as down (and retried).
POST_TIMEOUT_S = 5.0


def dispatch_payload(incident: Alert) -> dict:
    """What dispatch needs to send help: who, where, what, how urgent. No physiological data."""
    return {
        "alert_id": str(incident.id), "agency": incident.agency_id, "officer_id": incident.officer_id,
        "officer_name": incident.officer_name, "device_id": incident.device_id, "kind": incident.kind,
        "priority": incident.priority, "state": incident.state, "raised_at": incident.raised_at.isoformat(),
        "location": incident.location, "reason": _reason(incident),
    }


def _reason(incident: Alert) -> str:
    """Why dispatch is told: a supervisor's own words when they escalated by hand."""
    escalation = workflow(incident.transitions)["escalation"]
    if escalation is not None and escalation["manual"]:
        return f"escalated by a supervisor: {escalation['reason']}" if escalation["reason"] else "escalated by a supervisor"
    return "unacknowledged by supervisors"


class DispatchWebhook:
    def __init__(self, url: str, events: ev.IncidentEvents, record: ev.RecordStep, retry_base_s: float = 0.5):
        self.url = url
        self._record = record
        self._retry_base_s = retry_base_s
        self._queue: collections.deque[dict] = collections.deque()
        self._wake = asyncio.Event()
        self.sent = 0
        self.failures = 0
        events.subscribe(self._on_incident)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _on_incident(self, event: ev.IncidentEvent) -> None:
        if event.change == ev.ESCALATED:
            self.notify(event.incident)

    def notify(self, incident: Alert) -> None:
        self._queue.append(dispatch_payload(incident))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as client:
            while not stop.is_set():
                if not self._queue:
                    self._wake.clear()
                    await wait_for_any(stop, self._wake)
                    continue
                payload = self._queue[0]
                try:
                    response = await client.post(self.url, json=payload)
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    self.failures += 1
                    if attempt == 0:
                        log.error("dispatch webhook %s failed (%s); retrying until it accepts", self.url, exc.__class__.__name__)
                    await wait_for_any(stop, timeout=reconnect_delay(attempt) * self._retry_base_s / 0.5)
                    attempt += 1
                    continue
                if attempt:
                    log.warning("dispatch webhook accepts again after %d failed attempts", attempt)
                attempt = 0
                self._queue.popleft()
                self.sent += 1
                await self._record(uuid.UUID(payload["alert_id"]), "dispatch_notified", "system", self.url)

