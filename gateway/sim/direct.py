"""Simulated wearables straight to MQTT, for load: each wearable's radio publishes its frames on
the uplink topics as a gateway would (one shared MQTT connection for the whole fleet), and
commands on the downlink topics reach the wearable's control characteristic handler.

    async with DirectFleet(keys, mqtt_url, agency, gateway_id="sim", scenarios="patrol") as fleet:
        ...
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import aiomqtt

from firmware import frame, profile
from gateway import topics
from gateway.sim.wearable import SimClock, SimulatedWearable

log = logging.getLogger("vigil.sim.direct")


class MqttRadio:
    """The Radio of one wearable over a shared MQTT client (QoS 1)."""

    def __init__(self, fleet: "DirectFleet", device_id: int):
        self._fleet = fleet
        self.device_id = device_id
        self.on_write: Callable[[str, bytes], None] | None = None
        self.on_state_change: Callable[[], None] | None = None
        self.in_range = True
        self._link = True

    def is_notifying(self, uuid: str) -> bool:
        return self._link and self.in_range and self._fleet.client is not None

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
        self._changed()
        # The link comes back once the device is in range again (the dropout step restores it).
        while not self.in_range:
            await asyncio.sleep(0.1)
        self._link = True
        self._changed()

    def _changed(self) -> None:
        if self.on_state_change is not None:
            self.on_state_change()


class DirectFleet:
    def __init__(self, devices: Mapping[int, bytes], mqtt_url: str, agency: str, *, gateway_id: str = "sim",
                 scenarios: str | Sequence[str] = "patrol", speed: float = 1.0, seed: int = 0, **wearable_options):
        ids = list(devices)
        names = [scenarios] * len(ids) if isinstance(scenarios, str) else list(scenarios)
        parts = urlsplit(mqtt_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.agency, self.gateway_id = agency, gateway_id
        self.clock = SimClock(speed)
        self.client: aiomqtt.Client | None = None
        self.wearables = {d: SimulatedWearable(d, devices[d], scenario=n, clock=self.clock, seed=seed * 7919 + d,
                                               **wearable_options) for d, n in zip(ids, names)}
        self.radios = {d: MqttRadio(self, d) for d in ids}
        for d, w in self.wearables.items():
            w.attach(self.radios[d])
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> "DirectFleet":
        self.client = await self._stack.enter_async_context(aiomqtt.Client(
            self.host, self.port, identifier=f"vigil-sim-{self.agency}-{self.gateway_id}",
            protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=1000))
        self.client.pending_calls_threshold = 1 << 30  # one publish per wearable in flight is normal
        await self.client.subscribe(topics.downlink_filter(self.agency, self.gateway_id), qos=1)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._downlink(), name="direct-downlink"))
        for w in self.wearables.values():
            self._tasks.append(loop.create_task(w.run(self._stop), name=f"wearable-{w.name}"))
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await t
        self.client = None
        with contextlib.suppress(aiomqtt.MqttError):
            await self._stack.aclose()

    async def _downlink(self) -> None:
        async for msg in self.client.messages:
            parsed = topics.parse(str(msg.topic))
            radio = self.radios.get(parsed.device_id)
            ok, error = radio is not None, None if radio is not None else "not_provisioned"
            if radio is not None and radio.on_write is not None:
                try:
                    radio.on_write(profile.CONTROL_CHAR_UUID.lower(), bytes(msg.payload))
                except frame.FrameError as exc:
                    ok, error = False, exc.reason
            await self.client.publish(topics.downlink_result(self.agency, self.gateway_id, parsed.device_id),
                                      json.dumps({"device_id": parsed.device_id, "ok": ok, "error": error}), qos=1)
