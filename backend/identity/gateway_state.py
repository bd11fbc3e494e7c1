"""Gateways as they say they are: each one's retained state message (``vigil/{agency}/gw/{id}/state``,
gateway/publisher.py) -- online or offline, and how many frames wait in its durable queue -- read
by a subscriber of its own, for the fleet page (GET /api/v1/gateways)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import aiomqtt

from backend.ingest.mqtt import client_for, reconnect_delay
from gateway import topics

log = logging.getLogger("vigil.gateway_state")


@dataclass(frozen=True, slots=True)
class GatewayState:
    state: str                 # online | offline (its last will)
    queue_depth: int | None    # frames waiting in its queue when it said so; None: it did not say
    at: float                  # when it said so (its clock, epoch seconds)


class GatewayStates:
    """The last state each gateway of the served agencies published."""

    def __init__(self, mqtt_url: str, identifier: str, agencies: list[str], ca_file: str | None = None):
        self._url, self._identifier, self._ca_file = mqtt_url, identifier, ca_file
        self._filters = [f"{topics.ROOT}/{agency}/gw/+/state" for agency in agencies]
        self._states: dict[tuple[str, str], GatewayState] = {}

    def get(self, agency_id: str, gateway_id: str) -> GatewayState | None:
        return self._states.get((agency_id, gateway_id))

    def message(self, topic: str, payload: bytes) -> GatewayState | None:
        """One state message; probes (a starting gateway asking whether its id is taken) and junk are ignored."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != topics.ROOT or parts[2] != "gw" or parts[4] != "state":
            return None
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict) or body.get("state") not in ("online", "offline"):
            return None
        depth = body.get("queue_depth")
        at = body.get("at")
        state = GatewayState(body["state"], depth if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0 else None,
                             float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else time.time())
        self._states[(parts[1], parts[3])] = state
        return state

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                async with client_for(self._url, self._identifier, persistent=False, ca_file=self._ca_file) as client:
                    for topic_filter in self._filters:
                        await client.subscribe(topic_filter, qos=0)  # retained: every gateway's last word at once
                    attempt = 0
                    async for message in client.messages:
                        self.message(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                if attempt == 0:
                    log.warning("gateway states: broker connection lost (%s); reconnecting", exc)
                attempt += 1
                try:
                    await asyncio.wait_for(stop.wait(), reconnect_delay(attempt))
                except TimeoutError:
                    pass
