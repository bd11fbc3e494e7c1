"""Simulated wearables straight to MQTT, for load: each wearable's radio publishes its frames on
the uplink topics as a gateway would (one shared MQTT connection for the whole fleet), and
commands on the downlink topics reach the wearable's control characteristic.

    async with DirectFleet(keys, mqtt_url, agency, gateway_id="sim", scenarios="patrol") as fleet:
        ...

The connection is kept: when the broker goes away every wearable's link drops (the firmware
buffers, as it would out of range of a gateway) and the fleet reconnects with capped, jittered
backoff; the links come back and the buffered frames follow as backfill. The gateway id is
claimed like a gateway's (gateway/presence.py): a second simulator or gateway with the same id
is refused, and this fleet answers their probes.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import aiomqtt

from firmware import frame, profile
from gateway import topics
from gateway.backoff import retry_delay
from gateway.presence import Presence
from gateway.sim.fleet import DEFAULT_DEVICE, make_wearable
from gateway.sim.clock import SimClock

log = logging.getLogger("vigil.sim.direct")

RECONNECT_BASE_S = 0.25
RECONNECT_CAP_S = 5.0


class MqttRadio:
    """The Radio of one wearable over the fleet's shared MQTT client (QoS 1)."""

    def __init__(self, fleet: "DirectFleet", device_id: int):
        self._fleet = fleet
        self.device_id = device_id
        self.on_write: Callable[[str, bytes], None] | None = None
        self.on_state_change: Callable[[], None] | None = None
        self.in_range = True
        self._link = True
        self.link_losses = 0

    @property
    def connected(self) -> bool:
        return self._link and self.in_range and self._fleet.client is not None

    def is_notifying(self, uuid: str) -> bool:
        return self.connected

    async def notify(self, uuid: str, value: bytes) -> bool:
        client = self._fleet.client
        if client is None or not (self._link and self.in_range):
            return False
        kind = frame.TYPE_NAMES.get(value[1], "telemetry") if len(value) > 1 else "telemetry"
        try:
            await client.publish(topics.uplink(self._fleet.agency, self._fleet.gateway_id, self.device_id, kind),
                                 value, qos=1)
        except aiomqtt.MqttError:
            return False
        return True

    async def link_loss(self) -> None:
        self._link = False
        self.link_losses += 1
        self.changed()
        # The link comes back once the device is in range again (the dropout step restores it).
        while not self.in_range:
            await asyncio.sleep(0.1)
        self._link = True
        self.changed()

    def changed(self) -> None:
        if self.on_state_change is not None:
            self.on_state_change()


class DirectFleet:
    def __init__(self, devices: Mapping[int, bytes], mqtt_url: str, agency: str, *, gateway_id: str = "sim",
                 scenarios: str | Sequence[str] = "patrol", speed: float = 1.0, seed: int = 0,
                 device: str = DEFAULT_DEVICE, state_dir=None, rng: random.Random | None = None, **wearable_options):
        ids = list(devices)
        names = [scenarios] * len(ids) if isinstance(scenarios, str) else list(scenarios)
        if len(names) != len(ids):
            raise ValueError("give one scenario for all devices or one per device")
        parts = urlsplit(mqtt_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.agency, self.gateway_id = agency, gateway_id
        self.clock = SimClock(speed)
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.presence = Presence(agency, gateway_id)
        self._rng = rng or random.Random()
        self.wearables = {d: make_wearable(device, d, devices[d], scenario=n, clock=self.clock, seed=seed * 7919 + d,
                                           state_dir=state_dir, **wearable_options) for d, n in zip(ids, names)}
        self.radios = {d: MqttRadio(self, d) for d in ids}
        for d, w in self.wearables.items():
            w.attach(self.radios[d])
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "DirectFleet":
        try:
            await self.presence.check(self.host, self.port)  # GatewayIdInUse: refused
        except aiomqtt.MqttError as exc:
            log.warning("cannot ask the broker whether gateway id %s is free (%s)", self.gateway_id, exc)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._connection(), name="direct-mqtt"))
        for w in self.wearables.values():
            self._tasks.append(loop.create_task(w.run(self._stop), name=f"wearable-{w.name}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await t
        self.client = None

    def _links_changed(self) -> None:
        for radio in self.radios.values():
            radio.changed()

    async def _connection(self) -> None:
        """One MQTT connection at a time, for ever: lost -> the links drop -> reconnect."""
        attempt = 0
        while not self._stop.is_set():
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=f"vigil-sim-{self.agency}-{self.gateway_id}",
                                          protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=1000) as client:
                    client.pending_calls_threshold = 1 << 30  # one publish per wearable in flight is normal
                    await client.subscribe(topics.downlink_filter(self.agency, self.gateway_id), qos=1)
                    await client.subscribe(self.presence.topic, qos=1)
                    self.client = client
                    self.connects += 1
                    attempt = 0
                    self.connected.set()
                    if self.connects > 1:
                        log.warning("MQTT %s:%d connection back; links up again", self.host, self.port)
                    self._links_changed()
                    await self._downlink(client)
            except aiomqtt.MqttError as exc:
                if self.client is not None or attempt == 0:
                    log.error("MQTT %s:%d connection lost (%s); the wearables buffer, reconnecting",
                              self.host, self.port, exc)
            finally:
                if self.client is not None:
                    self.client = None
                    self.connected.clear()
                    self._links_changed()
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(),
                                       retry_delay(attempt, RECONNECT_BASE_S, RECONNECT_CAP_S, self._rng.random()))

    async def _downlink(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            if str(msg.topic) == self.presence.topic:
                reply = self.presence.answer_for(bytes(msg.payload))
                if reply is not None:
                    await client.publish(self.presence.topic, reply, qos=1)
                continue
            parsed = topics.parse(str(msg.topic))
            radio = self.radios.get(parsed.device_id)
            seq = None
            with contextlib.suppress(frame.FrameError):
                seq = frame.parse_header(bytes(msg.payload)).seq
            ok, error = radio is not None, None if radio is not None else "not_provisioned"
            if radio is not None and radio.on_write is not None:
                try:
                    radio.on_write(profile.CONTROL_CHAR_UUID.lower(), bytes(msg.payload))
                except (frame.FrameError, ValueError) as exc:
                    ok, error = False, getattr(exc, "reason", str(exc))
            await client.publish(topics.downlink_result(self.agency, self.gateway_id, parsed.device_id),
                                 json.dumps({"device_id": parsed.device_id, "command_seq": seq, "ok": ok, "error": error}),
                                 qos=1)
