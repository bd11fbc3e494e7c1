"""Device status writes while the database is away: failure logged once, recovery logged once,
and only when a write went through (it said "recovered" between every two failed retries)."""
from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from backend.detection import status_writer as sw


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.05
        return self.now


async def test_outage_is_logged_once_and_recovery_only_after_a_write(monkeypatch, caplog):
    monkeypatch.setattr(sw, "STATUS_SWEEP_S", 0.001)
    writer = sw.DeviceStatusWriter.__new__(sw.DeviceStatusWriter)  # only its loop is under test
    writer._flush_s, writer._retry_s, writer._wall, writer._failing = 0.1, 0.2, _Clock(), False
    writer.publish = lambda now: None
    outcome = {"down": True, "writes": 0}

    async def write():
        outcome["writes"] += 1
        if outcome["down"]:
            raise sa.exc.OperationalError("insert", {}, OSError("connection refused"))

    writer.write = write
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="vigil.detection"):
        task = asyncio.create_task(writer.run(stop))
        while outcome["writes"] < 6:
            await asyncio.sleep(0.001)
        outcome["down"] = False
        target = outcome["writes"] + 3
        while outcome["writes"] < target:
            await asyncio.sleep(0.001)
        stop.set()
        await task
    failed = [r for r in caplog.records if "WRITE FAILED" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failed) == 1 and len(recovered) == 1
    assert recovered[0].created >= failed[0].created
