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
OFFICER_NAMES = ["Rivera", "Okafor", "Nguyen", "Schmidt", "Haddad", "Kowalski", "Tanaka", "Mensah", "Silva", "Novak"]


def _say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def _services(workdir: Path):
    """Yield (database_url, mqtt_url): configured ones, else private ones started here."""
    with contextlib.ExitStack() as stack:
        db_url = os.environ.get("VIGIL_DATABASE_URL")
        if not db_url:
            try:
                pg = stack.enter_context(infra.PrivatePostgres(workdir=Path(_pg_dir(workdir))))
                db_url = pg.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil_demo"
                _say(f"  database: private PostgreSQL on 127.0.0.1:{pg.port}")
            except infra.InfraError as exc:
                fallback = "postgresql+asyncpg://postgres@127.0.0.1:5432/vigil_demo"
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
    finally:
        await engine.dispose()
    return devices


async def _run(officers: int, duration_s: float, port: int, workdir: Path) -> int:
    from gateway.bridge import Gateway
    from gateway.config import GatewaySettings
    from gateway.sim import scenarios
    from gateway.sim.fleet import SimulatedFleet

    _say("Vigil demo: starting services")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with _services(workdir) as (db_url, mqtt_url):
        settings = BackendSettings(database_url=db_url, mqtt_url=mqtt_url, agencies=[AGENCY], http_port=port,
                                   mqtt_client_id=f"vigil-demo-{os.getpid()}")
        settings = with_keys(settings)  # the demo's own keys, generated into .vigil/keys.json (development only)
        db.ensure_database_exists(settings.sync_database_url)
        _recreate_demo_database(settings)
        db.upgrade(settings)
        devices = await _provision(settings, officers)
        plan = scenarios.shift_assignment(officers)
        _say(f"  {officers} officers on shift; scenarios: " + ", ".join(f"{devices[d][1]}={s}" for d, s in zip(devices, plan)))
        async with SimulatedFleet({d: k for d, (k, _) in devices.items()}, scenarios=plan), serve(settings) as backend:
            gw = GatewaySettings(agency=AGENCY, gateway_id="car-12", mqtt_url=mqtt_url, devices=list(devices),
                                 queue_path=workdir / "gateway-queue.sqlite3", latitude=40.7128, longitude=-74.0060)
            gateway_task = asyncio.create_task(Gateway(gw).run(stop), name="gateway")
            async with httpx.AsyncClient(base_url=backend.url) as http:
                login = await http.post("/api/v1/auth/token", data={"username": DEMO_SUPERVISOR, "password": DEMO_PASSWORD})
                login.raise_for_status()
                token = login.json()["access_token"]
            _say(f"\nLogin:      supervisor '{DEMO_SUPERVISOR}' / fleet admin '{DEMO_ADMIN}', password '{DEMO_PASSWORD}' "
                 f"(POST {backend.url}/api/v1/auth/token)")
            _say(f"\nAPI:        {backend.url}/docs")
            _say(f"Alerts:     curl -H 'Authorization: Bearer {token}' {backend.url}/api/v1/alerts")
            _say(f"Live feed:  POST {backend.url}/api/v1/live/ticket (with the token), then "
                 f"{backend.url.replace('http', 'ws')}/api/v1/ws?ticket=<ticket>\n")
            seen = 0
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=backend.url) as http:
                ticket = (await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {token}"})).json()["ticket"]
            async with websockets.connect(backend.url.replace("http", "ws") + f"/api/v1/ws?ticket={ticket}") as ws:
                while not stop.is_set() and time.monotonic() - started < duration_s:
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    except asyncio.TimeoutError:
                        continue
                    if msg["type"] == "alert" and msg["data"].get("change", "raised") in ("raised", "upgraded", "escalated"):
                        a = msg["data"]
                        seen += 1
                        where = f" at {a['location']['lat']:.4f},{a['location']['lon']:.4f}" if a.get("location") else ""
                        what = {"raised": "ALERT", "upgraded": "UPGRADED", "escalated": "ESCALATED"}[a.get("change", "raised")]
                        _say(f"[{time.monotonic() - started:6.1f} s] {what} priority {a['priority']} {a['title']}: "
                             f"{a['officer_name']} (device {a['device_id']:#010x}){where}")
                    elif msg["type"] == "alert_evidence" and msg["data"].get("explanation"):
                        # why it fired: behind the purpose gate, granted for safety_response and audited
                        e = msg["data"]["explanation"]
                        latest = (e.get("related") or [{}])[-1].get("explanation") or e
                        _say(f"[{time.monotonic() - started:6.1f} s]   why: "
                             f"{latest.get('summary') or latest.get('event') or json.dumps(latest)}")
            stop.set()
            await gateway_task
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
