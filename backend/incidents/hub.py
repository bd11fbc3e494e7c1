"""Fan-out of live events (alert changes, officer status) to supervisors' WebSockets.

Each event gets an id that increases, also across a restart of the backend; the last events of each agency are kept so a
client that reconnects can resume from the last id it saw.

An officer's status is a whole description (backend/detection/status.py), so only the latest one
matters: a subscriber's pending statuses and the replay buffer keep one per officer, and a burst
of status changes (a gateway coming back with a hundred devices) never fills a queue nor pushes
alerts out of the replay buffer. Anything else is queued one by one; a subscriber that falls
that far behind is closed with a reason (:class:`FellBehind`), which its WebSocket passes on as
the close code and reason so the page reconnects and resumes from its last event id."""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import Callable

from backend.exceptions import VigilBackendError

log = logging.getLogger("vigil.hub")

# Enough to bridge a network blip of a minute at a busy agency (statuses are kept apart, one per officer).
REPLAY_BUFFER = 1000
# A subscriber this far behind is cut off (it reconnects and resumes) so it cannot hold memory.
SUBSCRIBER_QUEUE = 1000
# Events that describe one thing whole: a newer one replaces the pending older one (key: data field).
COALESCED = {"officer_status": "officer_id"}


class FellBehind(VigilBackendError):
    """The subscriber was closed: it could not keep up (the reason says how far behind it was)."""


class Subscription:
    def __init__(self, hub: "LiveHub", agency: str, limit: int = SUBSCRIBER_QUEUE):
        self.hub = hub
        self.agency = agency
        self.limit = limit
        # pending events in id order; a coalesced event's key is (type, subject), any other's its id
        self._pending: collections.OrderedDict[object, dict] = collections.OrderedDict()
        self._queued = 0  # pending events that are not coalesced (what can grow without bound)
        self._ready = asyncio.Event()
        self.closed_because: str | None = None

    def _put(self, event: dict) -> None:
        key = _key(event)
        if key is None:
            key = event["id"]
            self._queued += 1
        else:
            self._pending.pop(key, None)  # the older status of this officer goes; the newer one queues last
        self._pending[key] = event
        self._ready.set()
        if self._queued > self.limit:
            self._close(f"fell behind: more than {self.limit} events waiting to be sent; resume from the last event id")

    def pending(self) -> int:
        return len(self._pending)

    def empty(self) -> bool:
        return not self._pending

    def get_nowait(self) -> dict:
        """The next pending event without waiting (raises asyncio.QueueEmpty when there is none)."""
        if not self._pending or self.closed_because is not None:
            raise asyncio.QueueEmpty
        key, event = self._pending.popitem(last=False)
        if not isinstance(key, tuple):
            self._queued -= 1
        return event

    @property
    def queue(self) -> "Subscription":
        """The pending events read as a queue (``empty()``, ``get_nowait()``), for callers that drain it."""
        return self

    async def next(self) -> dict:
        """The next event, in id order; raises :class:`FellBehind` once the hub closed this subscriber."""
        while not self._pending:
            if self.closed_because is not None:
                raise FellBehind(self.closed_because)
            self._ready.clear()
            await self._ready.wait()
        if self.closed_because is not None:
            raise FellBehind(self.closed_because)
        return self.get_nowait()

    def _close(self, reason: str) -> None:
        self.closed_because = reason
        self._pending.clear()  # the memory goes now; the client resumes from the replay buffer
        self._queued = 0
        self._ready.set()
        self.close()
        self.hub.dropped += 1
        log.warning("live subscriber of %s closed: %s", self.agency, reason)

    def close(self) -> None:
        self.hub._subs[self.agency].discard(self)


def _key(event: dict) -> tuple | None:
    field = COALESCED.get(event["type"])
    if field is None or event["data"].get(field) is None:
        return None
    return (event["type"], event["data"][field])


class LiveHub:
    def __init__(self, now: Callable[[], float] = time.time, subscriber_queue: int = SUBSCRIBER_QUEUE,
                 replay_buffer: int = REPLAY_BUFFER) -> None:
        # Ids start from the wall clock (ms x 1000, below 2**53 for JavaScript), so they keep
        # increasing across a backend restart: a client resuming with an id from the previous
        # process receives everything the new one has published since it started.
        self._ids = itertools.count(int(now() * 1000) * 1000)
        self._first_id = int(now() * 1000) * 1000
        self._queue_limit = subscriber_queue
        self._subs: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._recent: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=replay_buffer))
        self._latest: dict[str, dict[tuple, dict]] = collections.defaultdict(dict)  # coalesced: the latest per subject
        self._last: dict[str, int] = {}
        self._forgotten: dict[str, int] = {}  # the id of the newest event pushed out of the replay buffer
        self.dropped = 0  # subscribers closed for falling behind (counted for /metrics and tests)

    def subscribe(self, agency: str, after_id: int | None = None) -> tuple[Subscription, list[dict]]:
        """Returns the subscription and the buffered events after ``after_id`` (for resume), in id order."""
        sub = Subscription(self, agency, self._queue_limit)
        self._subs[agency].add(sub)
        if after_id is None:
            return sub, []
        backlog = [e for e in self._recent[agency] if e["id"] > after_id]
        backlog += [e for e in self._latest[agency].values() if e["id"] > after_id]
        return sub, sorted(backlog, key=lambda e: e["id"])

    def last_id(self, agency: str) -> int:
        """The id of the agency's newest event (before any: just below this process's first id), so a
        client that saw nothing yet still resumes from where it subscribed."""
        return self._last.get(agency, self._first_id - 1)

    def complete_since(self, agency: str, after_id: int) -> bool:
        """Whether the backlog after ``after_id`` is whole: nothing newer has left the replay
        buffer, and the id is from this process's time or later (else the page reloads)."""
        return after_id >= self._forgotten.get(agency, after_id) and after_id >= self._first_id - 1

    def publish(self, agency: str, event_type: str, data: dict) -> dict:
        event = {"id": next(self._ids), "type": event_type, "agency": agency, "data": data}
        self._last[agency] = event["id"]
        key = _key(event)
        if key is None:
            recent = self._recent[agency]
            if len(recent) == recent.maxlen:
                self._forgotten[agency] = recent[0]["id"]
            recent.append(event)
        else:
            self._latest[agency][key] = event
        for sub in list(self._subs[agency]):
            sub._put(event)
        return event

    def subscriber_count(self, agency: str) -> int:
        return len(self._subs[agency])
