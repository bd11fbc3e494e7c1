"""``vigil demo``: the whole system on one machine with simulated officers.

Starts (or uses the configured) Mosquitto and PostgreSQL, migrates, provisions an agency with
officers and wearables, runs the backend, a gateway over a virtual BlueZ and the simulated
fleet, and prints every alert as a supervisor would see it on the live feed."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import websockets

from backend.identity import auth, fleet
from backend.identity.keys import with_keys
from backend.local import infra
from backend.db import engine as db
from backend.app.config import BackendSettings
from backend.app.server import serve

log = logging.getLogger("vigil.demo")

AGENCY = "demo"
FIRST_DEVICE_ID = 0x00D30001
DEMO_SUPERVISOR, DEMO_ADMIN, DEMO_PASSWORD = "supervisor", "admin", "vigil-demo"  # a throwaway demo database
DEMO_AUDITOR, DEMO_OFFICER = "auditor", "officer"
DEMO_GATEWAY = "car-12"
# who signs in as what (one account per role; the officer is the first officer on shift)
DEMO_ACCOUNTS = ((DEMO_SUPERVISOR, "supervisor", "/supervisor"), (DEMO_ADMIN, "fleet admin", "/fleet"),
                 (DEMO_AUDITOR, "auditor", "/audit"), (DEMO_OFFICER, "officer", "/me"))
# what a device's own event means, in words (as the supervisor's page says it)
DEVICE_EVENTS = {"sos": "SOS button pressed on the wearable", "fall_suspected": "the wearable suspects a fall",
                 "mandown_alarm": "the wearable's man-down alarm went off (no motion after the pre-alert)"}
OFFICER_NAMES = ["Rivera", "Okafor", "Nguyen", "Schmidt", "Haddad", "Kowalski", "Tanaka", "Mensah", "Silva", "Novak"]


def _say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def _services(workdir: Path, database: str = "vigil_demo"):
    """Yield (database_url, mqtt_url): configured ones, else private ones started here."""
    with contextlib.ExitStack() as stack:
        db_url = os.environ.get("VIGIL_DATABASE_URL")
        if not db_url:
            try:
                pg = stack.enter_context(infra.PrivatePostgres(workdir=Path(_pg_dir(workdir))))
                db_url = pg.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{database}"
                _say(f"  database: private PostgreSQL on 127.0.0.1:{pg.port}")
            except infra.InfraError as exc:
                fallback = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
                if not infra.pg_url_reachable(fallback):
                    raise
                _say(f"  database: {fallback} ({exc})")
                db_url = fallback
        else:
            _say(f"  database: {db_url} (VIGIL_DATABASE_URL)")
        mqtt_url = os.environ.get("VIGIL_MQTT_URL")
        if not mqtt_url:
            broker = stack.enter_context(infra.PrivateMosquitto(workdir=workdir / "mosquitto"))
            mqtt_url = broker.url
            _say(f"  broker:   private Mosquitto on {broker.url}")
        else:
            _say(f"  broker:   {mqtt_url} (VIGIL_MQTT_URL)")
        yield db_url, mqtt_url


def _pg_dir(workdir: Path) -> str:
    # As root the cluster runs as 'postgres', which needs a directory it can enter.
    if os.geteuid() == 0:
        import tempfile
        return tempfile.mkdtemp(prefix="vigil-demo-pg-")
    return str(workdir / "postgres")


async def _provision(settings: BackendSettings, officers: int) -> dict[int, tuple[bytes, str]]:
    engine = db.create_engine(settings)
    devices: dict[int, tuple[bytes, str]] = {}
    try:
        await fleet.ensure_agency(engine, AGENCY, "Demo City Police")
        for i in range(officers):
            name = f"Officer {OFFICER_NAMES[i % len(OFFICER_NAMES)]}" + (f" {i // len(OFFICER_NAMES) + 1}" if i >= len(OFFICER_NAMES) else "")
            officer_id = await fleet.create_officer(engine, AGENCY, f"B-{100 + i}", name, f"Unit {1 + i // 4}")
            device = await fleet.provision_device(engine, settings.secret_key.get_secret_value(), AGENCY, FIRST_DEVICE_ID + i)
            await fleet.assign_device(engine, device.device_id, officer_id)
            devices[device.device_id] = (device.key, name)
        await auth.create_user(engine, DEMO_SUPERVISOR, DEMO_PASSWORD, "supervisor", AGENCY)
        await auth.create_user(engine, DEMO_ADMIN, DEMO_PASSWORD, "fleet_admin", AGENCY)
        await auth.create_user(engine, DEMO_AUDITOR, DEMO_PASSWORD, "auditor", AGENCY)
        first_officer = await _first_officer(engine)
        if first_officer is not None:
            await auth.create_user(engine, DEMO_OFFICER, DEMO_PASSWORD, "officer", AGENCY, first_officer)
    finally:
        await engine.dispose()
    return devices


async def _register_gateway(settings: BackendSettings, gateway_id: str, device_ids: list[int]) -> None:
    engine = db.create_engine(settings)
    try:
        await auth.register_gateway(engine, AGENCY, gateway_id, device_ids)
    finally:
        await engine.dispose()


async def _first_officer(engine) -> int | None:
    import sqlalchemy as sa
    from backend.db import schema as t
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.min(t.officers.c.id)).where(t.officers.c.agency_id == AGENCY))).scalar()


def _who(a: dict) -> str:
    return a.get("officer_name") or f"device {fleet.device_label(a['device_id'])} (no officer)"


def _actor(a: dict) -> str:
    steps = a.get("transitions") or []
    actor = steps[-1].get("actor", "") if steps else ""
    return actor.split(":", 1)[1] if actor.startswith("user:") else actor or "someone"


def reason_text(x) -> str:
    """Why an alert fired, in one short sentence (never raw JSON)."""
    if not isinstance(x, dict):
        return str(x or "")
    if x.get("summary"):
        return str(x["summary"])
    if x.get("detector") == "device" and x.get("event"):
        return DEVICE_EVENTS.get(x["event"], f"device event {x['event']}")
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in x.items()
             if k not in ("related", "gateway", "detector") and not isinstance(v, (dict, list)) and v not in (None, "")]
    return ", ".join(parts)[:160] or "no reason given"


def alert_line(msg: dict) -> str | None:
    """One readable sentence for a live-feed event the demo's watcher prints, or None to stay quiet."""
    from backend.incidents.rules import OUTCOME_LABELS, PRIORITY_LABELS
    a = msg.get("data") or {}
    if msg.get("type") == "alert_evidence":
        e = a.get("explanation")
        if not e:
            return None
        related = e.get("related") or []
        return "  why: " + reason_text(related[-1].get("explanation") if related else e)
    if msg.get("type") != "alert":
        return None
    change, title, who = a.get("change", "raised"), a.get("title") or a.get("kind"), _who(a)
    loc = a.get("location") or {}
    where = (f" at {loc['lat']:.5f}, {loc['lon']:.5f} ({loc.get('source', 'position')})"
             if loc.get("lat") is not None and loc.get("lon") is not None else "")
    prio = f"priority {a.get('priority')} ({PRIORITY_LABELS.get(a.get('priority'), '?')})"
    if change == "raised":
        return f"ALERT {prio}: {title} — {who}{where}"
    if change == "upgraded":
        return f"UPGRADED to {prio}: now {title} — {who}"
    if change == "escalated" and (a.get("escalation") or {}).get("manual"):  # by a supervisor, with a reason
        return f"ESCALATED by {_actor(a)}: {title} of {who} — {a['escalation'].get('reason')}; every supervisor told"
    if change == "escalated":
        return f"ESCALATED: {title} of {who} not acknowledged in time; every supervisor told"
    if change == "acknowledged":
        return f"ACKNOWLEDGED by {_actor(a)}: {title} of {who}; the wearable is told help is coming"
    if change == "resolved":
        return f"RESOLVED by {_actor(a)} as {OUTCOME_LABELS.get(a.get('outcome'), a.get('outcome'))}: {title} of {who}"
    return None


@dataclass
class RunningDemo:
    """What ``running_demo`` started: the backend (``url``, ``runtime``), its settings, the
    wearables (device id -> (key, officer's name)), each one's scenario and the simulated fleet."""
    backend: object
    settings: BackendSettings
    devices: dict[int, tuple[bytes, str]]
    plan: list[str]
    fleet: object


@contextlib.asynccontextmanager
async def running_demo(officers: int, port: int, workdir: Path, stop: asyncio.Event,
                       database: str = "vigil_demo") -> AsyncIterator[RunningDemo]:
    """The demo's system, seeded: services (configured or private), the demo's database recreated
    and provisioned (officers, wearables, one account per role, the gateway), the backend, the
    simulated fleet playing ``scenarios.shift_assignment`` and a gateway over the virtual BlueZ.
    Setting ``stop`` (or leaving) stops the gateway. ``vigil demo`` and ``vigil dashboard
    screenshots`` both start exactly this."""
    from gateway.bridge import Gateway
    from gateway.config import GatewaySettings
    from gateway.sim import scenarios
    from gateway.sim.fleet import SimulatedFleet

    with _services(workdir, database) as (db_url, mqtt_url):
        settings = BackendSettings(database_url=db_url, mqtt_url=mqtt_url, agencies=[AGENCY], http_port=port,
                                   mqtt_client_id=f"vigil-demo-{os.getpid()}",
                                   journal_dir=Path(workdir) / "journal")  # goes with the demo's own database
        settings = with_keys(settings)  # the demo's own keys, generated into .vigil/keys.json (development only)
        db.ensure_database_exists(settings.sync_database_url)
        _recreate_demo_database(settings)
        db.upgrade(settings)
        devices = await _provision(settings, officers)
        await _register_gateway(settings, DEMO_GATEWAY, list(devices))  # so the fleet page lists it as it is
        plan = scenarios.shift_assignment(officers)
        _say(f"  {officers} officers on shift; scenarios: " + ", ".join(f"{devices[d][1]}={s}" for d, s in zip(devices, plan)))
        # every wearable runs the firmware's own code (gateway/sim/device.py); its flash in workdir
        async with SimulatedFleet({d: k for d, (k, _) in devices.items()}, scenarios=plan, device="firmware",
                                  state_dir=workdir / "wearables") as sim, serve(settings) as backend:
            gw = GatewaySettings(agency=AGENCY, gateway_id=DEMO_GATEWAY, mqtt_url=mqtt_url, devices=list(devices),
                                 queue_path=workdir / "gateway-queue.sqlite3", latitude=40.7128, longitude=-74.0060)
            gateway_task = asyncio.create_task(Gateway(gw).run(stop), name="gateway")
            try:
                yield RunningDemo(backend, settings, devices, plan, sim)
            finally:
                stop.set()
                await gateway_task


async def _run(officers: int, duration_s: float, port: int, workdir: Path) -> int:
    _say("Vigil demo: starting services")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_demo(officers, port, workdir, stop) as demo:
        backend = demo.backend
        async with httpx.AsyncClient(base_url=backend.url) as http:
            login = await http.post("/api/v1/auth/token", data={"username": DEMO_SUPERVISOR, "password": DEMO_PASSWORD})
            login.raise_for_status()
            token = login.json()["access_token"]
        _say(f"\nDashboard:  {backend.url}/   (open it in a browser; every account's password is '{DEMO_PASSWORD}')")
        for username, role, page in DEMO_ACCOUNTS:
            _say(f"  {role:<12} sign in as '{username}'  -> {backend.url}{page}")
        _say(f"\nAPI:        {backend.url}/docs   (tokens: POST {backend.url}/api/v1/auth/token)")
        _say(f"Alerts:     curl -H 'Authorization: Bearer {token}' {backend.url}/api/v1/alerts")
        _say(f"Live feed:  POST {backend.url}/api/v1/live/ticket (with the token), then "
             f"{backend.url.replace('http', 'ws')}/api/v1/ws?ticket=<ticket>\n")
        seen = 0
        started = time.monotonic()
        last_id = None
        while not stop.is_set() and time.monotonic() - started < duration_s:
            async with httpx.AsyncClient(base_url=backend.url) as http:
                ticket = (await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {token}"})).json()["ticket"]
            resume = f"&last_event_id={last_id}" if last_id is not None else ""
            try:
                async with websockets.connect(backend.url.replace("http", "ws") + f"/api/v1/ws?ticket={ticket}{resume}") as ws:
                    while not stop.is_set() and time.monotonic() - started < duration_s:
                        try:
                            msg = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                        except asyncio.TimeoutError:
                            continue
                        if msg["type"] == "hello" and last_id is None:
                            last_id = msg["data"].get("last_event_id")
                        last_id = msg.get("id", last_id)
                        line = alert_line(msg)
                        if line is None:
                            continue
                        if msg["type"] == "alert" and msg["data"].get("change", "raised") == "raised":
                            seen += 1
                        _say(f"[{time.monotonic() - started:6.1f} s] {line}")
            except websockets.ConnectionClosed as exc:  # e.g. closed for falling behind: resume
                _say(f"[{time.monotonic() - started:6.1f} s] live feed closed ({exc.rcvd.reason if exc.rcvd else 'no reason'}); resuming")
        stats = backend.runtime.metrics
        _say(f"\nDemo finished after {time.monotonic() - started:.0f} s: {seen} alerts; frames accepted: "
             f"telemetry {stats.accepted_count('telemetry'):.0f}, events {stats.accepted_count('event'):.0f}, "
             f"status {stats.accepted_count('status'):.0f}")
    return 0 if seen else 1


def _recreate_demo_database(settings: BackendSettings) -> None:
    import sqlalchemy as sa
    url = sa.engine.make_url(settings.sync_database_url)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'drop database if exists "{url.database}" with (force)'))
    admin.dispose()


def run_demo(officers: int = 8, duration_s: float = 150.0, port: int = 8000) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(".vigil/demo").resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    if infra.port_open("127.0.0.1", port):
        port = infra.free_port()
    return asyncio.run(_run(officers, duration_s, port, workdir))
