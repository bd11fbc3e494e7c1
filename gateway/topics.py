"""MQTT topic layout: the one definition shared by gateway and backend.

Every topic starts with the agency (tenant), so one broker serves many agencies and backends can
be sharded by agency with a subscription per agency.

    vigil/{agency}/gw/{gateway}/up/{device_id}/{kind}   frame bytes, unchanged (kind: event, telemetry, status)
    vigil/{agency}/gw/{gateway}/down/{device_id}        command frame bytes for the device
    vigil/{agency}/gw/{gateway}/result/{device_id}      JSON: outcome of a downlink write
    vigil/{agency}/gw/{gateway}/link/{device_id}        JSON: link quality of one device
    vigil/{agency}/gw/{gateway}/state                   JSON, retained; last will "offline"
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "vigil"
UPLINK_KINDS = ("event", "telemetry", "status")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TopicError(ValueError):
    """A topic that does not follow the layout above."""


def _check(name: str, value: str) -> str:
    if not _SEGMENT.match(value):
        raise TopicError(f"{name} {value!r} must be 1-64 of [A-Za-z0-9_.-]")
    return value


def uplink(agency: str, gateway: str, device_id: int, kind: str) -> str:
    if kind not in UPLINK_KINDS:
        raise TopicError(f"kind {kind!r} is not one of {UPLINK_KINDS}")
    return f"{ROOT}/{_check('agency', agency)}/gw/{_check('gateway', gateway)}/up/{device_id}/{kind}"


def downlink(agency: str, gateway: str, device_id: int) -> str:
    return f"{ROOT}/{_check('agency', agency)}/gw/{_check('gateway', gateway)}/down/{device_id}"


def downlink_result(agency: str, gateway: str, device_id: int) -> str:
    return f"{ROOT}/{_check('agency', agency)}/gw/{_check('gateway', gateway)}/result/{device_id}"


def link_quality(agency: str, gateway: str, device_id: int) -> str:
    return f"{ROOT}/{_check('agency', agency)}/gw/{_check('gateway', gateway)}/link/{device_id}"


def gateway_state(agency: str, gateway: str) -> str:
    return f"{ROOT}/{_check('agency', agency)}/gw/{_check('gateway', gateway)}/state"


def uplink_filter(agency: str = "+", kind: str = "+") -> str:
    """Subscription for the uplink frames of one agency ('+' for all agencies), of one kind
    ('+' for all kinds)."""
    if kind != "+" and kind not in UPLINK_KINDS:
        raise TopicError(f"kind {kind!r} is not one of {UPLINK_KINDS}")
    return f"{ROOT}/{agency}/gw/+/up/+/{kind}"


def downlink_filter(agency: str, gateway: str) -> str:
    return f"{ROOT}/{_check('agency', agency)}/gw/{_check('gateway', gateway)}/down/+"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    agency: str
    gateway: str
    direction: str  # up, down, result, link, state
    device_id: int | None
    kind: str | None


def parse(topic: str) -> ParsedTopic:
    """Split a Vigil topic; raises TopicError for anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != ROOT or parts[2] != "gw":
        raise TopicError(f"not a Vigil topic: {topic!r}")
    agency, gateway, direction = _check("agency", parts[1]), _check("gateway", parts[3]), parts[4]
    if direction == "state" and len(parts) == 5:
        return ParsedTopic(agency, gateway, direction, None, None)
    if direction not in ("up", "down", "result", "link") or len(parts) < 6 or not parts[5].isdigit():
        raise TopicError(f"not a Vigil topic: {topic!r}")
    device_id = int(parts[5])
    if device_id > 0xFFFFFFFF:
        raise TopicError(f"device id out of range in {topic!r}")
    if direction == "up":
        if len(parts) != 7 or parts[6] not in UPLINK_KINDS:
            raise TopicError(f"uplink kind missing or unknown in {topic!r}")
        return ParsedTopic(agency, gateway, direction, device_id, parts[6])
    if len(parts) != 6:
        raise TopicError(f"not a Vigil topic: {topic!r}")
    return ParsedTopic(agency, gateway, direction, device_id, None)
