"""Helpers for the gateway tests: deterministic device keys, a subscriber that records every
uplink frame of a test's agency, and a gateway running in the test's event loop."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import aiomqtt
import pytest

from firmware import frame
from gateway import topics
from gateway.bridge import Gateway
from gateway.config import GatewaySettings
from tests.listening import BackgroundListener


def device_key(device_id: int) -> bytes:
    return hashlib.sha256(b"vigil-test-device-%d" % device_id).digest()


def fleet_keys(device_ids) -> dict[int, bytes]:
    return {d: device_key(d) for d in device_ids}


class UplinkRecorder(BackgroundListener):
    """Subscribes (MQTT 5, QoS 1, persistent session) to every topic of one agency and records
    uplink frames as (device_id, kind, seq, payload, user properties) in arrival order."""

    def __init__(self, host: str, port: int, agency: str):
        super().__init__()
        self.host, self.port, self.agency = host, port, agency
        self.frames: list[tuple[int, str, int, bytes, dict]] = []
        self.other: list[tuple[str, bytes]] = []

    async def _run(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=f"rec-{self.agency}",
                                          protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                                          properties=props) as client:
                    await client.subscribe(f"vigil/{self.agency}/#", qos=1)
                    self.connected.set()
                    async for msg in client.messages:
                        parsed = topics.parse(str(msg.topic))
                        if parsed.direction == "up":
                            header = frame.parse_header(msg.payload)
                            user = dict(getattr(msg.properties, "UserProperty", None) or [])
                            self.frames.append((parsed.device_id, parsed.kind, header.seq, bytes(msg.payload), user))
                        else:
                            self.other.append((str(msg.topic), bytes(msg.payload)))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def seqs(self, device_id: int, kind: str | None = None) -> list[int]:
        return [seq for d, k, seq, _, _ in self.frames if d == device_id and (kind is None or k == kind)]

    def first_occurrence_order(self, device_id: int, kind: str) -> list[int]:
        seen, order = set(), []
        for seq in self.seqs(device_id, kind):
            if seq not in seen:
                seen.add(seq)
                order.append(seq)
        return order


async def wait_until(predicate, timeout: float, poll_s: float = 0.05, what: str = "condition") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(poll_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings):
    gateway = Gateway(settings)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(gateway.run(stop), name="gateway")
    try:
        await wait_until(lambda: set(settings.devices) <= set(gateway.links) or task.done(), 10,
                         what="the gateway's links")
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture
def gateway_settings(tmp_path, agency, mqtt_broker):
    def make(devices, broker=None, **overrides) -> GatewaySettings:
        host, port = broker or mqtt_broker
        values = dict(agency=agency, gateway_id="gw1", mqtt_url=f"mqtt://{host}:{port}",
                      devices=list(devices), queue_path=tmp_path / "queue.sqlite3",
                      link_quality_interval_s=1.0)
        values.update(overrides)
        return GatewaySettings(**values)
    return make


@pytest.fixture(autouse=True)
def _quiet_bleak_version_warning():
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)
    yield


def assert_device_lost_nothing(recorder: UplinkRecorder, wearable) -> None:
    """A firmware wearable's frames all arrived: every frame it put on air is on MQTT (frames it
    sealed and never sent, e.g. a block re-sealed for a new link, leave seq gaps the backend's
    replay window accepts), and what it measured is complete: telemetry blocks every 400 ms
    without a hole, the blocks that were in the radio controller's queue when a link went
    included (the firmware sends its last seconds of telemetry again on the next link)."""
    got = set(recorder.seqs(wearable.device_id))
    assert got == set(wearable.produced), f"{wearable.name}: frames lost or extra"
    blocks = sorted({frame.parse_header(p).time_ms for d, k, _, p, _ in recorder.frames
                     if d == wearable.device_id and k == "telemetry"})
    holes = sum(round((b - a) / 400) - 1 for a, b in zip(blocks, blocks[1:]))  # 380/420: a sampler slip
    assert holes == 0, f"{wearable.name}: {holes} telemetry blocks missing ({len(wearable.ble.lost_in_flight)} lost in flight)"
    assert wearable.ring_dropped == 0
