"""One gateway per id. Two gateways (or simulators) with the same agency/gateway id would share
an MQTT client id, and the broker would drop each whenever the other connects, for ever.

Before connecting, a gateway asks on its own state topic (vigil/{agency}/gw/{id}/state, the one
topic it may both read and write) whether someone holds the id: it publishes a probe, not
retained, with a fresh nonce; a running holder answers it at once. An answer means the id is in
use (GatewayIdInUse, with who holds it); silence for PROBE_TIMEOUT_S means it is free (a holder
that crashed cannot answer, so a restart after a crash is not blocked). A broker that cannot be
reached cannot be asked: the gateway then starts (it must buffer frames offline) and asks again
on every reconnect.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import time
import uuid

import aiomqtt

from gateway import topics
from gateway.exceptions import GatewayIdInUse

log = logging.getLogger("vigil.gateway.presence")

PROBE_TIMEOUT_S = 1.0


class Presence:
    """This process's claim on an agency/gateway id: answers probes, probes before connecting."""

    def __init__(self, agency: str, gateway_id: str):
        self.agency = agency
        self.gateway_id = gateway_id
        self.topic = topics.gateway_state(agency, gateway_id)
        self.instance = uuid.uuid4().hex[:12]
        self.since = round(time.time(), 3)
        self.host = f"{socket.gethostname()}:{os.getpid()}"

    def answer_for(self, payload: bytes) -> bytes | None:
        """The reply to a message on the state topic, when it is someone else's probe."""
        try:
            body = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("state") != "probe" or body.get("instance") == self.instance:
            return None
        return json.dumps({"state": "online", "answer": body.get("nonce"), "instance": self.instance,
                           "host": self.host, "since": self.since}).encode()

    async def check(self, host: str, port: int, *, username: str | None = None, password: str | None = None,
                    tls_context: ssl.SSLContext | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
        """Raise GatewayIdInUse when another holder answers; aiomqtt.MqttError when the broker
        cannot be asked."""
        nonce = uuid.uuid4().hex
        probe = json.dumps({"state": "probe", "nonce": nonce, "instance": self.instance}).encode()
        async with aiomqtt.Client(host, port, username=username, password=password, tls_context=tls_context,
                                  identifier=f"vigil-probe-{self.agency}-{self.gateway_id}-{nonce[:8]}",
                                  protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout + 5) as client:
            await client.subscribe(self.topic, qos=1)
            await client.publish(self.topic, probe, qos=1)
            try:
                async with asyncio.timeout(timeout):
                    async for message in client.messages:
                        try:
                            body = json.loads(bytes(message.payload))
                        except ValueError:
                            continue
                        if isinstance(body, dict) and body.get("answer") == nonce:
                            raise GatewayIdInUse(self.agency, self.gateway_id, body)
            except TimeoutError:
                return
