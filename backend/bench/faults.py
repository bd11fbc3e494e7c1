"""``vigil bench faults``: faults injected by hand into the real parts, and what each one cost.

Everything runs as deployed: a private Mosquitto and a private PostgreSQL (backend/local/infra.py),
the backend as its own process (``vigil backend run``), the gateway as its own process (``vigil
gateway run``) over a virtual BlueZ, simulated wearables behind it (gateway/sim/device.py: each
runs the firmware's own code over fake silicon and radio), and a supervisor
on the live WebSocket. Each fault gets its own wearables (``--devices-per-fault``, never reused), so
what it cost is counted on them alone: they start streaming shortly before the fault, their SOS
presses are the fault's SOS, and when the fault is over they finish, drain their buffers and what
they sent is compared with what PostgreSQL holds. Meanwhile ``--background`` wearables (17: twenty
stream at once, as in the issue) stream through every fault and are counted in a last row.

Per fault, one row:

- **SOS sent**: SOS presses on the fault's wearables (during the fault, and right after the
  broken part returned);
- **alerts stored**: of those, how many have an SOS alert row in PostgreSQL;
- **pushed**: how many reached the supervisor's WebSocket (a 'raised' alert of kind sos);
- **duplicates**: a press with more than one alert row, a page repeated (the same alert raised
  twice, or a second alert for one press), a telemetry sample stored twice;
- **telemetry sent/stored**: distinct telemetry frames the wearables handed to the radio vs frames whose
  samples are in ``raw_windows`` (20 samples per frame; samples covered twice count as duplicates);
- **recovery**: the slowest SOS, from the moment it could have been served (the later of the
  SOS going on air and the broken part's return) to its arrival on the supervisor's screen.
  An SOS goes on air when the firmware raised it: the officer holds the button 2 s first (the
  wearable's hold time); each press's hold is in the JSON as ``hold_s``.

"Return" is when the broken part answers again: the broker's port accepts, PostgreSQL's
``pg_ctl start`` returned, the restarted backend's /health answers with the broker connected,
the restarted gateway's metrics answer, the wearable's link is up again. Clock and poison faults
break nothing that returns: their recovery is SOS on air -> screen.

The command exits 1 when any SOS, alert, page or telemetry frame was lost or doubled, so it can
stay in CI once the durability work is done; results go to ``artifacts/bench/faults.json``.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.bench.processes import ChildProcess
from backend.local import infra
from firmware import frame as F

AGENCY = "faults"
GATEWAY_ID = "faults-gw"
FIRST_DEVICE_ID = 0x00FA0001
POISON_DEVICE_ID = 0x00FAFFFF
FRAME_SAMPLES = 20  # samples per telemetry frame of the wearable's firmware (gateway/sim/device.py SAMPLES_PER_FRAME)
HOUR_MS = 3_600_000
YEAR_10000_MS = 253_402_300_800_000 + 86_400_000  # 10000-01-02, past what datetime can hold

# fault name -> what is done (the table's first column)
FAULTS: dict[str, str] = {
    "poison": "poison frames (authenticated absurd headers, garbage, forgeries)",
    "broker-kill": "broker kill -9, restarted",
    "link-flap": "BLE links flapping",
    "gateway-kill": "gateway SIGKILL with frames queued",
    "database-outage": "database stopped",
    "backend-kill-incident": "backend SIGKILL with an incident open",
    "backend-kill-db-outage": "backend SIGKILL during a database outage",
    "clock-forward-1h": "device clock +1 h",
    "clock-back-1h": "device clock -1 h",
    "clock-1970": "device clock reset to 1970",
    "clock-year-10000": "device clock beyond year 9999",
    "clock-boot": "device clock counting from boot",
}


@dataclass
class FaultConfig:
    faults: tuple[str, ...] = tuple(FAULTS)
    database_down_s: float = 60.0
    broker_down_s: float = 6.0
    backend_down_s: float = 3.0
    gateway_down_s: float = 3.0
    link_flaps: int = 4
    link_down_s: float = 1.5
    clock_s: float = 6.0
    lead_s: float = 3.0            # normal streaming before each fault
    devices_per_fault: int = 3
    background: int = 17           # wearables streaming through the whole run (3 + 17 = the 20)
    settle_s: float = 30.0         # longest wait for an SOS to show up, or for telemetry to be stored
    out: Path = Path("artifacts/bench")
    tag: str = ""
    keep_workdir: bool = False

    def __post_init__(self):
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; valid: {', '.join(FAULTS)}")
        if self.devices_per_fault < 3:
            raise ValueError("at least 3 wearables per fault (some faults press SOS before, during and after)")


@dataclass
class Press:
    device_id: int
    sos: object                    # gateway.sim.device.SosPress: the press and the SOS frame it became
    phase: str                     # before | during | after
    ready: float | None = None     # monotonic: when the broken part was back (None: at once)
    on_screen: float | None = None
    stored: int = 0                # SOS alert rows of this press's device
    pages: int = 0                 # 'raised' pages on the supervisor's feed for this device

    @property
    def seq(self) -> int | None:
        """The SOS frame's sequence number, as the device put it on air (None: never raised)."""
        return self.sos.seq

    @property
    def pressed(self) -> float:
        """Monotonic time the SOS went on air (the firmware raised it after the 2 s hold); the
        press itself until then."""
        return self.sos.notified if self.sos.notified is not None else self.sos.pressed

    @property
    def hold_s(self) -> float | None:
        return None if self.sos.notified is None else self.sos.notified - self.sos.pressed


@dataclass
class FaultRow:
    fault: str
    what: str
    sos_sent: int = 0
    alerts_stored: int = 0
    pushed: int = 0
    duplicate_alerts: int = 0
    duplicate_pages: int = 0
    telemetry_sent: int = 0
    telemetry_stored: int = 0
    telemetry_duplicated: int = 0
    recovery_s: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    presses: list[dict] = field(default_factory=list)
    per_device: dict[str, dict] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return (self.sos_sent - self.alerts_stored) + (self.sos_sent - self.pushed) \
            + max(0, self.telemetry_sent - self.telemetry_stored)

    @property
    def doubled(self) -> int:
        return self.duplicate_alerts + self.duplicate_pages + self.telemetry_duplicated


# ---- the supervisor's screen ------------------------------------------------------------------

class SupervisorFeed:
    """A supervisor's live WebSocket (a one-time ticket per connection); every alert change is
    recorded with its arrival time; reconnects and resumes from the last event id, as the
    dashboard does, when the backend goes away. Events already seen (same id) are ignored."""

    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token
        self.changes: list[tuple[float, dict]] = []
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._seen: set = set()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "SupervisorFeed":
        self._task = asyncio.create_task(self._run(), name="supervisor-feed")
        await asyncio.wait_for(self.connected.wait(), 30)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import httpx
        import websockets
        last_id = None
        while True:
            try:
                async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
                    r = await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {self.token}"})
                r.raise_for_status()
                query = f"ticket={r.json()['ticket']}" + (f"&last_event_id={last_id}" if last_id is not None else "")
                async with websockets.connect(self.base_url.replace("http", "ws", 1) + f"/api/v1/ws?{query}",
                                              open_timeout=5) as ws:
                    self.connected.set()
                    async for raw in ws:
                        msg = json.loads(raw)
                        mid = msg.get("id")
                        if mid is not None:
                            if mid in self._seen:
                                continue
                            self._seen.add(mid)
                            last_id = mid
                        if msg.get("type") == "alert":
                            self.changes.append((time.monotonic(), msg["data"]))
            except (OSError, asyncio.TimeoutError, httpx.HTTPError, websockets.WebSocketException):
                pass
            self.connected.clear()
            self.reconnects += 1
            await asyncio.sleep(0.1)

    def sos_pages(self, device_id: int) -> list[tuple[float, dict]]:
        return [(t, d) for t, d in self.changes
                if d.get("device_id") == device_id and d.get("kind") == "sos" and d.get("change") in ("raised", "upgraded")]


# ---- the gateway process ------------------------------------------------------------------------

class GatewayProcess(ChildProcess):
    """``vigil gateway run`` in a child process, talking to the virtual BlueZ's private bus."""

    stop_wait_s = 15.0

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.metrics_url = f"http://127.0.0.1:{env['VIGIL_GATEWAY_METRICS_PORT']}/metrics"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from backend.bench.processes import REPO
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "gateway", "run", "--log-level", "WARNING"],
                                         cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    async def metric(self, name: str) -> float | None:
        import httpx
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                text = (await http.get(self.metrics_url)).text
        except httpx.HTTPError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))


# ---- the rig --------------------------------------------------------------------------------------

async def _until(check: Callable[[], object | Awaitable[object]], timeout: float, poll_s: float = 0.1):
    """``check()``'s first truthy value, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(poll_s)


class Rig:
    """The parts, started in order; faults are methods of :class:`FaultRunner` using them."""

    def __init__(self, config: FaultConfig):
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-faults-"))
        if os.geteuid() == 0:  # PostgreSQL runs as 'postgres' and must enter its directory
            os.chmod(self.workdir, 0o755)
        n = config.devices_per_fault * len(config.faults)
        self.device_ids = [FIRST_DEVICE_ID + i for i in range(n + config.background)]
        self.background_ids = self.device_ids[n:]
        self.secret = secrets.token_urlsafe(48)
        self.token_key = secrets.token_urlsafe(48)
        self.stack = contextlib.AsyncExitStack()
        self.keys: dict[int, bytes] = {}

    async def __aenter__(self) -> "Rig":
        try:
            await self._start()
        except BaseException:
            await self.stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stack.aclose()
        if not self.config.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {text}", flush=True)

    async def _start(self) -> None:
        from backend.app.config import BackendSettings
        from backend.bench.ingest_bench import bench_supervisor
        from backend.bench.processes import BackendProcess, backend_env
        from backend.db import engine as db
        from gateway.sim.fleet import SimulatedFleet

        self.t0, self.wall_t0 = time.monotonic(), time.time()
        self.pg = infra.PrivatePostgres(workdir=self.workdir / "postgres")
        await asyncio.to_thread(self.pg.start)
        self.stack.push_async_callback(self._stopping, "PostgreSQL", self.pg.stop, "immediate")
        self.broker = infra.PrivateMosquitto(workdir=self.workdir / "mosquitto")
        await asyncio.to_thread(self.broker.start)
        self.stack.push_async_callback(self._stopping, "Mosquitto", self.broker.stop)
        self.db_url = self.pg.url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/vigil_faults"
        settings = BackendSettings(database_url=self.db_url, secret_key=self.secret, token_key=self.token_key)
        await asyncio.to_thread(db.upgrade, settings)
        await self._provision(settings)
        self.say(f"PostgreSQL :{self.pg.port}, Mosquitto :{self.broker.port}, {len(self.device_ids)} wearables provisioned")

        env = backend_env(database_url=self.db_url, mqtt_url=self.broker.url, agencies=[AGENCY],
                          http_port=infra.free_port(), client_id="vigil-faults-backend", secret_key=self.secret,
                          token_key=self.token_key, db_retry_interval_s=0.5, registry_refresh_s=1.0,
                          escalate_after_s=3600, journal_dir=str(self.workdir / "journal"))
        # migrates at every start, as `vigil backend run` does by default
        self.backend = BackendProcess(env, self.workdir / "backend.log", migrate=True)
        await asyncio.to_thread(self.backend.start)
        self.stack.push_async_callback(self._stopping, "backend", self.backend.stop)
        self.token = await bench_supervisor(self.db_url, self.backend.url, AGENCY)
        self.say(f"backend up at {self.backend.url} (pid {self.backend.pid})")

        self.fleet = await self.stack.enter_async_context(
            SimulatedFleet(self.keys, scenarios="patrol", start=False))
        self.gateway = GatewayProcess({
            **os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.fleet.bluez.bus_address,
            "VIGIL_GATEWAY_AGENCY": AGENCY, "VIGIL_GATEWAY_GATEWAY_ID": GATEWAY_ID,
            "VIGIL_GATEWAY_MQTT_URL": self.broker.url, "VIGIL_GATEWAY_DEVICES": ",".join(map(str, self.device_ids)),
            "VIGIL_GATEWAY_QUEUE_PATH": str(self.workdir / "gateway-queue.sqlite3"),
            "VIGIL_GATEWAY_METRICS_PORT": str(infra.free_port())}, self.workdir / "gateway.log")
        self.gateway.start()
        self.stack.push_async_callback(self._stopping, "gateway", self.gateway.stop)
        from firmware import profile
        linked = await _until(lambda: all(r.is_notifying(profile.TELEMETRY_CHAR_UUID) for r in self.fleet.radios.values()), 90)
        if not linked:
            raise RuntimeError("the gateway did not subscribe to every wearable within 90 s; its log ends with:\n"
                               + self.gateway.log_path.read_text(errors="replace")[-3000:])
        self.feed = await self.stack.enter_async_context(SupervisorFeed(self.backend.url, self.token))
        from sqlalchemy.ext.asyncio import create_async_engine
        self.engine = create_async_engine(self.db_url, pool_pre_ping=True)
        self.stack.push_async_callback(self.engine.dispose)
        for d in self.background_ids:
            self.fleet.start_wearable(d)
        self.say(f"gateway linked to {len(self.device_ids)} wearables; supervisor on the live feed; "
                 f"{len(self.background_ids)} stream throughout")

    async def _stopping(self, what: str, stop, *args) -> None:
        """Stop one part at the end, in a thread: the virtual BlueZ in this event loop must keep
        answering the gateway while it disconnects. Says so when it is slow or fails."""
        began = time.monotonic()
        try:
            await asyncio.to_thread(stop, *args)
        except Exception as exc:  # a part that was already down at the end
            self.say(f"stopping {what}: {type(exc).__name__}: {exc}")
        if time.monotonic() - began > 2.0:
            self.say(f"stopping {what} took {time.monotonic() - began:.1f} s")

    async def _provision(self, settings) -> None:
        from backend.db import engine as db
        from backend.identity import fleet
        engine = db.create_engine(settings)
        try:
            await fleet.ensure_agency(engine, AGENCY, "Fault bench")
            for i, device_id in enumerate([*self.device_ids, POISON_DEVICE_ID]):
                officer = await fleet.create_officer(engine, AGENCY, f"F-{i}", f"Officer {i}", "Fault unit")
                device = await fleet.provision_device(engine, self.secret, AGENCY, device_id)
                await fleet.assign_device(engine, device_id, officer)
                self.keys[device_id] = device.key
        finally:
            await engine.dispose()
        self.poison_key = self.keys.pop(POISON_DEVICE_ID)

    # ---- what PostgreSQL holds ----

    async def sos_rows(self, device_id: int) -> int:
        import sqlalchemy as sa

        from backend.db import schema as t
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(t.alerts).where(
                t.alerts.c.device_id == device_id, t.alerts.c.kind == "sos"))).scalar_one()

    async def raw_coverage(self, device_id: int) -> tuple[int, int]:
        """(samples covered at least once, samples stored beyond that) in raw_windows."""
        import sqlalchemy as sa

        from backend.db import schema as t
        return coverage(await self.raw_rows(device_id))

    async def raw_rows(self, device_id: int) -> list[tuple[int, int, int]]:
        """(time in epoch microseconds, samples, rate_hz) of the device's raw rows (as numbers:
        a row dated past year 9999 would not decode to a datetime)."""
        import sqlalchemy as sa

        from backend.db import schema as t
        us = sa.cast(sa.func.extract("epoch", t.raw_windows.c.time) * 1_000_000, sa.BigInteger)
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(sa.select(us, t.raw_windows.c.samples, t.raw_windows.c.rate_hz)
                                                          .where(t.raw_windows.c.device_id == device_id))).all()]

    async def features_outside(self, device_id: int, start_s: float, end_s: float) -> int:
        """Feature rows of the device dated outside the wall-clock span [start_s, end_s]."""
        import sqlalchemy as sa

        from backend.db import schema as t
        epoch = sa.func.extract("epoch", t.features.c.time)
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(t.features).where(
                t.features.c.device_id == device_id, sa.or_(epoch < start_s, epoch > end_s)))).scalar_one()


def telemetry_account(sent_frames: int, unique: int, extra: int) -> tuple[int, int, int]:
    """(samples stored, samples stored twice, samples misdated) of one device, from the frames it
    sent and its raw rows' coverage (``unique`` samples covered, ``extra`` covered again).

    Time overlap alone does not prove a sample was stored twice: a row dated a few ms early
    overlaps its neighbour while every sample is there once. So samples count as stored twice
    only beyond what was sent; overlap without surplus is reported as misdated. (A loss and a
    duplication of equal size in one device would cancel here; the rows' dates then show it.)"""
    sent = sent_frames * FRAME_SAMPLES
    total = unique + extra
    stored = max(unique, min(total, sent))
    return stored, total - stored, stored - unique


def coverage(rows) -> tuple[int, int]:
    """Given raw rows (time, samples, rate_hz): the samples their time spans cover at least once,
    and the samples stored beyond that (covered twice)."""
    spans = []
    total = 0
    for when, samples, rate in rows:
        start = int(when.timestamp() * 1_000_000) if isinstance(when, dt.datetime) else int(when)
        period = 1_000_000 / rate
        spans.append((start, start + samples * period, period))
        total += samples
    spans.sort()
    covered = 0.0
    end = None
    for start, stop, period in spans:
        if end is None or start >= end:
            covered += (stop - start) / period
            end = stop
        elif stop > end:
            covered += (stop - end) / period
            end = stop
    unique = int(round(covered))
    return unique, total - unique


# ---- the faults -----------------------------------------------------------------------------------

def _after_ready(p: Press) -> float:
    """Seconds from when the SOS could be served (the later of the press and the broken part's
    return) to the screen; 0 when the page beat our notice of the return (/health is polled
    every 0.1 s)."""
    return max(0.0, p.on_screen - max(p.pressed, p.ready or p.pressed))


class FaultRunner:
    def __init__(self, rig: Rig):
        self.rig = rig
        self.config = rig.config
        self._next = 0

    def _group(self) -> list[int]:
        k = self.config.devices_per_fault
        ids = self.rig.device_ids[self._next:self._next + k]
        self._next += k
        return ids

    def _press(self, device_id: int, phase: str, ready: float | None = None) -> Press:
        return Press(device_id, self.rig.fleet.wearables[device_id].press_sos(), phase, ready)

    async def run(self, name: str) -> FaultRow:
        row = FaultRow(name, FAULTS[name])
        group = self._group()
        started = time.monotonic()
        for d in group:
            self.rig.fleet.start_wearable(d)
        await asyncio.sleep(self.config.lead_s)
        self.rig.say(f"{name}: {row.what}")
        if name.startswith("clock-"):
            presses = await self._clock(group, row, name)
        else:
            presses = await getattr(self, "_" + name.replace("-", "_"))(group, row)
        await self._account(row, group, presses)
        health = await self._health()
        row.notes.append(f"health at the end: {health}")
        row.seconds = round(time.monotonic() - started, 1)
        self.rig.say(f"{name}: done in {row.seconds:.0f} s; " + _row_text(row))
        return row

    async def background(self) -> FaultRow:
        """The wearables that streamed through every fault: what reached PostgreSQL in the end."""
        ids = self.rig.background_ids
        row = FaultRow("background", f"{len(ids)} wearables streaming through all of the above")
        started = time.monotonic()
        await self._account(row, ids, [])
        row.notes.append(f"health at the end: {await self._health()}")
        row.seconds = round(time.monotonic() - started, 1)
        self.rig.say("background: " + _row_text(row))
        return row

    async def _account(self, row: FaultRow, group: list[int], presses: list[Press]) -> None:
        rig, cfg = self.rig, self.config
        # every SOS on the screen and in PostgreSQL, or the settle time passed since it could be
        for p in presses:
            since = max(p.pressed, p.ready or p.pressed)
            pages = await _until(lambda: rig.feed.sos_pages(p.device_id), max(0.0, since + cfg.settle_s - time.monotonic()), 0.02)
            if pages:
                p.on_screen = pages[0][0]
        for d in group:
            rig.fleet.wearables[d].finish()
        await _until(lambda: all(rig.fleet.wearables[d].drained() for d in group), cfg.settle_s)
        for p in presses:
            p.stored = await _until(lambda: rig.sos_rows(p.device_id), 10 if p.on_screen else 1) or 0
        await asyncio.sleep(1.0)  # a late second page or row still counts
        # distinct frames: the firmware sends its last seconds of telemetry again on a new link
        sent = {d: sum(1 for s in set(rig.fleet.wearables[d].sent) if rig.fleet.wearables[d].produced.get(s) == "telemetry")
                for d in group}
        stored = await self._settled_coverage(group, sent)
        for d in group:
            w = rig.fleet.wearables[d]
            unique, extra = stored[d]
            stored_s, twice_s, misdated_s = telemetry_account(sent[d], unique, extra)
            pages = rig.feed.sos_pages(d)
            ids = [pg["id"] for _, pg in pages]
            # dated outside the run's wall-clock span (+-10 s): a device clock taken at its word (a
            # wearable's clock starts when the fleet is made, so its first frame may predate the fault)
            lo, hi = rig.wall_t0 - 10.0, time.time() + 10.0
            outside = sum(n for us, n, _ in await rig.raw_rows(d) if not lo <= us / 1e6 <= hi)
            features_outside = await rig.features_outside(d, lo, hi)
            row.per_device[f"{d:#010x}"] = {
                "telemetry_sent": sent[d], "telemetry_stored": stored_s // FRAME_SAMPLES,
                "samples_stored_twice": twice_s, "samples_misdated": misdated_s,
                "left_on_device": w.backlog, "ring_dropped": w.ring_dropped,
                "raw_samples_dated_outside_run": outside, "features_dated_outside_run": features_outside,
                "commands_refused_by_device": w.rejected_commands,
                "sos_rows": await rig.sos_rows(d), "pages": ids}
            if outside or features_outside:
                row.notes.append(f"{w.name}: {outside} raw samples and {features_outside} feature rows dated "
                                 "outside the run's wall-clock span")
            if w.rejected_commands:
                row.notes.append(f"{w.name}: refused {w.rejected_commands} downlink command(s) (see its log line)")
            row.telemetry_sent += sent[d]
            row.telemetry_stored += stored_s // FRAME_SAMPLES
            row.telemetry_duplicated += -(-twice_s // FRAME_SAMPLES)
            if misdated_s:
                row.notes.append(f"{w.name}: {misdated_s} samples stored once but dated into another row's span")
            if w.backlog:
                row.notes.append(f"{w.name}: {w.backlog} frames never left the device")
        for p in presses:
            p.stored = await rig.sos_rows(p.device_id)
            p.pages = len(rig.feed.sos_pages(p.device_id))
        row.sos_sent = len(presses)
        row.alerts_stored = sum(1 for p in presses if p.stored)
        row.pushed = sum(1 for p in presses if p.on_screen is not None)
        row.duplicate_alerts = sum(max(0, p.stored - 1) for p in presses)
        row.duplicate_pages = sum(max(0, p.pages - 1) for p in presses)
        times = [_after_ready(p) for p in presses if p.on_screen is not None]
        row.recovery_s = round(max(times), 3) if times else None
        row.presses = [{"device": f"{p.device_id:#010x}", "seq": p.seq, "phase": p.phase,
                        "hold_s": None if p.hold_s is None else round(p.hold_s, 3),
                        "on_screen_after_s": None if p.on_screen is None else round(_after_ready(p), 3),
                        "on_air_to_screen_s": None if p.on_screen is None else round(p.on_screen - p.pressed, 3),
                        "alert_rows": p.stored, "pages": p.pages} for p in presses]

    async def _settled_coverage(self, group: list[int], sent: dict[int, int]) -> dict[int, tuple[int, int]]:
        """Raw coverage per device once it equals what was sent, or stopped changing for 5 s."""
        deadline = time.monotonic() + self.config.settle_s
        last, stable_since = None, time.monotonic()
        while True:
            now = {d: await self.rig.raw_coverage(d) for d in group}
            if all(now[d][0] // FRAME_SAMPLES >= sent[d] for d in group):
                return now
            if now != last:
                last, stable_since = now, time.monotonic()
            if time.monotonic() - stable_since >= 5.0 or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.5)

    # -- broker --

    async def _broker_kill(self, g: list[int], row: FaultRow) -> list[Press]:
        rig, down = self.rig, self.config.broker_down_s
        proc = rig.broker.proc
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rig.broker.proc = None
        await asyncio.sleep(down / 3)
        during = self._press(g[0], "during")
        await asyncio.sleep(down * 2 / 3)
        await asyncio.to_thread(rig.broker.start)
        back = time.monotonic()
        during.ready = back
        row.notes.append(f"broker down {down:g} s")
        return [during, self._press(g[1], "after", back)]

    # -- BLE links --

    async def _link_flap(self, g: list[int], row: FaultRow) -> list[Press]:
        from firmware import profile
        rig, cfg = self.rig, self.config
        radios = [rig.fleet.radios[d] for d in g[:2]]
        presses = []
        for n in range(cfg.link_flaps):
            up = await _until(lambda: all(r.is_notifying(profile.TELEMETRY_CHAR_UUID) for r in radios), 30)
            if not up:
                row.notes.append(f"links not back before flap {n + 1}")
            await asyncio.sleep(0.5)
            for r in radios:
                r.in_range = False
                await r.link_loss()
            if n == cfg.link_flaps // 2:
                presses.append(self._press(g[0], "during"))
            await asyncio.sleep(cfg.link_down_s)
            for r in radios:
                r.in_range = True
            if presses and presses[-1].ready is None:
                radio = rig.fleet.radios[presses[-1].device_id]
                await _until(lambda: radio.is_notifying(profile.EVENT_CHAR_UUID), 30, 0.01)
                presses[-1].ready = time.monotonic()
        back = await _until(lambda: all(r.is_notifying(profile.TELEMETRY_CHAR_UUID) for r in radios), 30, 0.01)
        row.notes.append(f"{cfg.link_flaps} flaps of {cfg.link_down_s:g} s on 2 wearables")
        return [*presses, self._press(g[2], "after", time.monotonic() if back else None)]

    # -- gateway --

    async def _gateway_kill(self, g: list[int], row: FaultRow) -> list[Press]:
        rig = self.rig
        await asyncio.to_thread(rig.broker.stop)  # the gateway can only queue while the broker is away
        during = self._press(g[0], "during")
        queued = await _until(lambda: self._queued(8), 20, 0.2)
        await asyncio.sleep(0.5)
        depth = await rig.gateway.metric("vigil_gateway_queue_depth")
        rig.gateway.kill()
        row.notes.append(f"gateway killed with {depth:.0f} frames queued" if queued else "queue never reached 8 frames")
        await asyncio.sleep(self.config.gateway_down_s)
        await asyncio.to_thread(rig.broker.start)
        rig.gateway.start()
        await _until(lambda: rig.gateway.metric("vigil_gateway_frames_in_total"), 30, 0.05)
        back = time.monotonic()
        during.ready = back
        return [during, self._press(g[1], "after", back)]

    async def _queued(self, n: int) -> bool:
        depth = await self.rig.gateway.metric("vigil_gateway_queue_depth")
        return depth is not None and depth >= n

    # -- database --

    async def _database_outage(self, g: list[int], row: FaultRow) -> list[Press]:
        rig, down = self.rig, self.config.database_down_s
        await asyncio.to_thread(rig.pg.stop, "immediate")
        stopped = time.monotonic()
        await asyncio.sleep(min(5.0, down / 3))
        during = self._press(g[0], "during")
        await asyncio.sleep(max(0.0, down - (time.monotonic() - stopped)))
        await asyncio.to_thread(rig.pg.start)
        back = time.monotonic()
        during.ready = back
        row.notes.append(f"database down {down:g} s")
        return [during, self._press(g[1], "after", back)]

    # -- backend --

    async def _restart_backend(self) -> float:
        await asyncio.to_thread(self.rig.backend.start)  # returns when /health says broker connected
        return time.monotonic()

    async def _backend_kill_incident(self, g: list[int], row: FaultRow) -> list[Press]:
        rig = self.rig
        before = self._press(g[0], "before")
        on_screen = await _until(lambda: rig.feed.sos_pages(g[0]), 10, 0.02)
        stored = await _until(lambda: rig.sos_rows(g[0]), 5)
        row.notes.append(f"incident open on screen {'yes' if on_screen else 'NO'}, stored {'yes' if stored else 'NO'} before the kill")
        rig.backend.kill()
        await asyncio.sleep(self.config.backend_down_s / 2)
        during = self._press(g[1], "during")
        await asyncio.sleep(self.config.backend_down_s / 2)
        back = await self._restart_backend()
        during.ready = back
        after = self._press(g[2], "after", back)
        open_ids = await self._open_alert_devices()
        row.notes.append("incident open again after restart: " + ("yes" if g[0] in open_ids else "NO"))
        return [before, during, after]

    async def _backend_kill_db_outage(self, g: list[int], row: FaultRow) -> list[Press]:
        rig = self.rig
        await asyncio.to_thread(rig.pg.stop, "immediate")
        during = self._press(g[0], "during")
        on_screen = await _until(lambda: rig.feed.sos_pages(g[0]), 10, 0.02)
        pending = await _until(lambda: self._health_field("alerts_pending_storage"), 5)
        row.notes.append(f"SOS on screen before the kill: {'yes' if on_screen else 'NO'}; alerts pending storage {pending}")
        rig.backend.kill()
        await asyncio.sleep(self.config.backend_down_s)
        await asyncio.to_thread(rig.pg.start)
        back = await self._restart_backend()
        during.ready = back
        return [during, self._press(g[1], "after", back)]

    async def _health(self) -> str:
        """/api/v1/health's status code, and the problems it names when it is not 200."""
        import httpx
        try:
            async with httpx.AsyncClient(base_url=self.rig.backend.url, timeout=5) as http:
                r = await http.get("/api/v1/health")
        except httpx.HTTPError as exc:
            return f"no answer ({type(exc).__name__})"
        if r.status_code == 200:
            return "200"
        try:
            body = r.json()
        except ValueError:
            return str(r.status_code)
        problems = body.get("problems") or body.get("failing") or {k: v for k, v in body.items() if v not in (True, None)}
        return f"{r.status_code} {json.dumps(problems)[:200]}"

    async def _health_field(self, name: str):
        import httpx
        try:
            async with httpx.AsyncClient(base_url=self.rig.backend.url, timeout=2) as http:
                return (await http.get("/api/v1/health")).json().get(name)
        except (httpx.HTTPError, ValueError):
            return None

    async def _open_alert_devices(self) -> set[int]:
        import httpx
        async with httpx.AsyncClient(base_url=self.rig.backend.url, timeout=10) as http:
            r = await http.get("/api/v1/alerts?open=true", headers={"Authorization": f"Bearer {self.rig.token}"})
        return {a["device_id"] for a in r.json()} if r.status_code == 200 else set()

    # -- device clocks --

    async def _clock(self, g: list[int], row: FaultRow, name: str) -> list[Press]:
        for d in g:
            _set_device_clock(self.rig.fleet.wearables[d], name)
        await asyncio.sleep(self.config.clock_s / 2)
        during = self._press(g[0], "during")
        await asyncio.sleep(self.config.clock_s / 2)
        return [during, self._press(g[1], "after")]

    # -- poison --

    async def _poison(self, g: list[int], row: FaultRow) -> list[Press]:
        import aiomqtt
        import httpx

        from gateway import topics
        rig = self.rig
        messages = poison_messages(self.rig.poison_key)
        async with aiomqtt.Client(rig.broker.host, rig.broker.port, protocol=aiomqtt.ProtocolVersion.V5,
                                  identifier="vigil-faults-poison") as client:
            for kind, data in messages:
                await client.publish(topics.uplink(AGENCY, "poison-gw", POISON_DEVICE_ID, kind), data, qos=1)
        done = time.monotonic()
        presses = [self._press(g[0], "after", done)]
        await asyncio.sleep(1.0)
        presses.append(self._press(g[1], "after"))
        await _until(lambda: all(rig.feed.sos_pages(p.device_id) for p in presses), self.config.settle_s)
        async with httpx.AsyncClient(base_url=rig.backend.url, timeout=5) as http:
            health = await http.get("/api/v1/health")
        poison_pages = sorted({d.get("kind") for _, d in rig.feed.changes if d.get("device_id") == POISON_DEVICE_ID
                               and d.get("change") == "raised"})
        row.notes.append(f"{len(messages)} poison messages; health {health.status_code} afterwards; "
                         f"poisoned device paged for {poison_pages or 'nothing'}; dead letters {await self._dead_letters()}")
        return presses

    async def _dead_letters(self) -> int | str:
        import sqlalchemy as sa
        try:
            async with self.rig.engine.connect() as conn:
                return (await conn.execute(sa.text("select count(*) from dead_letters"))).scalar_one()
        except Exception as exc:  # the table is optional to this count: say why there is no figure
            return f"unknown ({type(exc).__name__})"


def _set_device_clock(wearable, name: str) -> None:
    """The wearable's clock goes wrong: its next frames carry the new time, until the backend
    corrects it with a TIME_SYNC. "clock-boot": it knows no time (counts from boot, flagged
    FLAG_CLOCK_UNSYNCED), as after a restart."""
    if name == "clock-boot":
        wearable.set_wall_clock(None)
        return
    now_ms = wearable.wall_clock_ms()
    wearable.set_wall_clock({"clock-forward-1h": now_ms + HOUR_MS, "clock-back-1h": now_ms - HOUR_MS,
                             "clock-1970": 86_400_000, "clock-year-10000": YEAR_10000_MS}[name])


def poison_messages(key: bytes) -> list[tuple[str, bytes]]:
    """(uplink kind, bytes) of one poisoned device: frames sealed with its real key but absurd
    header values, payloads that do not decode, forgeries, garbage. None of them is an SOS a
    supervisor should miss another device's SOS for."""
    keys = F.DeviceKeys(key)
    seq = iter(range(1, 1000))
    now = int(time.time() * 1000)
    sos = F.encode_event(F.EVENT_SOS, 0, 1)
    telemetry = F.encode_telemetry(50, [100_000] * 20, [(0, 0, 1000)] * 20, 60)

    def sealed(frame_type, time_ms, payload, flags=F.FLAG_ENCRYPTED):
        return F.seal(keys, frame_type, POISON_DEVICE_ID, next(seq), time_ms, payload, flags)

    def forged_header(frame_type, flags, time_ms, payload):  # authenticated, but seal() would refuse it
        header = struct.pack(F.HEADER_FORMAT, F.VERSION, frame_type, flags, POISON_DEVICE_ID, next(seq), time_ms, len(payload))
        return header + payload + keys.mac.digest(header + payload)[:F.TAG_LEN]

    good = sealed(F.TYPE_TELEMETRY, now, telemetry)
    flipped = bytearray(sealed(F.TYPE_EVENT, now, sos))
    flipped[-1] ^= 0xFF
    return [
        ("event", sealed(F.TYPE_EVENT, 2 ** 62, sos)),                 # issue 15, finding 1
        ("event", sealed(F.TYPE_EVENT, 2 ** 64 - 1, sos)),
        ("telemetry", sealed(F.TYPE_TELEMETRY, 2 ** 63, telemetry)),
        ("telemetry", sealed(F.TYPE_TELEMETRY, 0, telemetry)),
        ("event", sealed(F.TYPE_EVENT, now, struct.pack(F.EVENT_FORMAT, 0xFF, 0xFF, 0xFFFF))),  # unknown code
        ("telemetry", sealed(F.TYPE_TELEMETRY, now, secrets.token_bytes(40))),
        ("status", sealed(F.TYPE_STATUS, now, b"")),
        ("event", forged_header(9, 0, now, b"\x01\x02\x03\x04")),
        ("event", forged_header(F.TYPE_EVENT, 0xF8, now, sos)),
        ("telemetry", forged_header(F.TYPE_TELEMETRY, 0, now, b"\x00\x17\x00\x00" + b"\xff" * 9 * 23)),  # 0 Hz
        ("telemetry", good[:10]),
        ("event", bytes(flipped)),
        ("telemetry", sealed(F.TYPE_EVENT, now, sos)),                # an event on the telemetry topic
        ("status", secrets.token_bytes(64)),
        ("event", b""),
        ("telemetry", secrets.token_bytes(10_000)),
        ("telemetry", good),                                          # then a valid frame
    ]


# ---- report ---------------------------------------------------------------------------------------

HEAD = ("fault", "SOS sent", "alerts stored", "pushed", "duplicates", "telemetry sent/stored", "recovery")


def _cells(row: FaultRow) -> tuple[str, ...]:
    dups = []
    if row.duplicate_alerts:
        dups.append(f"{row.duplicate_alerts} alert rows")
    if row.duplicate_pages:
        dups.append(f"{row.duplicate_pages} pages")
    if row.telemetry_duplicated:
        dups.append(f"{row.telemetry_duplicated} frames")
    rec = "n/a" if not row.sos_sent else "never" if row.recovery_s is None else f"{row.recovery_s:.2f} s"
    if row.recovery_s is not None and row.pushed < row.sos_sent:
        rec += " (some never)"
    return (row.what, str(row.sos_sent), str(row.alerts_stored), str(row.pushed), ", ".join(dups) or "0",
            f"{row.telemetry_sent}/{row.telemetry_stored}", rec)


def _row_text(row: FaultRow) -> str:
    c = _cells(row)
    return f"SOS {c[1]}, stored {c[2]}, pushed {c[3]}, duplicates {c[4]}, telemetry {c[5]}, recovery {c[6]}"


def table(rows: list[FaultRow]) -> str:
    cells = [HEAD, *[_cells(r) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    line = lambda c: "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |"  # noqa: E731
    return "\n".join([line(HEAD), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *[line(c) for c in cells[1:]]])


def code_version() -> str:
    """HEAD and a digest of uncommitted changes to the code the processes run: a restarted
    backend or gateway runs whatever the working tree holds at that moment."""
    import hashlib

    from backend.bench.processes import REPO
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "backend", "gateway", "firmware", "models"],
                              cwd=REPO, capture_output=True).stdout
    except OSError:
        return "unknown"
    if not head:
        return "unknown (not a git checkout)"
    return f"{head}+{hashlib.sha256(diff).hexdigest()[:10]}" if diff else head


async def run(config: FaultConfig) -> list[FaultRow]:
    rows: list[FaultRow] = []
    started = time.monotonic()
    version = code_version()
    print(f"vigil bench faults: {', '.join(config.faults)}; {config.devices_per_fault} wearables per fault, "
          f"{config.background} throughout; "
          f"database down {config.database_down_s:g} s, broker down {config.broker_down_s:g} s", flush=True)
    async with Rig(config) as rig:
        runner = FaultRunner(rig)
        for name in config.faults:
            rows.append(await runner.run(name))
        if rig.background_ids:
            rows.append(await runner.background())
        workdir = rig.workdir
    elapsed = time.monotonic() - started
    version_after = code_version()
    print("\n" + table(rows))
    for r in rows:
        for note in r.notes:
            print(f"  {r.fault}: {note}")
    lost = sum(r.lost for r in rows)
    doubled = sum(r.doubled for r in rows)
    print(f"\n{lost} lost, {doubled} doubled in {len(rows)} faults; {elapsed:.0f} s; code {version}"
          + (f"; logs in {workdir}" if config.keep_workdir else ""))
    if version_after != version:
        print(f"WARNING: the code changed during the run ({version} -> {version_after}): processes started "
              "after the change ran other code than those before it")
    config.out.mkdir(parents=True, exist_ok=True)
    path = config.out / ("faults" + (f"-{config.tag}" if config.tag else "") + ".json")
    path.write_text(json.dumps({
        "command": "vigil bench faults", "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "seconds": round(elapsed, 1), "lost": lost, "doubled": doubled, "code": version, "code_after": version_after,
        "rows": [{**asdict(r), "lost": r.lost, "doubled": r.doubled} for r in rows],
        "table": table(rows)}, indent=2))
    print(f"results: {path}")
    return rows


def main(args) -> int:
    config = FaultConfig(
        faults=tuple(args.faults or FAULTS), database_down_s=args.database_down_s, broker_down_s=args.broker_down_s,
        backend_down_s=args.backend_down_s, gateway_down_s=args.gateway_down_s, link_flaps=args.link_flaps,
        clock_s=args.clock_s, lead_s=args.lead_s, devices_per_fault=args.devices_per_fault, settle_s=args.settle_s,
        background=args.background,
        out=args.out, tag=args.tag, keep_workdir=args.keep_workdir)
    rows = asyncio.run(run(config))
    return 1 if any(r.lost or r.doubled for r in rows) else 0


def register(sub) -> None:
    """``vigil bench faults`` (called from backend/bench/commands.py)."""
    p = sub.add_parser("faults", help="inject faults into the real parts (broker, database, backend, gateway, links, "
                                      "clocks, poison frames); table of SOS and telemetry lost or doubled")
    p.add_argument("--faults", nargs="+", choices=list(FAULTS), default=None, metavar="FAULT",
                   help="which faults, in this order (default: all): " + ", ".join(FAULTS))
    p.add_argument("--database-down-s", type=float, default=60.0, help="length of the database outage (default 60)")
    p.add_argument("--broker-down-s", type=float, default=6.0, help="how long the killed broker stays away (default 6)")
    p.add_argument("--backend-down-s", type=float, default=3.0, help="how long a killed backend stays dead (default 3)")
    p.add_argument("--gateway-down-s", type=float, default=3.0, help="how long the killed gateway stays dead (default 3)")
    p.add_argument("--link-flaps", type=int, default=4, help="link losses in the link-flap fault (default 4)")
    p.add_argument("--clock-s", type=float, default=6.0, help="seconds each clock fault runs (default 6)")
    p.add_argument("--lead-s", type=float, default=3.0, help="normal streaming before each fault (default 3)")
    p.add_argument("--devices-per-fault", type=int, default=3, help="wearables of each fault (default 3, at least 3)")
    p.add_argument("--background", type=int, default=17,
                   help="wearables streaming through the whole run, counted in a last row (default 17: 20 stream at once)")
    p.add_argument("--settle-s", type=float, default=30.0,
                   help="longest wait for an SOS to reach the screen or for telemetry to be stored (default 30)")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"), help="folder of faults.json")
    p.add_argument("--tag", default="", help="suffix of the result file (faults-<tag>.json)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the logs and data of the private services")
    p.set_defaults(func=main)
