"""Batched, outage-proof writes of append-only rows (features, raw windows).

Rows wait in a bounded in-memory buffer and go to PostgreSQL by binary COPY, ``batch_size`` at
a time: encoded by asyncpg (``copy_records_to_table``), or, for a writer given its columns'
``kinds``, by :mod:`backend.detection.binary_copy` (rows with sample arrays; a row that does not
fit its columns is dropped, counted and logged, never retried forever). A failed write keeps its rows and is
retried every ``retry_s``; while the database is away the buffer fills, and past
``max_buffered`` the oldest rows are dropped and counted. Each change of state (write failed,
rows dropped, recovered) is logged once, loudly, not per batch. Nothing here blocks the
caller: ``add`` only appends.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.detection import binary_copy
from backend.app.metrics import BackendMetrics
from backend.app.waiting import wait_for_any

log = logging.getLogger("vigil.detection.store")

DB_ERRORS = (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError, ConnectionError)


def is_db_error(exc: BaseException) -> bool:
    # asyncpg's own errors (PostgresError, InterfaceError) reach us unwrapped from COPY
    return isinstance(exc, DB_ERRORS) or type(exc).__module__.startswith("asyncpg")


# Where a batch goes: (rows, their binary COPY stream or None) -> written, or raises.
Copy = Callable[[list[tuple], bytes | None], Awaitable[None]]


class BatchWriter:
    def __init__(self, engine: AsyncEngine, table: str, columns: Sequence[str], metrics: BackendMetrics, *,
                 batch_size: int, max_buffered: int, retry_s: float,
                 prepare: Callable[[list], tuple] | None = None,
                 on_stored: Callable[[list[int]], None] | None = None,
                 kinds: Sequence[str] | None = None, copy: Copy | None = None,
                 within: Callable[[object, list], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._engine = engine
        self._copy_to = copy  # I/O passed in: the pipeline bench writes nowhere
        # run in the COPY's own transaction with the batch's stamps (what else must be true
        # exactly when these rows are stored: backend/detection/raw.py RawStored)
        self._within = within
        self._clock = clock
        # monotonic time at which the last flush that emptied the buffer began: every row added
        # before it is stored (the telemetry journal's release, backend/ingest/journal.py)
        self.drained_at: float | None = None
        self.table = table
        self._columns = list(columns)
        if kinds is not None and len(kinds) != len(self._columns):
            raise ValueError(f"{table}: {len(kinds)} kinds for {len(self._columns)} columns")
        self._kinds = tuple(kinds) if kinds is not None else None
        self._metrics = metrics
        self._batch_size = batch_size
        self._max = max_buffered
        self._retry_s = retry_s
        self._prepare = prepare or tuple
        self._rows: collections.deque[list] = collections.deque()
        # per row: a stamp handed to ``on_stored`` (a wall time in ms) or ``within`` once the row is
        # written, or None
        self._stamps: collections.deque[object] = collections.deque()
        self._on_stored = on_stored
        self._full = asyncio.Event()
        self._failing = False
        self._dropping = False
        self.written = 0
        self.dropped = 0

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def add(self, row: list, stamp_ms: object = None) -> None:
        if len(self._rows) >= self._max:
            self._rows.popleft()
            self._stamps.popleft()
            self.dropped += 1
            self._metrics.detection_rows_dropped.labels(self.table).inc()
            if not self._dropping:
                self._dropping = True
                log.error("%s BUFFER FULL (%d rows): dropping the oldest rows until the database is back",
                          self.table.upper(), self._max)
        self._rows.append(row)
        self._stamps.append(stamp_ms)
        if len(self._rows) >= self._batch_size:
            self._full.set()

    def wake(self) -> None:
        """Write what is buffered now rather than at the next interval (a round just ended)."""
        if self._rows:
            self._full.set()

    async def flush(self) -> int:
        """Write everything buffered, a batch at a time; returns the rows written. Raises the
        database error (rows kept) when a batch fails."""
        done = 0
        began = self._clock()
        while self._rows:
            n = min(self._batch_size, len(self._rows))
            batch = [self._prepare(self._rows[i]) for i in range(n)]
            data = None
            if self._kinds is not None:
                data, misfits = self._encode(batch)
                for i in reversed(misfits):  # dropped for good, whether or not the write succeeds
                    del batch[i]
                    del self._rows[i]
                    del self._stamps[i]
                n -= len(misfits)
                if not n:
                    continue
            if self._copy_to is not None:
                await self._copy_to(batch, data)
            else:
                await self._copy(batch, data, [self._stamps[i] for i in range(n) if self._stamps[i] is not None])
            stamps = []
            for _ in range(n):
                self._rows.popleft()
                stamp = self._stamps.popleft()
                if stamp is not None:
                    stamps.append(stamp)
            if stamps and self._on_stored is not None:
                self._on_stored(stamps)
            done += n
        self.drained_at = began
        self.written += done
        if done:
            self._metrics.detection_rows_written.labels(self.table).inc(done)
        return done

    async def _copy(self, batch: list[tuple], data: bytes | None, stamps: list) -> None:
        """Write a batch: ``data``, its binary COPY stream, if it was encoded, else the rows;
        with ``within`` in the same transaction."""
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            async with driver.transaction():
                if data is None:
                    await driver.copy_records_to_table(self.table, records=batch, columns=self._columns)
                else:
                    async def stream():
                        yield data
                    await driver.copy_to_table(self.table, source=stream(), columns=self._columns, format="binary")
                if self._within is not None and stamps:
                    await self._within(driver, stamps)

    def _encode(self, batch: list[tuple]) -> tuple[bytes, list[int]]:
        """The batch's COPY stream without the rows that do not fit their columns (dropped,
        counted and logged here, once), and those rows' positions in the batch."""
        try:
            return binary_copy.encode(batch, self._kinds), []
        except binary_copy.BinaryCopyError:
            pass
        good, misfits = [], []
        for i, row in enumerate(batch):  # find the rows that do not fit; the others are written
            try:
                binary_copy.encode([row], self._kinds)
                good.append(row)
            except binary_copy.BinaryCopyError as exc:
                misfits.append(i)
                self.dropped += 1
                self._metrics.detection_rows_dropped.labels(self.table).inc()
                log.error("%s: a row that does not fit its columns was dropped (%s)", self.table, exc)
        return binary_copy.encode(good, self._kinds), misfits

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Flush every ``interval_s`` (sooner when a batch is full) until ``stop``; a last flush on stop."""
        while not stop.is_set():
            self._full.clear()
            try:
                await self.flush()
                if self._failing:
                    log.warning("%s writes recovered (%d rows dropped meanwhile)", self.table, self.dropped)
                self._failing = self._dropping = False
                delay = interval_s
            except Exception as exc:  # noqa: BLE001 - only database errors are expected; others re-raised
                if not is_db_error(exc):
                    raise
                self._metrics.storage_failures.inc()
                if not self._failing:
                    self._failing = True
                    log.error("%s WRITE FAILED (%s); %d rows kept in memory, retrying every %.1f s",
                              self.table.upper(), exc.__class__.__name__, len(self._rows), self._retry_s)
                delay = self._retry_s
            if self._failing:
                await wait_for_any(stop, timeout=delay)
            else:
                await wait_for_any(stop, self._full, timeout=delay)
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001
            if not is_db_error(exc):
                raise
            log.error("%s: %d rows not written at shutdown (database unavailable)", self.table, len(self._rows))

