"""Alert types, their priorities and how device events map to them: the one definition.

Priority 1 = life threat, 2 = urgent, 3 = check on officer (lone-worker practice)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from firmware import frame as F


@dataclass(frozen=True, slots=True)
class AlertType:
    kind: str
    priority: int
    title: str


ALERT_TYPES = {
    t.kind: t
    for t in (
        AlertType("sos", 1, "SOS pressed"),
        AlertType("man_down", 1, "Man down"),
        AlertType("device_alarm", 1, "Device man-down alarm"),
        AlertType("fall", 2, "Fall"),
        AlertType("extreme_heart_rate", 2, "Extreme heart rate"),
        AlertType("physiological_strain", 3, "Sustained physiological strain"),
    )
}

# Device events that raise an alert at once, bypassing the analysis windows.
EVENT_ALERTS = {
    F.EVENT_SOS: "sos",
    F.EVENT_MANDOWN_ALARM: "device_alarm",
    F.EVENT_FALL_SUSPECTED: "fall",
}

# The words a person reads for each priority, state and outcome (served to the dashboard by
# GET /api/v1/meta/labels, so the pages say what the backend means).
PRIORITY_LABELS = {1: "life threat", 2: "urgent", 3: "check on officer"}
STATE_LABELS = {
    "raised": "New",
    "delivered": "Delivered, not acknowledged",
    "acknowledged": "Acknowledged — help is coming",
    "resolved": "Resolved",
}
OUTCOME_LABELS = {
    "real_emergency": "Real emergency",
    "false_alarm": "False alarm",
    "test": "Test",
    "cancelled_by_officer": "Cancelled by officer",
    "other": "Other",
}
ALERT_STATES = tuple(STATE_LABELS)
OUTCOMES = tuple(OUTCOME_LABELS)

_ALERT_NAMESPACE = uuid.UUID("7f1d3a52-1c0e-4a55-9a8e-6b0d6f2c9e11")


def alert_id(device_id: int, seq: int, kind: str) -> uuid.UUID:
    """Deterministic: the same device event can never become two alerts, even when MQTT
    redelivers it after a restart."""
    return uuid.uuid5(_ALERT_NAMESPACE, f"{device_id}/{seq}/{kind}")

# When an officer's open incident gets another alert, the incident takes the kind that ranks
# higher here (a fall followed by a man-down alarm is one incident, upgraded): the officer's
# own SOS first, then the device's full alarm, then detections.
ESCALATION_RANK = ("physiological_strain", "extreme_heart_rate", "fall", "man_down", "device_alarm", "sos")

# A supervisor's steps besides acknowledging and resolving (issue 21); see TRANSITIONS.
ESCALATED, NOTE, RESPONDER_ASSIGNED = "escalated", "note", "responder_assigned"
# Messages felt on wearables about the incident (backend/incidents/messages.py); see TRANSITIONS.
MESSAGE_SENT, MESSAGE_CONFIRMED = "message_sent", "message_confirmed"
COLLEAGUES_TOLD, COLLEAGUE_CONFIRMED = "colleagues_told", "colleague_confirmed"

# Steps recorded in alert_transitions besides the states: who did what to an incident, when.
TRANSITIONS = ALERT_STATES + (
    "upgraded",        # a more serious alert joined the incident (kind and priority raised)
    "merged",          # a further alert of no higher rank joined it
    ESCALATED,         # unacknowledged too long (actor "system"), or by a supervisor with a reason:
                       # every supervisor on duty, dispatch flagged
    "dispatch_notified",  # the computer-aided-dispatch webhook accepted it
    "prealert_started",   # the device began its pre-alert (no motion)
    "help_sent",       # "help is coming" published to the device's gateway
    "help_result",     # the gateway's answer: written to the device or not
    "help_confirmed",  # the officer felt the haptic pattern
    NOTE,              # a supervisor's note (append-only; the text is the step's note)
    RESPONDER_ASSIGNED,  # a supervisor named who goes (the note); the latest one stands
    MESSAGE_SENT,      # a supervisor's message to the officer's wearable (the note: which, to whom)
    MESSAGE_CONFIRMED,  # the officer pressed to confirm it
    COLLEAGUES_TOLD,   # "colleague needs help" sent to officers nearby (the note: who, how far), or why none
    COLLEAGUE_CONFIRMED,  # one of them pressed to confirm
)

# Device events that change an open incident rather than raise one.
EVENT_CANCEL = F.EVENT_PREALERT_CANCELLED
EVENT_TRANSITIONS = {F.EVENT_PREALERT_STARTED: "prealert_started", F.EVENT_HELP_CONFIRMED: "help_confirmed"}
# Only these kinds end when the officer cancels; a full alarm needs a person to resolve it.
CANCELLABLE = ("fall",)


def outranks(new_kind: str, old_kind: str) -> bool:
    return ESCALATION_RANK.index(new_kind) > ESCALATION_RANK.index(old_kind)
