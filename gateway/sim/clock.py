"""The simulator's wall clock: real time, or faster for tests and benches."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SimClock:
    """Simulated wall clock: ``speed`` simulated seconds pass per real second."""

    def __init__(self, speed: float = 1.0, start_epoch_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._monotonic = monotonic
        self._mono0 = monotonic()
        self.epoch0 = time.time() if start_epoch_s is None else start_epoch_s

    def now(self) -> float:
        return self.epoch0 + (self._monotonic() - self._mono0) * self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)
