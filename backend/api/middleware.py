"""Protections that wrap the whole HTTP surface: secure response headers and login throttling.

Secure headers are added to every response that does not set its own (the dashboard pages set a
Content-Security-Policy fitted to their scripts; it is kept). Login throttling counts failed
sign-ins per username and per client address in a sliding window, so a password cannot be
guessed online nor sprayed over many accounts; the clock is an argument so tests never sleep.
The client address is the connection's peer: X-Forwarded-For counts only when that peer is a
configured proxy (``client_address``)."""
from __future__ import annotations

import collections
import functools
import ipaddress
import math
import time
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON answers never need to load anything; the docs page loads Swagger UI from this server only.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'")
DOCS_PATHS = ("/docs",)
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


def client_address(scope: Scope, trusted_proxies: Sequence[str]) -> str | None:
    """The client's address: the connection's peer, unless the peer is a configured proxy; then
    the nearest address in X-Forwarded-For that is not a configured proxy. Nobody else's
    X-Forwarded-For is believed (a client could name any address it likes).

    >>> scope = {"client": ("10.0.0.2", 1), "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")]}
    >>> client_address(scope, ["10.0.0.0/24"]), client_address(scope, [])
    ('203.0.113.9', '10.0.0.2')
    """
    peer = (scope.get("client") or (None,))[0]
    proxies = _networks(tuple(trusted_proxies))
    if peer is None or not _within(peer, proxies):
        return peer
    forwarded = [h.decode("latin-1") for k, h in scope.get("headers", ()) if k == b"x-forwarded-for"]
    hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, proxies):
            return hop
    return hops[0] if hops else peer


@functools.lru_cache(maxsize=8)
def _networks(specs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def _within(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address: never a trusted proxy
    return any(ip in net for net in networks)


class LoginThrottle:
    """Failed sign-ins counted per username (from any address: a slow guess spread over many
    addresses) and per client address (any username: one password sprayed over many accounts),
    each in a sliding window of ``window_s``; past either limit the attempt waits, even with the
    right password. A success clears its username's count, not its address's.

    >>> now = [0.0]
    >>> throttle = LoginThrottle(2, 3, 60.0, lambda: now[0])
    >>> throttle.failed("u", "1.2.3.4"); throttle.failed("u", "1.2.3.4")
    >>> throttle.retry_after("u", "5.6.7.8"), throttle.retry_after("v", "1.2.3.4")
    (60, None)
    >>> throttle.failed("v", "1.2.3.4"); throttle.retry_after("w", "1.2.3.4")
    60
    >>> now[0] = 60.0
    >>> throttle.retry_after("u", "1.2.3.4") is None
    True
    """

    # Keys remembered at most (oldest forgotten first), so a flood of usernames cannot fill memory.
    MAX_KEYS = 100_000

    def __init__(self, per_username: int = 10, per_address: int = 20, window_s: float = 60.0,
                 now: Callable[[], float] = time.monotonic):
        if per_username < 1 or per_address < 1 or window_s <= 0:
            raise ValueError("per_username and per_address must be >= 1 and window_s > 0")
        self.limits = {"user": per_username, "addr": per_address}
        self.window_s = window_s
        self._now = now
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self.refused = 0

    @staticmethod
    def _keys(username: str, address: str | None) -> tuple[str, str]:
        return f"user:{username.strip().lower()}", f"addr:{address or '?'}"

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

    def retry_after(self, username: str, address: str | None) -> int | None:
        """Seconds until this username from this address may try again, or None when it may try now."""
        waits = []
        for key in self._keys(username, address):
            limit = self.limits[key.partition(":")[0]]
            times = self._recent(key)
            if times is not None and len(times) >= limit:
                waits.append(max(1, math.ceil(times[-limit] + self.window_s - self._now())))
        if not waits:
            return None
        self.refused += 1
        return max(waits)

    def failed(self, username: str, address: str | None) -> None:
        for key in self._keys(username, address):
            times = self._recent(key)
            if times is None:
                times = self._failures[key] = collections.deque(maxlen=self.limits[key.partition(":")[0]])
            times.append(self._now())
            self._failures.move_to_end(key)
        while len(self._failures) > self.MAX_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(self._keys(username, None)[0], None)
