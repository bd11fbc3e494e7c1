"""The whole path, real at every hop: a simulated wearable (the firmware's frame encoder) behind
a virtual BlueZ on a private D-Bus -> the gateway (bleak's real BlueZ backend) -> Mosquitto
(QoS 1) -> backend ingest (aiomqtt) -> tag and sequence verified -> alert in PostgreSQL and on a
supervisor's WebSocket. The SOS -> WebSocket latency is printed, not asserted."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from backend.identity import fleet
from backend.db import engine as db
from backend.app.server import serve
from gateway.sim.fleet import SimulatedFleet
from tests.backend.conftest import backend_settings, live_url, supervisor_token
from tests.gateway.conftest import gateway_settings, running_gateway, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

DEVICE = 0x00C0FFEE


async def _seed(settings, agency) -> bytes:
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        officer = await fleet.create_officer(engine, agency, "B-7", "Officer Okafor", "Patrol 3")
        device = await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, DEVICE)
        await fleet.assign_device(engine, DEVICE, officer)
    finally:
        await engine.dispose()
    return device.key


async def test_sos_reaches_supervisor_websocket(database_url, mqtt_broker, agency, gateway_settings):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    async with SimulatedFleet({DEVICE: key}, device="firmware", scenarios="patrol") as sim, serve(settings) as backend:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        async with running_gateway(gateway_settings([DEVICE], latitude=40.7128, longitude=-74.006)):
            await wait_until(lambda: backend.runtime.metrics.accepted_count("telemetry") > 0, 20, what="telemetry at the backend")
            token = supervisor_token(settings, agency)
            async with websockets.connect(await live_url(backend.url, token)) as ws:
                pressed = time.perf_counter()
                sim.wearables[DEVICE].press_sos()
                alert = await _next_alert(ws)
                latency = time.perf_counter() - pressed
            print(f"\nSOS pressed -> alert on the supervisor's WebSocket: {latency * 1000:.1f} ms")
            assert (alert["kind"], alert["officer_name"], alert["device_id"]) == ("sos", "Officer Okafor", DEVICE)
            assert alert["location"] == {"lat": 40.7128, "lon": -74.006, "source": "gateway"}
            async with httpx.AsyncClient(base_url=backend.url, headers={"Authorization": f"Bearer {token}"}) as http:
                stored: list = []

                async def listed() -> bool:
                    stored[:] = (await http.get("/api/v1/alerts")).json()
                    return bool(stored)
                await wait_for_async(listed, 10, what="the alert listed by the REST API")
            assert [a["id"] for a in stored] == [alert["id"]]
            assert backend.runtime.metrics.rejected_count("bad_tag") == 0


async def test_sos_reaches_websocket_with_database_down(private_postgres, mqtt_broker, agency, gateway_settings):
    url = private_postgres.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil"
    settings = backend_settings(url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    token = supervisor_token(settings, agency)  # an account made while the database is up
    async with SimulatedFleet({DEVICE: key}, device="firmware", scenarios="patrol") as sim, serve(settings) as backend:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        async with running_gateway(gateway_settings([DEVICE])):
            await wait_until(lambda: backend.runtime.metrics.accepted_count("telemetry") > 0, 20, what="telemetry at the backend")
            private_postgres.stop("immediate")
            async with websockets.connect(await live_url(backend.url, token)) as ws:
                pressed = time.perf_counter()
                sim.wearables[DEVICE].press_sos()
                alert = await _next_alert(ws)
                print(f"\nSOS -> WebSocket with the database down: {(time.perf_counter() - pressed) * 1000:.1f} ms")
            assert alert["kind"] == "sos"
            await wait_until(lambda: backend.runtime.alerts.pending == 1, 10, what="the alert kept for retry")
            private_postgres.start()
            await wait_until(lambda: backend.runtime.alerts.pending == 0, 20, what="the kept alert stored")


async def wait_for_async(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _next_alert(ws) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] == "alert":
            return msg["data"]


async def test_sos_acknowledged_by_the_backend_stops_the_resends_and_the_clock_is_synced(
        database_url, mqtt_broker, agency, gateway_settings):
    """The firmware's code on the far side: its SOS is resent until the backend's EVENT_ACK (sent
    once the alert is stored) arrives, then never again; its unsynced clock gets a TIME_SYNC."""
    from firmware import frame as F

    settings = backend_settings(database_url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    async with SimulatedFleet({DEVICE: key}, device="firmware", scenarios="patrol", speed=4) as sim, serve(settings) as backend:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        async with running_gateway(gateway_settings([DEVICE])):
            wearable = sim.wearables[DEVICE]
            await wait_until(lambda: backend.runtime.metrics.accepted_count("telemetry") > 0, 20, what="telemetry at the backend")
            assert not any(c[1] == F.COMMAND_EVENT_ACK for c in wearable.commands)
            # the device booted unsynced; the backend saw the flag and synced it
            await wait_until(lambda: wearable.clock_synced, 20, what="the device clock synced by the backend")
            assert any(c[1] == F.COMMAND_TIME_SYNC for c in wearable.commands)
            device_ms, flags = wearable.firmware.core.frame_time(wearable.loop.now)
            assert not flags & F.FLAG_CLOCK_UNSYNCED
            assert abs(device_ms - time.time() * 1000) < 1000 * sim.clock.speed

            press = wearable.press_sos()
            # the SOS's seq is learned when the firmware puts it on air (its outbox may hold it only for
            # the few ms the backend takes to ack it: polling the outbox for it raced the ack)
            await wait_until(lambda: press.seq is not None, 10, what="the SOS raised on the device")
            sos_seq = press.seq
            await wait_until(lambda: any(c[1] == F.COMMAND_EVENT_ACK for c in wearable.commands), 20,
                             what="the backend's EVENT_ACK at the device")
            await wait_until(lambda: wearable.unacked_events == 0, 5, what="the SOS out of the device's outbox")
            acks = [c for c in wearable.commands if c[1] == F.COMMAND_EVENT_ACK]
            assert [c[3] for c in acks] == [sos_seq & 0xFFFF]
            assert any(a["kind"] == "sos" for a in (await _stored_alerts(backend, settings, agency)))
            sends = wearable.sent.count(sos_seq)
            await asyncio.sleep(4.0)  # 16 s on the device: unacknowledged it would go out 4 more times
            assert wearable.sent.count(sos_seq) == sends
            print(f"\nSOS sent {sends} time(s) before the backend's ack stopped it")


async def _stored_alerts(backend, settings, agency) -> list:
    token = supervisor_token(settings, agency)
    async with httpx.AsyncClient(base_url=backend.url, headers={"Authorization": f"Bearer {token}"}) as http:
        return (await http.get("/api/v1/alerts")).json()
