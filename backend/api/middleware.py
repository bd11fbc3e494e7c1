"""Protections that wrap the whole HTTP surface: secure response headers and login throttling.

Secure headers are added to every response that does not set its own (the dashboard pages set a
Content-Security-Policy fitted to their scripts; it is kept). Login throttling counts failed
sign-ins per (username, client address) in a sliding window, so a password cannot be guessed
online; the clock is an argument so tests never sleep."""
from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON answers never need to load anything; the docs pages load Swagger UI / ReDoc from their CDN.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")
# One year, as browsers' preload lists expect; sent only over HTTPS (RFC 6797 section 7.2).
HSTS = "max-age=31536000; includeSubDomains"


class SecureHeaders:
    """Pure ASGI middleware (it must not buffer the live-event stream)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PATHS) else API_CSP
        defaults = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"), (b"content-security-policy", csp.encode()),
                    (b"cross-origin-opener-policy", b"same-origin")]
        if scope.get("scheme") == "https":
            defaults.append((b"strict-transport-security", HSTS.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in defaults if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class LoginThrottle:
    """At most ``max_failures`` failed sign-ins per key within ``window_s``; then the key waits.

    >>> now = [0.0]
    >>> throttle = LoginThrottle(2, 60.0, lambda: now[0])
    >>> throttle.failed("u|1.2.3.4"); throttle.failed("u|1.2.3.4")
    >>> throttle.retry_after("u|1.2.3.4")
    60
    >>> now[0] = 60.0
    >>> throttle.retry_after("u|1.2.3.4") is None
    True
    """

    # Keys remembered at most (oldest forgotten first), so a flood of usernames cannot fill memory.
    MAX_KEYS = 100_000

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, now: Callable[[], float] = time.monotonic):
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures must be >= 1 and window_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self._now = now
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self.refused = 0

    @staticmethod
    def key(username: str, client: str | None) -> str:
        return f"{username.strip().lower()}|{client or '?'}"

    def _recent(self, key: str) -> collections.deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self._now() - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int | None:
        """Seconds until this key may try again, or None when it may try now."""
        times = self._recent(key)
        if times is None or len(times) < self.max_failures:
            return None
        self.refused += 1
        return max(1, math.ceil(times[-self.max_failures] + self.window_s - self._now()))

    def failed(self, key: str) -> None:
        times = self._recent(key)
        if times is None:
            times = self._failures[key] = collections.deque(maxlen=self.max_failures)
        times.append(self._now())
        self._failures.move_to_end(key)
        while len(self._failures) > self.MAX_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
