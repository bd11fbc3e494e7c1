"""A test's background listener: ``_run`` runs as a task while the object is used as
``async with``; entering waits until ``_run`` sets ``connected``."""
from __future__ import annotations

import asyncio
import contextlib


class BackgroundListener:
    connect_timeout_s = 10.0

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        self._task = asyncio.get_running_loop().create_task(self._run())
        async with asyncio.timeout(self.connect_timeout_s):
            await self.connected.wait()
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
