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
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.db import schema as t
from firmware import frame as F

log = logging.getLogger("vigil.ingest")

_STORAGE_ERRORS = (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError)


def encode(guard: F.ReplayGuard) -> tuple[int, bytes]:
    """(highest, bitmap bytes) of a window, as stored."""
    highest, seen = guard.state()
    return highest, seen.to_bytes((guard.window + 7) // 8, "little")


def decode(highest: int, seen: bytes) -> F.ReplayGuard:
    """A window as stored, restored (bits beyond the window are dropped)."""
    guard = F.ReplayGuard()
    guard.restore(int(highest), int.from_bytes(seen, "little"))
    return guard


async def load(conn: AsyncConnection, device_ids: Iterable[int] | None = None) -> dict[int, F.ReplayGuard]:
    """The saved windows, per device (those of ``device_ids`` only, if given)."""
    query = sa.select(t.device_replay.c.device_id, t.device_replay.c.highest, t.device_replay.c.seen)
    if device_ids is not None:
        query = query.where(t.device_replay.c.device_id.in_(list(device_ids)))
    return {row.device_id: decode(row.highest, row.seen) for row in (await conn.execute(query)).all()}


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
            rows.append({"device_id": device_id, "highest": highest, "seen": seen, "updated_at": now})
        try:
            if rows:
                async with self._engine.begin() as conn:
                    stmt = pg_insert(t.device_replay).values(rows)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["device_id"],
                        set_={"highest": stmt.excluded.highest, "seen": stmt.excluded.seen, "updated_at": stmt.excluded.updated_at},
                        # never back: an older snapshot (another writer, a clock) does not overwrite a newer one
                        where=t.device_replay.c.highest <= stmt.excluded.highest,
                    )
                    await conn.execute(stmt)
        except _STORAGE_ERRORS as exc:
            self._registry.mark_acked_changed(dirty)
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
            except _STORAGE_ERRORS:
                pass  # logged once in save(); the changes stay marked
