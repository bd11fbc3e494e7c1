"""Reconnect backoff: capped exponential with full jitter, so clients that lost the same peer
do not come back in step.

The one definition shared by the gateway's BLE links, its MQTT publisher and the backend's
MQTT and webhook clients; each caller keeps its own tuning constants. It lives in the gateway
because the backend may import the gateway, never the other way round.
"""
from __future__ import annotations

# Doublings stop here: the ceiling reaches any sane cap long before, and 2 ** attempt stays small.
_MAX_DOUBLINGS = 30


def retry_delay(attempt: int, base_s: float, cap_s: float, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    The ceiling is ``base_s`` doubled per attempt after the first, up to ``cap_s``; the delay
    is ``jitter`` times the ceiling. ``attempt`` 0 or less waits nothing.

    Parameters
    ----------
    attempt : int
        How many attempts have failed so far.
    base_s, cap_s : float
        The first ceiling and the largest one, in seconds.
    jitter : float
        A uniform random number in [0, 1) drawn by the caller (``rng.random()``), so that a
        seeded generator replays the same delays.

    Raises
    ------
    ValueError
        If ``jitter`` is outside [0, 1).

    Examples
    --------
    >>> retry_delay(1, 0.25, 4.0, 0.5)
    0.125
    >>> retry_delay(3, 0.25, 4.0, 0.5)
    0.5
    >>> retry_delay(20, 0.25, 4.0, 0.5)
    2.0
    """
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    if attempt <= 0:
        return 0.0
    return jitter * min(cap_s, base_s * (2 ** min(attempt - 1, _MAX_DOUBLINGS)))
