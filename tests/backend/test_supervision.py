"""Supervision: a crashed loop is logged, counted, shown in /health and restarted; one that keeps
failing stops the process. Never a live API over a dead loop."""
from __future__ import annotations

import asyncio

import aiomqtt
import httpx
import pytest
import websockets

from backend.app.metrics import BackendMetrics
from backend.app.server import serve
from backend.app.supervision import Supervisor
from backend.exceptions import TaskKeepsFailing
from gateway import topics
from tests.backend.conftest import backend_settings, live_url, supervisor_token
from tests.backend.test_ingest import DEVICE, _next_alert, _seed, _sos


class _Time:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class TestSupervisor:
    async def test_restarts_a_crashed_task_and_counts_it(self):
        t, stop, metrics = _Time(), asyncio.Event(), BackendMetrics()
        sup = Supervisor(metrics, stop=stop, clock=t.clock, sleep=t.sleep, jitter=lambda: 0.5)
        runs = []

        async def task():
            runs.append(1)
            if len(runs) <= 2:
                raise RuntimeError("boom")
            assert sup.down == {}  # cleared once it runs again
            stop.set()

        await sup.keep("demo", task)
        assert len(runs) == 3
        assert metrics.task_failures.labels("demo")._value.get() == 2
        assert len(t.slept) == 2 and t.slept[1] > t.slept[0]  # backoff grows

    async def test_a_task_that_returns_early_is_a_failure(self):
        t, stop, metrics = _Time(), asyncio.Event(), BackendMetrics()
        sup = Supervisor(metrics, stop=stop, clock=t.clock, sleep=t.sleep, jitter=lambda: 0.0, limit=2)
        with pytest.raises(TaskKeepsFailing, match="returned"):
            await sup.keep("quitter", lambda: asyncio.sleep(0))
        assert metrics.task_failures.labels("quitter")._value.get() == 3

    async def test_keeps_failing_within_the_window_raises_but_spread_out_failures_do_not(self):
        t, stop, metrics = _Time(), asyncio.Event(), BackendMetrics()
        sup = Supervisor(metrics, stop=stop, clock=t.clock, sleep=t.sleep, jitter=lambda: 0.0, limit=3, window_s=60)
        calls = []

        async def flaky():
            calls.append(1)
            t.now += 100  # each run lasts longer than the window: never "keeps failing"
            if len(calls) < 10:
                raise OSError("transient")
            stop.set()

        await sup.keep("flaky", flaky)
        assert len(calls) == 10

        async def broken():
            raise ValueError("always")

        with pytest.raises(TaskKeepsFailing, match="broken"):
            await sup.keep("broken", broken)
        assert metrics.task_failures.labels("broken")._value.get() == 4
        assert "broken" in sup.down



@pytest.mark.integration
async def test_ingest_crash_is_restarted_and_the_sos_still_pages(database_url, mqtt_broker, agency, monkeypatch):
    """A bug outside the per-message guard kills the ingest task: it is restarted, the SOS it was
    handling (not acknowledged) comes back from the broker and pages, /health showed it."""
    settings = backend_settings(database_url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        real = rt.ingest.handle_batch
        crashes = []

        async def handle_batch(messages):
            if not crashes:
                crashes.append(1)
                raise RuntimeError("injected: ingest bug")
            return await real(messages)

        monkeypatch.setattr(rt.ingest, "handle_batch", handle_batch)
        token = supervisor_token(settings, agency)
        async with websockets.connect(await live_url(backend.url, token)) as ws:
            async with aiomqtt.Client(*mqtt_broker) as client:
                await client.publish(topics.uplink(agency, "gw1", DEVICE, "event"), _sos(key, 1), qos=1)
            alert = await _next_alert(ws, timeout=15)
        assert alert["data"]["seq"] == 1
        assert rt.metrics.task_failures.labels("ingest")._value.get() == 1
        async with httpx.AsyncClient(base_url=backend.url) as http:
            for _ in range(100):
                health = await http.get("/api/v1/health")
                if health.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        assert health.status_code == 200, health.json()


@pytest.mark.integration
async def test_a_loop_that_keeps_failing_stops_the_server(database_url, mqtt_broker, agency, monkeypatch):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    await _seed(settings, agency)
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        # Two crashes end it, after pauses of ~0.5 s and ~1 s (jitter pinned): long enough for the
        # poll below to see the 503 that names the task before the server stops.
        rt.supervisor._limit = 2
        rt.supervisor._jitter = lambda: 0.99

        async def escalate_due():
            raise RuntimeError("injected: escalation bug")

        monkeypatch.setattr(rt.alerts, "escalate_due", escalate_due)
        async with httpx.AsyncClient(base_url=backend.url) as http:
            seen_503 = None
            for _ in range(100):
                r = await http.get("/api/v1/health")
                if r.status_code == 503:
                    seen_503 = r.json()
                    break
                await asyncio.sleep(0.05)
        assert seen_503 is not None and any("alert-escalation" in p for p in seen_503["problems"]), seen_503
        await asyncio.wait_for(rt.dead.wait(), 30)
        assert isinstance(rt.fatal, BaseExceptionGroup) and rt.fatal.subgroup(TaskKeepsFailing) is not None
        for _ in range(100):
            if backend.server.should_exit:
                break
            await asyncio.sleep(0.05)
        assert backend.server.should_exit  # the API does not serve on over dead loops


def test_events_lane_reconnects_within_half_a_second_at_worst():
    """After a broker outage of any length the events lane (SOS) retries at least every 0.5 s
    (it waited up to 15 s, and an SOS pressed during the outage paged 9.6-22.8 s after the
    broker's return; `vigil bench faults --faults broker-kill` measures the whole path);
    telemetry retries within 2 s (it waited up to 15 s, /health 503 all along)."""
    import random

    from backend.ingest.mqtt import EVENTS_RECONNECT_CAP_S, RECONNECT_CAP_S, reconnect_delay

    rng = random.Random(7)
    assert max(reconnect_delay(a, rng, EVENTS_RECONNECT_CAP_S) for a in range(50) for _ in range(20)) <= 0.5
    assert 0.5 < max(reconnect_delay(a, rng) for a in range(50) for _ in range(20)) <= 2.0  # telemetry: 2 s at worst
    assert RECONNECT_CAP_S > EVENTS_RECONNECT_CAP_S


@pytest.mark.integration
async def test_health_fails_while_privacy_start_up_has_not_completed(database_url, mqtt_broker, agency):
    """Privacy start-up failing (grants, the policy in force) leaves retention and the audit
    outbox stopped: /health says so instead of ok."""
    settings = backend_settings(database_url, *mqtt_broker, agency)
    await _seed(settings, agency)
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        await asyncio.wait_for(rt.privacy.ready.wait(), 10)
        async with httpx.AsyncClient(base_url=backend.url) as http:
            assert (await http.get("/api/v1/health")).status_code == 200
            rt.privacy.ready.clear()  # as when its start-up keeps failing
            assert (await http.get("/api/v1/health")).status_code == 200  # within the start-up grace
            rt.started -= 60
            r = await http.get("/api/v1/health")
        assert r.status_code == 503 and any("privacy" in p for p in r.json()["problems"]), r.json()


@pytest.mark.integration
def test_vigil_backend_run_exits_non_zero_when_a_task_keeps_failing(database_url, mqtt_broker, agency, monkeypatch):
    """`vigil backend run` (its real main) returns 1 once a task keeps failing, so a service
    manager restarts the process: never a live API over a dead loop."""
    import argparse
    import functools

    from backend.app import runtime as runtime_module
    from backend.cli import service
    from backend.incidents.alerts import AlertService
    from backend.local import infra
    from tests.backend.conftest import TEST_SECRET_KEY, TEST_TOKEN_KEY

    for name, value in {"DATABASE_URL": database_url, "MQTT_URL": f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}",
                        "AGENCIES": f'["{agency}"]', "HTTP_PORT": str(infra.free_port()),
                        "MQTT_CLIENT_ID": f"vigil-backend-{agency}", "SECRET_KEY": TEST_SECRET_KEY,
                        "TOKEN_KEY": TEST_TOKEN_KEY}.items():
        monkeypatch.setenv(f"VIGIL_{name}", value)
    monkeypatch.setattr(runtime_module, "Supervisor", functools.partial(Supervisor, limit=1, jitter=lambda: 0.0))

    async def escalate_due(self):
        raise RuntimeError("injected: escalation bug")

    monkeypatch.setattr(AlertService, "escalate_due", escalate_due)
    assert service._run_backend(argparse.Namespace(no_migrate=False)) == 1


def test_a_failing_incident_subscriber_is_counted_and_the_others_still_hear():
    from backend.incidents.events import RAISED, IncidentEvents

    metrics = BackendMetrics()
    events, heard = IncidentEvents(metrics), []

    def broken(event):
        raise RuntimeError("injected: subscriber bug")

    events.subscribe(broken)
    events.subscribe(heard.append)
    events.emit(RAISED, type("A", (), {"id": "x"})())
    assert len(heard) == 1 and events.failures == 1
    assert metrics.task_failures.labels("incident-events")._value.get() == 1
