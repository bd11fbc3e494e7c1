"""The supervisors' live feed through the real backend (issue 15 finding 9): a burst of
officer-status changes never drops a connection; a connection that falls behind is closed with
a code and a reason, and resumes from its last event id; a heartbeat says the feed is alive."""
from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from backend.app.server import serve
from backend.db import engine as db
from backend.identity import fleet
from tests.backend.conftest import backend_settings, live_url, supervisor_token

pytestmark = pytest.mark.integration


async def _until(ws, predicate, timeout=10.0) -> list[dict]:
    """Messages up to and including the first that satisfies ``predicate``."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            seen.append(json.loads(await ws.recv()))
            if predicate(seen[-1]):
                return seen


@pytest.fixture
async def backend(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency, live_heartbeat_s=0.3)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
    finally:
        await engine.dispose()
    async with serve(settings) as running:
        yield running, supervisor_token(settings, agency), agency


async def test_a_burst_of_status_changes_keeps_the_feed(backend):
    running, token, agency = backend
    hub = running.runtime.hub
    async with websockets.connect(await live_url(running.url, token)) as ws:
        await _until(ws, lambda m: m["type"] == "heartbeat")  # subscribed
        for i in range(3000):  # a gateway coming back with 60 officers' devices, each changing 50 times
            hub.publish(agency, "officer_status", {"officer_id": i % 60, "state": "check", "n": i})
        hub.publish(agency, "probe", {"after": "burst"})
        seen = await _until(ws, lambda m: m["type"] == "probe")
        latest = {m["data"]["officer_id"]: m["data"]["n"] for m in seen if m["type"] == "officer_status"}
        assert latest == {o: 2940 + o for o in range(60)}
        assert hub.dropped == 0 and hub.subscriber_count(agency) == 1


async def test_a_connection_that_falls_behind_is_closed_with_a_reason_and_resumes(backend):
    running, token, agency = backend
    hub = running.runtime.hub
    async with websockets.connect(await live_url(running.url, token)) as ws:
        await _until(ws, lambda m: m["type"] == "heartbeat")
        last = hub.publish(agency, "probe", {"n": -1})["id"]
        await _until(ws, lambda m: m.get("id") == last)
        for i in range(1500):  # published without a pause: the connection cannot keep up
            hub.publish(agency, "probe", {"n": i})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await _until(ws, lambda m: False)  # the old feed waited here forever
        assert closed.value.rcvd.code == 1013
        assert "fell behind" in closed.value.rcvd.reason
    async with websockets.connect(await live_url(running.url, token, last_event_id=last)) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "hello" and hello["data"]["resumed"] is True
        assert hello["data"]["complete"] is False  # 1,500 missed, 1,000 kept: the page reloads its lists
        seen = await _until(ws, lambda m: m.get("data", {}).get("n") == 1499)
        probes = [m["data"]["n"] for m in seen if m["type"] == "probe"]
        assert probes == list(range(500, 1500))


async def test_the_feed_says_it_is_alive(backend):
    running, token, agency = backend
    async with websockets.connect(await live_url(running.url, token)) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello == {"type": "hello", "data": {"heartbeat_s": 0.3, "resumed": False, "complete": True,
                                                   "last_event_id": running.runtime.hub.last_id(agency)}}
        beats = [m for m in await _until(ws, lambda m: m["type"] == "heartbeat") if m["type"] == "heartbeat"]
        for _ in range(3):
            beats += [m for m in await _until(ws, lambda m: m["type"] == "heartbeat") if m["type"] == "heartbeat"]
        assert len(beats) == 4
        assert set(beats[-1]["data"]) == {"time", "last_event_id", "problems"}
        assert isinstance(beats[-1]["data"]["problems"], list)
