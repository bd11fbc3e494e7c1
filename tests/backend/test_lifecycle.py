"""The incident lifecycle on a real PostgreSQL, with time injected (no sleeps): one incident per
officer that escalates fall -> man-down, the officer's cancel, escalation to dispatch with a
webhook that fails first, restart recovery, and the database stopped mid-incident."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import pytest
import sqlalchemy as sa

from backend.identity import fleet
from backend.incidents.alerts import AlertService
from backend.incidents.events import IncidentEvents
from backend.incidents.store import AlertStore
from backend.db import engine as db
from backend.db import schema as t
from backend.detection.status import StatusBoard
from backend.incidents.dispatch import DispatchWebhook
from backend.incidents.hub import LiveHub
from backend.app.metrics import BackendMetrics
from firmware import frame as F
from tests.backend.conftest import backend_settings

pytestmark = pytest.mark.integration

DEVICE = 0x00F00001
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, seconds: float):
        self.now += dt.timedelta(seconds=seconds)


async def _engine(database_url, agency):
    settings = backend_settings(database_url, "127.0.0.1", 1883, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    await fleet.ensure_agency(engine, agency)
    officer = await fleet.create_officer(engine, agency, "B-9", "Officer Nguyen")
    await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, DEVICE)
    await fleet.assign_device(engine, DEVICE, officer)
    return engine, officer


_WRITERS: list[asyncio.Task] = []


def _service(engine, clock, events=None, journal=None, **kw):
    """An alert service with its store's writer running, as the runtime runs it."""
    hub = LiveHub()
    status = StatusBoard(offline_s=30, battery_low_pct=15, engine=engine)
    metrics = BackendMetrics()
    store = AlertStore(engine, metrics, journal)
    _WRITERS.append(asyncio.get_running_loop().create_task(store.run_retry(asyncio.Event(), 0.1)))
    return AlertService(store, hub, metrics, events or IncidentEvents(), clock, status=status, **kw), hub


@pytest.fixture(autouse=True)
async def _stop_writers():
    yield
    while _WRITERS:
        task = _WRITERS.pop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _raise(alerts, agency, officer, seq, kind):
    return await alerts.raise_alert(agency_id=agency, device_id=DEVICE, seq=seq, kind=kind, officer_id=officer,
                                    officer_name="Officer Nguyen", explanation={"detector": "device", "seq": seq})


async def _stored(engine, alert_id, alerts=None):
    if alerts is not None:
        assert await alerts.store.flush(10)
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id))).mappings().one()
        steps = (await conn.execute(sa.select(t.alert_transitions.c.state, t.alert_transitions.c.actor)
                                    .where(t.alert_transitions.c.alert_id == alert_id).order_by(t.alert_transitions.c.at))).all()
    return row, [(s.state, s.actor) for s in steps]


async def test_fall_then_man_down_is_one_incident_that_escalates(database_url, agency):
    engine, officer = await _engine(database_url, agency)
    clock = Clock()
    alerts, hub = _service(engine, clock)
    sub, _ = hub.subscribe(agency)
    try:
        fall = await _raise(alerts, agency, officer, 10, "fall")
        clock.advance(30)
        same = await _raise(alerts, agency, officer, 11, "device_alarm")
        assert same is fall and (fall.kind, fall.priority) == ("device_alarm", 1)
        assert await _raise(alerts, agency, officer, 11, "device_alarm") is None  # redelivered frame
        clock.advance(5)
        await alerts.acknowledge(fall.id, "user:sup-1", agency)
        clock.advance(60)
        await alerts.resolve(fall.id, "user:sup-1", agency, "real_emergency", "EMS on scene")
        changes = []
        while not sub.queue.empty():
            e = sub.queue.get_nowait()
            if e["type"] == "alert":
                changes.append(e["data"]["change"])
        assert changes == ["raised", "upgraded", "acknowledged", "resolved"]
        row, steps = await _stored(engine, fall.id, alerts)
        assert (row["kind"], row["priority"], row["state"], row["outcome"]) == ("device_alarm", 1, "resolved", "real_emergency")
        assert steps == [("raised", f"device:{DEVICE}"), ("upgraded", f"device:{DEVICE}"),
                         ("acknowledged", "user:sup-1"), ("resolved", "user:sup-1")]
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(t.alerts))).scalar() == 1
        # a new alert after the incident was resolved is a new incident
        assert (await _raise(alerts, agency, officer, 12, "sos")).id != fall.id
    finally:
        await engine.dispose()


async def test_officer_cancel_ends_a_fall_but_not_an_alarm(database_url, agency):
    engine, officer = await _engine(database_url, agency)
    clock = Clock()
    alerts, _ = _service(engine, clock, cancel_grace_s=30)
    try:
        fall = await _raise(alerts, agency, officer, 20, "fall")
        clock.advance(12)
        await alerts.device_event(device_id=DEVICE, officer_id=officer, seq=21, code=F.EVENT_PREALERT_CANCELLED)
        assert (fall.state, fall.outcome) == ("resolved", "cancelled_by_officer")
        row, steps = await _stored(engine, fall.id, alerts)
        assert row["outcome"] == "cancelled_by_officer" and steps[-1] == ("resolved", f"device:{DEVICE}")

        alarm = await _raise(alerts, agency, officer, 30, "device_alarm")
        await alerts.device_event(device_id=DEVICE, officer_id=officer, seq=31, code=F.EVENT_PREALERT_CANCELLED)
        assert alarm.state == "raised"  # a full alarm needs a person to resolve it
        late = await _raise(alerts, agency, officer, 40, "sos")
        assert late is alarm
    finally:
        await engine.dispose()


class WebhookServer:
    """A CAD endpoint on loopback that refuses its first request (503) and accepts the rest."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.requests = 0

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        body = await reader.readexactly(length)
        self.requests += 1
        if self.requests == 1:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        else:
            self.bodies.append(json.loads(body))
            writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_unacknowledged_incident_is_escalated_and_sent_to_dispatch(database_url, agency):
    engine, officer = await _engine(database_url, agency)
    clock = Clock()
    events = IncidentEvents()
    alerts, hub = _service(engine, clock, events, escalate_after_s=30)
    cad = WebhookServer()
    server = await asyncio.start_server(cad.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/cad"
    dispatch = DispatchWebhook(url, events, alerts.record, retry_base_s=0.01)
    stop = asyncio.Event()
    worker = asyncio.create_task(dispatch.run(stop))
    try:
        incident = await _raise(alerts, agency, officer, 50, "sos")
        clock.advance(29.9)
        assert await alerts.escalate_due() == []
        clock.advance(0.2)
        assert await alerts.escalate_due() == [incident]
        assert incident.escalated
        assert await alerts.escalate_due() == []  # once
        async with asyncio.timeout(10):
            while not cad.bodies or incident.transitions[-1]["state"] != "dispatch_notified":
                await asyncio.sleep(0.01)
        assert cad.requests == 2 and dispatch.failures == 1
        assert (cad.bodies[0]["alert_id"], cad.bodies[0]["kind"], cad.bodies[0]["officer_name"]) == (str(incident.id), "sos", "Officer Nguyen")
        assert "explanation" not in cad.bodies[0]  # dispatch gets who/where/what, no physiology
        async with asyncio.timeout(10):  # the transition is pushed first and stored after
            while len((steps := (await _stored(engine, incident.id, alerts))[1])) < 3:
                await asyncio.sleep(0.02)
        assert [s for s, _ in steps] == ["raised", "escalated", "dispatch_notified"]
        # an acknowledged incident is never escalated
        await alerts.resolve(incident.id, "user:sup", agency, "test")
        other = await _raise(alerts, agency, officer, 51, "fall")
        await alerts.acknowledge(other.id, "user:sup", agency)
        clock.advance(300)
        assert await alerts.escalate_due() == []
    finally:
        stop.set()
        await worker
        server.close()
        await engine.dispose()


async def test_open_incident_survives_a_restart(database_url, agency):
    engine, officer = await _engine(database_url, agency)
    clock = Clock()
    try:
        first, _ = _service(engine, clock)
        incident = await _raise(first, agency, officer, 60, "fall")
        await first.mark_delivered(incident.id, "user:sup-1")
        assert await first.store.flush(10)

        restarted, _ = _service(engine, clock)
        assert await restarted.load_open() == 1
        assert await _raise(restarted, agency, officer, 60, "fall") is None  # the broker redelivers: no second page
        again = await _raise(restarted, agency, officer, 61, "man_down")
        assert again.id == incident.id and again.kind == "man_down" and again.state == "delivered"
        await restarted.acknowledge(incident.id, "user:sup-2", agency)
        row, steps = await _stored(engine, incident.id, restarted)
        assert row["state"] == "acknowledged"
        assert [s for s, _ in steps] == ["raised", "delivered", "upgraded", "acknowledged"]
    finally:
        await engine.dispose()


async def test_the_officer_board_shows_the_incident_in_the_one_status_shape(database_url, agency):
    engine, officer = await _engine(database_url, agency)
    clock = Clock()
    alerts, hub = _service(engine, clock)
    sub, _ = hub.subscribe(agency)
    try:
        # drained after each step: the hub keeps one pending status per officer (the latest)
        incident = await _raise(alerts, agency, officer, 80, "fall")
        board = [e["data"] for e in _drain(sub) if e["type"] == "officer_status"]
        await alerts.acknowledge(incident.id, "user:sup-1", agency)
        board += [e["data"] for e in _drain(sub) if e["type"] == "officer_status"]
        await alerts.resolve(incident.id, "user:sup-1", agency, "false_alarm")
        board += [e["data"] for e in _drain(sub) if e["type"] == "officer_status"]
        assert [b["incident"] and b["incident"]["state"] for b in board] == ["raised", "acknowledged", None]
        assert board[0]["incident"] == {"id": str(incident.id), "kind": "fall", "priority": 2, "state": "raised",
                                        "escalated": False}
        assert all(b["officer_id"] == officer and b["device_id"] == DEVICE and "heart_rate" not in b for b in board)
        assert {"state", "device", "battery_pct", "last_seen", "unit", "gateway"} <= set(board[0])

        reopened = await _raise(alerts, agency, officer, 81, "sos")
        assert await alerts.store.flush(10)
        restarted, _ = _service(engine, clock)  # a restart: the board learns the open incident from storage
        await restarted.load_open()
        assert restarted._status.incidents[officer].id == str(reopened.id)
    finally:
        await engine.dispose()


async def test_the_last_gateway_falls_back_to_the_database_before_any_frame(database_url, agency):
    from backend.identity import auth

    engine, _ = await _engine(database_url, agency)
    try:
        await auth.register_gateway(engine, agency, f"{agency}-car1", [DEVICE])
        board = StatusBoard(offline_s=30, battery_low_pct=15, engine=engine)
        assert board.last_gateway(DEVICE) is None
        assert await board.gateway_for(DEVICE) == f"{agency}-car1"      # after a restart: the stored assignment
        board.seen(DEVICE, agency, None, None, "car-9", now=1.0, backfill=False)
        assert await board.gateway_for(DEVICE) == "car-9"              # a frame arrived: where it came from
    finally:
        await engine.dispose()


async def test_database_stopped_mid_incident(private_postgres, agency):
    url = private_postgres.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil"
    engine, officer = await _engine(url, agency)
    clock = Clock()
    alerts, hub = _service(engine, clock)
    sub, _ = hub.subscribe(agency)
    try:
        incident = await _raise(alerts, agency, officer, 70, "fall")
        assert await alerts.store.flush(10) and alerts.pending == 0
        private_postgres.stop("immediate")
        clock.advance(20)
        await _raise(alerts, agency, officer, 71, "device_alarm")
        second_officer_alert = None
        clock.advance(5)
        await alerts.acknowledge(incident.id, "user:sup-1", agency)
        clock.advance(5)
        await alerts.resolve(incident.id, "user:sup-1", agency, "real_emergency")
        clock.advance(1)
        second_officer_alert = await _raise(alerts, agency, officer, 72, "sos")
        pushed = [e["data"]["change"] for e in _drain(sub) if e["type"] == "alert"]
        assert pushed == ["raised", "upgraded", "acknowledged", "resolved", "raised"]  # all live while it is down
        assert alerts.pending == 2
        private_postgres.start()
        async with asyncio.timeout(30):
            while alerts.pending:
                await asyncio.sleep(0.05)
        row, steps = await _stored(engine, incident.id)
        assert (row["kind"], row["state"], row["outcome"]) == ("device_alarm", "resolved", "real_emergency")
        assert [s for s, _ in steps] == ["raised", "upgraded", "acknowledged", "resolved"]
        row2, steps2 = await _stored(engine, second_officer_alert.id)
        assert (row2["kind"], row2["state"], [s for s, _ in steps2]) == ("sos", "raised", ["raised"])
    finally:
        await engine.dispose()


def _drain(sub):
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out
