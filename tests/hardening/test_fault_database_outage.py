"""PostgreSQL stopped for 60 s (the issue's figure; the one long test of this suite) while a
device streams telemetry and raises a fall: the page goes out live during the outage, the alert
and its acknowledgement are stored when the database returns, every frame is accepted and no
feature row is dropped from the write buffers."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import sqlalchemy as sa

from backend.db import schema as t
from firmware import frame as F
from tests.backend.conftest import backend_settings
from tests.hardening.conftest import LiveFeed, SealingDevice, publish, record_fault, seed, supervisor_token, wait_for
from tests.hardening.test_faults import accounted_backend

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0
DEVICE = 0x00DB0001


async def test_database_stopped_for_60_s(private_postgres, mqtt_broker, agency):
    url = private_postgres.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil"
    settings = backend_settings(url, *mqtt_broker, agency)
    key, _ = await seed(settings, agency, DEVICE)
    token = supervisor_token(settings, agency)
    device = SealingDevice(DEVICE, key)
    sent = 0
    stop = asyncio.Event()

    async def stream() -> None:  # one telemetry frame per 0.4 s of real time, as a wearable does
        nonlocal sent
        while not stop.is_set():
            await publish(mqtt_broker, agency, [(DEVICE, "telemetry", device.telemetry()) for _ in range(5)])
            sent += 5
            await asyncio.sleep(2.0)

    async with accounted_backend(settings) as backend, LiveFeed(backend.url, token) as feed, \
            httpx.AsyncClient(base_url=backend.url, timeout=10) as http:
        rt = backend.runtime
        streamer = asyncio.create_task(stream())
        await wait_for(lambda: len(backend.accepted) >= 5, 20, "telemetry before the outage")
        await asyncio.to_thread(private_postgres.stop, "immediate")
        down_at = time.monotonic()
        await publish(mqtt_broker, agency, [(DEVICE, "event", device.event(F.EVENT_FALL_SUSPECTED))])
        await wait_for(lambda: feed.raised(), 10, "the fall paged with the database down")
        incident_id = feed.raised()[0]
        await wait_for(lambda: rt.alerts.pending >= 1, 10, "the alert kept for retry")
        r = await http.post(f"/api/v1/alerts/{incident_id}/acknowledge",
                            headers={"Authorization": f"Bearer {token}"}, json={"note": "during the outage"})
        assert r.status_code == 200, r.text  # the lifecycle works from memory while the database is away
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage itself, by design
        failures = rt.metrics.storage_failures._value.get()
        await asyncio.to_thread(private_postgres.start)
        await wait_for(lambda: rt.alerts.pending == 0, 60, "kept alert changes stored")
        stop.set()
        await streamer
        await wait_for(lambda: len(backend.accepted) == sent + 1, 20, "every frame accepted")
        dropped = sum(s.value for s in rt.metrics.detection_rows_dropped.collect()[0].samples if s.name.endswith("_total"))
        async with rt.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.alerts.c.state).where(t.alerts.c.id == __import__("uuid").UUID(incident_id)))).one()
            steps = (await conn.execute(sa.select(t.alert_transitions.c.state).where(
                t.alert_transitions.c.alert_id == __import__("uuid").UUID(incident_id)))).scalars().all()
    assert row.state == "acknowledged" and {"raised", "acknowledged"} <= set(steps)
    assert len(feed.raised()) == 1 and failures >= 1 and dropped == 0
    record_fault(f"PostgreSQL stopped for {OUTAGE_S:.0f} s (fall + acknowledgement during it)",
                 "0 (paged live, stored after)", "0", "n/a (backend kept running)",
                 f"0 ({sent}/{sent} frames accepted; 0 feature rows dropped)")
