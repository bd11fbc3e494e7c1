"""Shared pieces of the hardening tests: the fault table every fault test adds a row to (printed
at the end of the session; run with -s to see it), a device that seals its own frames, and a
seeded backend database."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass, field

import aiomqtt
import httpx
import pytest

from backend.identity import fleet
from backend.db import engine as db
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import live_url, person_token
from tests.listening import BackgroundListener

FAULT_ROWS: list[tuple[str, str, str, str, str]] = []


def record_fault(fault: str, alerts: str, paged_twice: str, incidents: str, telemetry: str) -> None:
    """One row of the fault table: what each fault cost (alerts lost, double pages, open
    incidents after the restart, telemetry lost)."""
    FAULT_ROWS.append((fault, alerts, paged_twice, incidents, telemetry))
    print(f"\nFAULT {fault}: alerts lost {alerts}; paged twice {paged_twice}; incidents {incidents}; telemetry {telemetry}")


@pytest.fixture(scope="session", autouse=True)
def fault_table():
    yield
    if FAULT_ROWS:
        head = ("fault", "alerts lost", "paged twice", "open incidents after restart", "telemetry lost")
        widths = [max(len(r[i]) for r in [head, *FAULT_ROWS]) for i in range(5)]
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        print("\n\nFAULT TABLE\n" + line(head) + "\n|" + "|".join("-" * (w + 2) for w in widths) + "|")
        print("\n".join(line(r) for r in FAULT_ROWS))


@dataclass
class SealingDevice:
    """A wearable reduced to its frames: seals with its key, numbers by seq, a clock we control."""
    device_id: int
    key: bytes
    seq: int = 0
    clock_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self):
        self.keys = F.DeviceKeys(self.key)

    def telemetry(self, samples: int = 20) -> bytes:
        ppg = [100_000 + (i * 997) % 3000 for i in range(samples)]
        accel = [(0, 0, 1000)] * samples
        data = self.seal(F.TYPE_TELEMETRY, F.encode_telemetry(50, ppg, accel, 60))
        self.clock_ms += samples * 20
        return data

    def event(self, code: int) -> bytes:
        return self.seal(F.TYPE_EVENT, F.encode_event(code, 0, 1))

    def seal(self, frame_type: int, payload: bytes, flags: int = F.FLAG_ENCRYPTED) -> bytes:
        data = F.seal(self.keys, frame_type, self.device_id, self.seq, self.clock_ms, payload, flags)
        self.seq += 1
        return data


async def publish(mqtt: tuple[str, int], agency: str, frames: list[tuple[int, str, bytes]], gateway: str = "gw-h",
                  **client_kw) -> None:
    """Publish (device, kind, frame) at QoS 1 on the uplink topics, as a gateway would."""
    async with aiomqtt.Client(*mqtt, protocol=aiomqtt.ProtocolVersion.V5, **client_kw) as client:
        for device_id, kind, data in frames:
            await client.publish(topics.uplink(agency, gateway, device_id, kind), data, qos=1)


async def seed(settings, agency: str, device_id: int, supervisor: str | None = None,
               password: str = "correct horse battery") -> tuple[bytes, int]:
    """Migrate, then one officer on shift wearing ``device_id``; (device key, officer id)."""
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        officer = await fleet.create_officer(engine, agency, "H-1", "Officer Haddad", "Unit 9")
        device = await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device_id)
        await fleet.assign_device(engine, device_id, officer)
        if supervisor:
            from backend.identity import auth
            await auth.create_user(engine, supervisor, password, "supervisor", agency)
    finally:
        await engine.dispose()
    return device.key, officer


def supervisor_token(settings, agency: str) -> str:
    return person_token(settings, "supervisor", agency, username=f"sup-h-{agency}")


class LiveFeed(BackgroundListener):
    """A supervisor's WebSocket, recording every alert change; reconnects when the backend dies."""

    connect_timeout_s = 15.0

    def __init__(self, base_url: str, token: str):
        super().__init__()
        self.base_url, self.token = base_url, token
        self.changes: list[dict] = []

    async def _run(self) -> None:
        import websockets
        last_id = None
        while True:
            try:
                # a fresh one-time ticket for every connection (the token never goes in the URL)
                url = await live_url(self.base_url, self.token, **({"last_event_id": last_id} if last_id is not None else {}))
                async with websockets.connect(url, open_timeout=3) as ws:
                    self.connected.set()
                    async for raw in ws:
                        msg = json.loads(raw)
                        last_id = msg.get("id", last_id)  # resume after a reconnect, as the dashboard does
                        if msg.get("type") == "alert":
                            self.changes.append(msg["data"])
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError, httpx.HTTPError):
                pass
            self.connected.clear()
            await asyncio.sleep(0.2)

    def raised(self) -> list[str]:
        """Ids of the pages: every 'raised' change is a page to the supervisors."""
        return [c["id"] for c in self.changes if c["change"] == "raised"]


async def wait_for(check, timeout: float, what: str, poll_s: float = 0.1):
    """Wait until ``check()`` (sync or async) returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll_s)


async def api_get(http: httpx.AsyncClient, path: str, token: str):
    r = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    return r.json() if r.status_code == 200 else None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
