"""Raw windows: released samples grouped into rows of about one hop per device, and the holds
that keep the rows around an alert.

:class:`RawRows` turns the chunks a device stream releases into rows for the ``raw_windows``
writer (:mod:`backend.detection.store`): a row ends when it holds a hop of samples, when the
next chunk does not continue it (another rate, backfill or not, a gap), or when the stream
paused for a hop. :class:`RawHolds` remembers, for every alert, the span of raw samples to keep
(``raw_hold_minutes`` before and after): rows still buffered are marked as they are written,
rows already stored are marked by the holds' own update (written with the device status,
:mod:`backend.detection.status_writer`).
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.db import schema as t
from firmware import frame as F
from backend.detection.store import BatchWriter
from backend.detection.windows import TelemetryChunk
from backend.ingest.registry import DeviceRegistry

RAW_COLUMNS = ("time", "device_id", "officer_id", "rate_hz", "samples", "ppg", "accel_mg", "backfill", "held_by_alert")
# their binary COPY kinds (t.raw_windows); the sample arrays stay numpy arrays until encoded
RAW_KINDS = ("timestamptz", "int8", "int4", "int2", "int2", "int4[]", "int2[]", "bool", "uuid")


def utc(ms: float) -> dt.datetime:
    """Wall milliseconds as an aware UTC datetime (the tables' timestamptz)."""
    return dt.datetime.fromtimestamp(ms / 1000.0, dt.timezone.utc)


class RawHolds:
    """The spans of raw samples kept around alerts, per device."""

    def __init__(self, hold_minutes: float, backlog_s: float):
        self._span_ms = hold_minutes * 60_000.0
        # a hold only matters in memory until its rows are written (the database keeps it);
        # rows of a stream that ran ahead by the backlog may still be on their way
        self._margin_ms = 60_000.0 + backlog_s * 1000.0
        self._by_device: dict[int, list[tuple[float, float, object]]] = defaultdict(list)  # (start ms, until ms, alert id)
        self.pending: list[dict] = []  # raw_holds rows not yet written

    def hold(self, device_id: int, aid, kind: str, at_ms: float) -> None:
        start, until = at_ms - self._span_ms, at_ms + self._span_ms
        self._by_device[device_id].append((start, until, aid))
        self.pending.append({"alert_id": aid, "device_id": device_id, "start": utc(start), "until": utc(until), "kind": kind})

    def mark_held(self, row: list) -> tuple:
        """A raw row as written: ``held_by_alert`` set if a hold covers its start."""
        if row[8] is None:
            ms = row[0].timestamp() * 1000.0
            for start, until, aid in self._by_device.get(row[1], ()):
                if start <= ms < until:
                    row[8] = aid
                    break
        return tuple(row)

    @staticmethod
    async def write(conn: AsyncConnection, holds: list[dict]) -> None:
        """Store ``holds`` and mark the raw rows already stored under them."""
        for h in holds:
            await conn.execute(pg_insert(t.raw_holds).values(**h).on_conflict_do_nothing())
            await conn.execute(
                sa.update(t.raw_windows)
                .where(t.raw_windows.c.device_id == h["device_id"], t.raw_windows.c.time >= h["start"],
                       t.raw_windows.c.time < h["until"], t.raw_windows.c.held_by_alert.is_(None))
                .values(held_by_alert=h["alert_id"]))

    def written(self, count: int, now_ms: float) -> None:
        """The first ``count`` pending holds are stored: forget them, and the spans that ended."""
        del self.pending[:count]
        for device_id in list(self._by_device):
            kept = [h for h in self._by_device[device_id] if h[1] > now_ms - self._margin_ms]
            if kept:
                self._by_device[device_id] = kept
            else:
                del self._by_device[device_id]


class RawRows:
    """Released chunks grouped into raw rows of about one hop each, handed to ``writer``."""

    def __init__(self, writer: BatchWriter, registry: DeviceRegistry, hop_s: float):
        self.writer = writer
        self._registry = registry
        self._hop_s = hop_s
        self._pending: dict[int, list[TelemetryChunk]] = defaultdict(list)
        self._samples: dict[int, int] = defaultdict(int)  # samples in _pending[device]
        self._touched: dict[int, float] = {}  # device -> wall time samples were last released
        self._hops: dict[int, int] = {}  # rate -> samples in a hop

    def released(self, device_id: int, chunks: list[TelemetryChunk], now: float) -> None:
        """Group released chunks into raw rows of about one hop each."""
        for c in chunks:
            self.released_one(device_id, c, now)

    def released_one(self, device_id: int, c: TelemetryChunk, now: float) -> None:
        """One released chunk into the device's row (the usual frame: called for each)."""
        self._touched[device_id] = now
        pending = self._pending[device_id]
        if pending:
            first, last = pending[0], pending[-1]
            contiguous = (c.rate_hz == first.rate_hz and c.backfill == first.backfill
                          and abs(c.time_ms - (last.time_ms + len(last.ppg) * 1000.0 / last.rate_hz)) <= 500.0 / c.rate_hz)
            if not contiguous:
                pending = self._row(device_id)
        pending.append(c)
        samples = self._samples[device_id] = self._samples[device_id] + len(c.ppg)
        # a full row goes to the writer at once (not when the next chunk arrives)
        if samples >= self._hop_samples(c.rate_hz):
            self._row(device_id)

    def _hop_samples(self, rate_hz: int) -> int:
        hop = self._hops.get(rate_hz)
        if hop is None:
            hop = self._hops[rate_hz] = int(round(self._hop_s * rate_hz))
        return hop

    def flush_paused(self, now: float) -> None:
        """Samples of a stream that paused for a hop become a row: their last samples are not held back."""
        for device_id, pending in list(self._pending.items()):
            if pending and now - self._touched.get(device_id, now) >= self._hop_s:
                self._row(device_id)

    def flush(self) -> None:
        """Every device's samples that wait to fill a raw row become a (shorter) row now."""
        for device_id, pending in list(self._pending.items()):
            if pending:
                self._row(device_id)

    def _row(self, device_id: int) -> list[TelemetryChunk]:
        """The device's pending samples become one raw row; returns its new, empty pending list."""
        chunks = self._pending[device_id]
        fresh = self._pending[device_id] = []
        self._samples[device_id] = 0
        d = self._registry.get(device_id)
        first = chunks[0]
        ppg = np.concatenate([c.ppg for c in chunks])
        accel = np.concatenate([c.accel_mg for c in chunks])
        self.writer.add([utc(first.time_ms + first.wall_offset_ms), device_id, d.officer_id if d else None,
                         first.rate_hz, len(ppg), ppg, accel.reshape(-1), first.backfill, None],
                        (device_id, [c.seq for c in chunks]))
        return fresh


# How many sequence numbers back ``raw_stored`` remembers per device: a journal holds minutes
# (2.5 telemetry frames a second), so 1024 (~7 minutes) covers it; older frames found in a
# journal are replayed (a duplicate is better than a loss).
STORED_WINDOW = 1024


class RawStored:
    """Which telemetry frames' samples are stored, per device: updated and saved (``raw_stored``)
    in the transaction that writes their rows (``BatchWriter(within=...)``), read back by the
    telemetry journal's replay after a crash (backend/ingest/journal.py)."""

    def __init__(self):
        self._by_device: dict[int, F.ReplayGuard] = {}

    def seed(self, saved: dict[int, F.ReplayGuard]) -> None:
        """Continue from the windows saved before a restart (so a second crash still knows)."""
        for device_id, guard in saved.items():
            mine = F.ReplayGuard(window=STORED_WINDOW)
            mine.restore(*guard.state())
            self._by_device.setdefault(device_id, mine)

    async def within(self, driver, stamps: list[tuple[int, list[int]]]) -> None:
        """The rows of ``stamps`` (device, seqs) are being written: record and save their seqs."""
        changed = set()
        for device_id, seqs in stamps:
            guard = self._by_device.get(device_id)
            if guard is None:
                guard = self._by_device[device_id] = F.ReplayGuard(window=STORED_WINDOW)
            for seq in seqs:
                try:
                    guard.accept(seq)
                except F.FrameError:  # already recorded (a retried batch) or older than the window
                    pass
            changed.add(device_id)
        rows = []
        for device_id in changed:
            highest, seen = self._by_device[device_id].state()
            rows.append((device_id, highest, seen.to_bytes(STORED_WINDOW // 8, "little")))
        await driver.executemany(
            "insert into raw_stored (device_id, highest, seen) values ($1, $2, $3) "
            "on conflict (device_id) do update set highest = excluded.highest, seen = excluded.seen", rows)

    @staticmethod
    async def load(conn: AsyncConnection) -> dict[int, F.ReplayGuard]:
        """The saved windows: which frames a replay must skip."""
        out = {}
        for row in (await conn.execute(sa.select(t.raw_stored))).all():
            guard = F.ReplayGuard(window=STORED_WINDOW)
            guard.restore(int(row.highest), int.from_bytes(row.seen, "little"))
            out[row.device_id] = guard
        return out
