"""The replay window outlives a restart (issue 15, item 5).

Each device has two windows in memory (backend/ingest/registry.py): ``replay``, which every
verified frame passes, and ``acked``, which records only the frames acknowledged to the broker.
The broker hands back exactly the frames that were never acknowledged, so ``acked`` is what a
restarted backend may refuse: it is saved (``device_replay``, migration 0009) every few seconds
and on a clean stop, and seeds both windows of a device when the registry first loads it. A
frame replayed after a restart is then refused; a frame the broker redelivers is taken.

What the saving misses -- frames acknowledged within the last interval before a crash -- can
be replayed once after that crash (documented in the README's durability contract)."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.db import schema as t
from backend.detection.store import is_db_error
from backend.ingest import fastpath
from firmware import frame as F

log = logging.getLogger("vigil.ingest")



def encode(guard: F.ReplayGuard) -> tuple[int, bytes]:
    """(highest, bitmap bytes) of a window, as stored."""
    highest, seen = guard.state()
    return highest, seen.to_bytes((guard.window + 7) // 8, "little")


def decode(highest: int, seen: bytes) -> F.ReplayGuard:
    """A window as stored, restored (bits beyond the window are dropped)."""
    guard = fastpath.replay_window()
    guard.restore(int(highest), int.from_bytes(seen, "little"))
    return guard


async def load(conn: AsyncConnection, device_ids: Iterable[int] | None = None) -> dict[int, F.ReplayGuard]:
    """The saved windows, per device (those of ``device_ids`` only, if given)."""
    query = sa.select(t.device_replay.c.device_id, t.device_replay.c.highest, t.device_replay.c.seen)
    if device_ids is not None:
        query = query.where(t.device_replay.c.device_id.in_(list(device_ids)))
    return {row.device_id: decode(row.highest, row.seen) for row in (await conn.execute(query)).all()}


# never back: an older snapshot (another writer, a clock) does not overwrite a newer one
_UPSERT = ("insert into device_replay (device_id, highest, seen, updated_at) values ($1, $2, $3, $4) "
           "on conflict (device_id) do update set highest = excluded.highest, seen = excluded.seen, "
           "updated_at = excluded.updated_at where device_replay.highest <= excluded.highest")


class ReplayStateWriter:
    """Saves the acknowledged windows of the devices that changed, every ``interval_s``."""

    def __init__(self, engine: AsyncEngine, registry, now=lambda: dt.datetime.now(dt.timezone.utc)):
        self._engine = engine
        self._registry = registry
        self._now = now
        self._failing = False

    async def save(self) -> int:
        """Write every changed device's window now; returns how many. A device whose write
        fails stays marked as changed."""
        dirty = self._registry.take_acked_changes()
        if not dirty:
            return 0
        now = self._now()
        rows = []
        for device_id in dirty:
            record = self._registry.get(device_id)
            if record is None:
                continue
            highest, seen = encode(record.acked)
            rows.append((device_id, highest, seen, now))
        try:
            if rows:
                # one prepared statement run per row by the driver: compiling a multi-row VALUES
                # of thousands of devices took the event loop for tens of milliseconds every save
                async with self._engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    async with driver.transaction():
                        await driver.executemany(_UPSERT, rows)
        except Exception as exc:  # noqa: BLE001 - database errors (asyncpg's own too) are kept; others raise
            self._registry.mark_acked_changed(dirty)
            if not is_db_error(exc):
                raise
            if not self._failing:
                log.error("saving the replay windows failed (%s); kept and retried", exc.__class__.__name__)
                self._failing = True
            raise
        if self._failing:
            log.warning("replay windows saved again")
            self._failing = False
        return len(rows)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Save every ``interval_s`` until ``stop``, and once more then."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            try:
                await self.save()
            except Exception as exc:  # noqa: BLE001
                if not is_db_error(exc):
                    raise
                # logged once in save(); the changes stay marked
