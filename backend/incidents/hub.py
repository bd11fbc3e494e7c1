"""Fan-out of live events (alert changes, officer status) to supervisors' WebSockets.

Each event gets an id that increases, also across a restart of the backend; the last events of each agency are kept so a
client that reconnects can resume from the last id it saw."""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import Callable

log = logging.getLogger("vigil.hub")

# Enough to bridge a network blip of a minute at a busy agency.
REPLAY_BUFFER = 1000
# A subscriber this far behind is cut off (it reconnects and resumes) so it cannot hold memory.
SUBSCRIBER_QUEUE = 1000


class Subscription:
    def __init__(self, hub: "LiveHub", agency: str):
        self.hub = hub
        self.agency = agency
        self.queue: asyncio.Queue[dict] = asyncio.Queue(SUBSCRIBER_QUEUE)

    async def next(self) -> dict:
        return await self.queue.get()

    def close(self) -> None:
        self.hub._subs[self.agency].discard(self)


class LiveHub:
    def __init__(self, now: Callable[[], float] = time.time) -> None:
        # Ids start from the wall clock (ms x 1000, below 2**53 for JavaScript), so they keep
        # increasing across a backend restart: a client resuming with an id from the previous
        # process receives everything the new one has published since it started.
        self._ids = itertools.count(int(now() * 1000) * 1000)
        self._subs: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._recent: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=REPLAY_BUFFER))

    def subscribe(self, agency: str, after_id: int | None = None) -> tuple[Subscription, list[dict]]:
        """Returns the subscription and the buffered events after ``after_id`` (for resume)."""
        sub = Subscription(self, agency)
        self._subs[agency].add(sub)
        backlog = [e for e in self._recent[agency] if after_id is not None and e["id"] > after_id]
        return sub, backlog

    def publish(self, agency: str, event_type: str, data: dict) -> dict:
        event = {"id": next(self._ids), "type": event_type, "agency": agency, "data": data}
        self._recent[agency].append(event)
        for sub in list(self._subs[agency]):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.close()
                log.warning("live subscriber of %s fell behind; disconnected so it resumes", agency)
        return event

    def subscriber_count(self, agency: str) -> int:
        return len(self._subs[agency])
