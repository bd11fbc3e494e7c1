"""Streaming detection against real Mosquitto and PostgreSQL: simulated wearables' sealed
frames go through the broker into the running backend, which raises fall then man-down for
the officer who fell, nothing for the officer in the car, stores features at 1 Hz and raw
windows (held around the alerts), and publishes device and officer status."""
from __future__ import annotations

import asyncio
import time

import aiomqtt
import numpy as np
import pytest
import sqlalchemy as sa

from backend.identity import fleet
from backend.db import engine as db
from backend.db import schema as t
from backend.detection import rounds as detection_rounds
from backend.app.server import serve
from firmware import frame as F
from gateway import topics
from gateway.sim.signals import SensorModel, to_frame_samples
from tests.backend.conftest import backend_settings

pytestmark = pytest.mark.integration

FALLER, DRIVER = 0x00D10001, 0x00D10002
RATE, N = 50, 20


def _frames(key: bytes, device: int, plan: list[tuple[str, float]], t0_ms: int, seed: int) -> list[bytes]:
    """Sealed telemetry frames of a simulated chest-worn wearable, with a status frame first."""
    keys = F.DeviceKeys(key)
    model = SensorModel(np.random.default_rng(seed), RATE)
    out = [F.seal(keys, F.TYPE_STATUS, device, 0, t0_ms,
                  F.encode_status(87, 4080, (1, 0, 0), F.STATUS_WORN | F.STATUS_SKIN_CONTACT))]
    k = 0
    for activity, seconds in plan:
        for _ in range(int(round(seconds * RATE / N))):
            ppg, accel = to_frame_samples(*model.block(N, activity))
            out.append(F.seal(keys, F.TYPE_TELEMETRY, device, k + 1, t0_ms + k * N * 1000 // RATE,
                              F.encode_telemetry(RATE, ppg, accel, 60)))
            k += 1
    return out


async def _seed(settings, agency):
    db.upgrade(settings)
    engine = db.create_engine(settings)
    await fleet.ensure_agency(engine, agency)
    keys = {}
    for device, badge, name in ((FALLER, "B-201", "Officer Okafor"), (DRIVER, "B-202", "Officer Lindqvist")):
        officer = await fleet.create_officer(engine, agency, badge, name, "Unit 9")
        keys[device] = (await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device,
                                                     placement="chest")).key
        await fleet.assign_device(engine, device, officer)
    await engine.dispose()
    return keys


async def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("worker", ["inline", "thread", "process"])  # process: the model states live in the worker process
async def test_fall_then_lying_still_pages_fall_then_man_down_and_the_car_never_pages(database_url, mqtt_broker, agency, worker,
                                                                                     monkeypatch):
    if worker == "inline":  # one window per chunk: the two officers' batches are split and rejoined
        monkeypatch.setattr(detection_rounds, "INLINE_CHUNK", 1)
    host, port = mqtt_broker
    settings = backend_settings(database_url, host, port, agency, detection_tick_s=0.05, status_flush_s=0.3,
                                feature_flush_s=0.2, detection_backlog_s=320,  # the whole feed fits: no window skipped
                                detection_worker=worker)
    keys = await _seed(settings, agency)
    # device clocks start now and run ahead of the wall clock (frames are fed as fast as the
    # broker takes them), so every window is "live" for the backfill rule
    t0 = int(time.time() * 1000)
    faller = _frames(keys[FALLER], FALLER, [("walking", 12), ("fall", 48)], t0, seed=3)
    driver = _frames(keys[DRIVER], DRIVER, [("sitting_car", 300)], t0, seed=5)
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        status_sub, _ = rt.hub.subscribe(agency)
        started = time.monotonic()
        async with aiomqtt.Client(host, port) as client:
            for payload in faller:
                kind = F.TYPE_NAMES[payload[1]]
                await client.publish(topics.uplink(agency, "gw1", FALLER, kind), payload, qos=1)
            for payload in driver:
                kind = F.TYPE_NAMES[payload[1]]
                await client.publish(topics.uplink(agency, "gw2", DRIVER, kind), payload, qos=1)
        await _wait_for(lambda: rt.metrics.accepted_count("telemetry") == len(faller) + len(driver) - 2)
        await _wait_for(lambda: not any(s.due() for s in rt.detection.streams.values()))
        elapsed = time.monotonic() - started

        paged = [(d, k) for d, k, _ in rt.detection.paged]
        assert paged == [(FALLER, "fall"), (FALLER, "man_down")], paged
        assert rt.metrics.alerts_raised.labels("fall")._value.get() == 1
        assert rt.metrics.alerts_raised.labels("man_down")._value.get() == 1
        assert elapsed < 45
        assert all(s.counters.skipped_windows == 0 and s.counters.restarts == 0 for s in rt.detection.streams.values())

        # every feature row written (a round in the worker may still be out when no stream is due)
        await _wait_for(lambda: rt.detection.features.written >= (60 - 9 + 1) + (300 - 9 + 1))
        await _wait_for(lambda: rt.detection.features.buffered == 0 and rt.detection.raw.buffered == 0)
        await _wait_for(lambda: not rt.detection.holds.pending)
        statuses = []
        while not status_sub.queue.empty():
            event = status_sub.queue.get_nowait()
            if event["type"] == "officer_status":
                statuses.append(event["data"])

    engine = db.create_engine(settings)
    try:
        async with engine.connect() as conn:
            times = (await conn.execute(sa.text(
                "select time from features where device_id = :d order by time"), {"d": FALLER})).scalars().all()
            officer_ids = (await conn.execute(sa.text(
                "select distinct officer_id from features where device_id = :d"), {"d": FALLER})).scalars().all()
            lying = (await conn.execute(sa.text(
                "select count(*) from features where device_id = :d and posture = 'lying' and activity = 'still'"),
                {"d": FALLER})).scalar_one()
            car_rows = (await conn.execute(sa.text(
                "select count(*), count(*) filter (where posture = 'upright') from features where device_id = :d"),
                {"d": DRIVER})).one()
            raw = (await conn.execute(sa.select(
                sa.func.count(), sa.func.sum(t.raw_windows.c.samples),
                sa.func.count(t.raw_windows.c.held_by_alert)).where(t.raw_windows.c.device_id == FALLER))).one()
            holds = (await conn.execute(sa.select(t.raw_holds.c.kind).where(
                t.raw_holds.c.device_id == FALLER).order_by(t.raw_holds.c.start))).scalars().all()
            status = (await conn.execute(sa.select(t.device_status).where(
                t.device_status.c.device_id == FALLER))).mappings().one()
            device = (await conn.execute(sa.text("select battery_pct, firmware, last_seen from devices where id = :d"),
                                         {"d": FALLER})).one()
    finally:
        await engine.dispose()

    # 1 Hz: one row per second of device time from the first full window on
    assert len(times) == 60 - 9 + 1
    assert {(b - a).total_seconds() for a, b in zip(times, times[1:])} == {1.0}
    assert len(officer_ids) == 1 and officer_ids[0] is not None
    assert lying >= 30
    assert car_rows[0] == 300 - 9 + 1 and car_rows[1] == car_rows[0]
    # raw: every sample of the minute, about one row per 2 s hop, all held (within 5 min of an alert)
    assert raw[1] == 60 * RATE and 28 <= raw[0] <= 32 and raw[2] == raw[0]
    assert sorted(holds) == ["fall", "man_down"]
    assert (status["battery_pct"], status["firmware"], status["worn"], status["gateway"]) == (87, "1.0.0", True, "gw1")
    assert device.battery_pct == 87 and device.firmware == "1.0.0" and device.last_seen is not None
    # officer status: connected, never heart rate
    mine = [s for s in statuses if s["device_id"] == FALLER]
    assert mine and mine[-1]["state"] == "alert" and mine[-1]["device"] == "connected"
    assert all("heart_rate" not in s and "bpm" not in str(s) for s in statuses)
    assert any(s["device_id"] == DRIVER and s["state"] == "ok" for s in statuses)
