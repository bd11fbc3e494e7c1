"""Device and officer status out: officer status changes on the live hub every second; the
status of changed devices (``device_status``, and ``devices``' last seen, battery and firmware)
and the pending raw holds written every ``status_flush_s`` in one transaction.

A failed write keeps everything in memory (the dirty flags, the pending holds) and is retried
every ``retry_s``; the failure and the recovery are each logged once.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.waiting import wait_for_any
from backend.db import schema as t
from backend.detection.raw import RawHolds, utc
from backend.detection.status import StatusBoard
from backend.detection.store import is_db_error
from backend.detection.streams import DeviceStreams
from backend.incidents.hub import LiveHub

log = logging.getLogger("vigil.detection")

STATUS_SWEEP_S = 1.0


class DeviceStatusWriter:
    def __init__(self, engine: AsyncEngine, status: StatusBoard, streams: DeviceStreams, holds: RawHolds, hub: LiveHub,
                 *, flush_s: float, retry_s: float, wall: Callable[[], float]):
        self._engine = engine
        self._status = status
        self._streams = streams
        self._holds = holds
        self._hub = hub
        self._flush_s = flush_s
        self._retry_s = retry_s
        self._wall = wall
        self._failing = False

    def publish(self, now: float) -> int:
        changes = self._status.changes(now)
        for st, status in changes:
            self._hub.publish(st.agency_id, "officer_status", status)
        return len(changes)

    async def write(self) -> None:
        """Device status of changed devices and pending raw holds; kept for retry on failure."""
        dirty = [st for st in self._status.devices.values() if st.dirty and st.last_seen is not None]
        holds = list(self._holds.pending)
        if not dirty and not holds:
            return
        now = utc(self._wall() * 1000)
        rows = []
        for st in dirty:
            c = self._streams.counters(st.device_id)
            connected = st.published.device == "connected" if st.published else True
            rows.append({
                "device_id": st.device_id, "last_seen": utc(st.last_seen * 1000), "gateway": st.gateway,
                "connected": connected, "battery_pct": st.battery_pct, "battery_mv": st.battery_mv,
                "charging": st.charging, "worn": st.worn, "skin_contact": st.skin_contact, "firmware": st.firmware,
                "dropped_samples": st.dropped_samples,
                "link_gaps": (c.gaps_filled + c.restarts) if c else 0, "late_frames": c.late_frames if c else 0,
                "backfill_frames": st.backfill_frames, "updated_at": now})
        async with self._engine.begin() as conn:
            if rows:
                ins = pg_insert(t.device_status)
                await conn.execute(ins.on_conflict_do_update(
                    index_elements=["device_id"], set_={k: ins.excluded[k] for k in rows[0] if k != "device_id"}), rows)
                await conn.execute(
                    sa.update(t.devices).where(t.devices.c.id == sa.bindparam("b_id")).values(
                        last_seen=sa.bindparam("b_seen"),
                        battery_pct=sa.func.coalesce(sa.bindparam("b_pct", type_=sa.SmallInteger), t.devices.c.battery_pct),
                        firmware=sa.func.coalesce(sa.bindparam("b_fw", type_=sa.Text), t.devices.c.firmware)),
                    [{"b_id": r["device_id"], "b_seen": r["last_seen"], "b_pct": r["battery_pct"], "b_fw": r["firmware"]} for r in rows])
            await self._holds.write(conn, holds)
        for st in dirty:
            st.dirty = False
        self._holds.written(len(holds), self._wall() * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        next_write = 0.0
        while not stop.is_set():
            now = self._wall()
            self.publish(now)
            try:
                if now >= next_write:
                    next_write = now + self._flush_s
                    await self.write()
                    if self._failing:  # only a write that went through says so (once)
                        log.warning("device status writes recovered")
                        self._failing = False
            except Exception as exc:  # noqa: BLE001 - database errors only; others re-raised
                if not is_db_error(exc):
                    raise
                next_write = now + self._retry_s
                if not self._failing:
                    self._failing = True
                    log.error("DEVICE STATUS WRITE FAILED (%s); kept in memory, retrying", exc.__class__.__name__)
            await wait_for_any(stop, timeout=STATUS_SWEEP_S)
