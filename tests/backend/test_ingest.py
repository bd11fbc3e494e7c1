"""Backend ingest against real Mosquitto and PostgreSQL: frames verified end to end, alerts
pushed live and stored, every bad frame refused and counted."""
from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import httpx
import pytest
import websockets

from backend.identity import fleet
from backend.db import engine as db
from backend.app.server import serve
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import backend_settings, live_url, supervisor_token

pytestmark = pytest.mark.integration

DEVICE = 0x00A1B2C3


async def _seed(settings, agency):
    db.upgrade(settings)
    engine = db.create_engine(settings)
    await fleet.ensure_agency(engine, agency)
    officer = await fleet.create_officer(engine, agency, "B-101", "Officer Rivera", "Unit 7")
    device = await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, DEVICE)
    await fleet.assign_device(engine, DEVICE, officer)
    await engine.dispose()
    return device.key


async def _publish(host, port, topic, payload):
    async with aiomqtt.Client(host, port) as client:
        await client.publish(topic, payload, qos=1)


async def _next_alert(ws, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if msg["type"] == "alert":
            return msg


def _sos(key, seq, device=DEVICE):
    return F.seal(F.DeviceKeys(key), F.TYPE_EVENT, device, seq, int(time.time() * 1000), F.encode_event(F.EVENT_SOS, 0, 1))


async def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_sos_frame_raises_alert_live_and_stored(database_url, mqtt_broker, agency):
    host, port = mqtt_broker
    settings = backend_settings(database_url, host, port, agency)
    key = await _seed(settings, agency)
    async with serve(settings) as backend:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        token = supervisor_token(settings, agency)
        async with websockets.connect(await live_url(backend.url, token)) as ws:
            await _publish(host, port, topics.uplink(agency, "gw1", DEVICE, "event"), _sos(key, 5))
            alert = (await _next_alert(ws))["data"]
        assert (alert["kind"], alert["priority"], alert["officer_name"], alert["device_id"]) == ("sos", 1, "Officer Rivera", DEVICE)
        async with httpx.AsyncClient(base_url=backend.url, headers={"Authorization": f"Bearer {token}"}) as http:
            deadline = time.monotonic() + 10
            while not (listed := (await http.get("/api/v1/alerts")).json()):
                assert time.monotonic() < deadline, "alert never listed"
                await asyncio.sleep(0.05)
            assert [a["id"] for a in listed] == [alert["id"]]
            assert (await http.get("/api/v1/alerts", headers={"Authorization": "Bearer nonsense"})).status_code == 401


async def test_bad_frames_are_refused_and_counted(database_url, mqtt_broker, agency):
    host, port = mqtt_broker
    settings = backend_settings(database_url, host, port, agency)
    key = await _seed(settings, agency)
    good = _sos(key, 10)
    tampered = bytearray(good)
    tampered[22] ^= 0x40
    cases = {
        "bad_tag": bytes(tampered),
        "truncated": good[:20],
        "bad_length": good[:-1],
    }
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        topic = topics.uplink(agency, "gw1", DEVICE, "event")
        for payload in cases.values():
            await _publish(host, port, topic, payload)
        await _publish(host, port, topic, _sos(bytes(32), 11))  # wrong key
        await _publish(host, port, topic, good)
        await _publish(host, port, topic, good)  # replayed
        await _publish(host, port, topics.uplink(agency, "gw1", 999, "event"), _sos(key, 12, device=999))  # unknown
        await _publish(host, port, topics.uplink(agency, "gw1", DEVICE, "telemetry"), _sos(key, 13))  # topic lies
        await _publish(host, port, f"vigil/{agency}/gw/gw1/up/notanumber/event", good)
        expected = {"bad_tag": 2, "truncated": 1, "bad_length": 1, "replayed": 1, "unknown_device": 1, "topic_mismatch": 1, "bad_topic": 1}
        await _wait_for(lambda: all(rt.metrics.rejected_count(r) >= n for r, n in expected.items()))
        assert {r: rt.metrics.rejected_count(r) for r in expected} == expected
        assert rt.metrics.accepted_count("event") == 1
        assert rt.metrics.alerts_raised.labels("sos")._value.get() == 1


async def test_alert_reaches_websocket_while_database_is_down(private_postgres, mqtt_broker, agency):
    host, port = mqtt_broker
    url = private_postgres.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil"
    settings = backend_settings(url, host, port, agency)
    key = await _seed(settings, agency)
    token = supervisor_token(settings, agency)  # an account made while the database is up
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        private_postgres.stop("immediate")
        async with websockets.connect(await live_url(backend.url, token)) as ws:
            await _publish(host, port, topics.uplink(agency, "gw1", DEVICE, "event"), _sos(key, 20))
            alert = (await _next_alert(ws, timeout=10))["data"]
        assert alert["kind"] == "sos"
        await _wait_for(lambda: rt.alerts.pending == 1)
        private_postgres.start()
        await _wait_for(lambda: rt.alerts.pending == 0, timeout=20)
        async with httpx.AsyncClient(base_url=backend.url, headers={"Authorization": f"Bearer {token}"}) as http:
            listed = (await http.get("/api/v1/alerts")).json()
        assert [a["id"] for a in listed] == [alert["id"]]
