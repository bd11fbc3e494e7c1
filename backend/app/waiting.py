"""Waiting on several events at once: the one helper every background loop of the backend uses
to sleep until it is stopped, woken, or its delay has passed."""
from __future__ import annotations

import asyncio


async def wait_for_any(*events: asyncio.Event | None, timeout: float | None = None) -> None:
    """Return as soon as one of ``events`` is set (None entries are ignored) or after
    ``timeout`` seconds (None: no timeout)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events if e is not None]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
