"""Which device times to believe. A device time outside these bounds is no clock anybody set (a
reset to 1970, a corrupted RTC, 2**62 ms): it is treated like an unsynced clock, never allowed to
raise. A synced clock far ahead of the receive time would store features in the future: it is
anchored to the receive time too."""
from __future__ import annotations

import datetime as dt

DEVICE_TIME_MIN_MS = int(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
DEVICE_TIME_MAX_MS = int(dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
# How far a synced clock may run ahead of the backend's before it is a wrong clock. A real one is
# off by its sync error (milliseconds); the margin is wide for simulations that feed minutes of
# recorded telemetry in seconds (tests/backend/test_detection_integration.py: 5 minutes). A clock
# an hour ahead (the jump seen in the field tests) is not believed.
FUTURE_TOLERANCE_MS = 600_000


def believable(time_ms: int, now_ms: float | None = None) -> bool:
    """A synced device time worth keeping: within the bounds, and (given the receive time) not
    more than FUTURE_TOLERANCE_MS ahead of it."""
    if not DEVICE_TIME_MIN_MS <= time_ms < DEVICE_TIME_MAX_MS:
        return False
    return now_ms is None or time_ms <= now_ms + FUTURE_TOLERANCE_MS
