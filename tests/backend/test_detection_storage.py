"""Features survive a database outage (bounded buffer, drops counted, written on return), and
the officer status tells offline / removed / low battery apart from distress, with time passed in."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import numpy as np
import pytest
import sqlalchemy as sa

from backend.db import engine as db
from backend.detection.raw import RAW_COLUMNS, RAW_KINDS
from backend.detection.results import FEATURE_COLUMNS
from backend.detection.status import OpenIncident, StatusBoard
from backend.detection.store import BatchWriter
from backend.app.metrics import BackendMetrics
from firmware import frame as F
from tests.backend.conftest import backend_settings

pytestmark = pytest.mark.integration


START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)


def _row(i: int) -> list:
    return [START + dt.timedelta(seconds=i), 7, None, 80.0, 0.9, "still", "upright", None, 0.01]


async def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_features_survive_a_database_outage(private_postgres, mqtt_broker, agency):
    host, port = mqtt_broker
    settings = backend_settings(_private_url(private_postgres), host, port, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    metrics = BackendMetrics()
    writer = BatchWriter(engine, "features", FEATURE_COLUMNS, metrics, batch_size=50, max_buffered=300, retry_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop, 0.05))
    try:
        for i in range(100):
            writer.add(_row(i))
        await _wait_for(lambda: writer.written == 100)

        private_postgres.stop("immediate")
        for i in range(100, 500):   # 400 rows into a buffer of 300: the 100 oldest are dropped
            writer.add(_row(i))
        await asyncio.sleep(0.5)
        assert writer.written == 100 and writer.buffered == 300 and writer.dropped == 100
        assert metrics.detection_rows_dropped.labels("features")._value.get() == 100
        assert metrics.storage_failures._value.get() >= 1

        private_postgres.start()
        await _wait_for(lambda: writer.written == 400 and writer.buffered == 0)
    finally:
        stop.set()
        await task
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text("select count(*) from features where device_id = 7"))).scalar_one()
    await engine.dispose()
    assert stored == 400


def _private_url(private_postgres) -> str:
    return private_postgres.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil"


async def _raw_writer(database_url: str, mqtt_broker, agency: str, retry_s: float):
    """A raw_windows writer on a migrated database with this hour's partitions: (engine, metrics, writer)."""
    host, port = mqtt_broker
    settings = backend_settings(database_url, host, port, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    async with engine.begin() as conn:
        await conn.execute(sa.text("select vigil_ensure_partitions(2, 1)"))
    metrics = BackendMetrics()
    writer = BatchWriter(engine, "raw_windows", RAW_COLUMNS, metrics, batch_size=50, max_buffered=300, retry_s=retry_s,
                         kinds=RAW_KINDS)
    return engine, metrics, writer


async def test_raw_rows_go_by_numpy_copy_and_a_misfit_row_is_dropped_not_retried(database_url, mqtt_broker, agency):
    engine, metrics, writer = await _raw_writer(database_url, mqtt_broker, agency, retry_s=0.1)
    ppg = np.arange(100, dtype=np.int32) + 70_000
    accel = np.tile(np.array([10, -1000, 20], np.int16), 100)
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(5):
        writer.add([now + dt.timedelta(seconds=2 * i), 9, None, 50, 100, ppg, accel, False, None])
    writer.add([now, 9, None, 50, 100, ppg, np.full(300, 40_000), False, None])  # not a smallint
    try:
        assert await writer.flush() == 5 and writer.buffered == 0  # all taken off the buffer ...
    finally:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("select ppg, accel_mg from raw_windows where device_id = 9"))).all()
        await engine.dispose()
    assert writer.dropped == 1 and metrics.detection_rows_dropped.labels("raw_windows")._value.get() == 1
    assert len(rows) == 5 and all(r.ppg == ppg.tolist() and r.accel_mg == accel.tolist() for r in rows)  # ... 5 stored


async def test_a_misfit_row_met_during_an_outage_is_dropped_once(private_postgres, mqtt_broker, agency):
    engine, metrics, writer = await _raw_writer(_private_url(private_postgres), mqtt_broker, agency, retry_s=0.05)
    ppg = np.arange(100, dtype=np.int32)
    accel = np.zeros(300, np.int16)
    now = dt.datetime.now(dt.timezone.utc)
    private_postgres.stop("immediate")
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop, 0.05))
    try:
        writer.add([now, 9, None, 50, 100, ppg, np.full(300, 40_000), False, None])  # not a smallint
        for i in range(3):
            writer.add([now + dt.timedelta(seconds=2 * i), 9, None, 50, 100, ppg, accel, False, None])
        await _wait_for(lambda: metrics.storage_failures._value.get() >= 3)  # several failed retries
        assert writer.dropped == 1 and writer.buffered == 3
        assert metrics.detection_rows_dropped.labels("raw_windows")._value.get() == 1
        private_postgres.start()
        await _wait_for(lambda: writer.written == 3 and writer.buffered == 0)
    finally:
        stop.set()
        await task
        await engine.dispose()
    assert writer.dropped == 1


class TestStatusBoard:
    def test_offline_removed_and_low_battery_are_checks_not_alerts(self):
        board = StatusBoard(offline_s=30, battery_low_pct=15)
        st = board.seen(1, "a", 11, "Officer A", "gw1", now=100.0, backfill=False)
        board.status_frame(st, (80, 4000, (1, 2, 3), F.STATUS_WORN | F.STATUS_SKIN_CONTACT, 0))
        (first,) = board.changes(100.0)
        assert first[1]["state"] == "ok" and first[1]["device"] == "connected" and first[1]["firmware"] == "1.2.3"
        assert board.changes(110.0) == []                       # unchanged: not published again
        (offline,) = board.changes(131.0)
        assert offline[1]["state"] == "check" and offline[1]["reasons"] == ["device_offline"]
        board.seen(1, "a", 11, "Officer A", "gw1", now=140.0, backfill=False)
        board.status_frame(st, (12, 3400, (1, 2, 3), 0, 0))     # taken off, battery low
        (removed,) = board.changes(140.0)
        assert removed[1]["state"] == "check" and removed[1]["reasons"] == ["device_removed", "battery_low"]
        assert removed[1]["worn"] is False and "heart_rate" not in removed[1]

    def test_backfill_does_not_make_a_device_look_online(self):
        board = StatusBoard(offline_s=30, battery_low_pct=15)
        board.seen(1, "a", 11, "Officer A", "gw1", now=100.0, backfill=False)
        board.seen(1, "a", 11, "Officer A", "gw1", now=150.0, backfill=True)
        assert board.devices[1].last_seen == 100.0 and board.devices[1].backfill_frames == 1

    def test_an_alert_shows_as_alert_then_returns_to_ok(self):
        board = StatusBoard(offline_s=30, battery_low_pct=15)
        st = board.seen(1, "a", 11, "Officer A", "gw1", now=100.0, backfill=False)
        st.alert_at = 100.0
        assert board.officer_status(st, 101.0).state == "alert"
        board.seen(1, "a", 11, "Officer A", "gw1", now=500.0, backfill=False)
        assert board.officer_status(st, 500.0).state == "ok"

    def test_one_event_shape_with_iso_times_and_the_open_incident(self):
        board = StatusBoard(offline_s=30, battery_low_pct=15)
        board.seen(1, "a", 11, "Officer A", "gw1", now=1_772_366_400.5, backfill=False, unit="Patrol 3")
        (event,) = [e for _, e in board.changes(1_772_366_401.0)]
        assert event["last_seen"] == "2026-03-01T12:00:00.500000+00:00" and event["unit"] == "Patrol 3"
        assert event["incident"] is None and event["gateway"] == "gw1"
        incident = OpenIncident("x-1", "sos", 1, "raised", False)
        status = board.incident_changed(1, "a", 11, "Officer A", incident, now=1_772_366_402.0)
        assert status.to_json()["incident"] == {"id": "x-1", "kind": "sos", "priority": 1, "state": "raised", "escalated": False}
        assert set(status.to_json()) == set(event)                  # one schema, whoever publishes
        assert board.incident_changed(1, "a", 11, "Officer A", incident, now=1_772_366_402.0) is None  # nothing new
        assert board.changes(1_772_366_403.0) == []                # already published by the incident
        assert board.incident_changed(1, "a", 11, "Officer A", None, now=1_772_366_404.0).incident is None

    def test_the_last_gateway_is_the_one_of_the_latest_frame(self):
        board = StatusBoard(offline_s=30, battery_low_pct=15)
        assert board.last_gateway(1) is None
        board.seen(1, "a", 11, "Officer A", "gw1", now=100.0, backfill=False)
        board.seen(1, "a", 11, "Officer A", "car-7", now=101.0, backfill=False)
        assert board.last_gateway(1) == "car-7"
        assert asyncio.run(board.gateway_for(1)) == "car-7"
        assert asyncio.run(board.gateway_for(2)) is None            # no frame and no database: unknown


async def test_one_partition_function_keeps_every_time_series_table_ready(database_url, mqtt_broker, agency):
    host, port = mqtt_broker
    settings = backend_settings(database_url, host, port, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        assert await db.storage_mode(engine) == "native_partitioning"  # no TimescaleDB on this machine
        async with engine.begin() as conn:
            await conn.execute(sa.text("select vigil_ensure_partitions(4, 2)"))
            names = set((await conn.execute(sa.text(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                "join pg_class p on p.oid = i.inhparent where p.relname in ('features', 'raw_windows')"))).scalars())
            today = (await conn.execute(sa.text("select current_date"))).scalar_one()
    finally:
        await engine.dispose()
    days = [(today + dt.timedelta(days=k)).strftime("%Y%m%d") for k in range(-4, 3)]
    for table in ("features", "raw_windows"):
        assert {f"{table}_{d}" for d in days} <= names, sorted(names)
