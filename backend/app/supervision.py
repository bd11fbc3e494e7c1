"""Supervision of the backend's long-running tasks: a task that raises is logged with its
traceback, counted (``vigil_task_failures{task}``), shown as down in ``/api/v1/health`` and
restarted after a pause that doubles; one that keeps failing ends the process with a non-zero
status, so its service manager starts a fresh one. Never a live process with a dead loop.

Time and sleeping are passed in, so tests replay a crash loop without waiting."""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import Awaitable, Callable

from backend.app.metrics import BackendMetrics
from backend.exceptions import TaskKeepsFailing
from gateway.backoff import retry_delay

log = logging.getLogger("vigil.runtime")

# First restart after half a second (a transient fault), then doubling up to ten seconds.
RESTART_BASE_S = 0.5
RESTART_CAP_S = 10.0
# More crashes than this within the window: the task will not recover by itself.
RESTART_LIMIT = 5
RESTART_WINDOW_S = 300.0


class Supervisor:
    def __init__(self, metrics: BackendMetrics, *, stop: asyncio.Event,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 jitter: Callable[[], float] = random.random,
                 limit: int = RESTART_LIMIT, window_s: float = RESTART_WINDOW_S):
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._limit = limit
        self._window_s = window_s
        self.down: dict[str, str] = {}  # task -> why it is down (until it runs again)

    async def keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` until the process stops; restart it whenever it raises or returns early.
        Raises TaskKeepsFailing after more than ``limit`` failures within ``window_s``."""
        failures: collections.deque[float] = collections.deque()
        while True:
            try:
                await run()
                if self._stop.is_set():
                    return
                why = "returned while the backend runs"
                log.error("task %s returned while the backend runs; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                log.exception("task %s crashed; restarting it", name)
            self._metrics.task_failures.labels(name).inc()
            self.down[name] = why
            now = self._clock()
            failures.append(now)
            while failures and now - failures[0] > self._window_s:
                failures.popleft()
            if len(failures) > self._limit:
                log.critical("task %s failed %d times in %.0f s (last: %s); stopping the backend so it is restarted",
                             name, len(failures), self._window_s, why)
                raise TaskKeepsFailing(name, why)
            await self._sleep(retry_delay(len(failures), RESTART_BASE_S, RESTART_CAP_S, self._jitter()))
            self.down.pop(name, None)
