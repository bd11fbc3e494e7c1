"""Hostile and broken MQTT input at a running backend: unknown devices, oversize and truncated
payloads, topics that lie, and a registered gateway relaying a device it does not serve. Every
one is refused and counted by reason; none reaches an alert, the detection streams or storage.
A genuine SOS sent last still pages, so the refusals are not a dead pipeline.

(A gateway publishing under another gateway's topics is refused by the broker's ACL:
tests/backend/test_mosquitto_acl.py.)"""
from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from backend.identity import auth
from backend.db import engine as db
from backend.db import schema as t
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import backend_settings
from tests.hardening.conftest import SealingDevice, publish, record_fault, seed, wait_for
from tests.hardening.test_faults import accounted_backend

pytestmark = pytest.mark.integration

DEVICE = 0x00BAD001
STRANGER = 0x00BAD0FF  # provisioned nowhere


async def test_hostile_frames_refused_counted_and_kept_out(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    key, _ = await seed(settings, agency, DEVICE)
    engine = db.create_engine(settings)
    try:
        await auth.register_gateway(engine, agency, "gw-a", [DEVICE])
        await auth.register_gateway(engine, agency, "gw-b", [])  # registered, serves nobody
    finally:
        await engine.dispose()
    device = SealingDevice(DEVICE, key)
    stranger = SealingDevice(STRANGER, os.urandom(32))
    up = lambda gw, d, kind: topics.uplink(agency, gw, d, kind)  # noqa: E731
    hostile: list[tuple[str, bytes, str]] = [  # (topic, payload, the reason it must be refused for)
        (up("gw-a", STRANGER, "event"), stranger.event(F.EVENT_SOS), "unknown_device"),
        (up("gw-a", DEVICE, "telemetry"), device.telemetry() + os.urandom(4000), "oversize"),
        (up("gw-a", DEVICE, "telemetry"), b"\x01" * 5, "truncated"),
        (up("gw-a", DEVICE, "telemetry"), os.urandom(200), "garbage"),
        (up("gw-a", DEVICE, "telemetry"), device.event(F.EVENT_SOS), "topic_mismatch"),      # an SOS dressed as telemetry
        (up("gw-a", DEVICE + 1, "event"), device.event(F.EVENT_SOS), "topic_mismatch"),      # topic names another device
        (f"vigil/{agency}/gw/gw-a/up/not-a-number/event", device.event(F.EVENT_SOS), "bad_topic"),
        (up("gw-b", DEVICE, "event"), device.event(F.EVENT_SOS), "gateway_not_serving"),
        (up("gw-b", DEVICE, "telemetry"), device.telemetry(), "gateway_not_serving"),
    ]
    # not even delivered: ingest subscribes to the uplink kinds only (counted nowhere, reaches nothing)
    outside = [(f"vigil/{agency}/gw/gw-a/up/{DEVICE}/firmware", device.event(F.EVENT_SOS)),
               (f"vigil/{agency}/gw/gw-a/up/{DEVICE}/status/extra", device.event(F.EVENT_SOS))]
    async with accounted_backend(settings) as backend:
        rt = backend.runtime
        await wait_for(lambda: rt.registry.get(DEVICE) and rt.registry.get(DEVICE).gateways, 10, "the served gateways loaded")
        import aiomqtt
        async with aiomqtt.Client(*mqtt_broker, protocol=aiomqtt.ProtocolVersion.V5) as client:
            for topic, payload in outside + [(topic, payload) for topic, payload, _ in hostile]:
                await client.publish(topic, payload, qos=1)
        rejected = lambda: sum(s.value for s in rt.metrics.frames_rejected.collect()[0].samples if s.name.endswith("_total"))  # noqa: E731
        await wait_for(lambda: rejected() == len(hostile), 15, "every hostile frame refused")
        by_reason = {s.labels["reason"]: int(s.value) for s in rt.metrics.frames_rejected.collect()[0].samples
                     if s.name.endswith("_total") and s.value}
        assert backend.accepted == [] and not rt.alerts.open_incidents() and not rt.detection.streams
        # the genuine device through its own gateway still pages (the hostile copies burnt no seq)
        await publish(mqtt_broker, agency, [(DEVICE, "event", device.event(F.EVENT_SOS))], gateway="gw-a")
        await wait_for(lambda: rt.alerts.open_incidents(), 10, "the genuine SOS")

        async def stored_alerts() -> int:
            async with rt.engine.connect() as conn:
                return (await conn.execute(sa.select(sa.func.count()).select_from(t.alerts))).scalar()
        stored = await wait_for(stored_alerts, 10, "the SOS stored")
    assert len(backend.accepted) == 1 and stored == 1
    assert by_reason["unknown_device"] == 1 and by_reason["gateway_not_serving"] == 2
    assert by_reason["topic_mismatch"] == 2 and by_reason["bad_topic"] == 1
    assert sum(by_reason.values()) == len(hostile)
    print(f"\nhostile MQTT frames refused by reason: {by_reason}")
    record_fault(f"hostile MQTT input ({len(hostile)} frames)", "n/a (genuine SOS after them paged once)", "0",
                 "n/a", f"0 reached storage/alerts; refused {by_reason}")
