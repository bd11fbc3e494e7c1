"""Dead letters: uplink messages whose handling raised. Each is refused with a reason (counted,
logged once per kind of failure with its traceback), acknowledged so the broker does not hand it
back for ever, and its bytes kept in ``dead_letters`` for inspection. Writes are batched by one
loop; while the database is away at most ``max_kept`` wait (the oldest go first, counted)."""
from __future__ import annotations

import asyncio
import collections
import logging
import traceback

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.metrics import BackendMetrics
from backend.app.waiting import wait_for_any
from backend.db import schema as t

log = logging.getLogger("vigil.ingest")

_STORAGE_ERRORS = (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError)
# Poison is rare; this many waiting for the database is plenty to see what happened.
MAX_KEPT = 1000
# The error text kept per message.
ERROR_CHARS = 2000


class DeadLetters:
    def __init__(self, engine: AsyncEngine, metrics: BackendMetrics, max_kept: int = MAX_KEPT):
        self._engine = engine
        self._metrics = metrics
        self._waiting: collections.deque[dict] = collections.deque(maxlen=max_kept)
        self._logged: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self.total = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, topic: str, payload: bytes, stage: str, exc: BaseException) -> None:
        """One message that raised at ``stage`` (verify | handle). Never raises."""
        self.total += 1
        kind = (stage, type(exc).__name__)
        self._metrics.frames_poisoned.labels(stage).inc()
        if kind not in self._logged:  # once per kind; the counter and the table have the rest
            self._logged.add(kind)
            log.error("uplink message on %s raised while %s (refused, acknowledged, kept in dead_letters):\n%s",
                      topic, "verifying" if stage == "verify" else "handling",
                      "".join(traceback.format_exception(exc)).rstrip())
        if len(self._waiting) == self._waiting.maxlen:
            self._metrics.dead_letters_dropped.inc()
        error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        self._waiting.append({"topic": topic, "payload": bytes(payload), "stage": stage, "error": error})
        self._wake.set()

    async def run(self, stop: asyncio.Event, retry_s: float) -> None:
        """Write waiting dead letters until stopped; keeps them while the database is away."""
        while not stop.is_set():
            if not self._waiting:
                self._wake.clear()
                await wait_for_any(stop, self._wake)
                continue
            batch = list(self._waiting)
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(sa.insert(t.dead_letters), batch)
            except _STORAGE_ERRORS:
                await wait_for_any(stop, timeout=retry_s)
                continue
            for item in batch:  # the oldest may have been pushed out meanwhile
                if self._waiting and self._waiting[0] is item:
                    self._waiting.popleft()
