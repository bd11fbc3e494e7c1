"""``vigil bench ingest``: how many 50 Hz wearables one backend process carries on this machine.

Everything runs here, on 127.0.0.1, bounded in count and time:

* a private Mosquitto on its own port, and a fresh ``vigil_bench_*`` database (on
  ``VIGIL_DATABASE_URL``'s server, else the local PostgreSQL), dropped afterwards;
* the largest step's devices provisioned in bulk (officers, devices with wrapped keys, shift
  assignments), spread over a few agencies;
* the broker's own ceiling first: the generators publish as fast as the socket takes it to a
  counting subscriber, with no backend;
* the backend as its own process (``vigil backend run``, settings in its environment), one per
  shard; each shard owns a set of agencies (``VIGIL_AGENCIES``);
* generator processes (:mod:`backend.bench.load`) that pre-encode each step's frames and pace
  them at 2.5 frames/s per device (20 samples at 50 Hz), with SOS presses at known times;
* a supervisor's WebSocket per agency, timing each SOS from publish to push.

Per step it prints a row: frames/s offered and ingested, frames lost (published − accepted −
rejected, from the backend's own counters after it drained), p50/p99 frame publish → features
stored (``vigil_frame_to_features_seconds``; device and bench share the clock), p50/p99 SOS
publish → WebSocket, CPU % per process and the backend's resident memory. The ramp stops when
the backend falls behind. Results go to ``artifacts/bench/ingest.json`` and ``ingest.png``.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backend.cli.progress import track
from backend.local import infra
from backend.bench import load
from models.thresholds import PRODUCT_PLACEMENT

# The backend's detection settings for the bench: windows collected every 250 ms (not once per
# 2 s hop) and features flushed every 250 ms, so frame -> features stays under a second.
BACKEND_ENV = {
    "VIGIL_DETECTION_TICK_S": "0.25",
    "VIGIL_FEATURE_FLUSH_S": "0.25",
    "VIGIL_REGISTRY_REFRESH_S": "30",
    "VIGIL_STATUS_FLUSH_S": "5",
}
DEFAULT_STEPS = (500, 1000, 2000, 5000, 10000)
MAX_DEVICES = 20_000
MAX_STEP_S = 120.0
SOS_PER_STEP = 8
BASELINE_AHEAD_S = 1.5
# A step "keeps up" when the backend ingested this share of the offered frames during the
# step and caught up this soon after it.
KEEP_UP_RATIO = 0.95
KEEP_UP_DRAIN_S = 5.0
DRAIN_LIMIT_S = 60.0
# ... and its detection keeps up: features stored at most this long after the window's last frame
KEEP_UP_FEATURES_S = 5.0
BACKEND_START_S = 90.0
AUDIT_WAIT_S = 400.0
CEILING_AGENCY = "benchceiling"
FEATURE_HISTOGRAM = "vigil_frame_to_features_seconds"
PUSH_HISTOGRAM = "vigil_event_to_push_seconds"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class BenchConfig:
    steps: tuple[int, ...] = DEFAULT_STEPS
    step_s: float = 25.0
    generators: int = 2
    shards: int = 1
    agencies: int = 4
    ceiling_s: float = 8.0
    sos_per_step: int = SOS_PER_STEP
    keep_going: bool = False
    out: Path = Path("artifacts/bench")
    database_url: str | None = None
    tag: str = ""
    detection_worker: str = "inline"

    def check(self) -> None:
        if not self.steps or min(self.steps) <= 0 or max(self.steps) > MAX_DEVICES:
            raise ValueError(f"steps must be 1..{MAX_DEVICES} devices")
        if not 3.0 <= self.step_s <= MAX_STEP_S:
            raise ValueError(f"a step lasts 3..{MAX_STEP_S:.0f} s")
        if not 1 <= self.generators <= 8 or not 1 <= self.shards <= 4:
            raise ValueError("1..8 generators, 1..4 shards")
        if self.agencies < self.shards:
            raise ValueError("at least one agency per shard")


@dataclass
class StepResult:
    devices: int
    offered_fps: float
    published_fps: float
    ingested_fps: float
    published: int
    accepted: int
    rejected: int
    lost: int
    drain_s: float | None
    frame_to_features_p50_s: float | None
    frame_to_features_p99_s: float | None
    features_windows: int
    sos_sent: int
    sos_received: int
    sos_to_ws_p50_s: float | None
    sos_to_ws_p99_s: float | None
    event_to_push_p99_s: float | None
    cpu_pct: dict[str, float]
    backend_rss_mb: float
    generator_late_p99_ms: float
    ws_reconnects: int
    kept_up: bool
    note: str = ""


@dataclass
class BenchResult:
    config: dict
    machine: dict
    ceiling: dict
    steps: list[StepResult] = field(default_factory=list)
    stopped: str = ""
    max_sustained_devices: int = 0
    max_sustained_fps: float = 0.0
    ratio_to_ceiling: float | None = None


# ---- process accounting --------------------------------------------------------------------------

def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError):
        return 0.0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _with_children(pids: list[int]) -> list[int]:
    """The processes and their descendants (the backend's detection worker, if any)."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = list(pids), list(pids)
    while frontier:
        frontier = [c for c, parent in parents.items() if parent in frontier and c not in found]
        found += frontier
    return found


def _postgres_pids() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


class CpuMeter:
    """CPU seconds of named groups of processes between two readings (from /proc)."""

    def __init__(self, groups: dict[str, list[int] | callable]):
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self._t0 = 0.0

    def _pids(self, name: str) -> list[int]:
        g = self.groups[name]
        return g() if callable(g) else g

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {n: {p: _cpu_s(p) for p in self._pids(n)} for n in self.groups}

    def read(self) -> dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self._t0)
        out = {}
        for n in self.groups:
            used = sum(_cpu_s(p) - self._start[n].get(p, 0.0) for p in self._pids(n))
            out[n] = round(100.0 * used / elapsed, 1)
        return out


# ---- the backend's /metrics -------------------------------------------------------------------------

def scrape(port: int) -> dict:
    """The counters and histograms the bench reads, from one backend's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as r:
        text = r.read().decode()
    out: dict = {"accepted": 0.0, "rejected": 0.0, "hist": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vigil_frames_accepted_total":
                out["accepted"] += s.value
            elif s.name == "vigil_frames_rejected_total":
                out["rejected"] += s.value
            elif s.name.endswith("_bucket") and s.name[:-7] in (FEATURE_HISTOGRAM, PUSH_HISTOGRAM):
                le = float(s.labels["le"])
                out["hist"].setdefault(s.name[:-7], {})[le] = s.value
    return out


def merge(scrapes: list[dict]) -> dict:
    out: dict = {"accepted": 0.0, "rejected": 0.0, "hist": {}}
    for s in scrapes:
        out["accepted"] += s["accepted"]
        out["rejected"] += s["rejected"]
        for name, buckets in s["hist"].items():
            h = out["hist"].setdefault(name, {})
            for le, v in buckets.items():
                h[le] = h.get(le, 0.0) + v
    return out


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float | None, int]:
    """Quantile ``q`` of the observations between two cumulative histograms (linear within a
    bucket, as Prometheus does); returns (value or None, observations)."""
    bounds = sorted(after)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cum[-1] if cum else 0
    if total <= 0:
        return None, 0
    rank = q * total
    prev_bound, prev_cum = 0.0, 0.0
    for b, c in zip(bounds, cum):
        if c >= rank:
            if b == float("inf"):
                return prev_bound, int(total)  # beyond the last bound: report the bound
            span = c - prev_cum
            return prev_bound + (b - prev_bound) * ((rank - prev_cum) / span if span else 1.0), int(total)
        prev_bound, prev_cum = b, c
    return prev_bound, int(total)


# ---- database and fleet ------------------------------------------------------------------------------

def _server_url(database_url: str | None) -> str:
    url = database_url or os.environ.get("VIGIL_DATABASE_URL") or "postgresql+asyncpg://postgres@127.0.0.1:5432/vigil"
    if "+asyncpg" not in url:
        url = url.replace("postgresql://", "postgresql+asyncpg://")
    return url.rsplit("/", 1)[0]


def drop_database(url: str) -> None:
    import sqlalchemy as sa

    sync = url.replace("+asyncpg", "+psycopg2")
    admin = sa.create_engine(sync.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{sync.rsplit("/", 1)[1]}" with (force)'))
    finally:
        admin.dispose()


async def provision(url: str, secret: str, count: int, agencies: list[str]) -> list[load.Wearable]:
    """``count`` devices, one officer each, on shift now: bulk inserts, keys wrapped as
    ``backend.identity.fleet`` wraps them. Device ``i`` belongs to agency ``i % len(agencies)``."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from backend.db import schema as t
    from backend.identity.security import wrap_device_key

    engine = create_async_engine(url)
    wearables = [load.Wearable(10_000 + i, agencies[i % len(agencies)], secrets.token_bytes(32)) for i in range(count)]
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(t.agencies), [{"id": a, "name": f"Bench agency {a}"} for a in agencies])
            officer_ids: list[int] = []
            for lo in range(0, count, 2000):
                chunk = wearables[lo:lo + 2000]
                res = await conn.execute(sa.insert(t.officers).values([
                    {"agency_id": w.agency, "badge": f"B{w.device_id}", "name": f"Officer {w.device_id}", "unit": "bench"}
                    for w in chunk]).returning(t.officers.c.id))
                officer_ids += [r[0] for r in res]
            await conn.execute(sa.insert(t.devices), [
                {"id": w.device_id, "agency_id": w.agency, "key_wrapped": wrap_device_key(secret, w.device_id, w.key),
                 "placement": PRODUCT_PLACEMENT} for w in wearables])
            await conn.execute(sa.insert(t.assignments), [
                {"device_id": w.device_id, "officer_id": o, "starts_at": started} for w, o in zip(wearables, officer_ids)])
    finally:
        await engine.dispose()
    return wearables


# ---- supervisors' WebSockets ---------------------------------------------------------------------------

async def bench_supervisor(database_url: str, url: str, agency: str) -> str:
    """A supervisor's account of ``agency`` and a token signed in with it (tokens name real accounts)."""
    import httpx

    from backend.app.config import BackendSettings
    from backend.db import engine as db
    from backend.identity import auth

    username, password = f"bench-{agency}", secrets.token_urlsafe(16)
    engine = db.create_engine(BackendSettings(database_url=database_url))
    try:
        await auth.create_user(engine, username, password, "supervisor", agency, actor="system:bench")
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post("/api/v1/auth/token", data={"username": username, "password": password})
    response.raise_for_status()
    return response.json()["access_token"]


class SosWatch:
    """One supervisor WebSocket per agency (on the backend that owns it), in a thread of its own;
    records when each device's SOS alert arrives. Reconnects (resuming) if cut off."""

    def __init__(self, targets: list[tuple[str, str, str]]):  # (base URL, token, agency)
        self.targets = targets
        self.arrivals: dict[int, float] = {}
        self.reconnects = 0
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sos-watch")
        self._stop: asyncio.Event | None = None
        self._ready = 0

    def start(self) -> "SosWatch":
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._watch(url, token)) for url, token, _ in self.targets]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, url: str, token: str) -> None:
        import httpx
        import websockets

        last_id = None
        first = True
        while True:
            try:
                async with httpx.AsyncClient(base_url=url, timeout=10) as http:  # a one-time ticket per connection
                    ticket = (await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {token}"})).json()["ticket"]
                full = url.replace("http", "ws", 1) + f"/api/v1/ws?ticket={ticket}" + (
                    f"&last_event_id={last_id}" if last_id is not None else "")
                async with websockets.connect(full, max_size=None, open_timeout=10) as ws:
                    if first:
                        first = False
                        self._ready += 1
                        if self._ready == len(self.targets):
                            self.connected.set()
                    async for raw in ws:
                        now = time.time()
                        msg = json.loads(raw)
                        last_id = msg.get("id", last_id)
                        data = msg.get("data") or {}
                        if msg.get("type") == "alert" and data.get("kind") == "sos":
                            self.arrivals.setdefault(int(data["device_id"]), now)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a cut connection: count it and resume
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


# ---- the run ---------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, config: BenchConfig, say=print):
        config.check()
        self.config = config
        self.say = say
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
        self.secret = secrets.token_urlsafe(32)
        self.agencies = [f"bench{k}" for k in range(config.agencies)]
        self.db_url = f"{_server_url(config.database_url)}/vigil_bench_{uuid.uuid4().hex[:10]}"
        self.broker: infra.PrivateMosquitto | None = None
        self.generators: list[tuple[mp.Process, object]] = []
        self.backends: list[tuple[subprocess.Popen, int, list[str]]] = []
        self.subscriber: tuple[mp.Process, object] | None = None
        self.db_created = False
        self.ctx = mp.get_context("spawn")

    # -- setup --

    def _start_generators(self, wearables: list[load.Wearable]) -> None:
        n = self.config.generators
        for k in range(n):
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=load.generator_main, name=f"vigil-bench-gen{k}",
                                    args=(child, k, self.broker.host, self.broker.port, wearables[k::n]), daemon=True)
            proc.start()
            self.generators.append((proc, parent))
        for proc, conn in self.generators:
            self._expect(conn, "started", 60)

    @staticmethod
    def _expect(conn, what: str, timeout: float):
        if not conn.poll(timeout):
            raise RuntimeError(f"a bench process did not answer ({what}) within {timeout:.0f} s")
        kind, value = conn.recv()
        if kind != what:
            raise RuntimeError(f"a bench process answered {kind!r}, expected {what!r}")
        return value

    def _start_backends(self) -> None:
        vigil = shutil.which("vigil", path=str(Path(sys.executable).parent)) or shutil.which("vigil")
        if vigil is None:
            raise RuntimeError("the vigil command is not installed in this environment")
        cfg = self.config
        shards = cfg.shards
        for k in range(shards):
            port = infra.free_port()
            owned = self.agencies[k::shards]
            env = {**os.environ, **BACKEND_ENV, "VIGIL_DETECTION_WORKER": cfg.detection_worker, "VIGIL_DATABASE_URL": self.db_url, "VIGIL_MQTT_URL": self.broker.url,
                   "VIGIL_AGENCIES": json.dumps(owned), "VIGIL_HTTP_PORT": str(port), "VIGIL_SECRET_KEY": self.secret,
                   "VIGIL_MQTT_CLIENT_ID": f"vigil-bench-backend{k}-{uuid.uuid4().hex[:6]}"}
            logfile = open(self.workdir / f"backend{k}.log", "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen([vigil, "backend", "run", "--no-migrate"], env=env, cwd=self.workdir,
                                    stdout=logfile, stderr=subprocess.STDOUT)
            self.backends.append((proc, port, owned))
        deadline = time.monotonic() + BACKEND_START_S
        for k, (proc, port, _) in enumerate(self.backends):
            log = self.workdir / f"backend{k}.log"
            while "ingest subscribed" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"backend {k} did not start; its log ends with:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)

    # -- phases --

    def ceiling(self) -> dict:
        """The broker alone: generators flood a counting subscriber (no backend)."""
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=load.subscriber_main, name="vigil-bench-count",
                                args=(child, self.broker.host, self.broker.port, f"vigil/{CEILING_AGENCY}/#"), daemon=True)
        proc.start()
        self.subscriber = (proc, parent)
        self._expect(parent, "started", 30)
        time.sleep(0.3)
        duration = self.config.ceiling_s
        t0 = time.time() + 1.0
        for _, conn in self.generators:
            conn.send(("flood", (CEILING_AGENCY, duration, t0)))
        cpu = CpuMeter({"broker": [self.broker.proc.pid], "generators": [p.pid for p, _ in self.generators],
                        "subscriber": [proc.pid]})
        time.sleep(max(0.0, t0 - time.time()))
        parent.send(("count", None))
        c0 = self._expect(parent, "count", 10)
        cpu.start()
        time.sleep(duration)
        parent.send(("count", None))
        c1 = self._expect(parent, "count", 10)
        cpu_pct = cpu.read()
        published = sum(self._expect(conn, "done", load.ACK_WAIT_S + 30)["acked"] for _, conn in self.generators)
        time.sleep(1.0)
        parent.send(("count", None))
        final = self._expect(parent, "count", 10)
        parent.send(("quit", None))
        proc.join(5)
        self.subscriber = None
        out = {"delivered_fps": round((c1 - c0) / duration, 1), "published_fps": round(published / duration, 1),
               "published": published, "delivered": final, "lost": published - final, "cpu_pct": cpu_pct,
               "devices_equivalent": int((c1 - c0) / duration / (1 / load.FRAME_PERIOD_S))}
        self.say(f"broker ceiling (no backend): {out['delivered_fps']:,.0f} frames/s delivered to one QoS 1 subscriber "
                 f"(= {out['devices_equivalent']:,} devices at 50 Hz); published {out['published_fps']:,.0f}/s; "
                 f"CPU {cpu_pct}")
        return out

    def wait_for_audit(self) -> float | None:
        """Provisioning is audited: database triggers queue one entry per row, and the backend
        moves them into the audit chain. Wait until it has, so the ramp measures ingest alone."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.db_url.replace("+asyncpg", "+psycopg2"))
        started = time.monotonic()
        next_say = started + 10
        try:
            while time.monotonic() - started < AUDIT_WAIT_S:
                with engine.connect() as conn:
                    left = conn.execute(sa.text("select count(*) from audit_outbox")).scalar_one()
                if not left:
                    waited = time.monotonic() - started
                    if waited > 1:
                        self.say(f"audit: the provisioning's entries are in the audit chain ({waited:.0f} s)")
                    return round(waited, 1)
                if time.monotonic() >= next_say:
                    self.say(f"  waiting for the backend to chain the provisioning's audit entries: {left:,} left")
                    next_say += 10
                time.sleep(1.0)
        except sa.exc.ProgrammingError:
            return None  # no audit outbox in this schema
        finally:
            engine.dispose()
        self.say(f"audit: entries still queued after {AUDIT_WAIT_S:.0f} s; the first steps share the CPU with it")
        return None

    def _scrape(self) -> dict:
        for attempt in range(3):  # a saturated backend may answer /metrics slowly
            try:
                return merge([scrape(port) for _, port, _ in self.backends])
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(1.0)

    def step(self, index: int, devices: int, watch: SosWatch, wearables: list[load.Wearable],
             encode_us: float, used_sos: set[int]) -> tuple[StepResult, float]:
        cfg = self.config
        n_gen = len(self.generators)
        frames_per_gen = devices / n_gen * cfg.step_s / load.FRAME_PERIOD_S
        # the generators seal in parallel on the machine's cores; leave a margin
        prep = 3.0 + 2.5 * frames_per_gen * encode_us / 1e6 * max(1.0, n_gen / (os.cpu_count() or 1))
        t0 = time.time() + prep
        # SOS presses: distinct devices (an officer's open incident would absorb a second one)
        candidates = [w.device_id for w in wearables[:devices] if w.device_id not in used_sos]
        picks = candidates[:: max(1, len(candidates) // max(1, cfg.sos_per_step))][:cfg.sos_per_step]
        first, last = min(4.0, cfg.step_s * 0.3), cfg.step_s - 1.5
        sos_times = {d: t0 + first + (last - first) * (j + 0.5) / max(1, len(picks)) for j, d in enumerate(picks)}
        used_sos.update(picks)
        seq_base = (index + 1) * 10_000
        for k, (_, conn) in enumerate(self.generators):
            mine = wearables[k::n_gen]
            count = sum(1 for w in mine if w.device_id < wearables[0].device_id + devices)
            ids = {w.device_id for w in mine[:count]}
            plan = load.StepPlan(index, count, t0, cfg.step_s, tuple((d, t) for d, t in sos_times.items() if d in ids), seq_base)
            conn.send(("step", plan))
        self.say(f"step {index + 1}: {devices:,} devices, {devices / load.FRAME_PERIOD_S:,.0f} frames/s offered for "
                 f"{cfg.step_s:.0f} s (encoding {devices * cfg.step_s / load.FRAME_PERIOD_S:,.0f} frames first)")
        encoded = [self._expect(conn, "encoded", prep + 120) for _, conn in self.generators]
        encode_us = max(e["encode_cpu_s"] / max(1, e["frames"]) * 1e6 for e in encoded)
        behind = time.time() - t0
        note = ""
        if behind > 0:
            note = f"generators started {behind:.1f} s late"
            self.say(f"  warning: {note}")
        backend_pids = [p.pid for p, _, _ in self.backends]
        cpu = CpuMeter({"backend": lambda: _with_children(backend_pids), "broker": [self.broker.proc.pid],
                        "generators": [p.pid for p, _ in self.generators], "postgres": _postgres_pids})
        # the baseline before the first frame (a frame counted in it would look lost); a backend
        # busy at start-up may answer /metrics slowly, so it is asked well ahead
        time.sleep(max(0.0, t0 - BASELINE_AHEAD_S - time.time()))
        s0 = self._scrape()
        if time.time() > t0:
            late = f"baseline read {time.time() - t0:.2f} s after the first frame: 'lost' may count frames ingested before it"
            note = (note + "; " if note else "") + late
            self.say(f"  warning: {late}")
        time.sleep(max(0.0, t0 - time.time()))
        cpu.start()
        rss = 0.0
        end = t0 + cfg.step_s
        next_report = time.time() + 5
        while time.time() < end:
            time.sleep(min(0.5, max(0.0, end - time.time())))
            rss = max(rss, sum(_rss_mb(p) for p in _with_children(backend_pids)))
            if time.time() >= next_report and time.time() < end - 1:
                s = self._scrape()
                elapsed = time.time() - t0
                self.say(f"  {elapsed:4.0f} s: ingested {(s['accepted'] - s0['accepted']) / elapsed:,.0f} frames/s")
                next_report += 5
        s1 = self._scrape()
        cpu_pct = cpu.read()
        ingested_fps = (s1["accepted"] - s0["accepted"]) / cfg.step_s
        done = [self._expect(conn, "done", load.ACK_WAIT_S + 30) for _, conn in self.generators]
        published = sum(d["acked"] for d in done)
        unacked = sum(d["published"] - d["acked"] for d in done)
        # drain: until the backend's counters account for every frame the broker accepted
        drain_start = end
        drain_s = None
        last_total, last_change = -1.0, time.monotonic()
        while True:
            s = self._scrape()
            total = s["accepted"] + s["rejected"] - s0["accepted"] - s0["rejected"]
            if total >= published:
                drain_s = max(0.0, time.time() - drain_start)
                break
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            if time.monotonic() - last_change > 10 or time.time() - drain_start > DRAIN_LIMIT_S:
                break
            time.sleep(0.2)
            rss = max(rss, sum(_rss_mb(p) for p in _with_children(backend_pids)))
        time.sleep(1.5)  # the last windows' features: one tick and one flush
        s2 = self._scrape()
        accepted = int(s2["accepted"] - s0["accepted"])
        rejected = int(s2["rejected"] - s0["rejected"])
        h0, h2 = s0["hist"], s2["hist"]
        f50, nwin = histogram_quantile(h0.get(FEATURE_HISTOGRAM, {}), h2.get(FEATURE_HISTOGRAM, {}), 0.50)
        f99, _ = histogram_quantile(h0.get(FEATURE_HISTOGRAM, {}), h2.get(FEATURE_HISTOGRAM, {}), 0.99)
        e99, _ = histogram_quantile(h0.get(PUSH_HISTOGRAM, {}), h2.get(PUSH_HISTOGRAM, {}), 0.99)
        sent = [s for d in done for s in d["sos"]]
        lat = [watch.arrivals[dev] - at for dev, _seq, at in sent if dev in watch.arrivals]
        lost = published - accepted - rejected
        offered = devices / load.FRAME_PERIOD_S
        kept_up = (ingested_fps >= KEEP_UP_RATIO * offered and lost == 0 and drain_s is not None
                   and drain_s <= KEEP_UP_DRAIN_S and unacked == 0 and len(lat) == len(sent)
                   and (f99 is None or f99 <= KEEP_UP_FEATURES_S))
        if f99 is not None and f99 > KEEP_UP_FEATURES_S:
            note = (note + "; " if note else "") + "detection lags behind ingest"
        if unacked:
            note = (note + "; " if note else "") + f"{unacked} publishes not acknowledged by the broker"
        result = StepResult(
            devices=devices, offered_fps=round(offered, 1), published_fps=round(published / cfg.step_s, 1),
            ingested_fps=round(ingested_fps, 1), published=published, accepted=accepted, rejected=rejected, lost=lost,
            drain_s=None if drain_s is None else round(drain_s, 2),
            frame_to_features_p50_s=_r(f50), frame_to_features_p99_s=_r(f99), features_windows=nwin,
            sos_sent=len(sent), sos_received=len(lat),
            sos_to_ws_p50_s=_r(float(np.percentile(lat, 50))) if lat else None,
            sos_to_ws_p99_s=_r(float(np.percentile(lat, 99))) if lat else None,
            event_to_push_p99_s=_r(e99), cpu_pct=cpu_pct, backend_rss_mb=round(rss, 1),
            generator_late_p99_ms=round(max(d["late_p99_ms"] for d in done), 1), ws_reconnects=watch.reconnects,
            kept_up=kept_up, note=note)
        return result, encode_us

    # -- all of it --

    def run(self) -> BenchResult:
        cfg = self.config
        load_before = os.getloadavg()
        result = BenchResult(config={**asdict(cfg), "out": str(cfg.out), "backend_env": BACKEND_ENV},
                             machine={"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                                      "python": sys.version.split()[0]}, ceiling={})
        self.say(f"vigil bench ingest: steps {list(cfg.steps)} devices, {cfg.step_s:.0f} s each, {cfg.generators} generator "
                 f"processes, {cfg.shards} backend process(es), {cfg.agencies} agencies; {os.cpu_count()} CPUs, "
                 f"load average {load_before[0]:.2f}")
        try:
            self.broker = infra.PrivateMosquitto(workdir=self.workdir / "mosquitto").start()
            self.say(f"broker: private Mosquitto on {self.broker.url}")
            from backend.db import engine as db
            from backend.app.config import BackendSettings

            self.db_created = True
            db.upgrade(BackendSettings(database_url=self.db_url, secret_key=self.secret))
            started = time.perf_counter()
            wearables = asyncio.run(provision(self.db_url, self.secret, max(cfg.steps), self.agencies))
            self.say(f"database: {self.db_url.rsplit('/', 1)[1]}; {len(wearables):,} devices provisioned in "
                     f"{time.perf_counter() - started:.1f} s")
            self._start_generators(wearables)
            result.ceiling = self.ceiling()
            self._start_backends()
            self.say(f"backend: {len(self.backends)} process(es) " + ", ".join(
                f"pid {p.pid} agencies {owned}" for p, _, owned in self.backends))
            result.machine["audit_outbox_drain_s"] = self.wait_for_audit()
            targets = []
            for _, port, owned in self.backends:
                for agency in owned:
                    url = f"http://127.0.0.1:{port}"
                    targets.append((url, asyncio.run(bench_supervisor(self.db_url, url, agency)), agency))
            watch = SosWatch(targets).start()
            if not watch.connected.wait(20):
                raise RuntimeError("the supervisors' WebSockets did not connect")
            used_sos: set[int] = set()
            encode_us = 60.0
            try:
                for i, devices in enumerate(track(cfg.steps, "load steps")):
                    row, encode_us = self.step(i, devices, watch, wearables, encode_us, used_sos)
                    result.steps.append(row)
                    self.say(format_row(row, header=i == 0))
                    if row.kept_up:
                        result.max_sustained_devices = max(result.max_sustained_devices, devices)
                        result.max_sustained_fps = max(result.max_sustained_fps, row.ingested_fps)
                    elif not cfg.keep_going:
                        result.stopped = (f"stopped after {devices:,} devices: the backend fell behind "
                                          f"(ingested {row.ingested_fps:,.0f} of {row.offered_fps:,.0f} frames/s, "
                                          f"drain {row.drain_s if row.drain_s is not None else '>60'} s, lost {row.lost}, "
                                          f"frame->features p99 {_ms(row.frame_to_features_p99_s)})")
                        self.say(result.stopped)
                        break
                    time.sleep(2.0)
            finally:
                watch.stop()
        finally:
            self.close()
        if result.ceiling.get("delivered_fps") and result.max_sustained_fps:
            result.ratio_to_ceiling = round(result.max_sustained_fps / result.ceiling["delivered_fps"], 3)
        result.machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        return result

    def close(self) -> None:
        for proc, conn in self.generators:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("quit", None))
        for proc, _ in self.generators:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
        self.generators = []
        if self.subscriber is not None:
            self.subscriber[0].terminate()
            self.subscriber = None
        for proc, _, _ in self.backends:
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in self.backends:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.backends = []
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.db_created:
            with contextlib.suppress(Exception):
                drop_database(self.db_url)
            self.db_created = False
        with contextlib.suppress(OSError):
            self.config.out.mkdir(parents=True, exist_ok=True)
            for log in self.workdir.glob("backend*.log"):
                shutil.copy(log, self.config.out / f"ingest{'-' + self.config.tag if self.config.tag else ''}-{log.name}")
        shutil.rmtree(self.workdir, ignore_errors=True)


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


COLUMNS = ("devices", "offered/s", "ingested/s", "lost", "drain s", "feat p50", "feat p99", "SOS p50", "SOS p99",
           "CPU backend", "CPU broker", "CPU gen", "CPU pg", "RSS MB")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def format_row(r: StepResult, header: bool = False) -> str:
    cells = (f"{r.devices:,}", f"{r.offered_fps:,.0f}", f"{r.ingested_fps:,.0f}", f"{r.lost}",
             "-" if r.drain_s is None else f"{r.drain_s:.1f}",
             _ms(r.frame_to_features_p50_s), _ms(r.frame_to_features_p99_s), _ms(r.sos_to_ws_p50_s), _ms(r.sos_to_ws_p99_s),
             f"{r.cpu_pct.get('backend', 0):.0f}%", f"{r.cpu_pct.get('broker', 0):.0f}%",
             f"{r.cpu_pct.get('generators', 0):.0f}%", f"{r.cpu_pct.get('postgres', 0):.0f}%", f"{r.backend_rss_mb:,.0f}")
    widths = (7, 10, 11, 5, 7, 9, 9, 8, 8, 11, 10, 7, 7, 7)
    line = " ".join(c.rjust(w) for c, w in zip(cells, widths))
    if not r.kept_up:
        line += "  <- fell behind" + (f" ({r.note})" if r.note else "")
    elif r.note:
        line += f"  ({r.note})"
    if header:
        return " ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)) + "\n" + line
    return line


def format_table(result: BenchResult) -> str:
    lines = [format_row(r, header=i == 0) for i, r in enumerate(result.steps)]
    c = result.ceiling
    if c:
        lines.append(f"broker ceiling (no backend): {c['delivered_fps']:,.0f} frames/s "
                     f"(= {c['devices_equivalent']:,} devices); CPU {c['cpu_pct']}")
    if result.ratio_to_ceiling is not None:
        lines.append(f"backend sustained {result.max_sustained_fps:,.0f} frames/s = {result.max_sustained_devices:,} devices "
                     f"= {result.ratio_to_ceiling:.2f} x the broker ceiling")
    if result.stopped:
        lines.append(result.stopped)
    return "\n".join(lines)


def write_outputs(result: BenchResult, out: Path, tag: str = "") -> tuple[Path, Path | None]:
    out.mkdir(parents=True, exist_ok=True)
    name = "ingest" + (f"-{tag}" if tag else "")
    path = out / f"{name}.json"
    path.write_text(json.dumps(asdict(result), indent=2))
    png = out / f"{name}.png"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return path, None
    rows = result.steps
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = [r.devices for r in rows]
    for key, label, style in (("frame_to_features_p50_s", "frame → features p50", "o-"),
                              ("frame_to_features_p99_s", "frame → features p99", "o--"),
                              ("sos_to_ws_p50_s", "SOS → WebSocket p50", "s-"),
                              ("sos_to_ws_p99_s", "SOS → WebSocket p99", "s--")):
        pts = [(d, getattr(r, key)) for d, r in zip(x, rows) if getattr(r, key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] * 1000 for p in pts], style, label=label)
    ax.axhline(1000, color="grey", lw=0.8, ls=":")
    ax.axhline(250, color="grey", lw=0.8, ls=":")
    for r in rows:
        if not r.kept_up:
            ax.axvline(r.devices, color="red", lw=0.8, alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("devices at 50 Hz (2.5 frames/s each)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"vigil bench ingest: {result.config['shards']} backend process(es), {result.machine['cpus']} CPUs")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return path, png


def run(config: BenchConfig) -> BenchResult:
    result = Bench(config).run()
    print()
    print(format_table(result))
    path, png = write_outputs(result, config.out, config.tag)
    print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return result
