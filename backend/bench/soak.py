"""``vigil bench soak``: a long shift for the backend.

N simulated wearables publish straight to MQTT (as their gateway would: QoS 1, one frame every
0.4 s of device time, a status frame every 30 s) against a backend running as its own process
(``vigil backend run``). Every ``--sample-s`` the backend's resident memory and its queues are
sampled; at the end the frames the broker acknowledged are compared with the frames the backend
accepted (its /metrics counters), and a report says whether memory stayed flat and what was lost.

Telemetry comes from the simulator's sensor model, pre-encoded in a pool (so that the publisher
spends its time sealing and publishing, not synthesising signals); each frame is sealed with its
device's key, sequence number and time at the moment it is sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import numpy as np

from backend.cli.progress import Bar
from backend.local import infra
from backend.bench.processes import BackendProcess, backend_env, metric_sum
from firmware import frame as F
from gateway import topics
from gateway.sim.signals import SensorModel, to_frame_samples
from gateway.sim.device import SAMPLES_PER_FRAME, SAMPLING_RATE_HZ, STATUS_INTERVAL_S

log = logging.getLogger("vigil.bench.soak")

FRAME_PERIOD_S = SAMPLES_PER_FRAME / SAMPLING_RATE_HZ
# Distinct signal streams in the pool; device d plays stream d % POOL_STREAMS.
POOL_STREAMS = 32
POOL_FRAMES = 150  # one minute of telemetry per stream, then it loops
# Memory counts as flat when the last sample is within this of the first post-warm-up sample.
FLAT_TOLERANCE = 0.10
FLAT_TOLERANCE_BYTES = 32 * 1024 * 1024
FIRST_DEVICE_ID = 0x50000000
# After the publishers stop, the backend gets this long to take what is still in flight.
DRAIN_TIMEOUT_S = 120.0


@dataclasses.dataclass
class Sample:
    t_s: float
    rss_mb: float
    published: int
    accepted: float
    rejected: float
    in_flight: float            # acknowledged by the broker, not yet counted by the backend
    alerts_pending_storage: float
    rows_dropped: float
    publish_lag_s: float        # how far the publishers run behind device time


@dataclasses.dataclass
class SoakReport:
    devices: int
    minutes: float
    samples: list[Sample]
    published: dict[str, int]
    accepted: dict[str, float]
    rejected: dict[str, float]
    lost: int
    rss_first_mb: float
    rss_last_mb: float
    rss_max_mb: float
    flat: bool
    load_avg: tuple[float, float, float]

    def text(self) -> str:
        lines = [f"soak: {self.devices} devices for {self.minutes:g} min "
                 f"(load average at the end {self.load_avg[0]:.1f} / {self.load_avg[1]:.1f} / {self.load_avg[2]:.1f})",
                 f"{'t (s)':>7} {'RSS (MB)':>9} {'published':>10} {'accepted':>10} {'in flight':>9} "
                 f"{'alerts pending':>14} {'rows dropped':>12} {'publish lag (s)':>15}"]
        for s in self.samples:
            lines.append(f"{s.t_s:7.0f} {s.rss_mb:9.1f} {s.published:10d} {s.accepted:10.0f} {s.in_flight:9.0f} "
                         f"{s.alerts_pending_storage:14.0f} {s.rows_dropped:12.0f} {s.publish_lag_s:15.2f}")
        lines.append("frames published (broker acknowledged) vs accepted by the backend: "
                     + ", ".join(f"{k} {self.published.get(k, 0)} / {self.accepted.get(k, 0):.0f}" for k in ("telemetry", "status", "event")))
        lines.append(f"rejected by reason: {dict(self.rejected) or 'none'}")
        lines.append(f"not accepted by the end (lost, or still queued {DRAIN_TIMEOUT_S:.0f} s after publishing stopped): {self.lost} frames")
        growth = self.rss_last_mb - self.rss_first_mb
        lines.append(f"memory after warm-up {self.rss_first_mb:.1f} MB -> end {self.rss_last_mb:.1f} MB "
                     f"({growth:+.1f} MB), max {self.rss_max_mb:.1f} MB: {'flat' if self.flat else 'GROWING'}")
        return "\n".join(lines)


class SignalPool:
    """Pre-encoded telemetry payloads: POOL_STREAMS continuous streams of POOL_FRAMES frames."""

    def __init__(self, streams: int = POOL_STREAMS, frames: int = POOL_FRAMES, seed: int = 7):
        self.payloads: list[list[bytes]] = []
        activities = ("standing", "walking", "sitting_car", "running")
        for s in range(streams):
            model = SensorModel(np.random.default_rng(seed + s), SAMPLING_RATE_HZ, resting_hr=60 + s % 20)
            activity = activities[s % len(activities)]
            stream = []
            for _ in range(frames):
                ppg, accel = to_frame_samples(*model.block(SAMPLES_PER_FRAME, activity))
                stream.append(F.encode_telemetry(SAMPLING_RATE_HZ, ppg, accel, 60))
            self.payloads.append(stream)

    def telemetry(self, device_index: int, k: int) -> bytes:
        stream = self.payloads[device_index % len(self.payloads)]
        return stream[k % len(stream)]


class SoakFleet:
    """The publishing side: every device one telemetry frame per FRAME_PERIOD_S of real time."""

    def __init__(self, keys: dict[int, bytes], mqtt_url: str, agency: str, gateway_id: str = "soak",
                 connections: int = 4):
        self.devices = [(d, F.DeviceKeys(k)) for d, k in keys.items()]
        self.mqtt_url, self.agency, self.gateway_id = mqtt_url, agency, gateway_id
        self.connections = connections
        self.pool = SignalPool()
        self.published = {"telemetry": 0, "status": 0, "event": 0}
        self.seq = {d: 0 for d, _ in self.devices}
        self.lag_s = 0.0
        self.stop = asyncio.Event()

    def _client(self, i: int) -> aiomqtt.Client:
        parts = urlsplit(self.mqtt_url)
        client = aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883,
                                identifier=f"vigil-soak-{self.agency}-{i}", protocol=aiomqtt.ProtocolVersion.V5,
                                max_inflight_messages=1000, timeout=60)
        client.pending_calls_threshold = 1 << 30
        return client

    async def run(self) -> None:
        shards = [self.devices[i::self.connections] for i in range(self.connections)]
        async with asyncio.TaskGroup() as tg:
            for i, shard in enumerate(shards):
                if shard:
                    tg.create_task(self._publish_shard(i, shard), name=f"soak-publisher-{i}")

    async def _publish_shard(self, i: int, shard: list[tuple[int, F.DeviceKeys]]) -> None:
        async with self._client(i) as client:
            start = time.monotonic()
            t0_ms = int(time.time() * 1000)
            frames_per_status = int(STATUS_INTERVAL_S / FRAME_PERIOD_S)
            k = 0
            while not self.stop.is_set():
                due = start + k * FRAME_PERIOD_S
                delay = due - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), delay)
                    if self.stop.is_set():
                        break
                else:
                    self.lag_s = max(self.lag_s * 0.9, -delay)
                time_ms = t0_ms + k * SAMPLES_PER_FRAME * 1000 // SAMPLING_RATE_HZ
                sends = []
                for device_id, keys in shard:
                    if k % frames_per_status == 0:
                        sends.append(self._send(client, device_id, keys, F.TYPE_STATUS, time_ms,
                                                F.encode_status(90, 4100, (1, 0, 0), F.STATUS_WORN | F.STATUS_SKIN_CONTACT, 0)))
                    sends.append(self._send(client, device_id, keys, F.TYPE_TELEMETRY, time_ms,
                                            self.pool.telemetry(device_id - FIRST_DEVICE_ID, k)))
                await asyncio.gather(*sends)
                k += 1

    async def _send(self, client: aiomqtt.Client, device_id: int, keys: F.DeviceKeys, frame_type: int,
                    time_ms: int, payload: bytes) -> None:
        seq = self.seq[device_id]
        self.seq[device_id] = seq + 1
        data = F.seal(keys, frame_type, device_id, seq, time_ms, payload)
        kind = F.TYPE_NAMES[frame_type]
        await client.publish(topics.uplink(self.agency, self.gateway_id, device_id, kind), data, qos=1)
        self.published[kind] += 1  # counted once the broker acknowledged it (QoS 1 PUBACK)


async def seed_devices(database_url: str, secret: str, agency: str, count: int) -> dict[int, bytes]:
    """An agency with ``count`` officers on shift, each wearing a provisioned device."""
    from backend.identity import fleet
    from backend.db import engine as db
    from backend.app.config import BackendSettings

    settings = BackendSettings(database_url=database_url, secret_key=secret)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    keys: dict[int, bytes] = {}
    try:
        await fleet.ensure_agency(engine, agency)
        for i in range(count):
            device_id = FIRST_DEVICE_ID + i
            officer = await fleet.create_officer(engine, agency, f"S-{i:05d}", f"Soak Officer {i}", f"Unit {i % 50}")
            keys[device_id] = (await fleet.provision_device(engine, secret, agency, device_id)).key
            await fleet.assign_device(engine, device_id, officer)
    finally:
        await engine.dispose()
    return keys


def _drop_database(pg_url: str, database: str) -> None:
    import sqlalchemy as sa
    admin = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"drop database if exists {database} with (force)"))
    finally:
        admin.dispose()


def _rss_mb(backend: BackendProcess) -> float:
    return backend.rss_bytes() / 1e6


async def run_soak(devices: int, minutes: float, sample_s: float, workdir: Path, *,
                   mqtt_url: str | None = None, pg_url: str | None = None) -> SoakReport:
    """Run the soak on the machine's broker and database when they answer, else private ones."""
    stack = contextlib.ExitStack()
    with stack:
        mqtt_url = mqtt_url or os.environ.get("VIGIL_MQTT_URL", "mqtt://127.0.0.1:1883")
        if not infra.mqtt_url_reachable(mqtt_url):
            mqtt_url = stack.enter_context(infra.PrivateMosquitto(workdir / "mosquitto")).url
        pg_url = pg_url or "postgresql://postgres@127.0.0.1:5432/postgres"
        if not infra.pg_url_reachable(pg_url):
            pg_url = stack.enter_context(infra.PrivatePostgres()).url
        database = "vigil_soak_" + uuid.uuid4().hex[:10]
        database_url = pg_url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/" + database
        agency = "soak" + uuid.uuid4().hex[:6]
        secret = "soak-" + uuid.uuid4().hex + uuid.uuid4().hex
        print(f"seeding {devices} devices in {database} ...", flush=True)
        keys = await seed_devices(database_url, secret, agency, devices)
        env = backend_env(database_url=database_url, mqtt_url=mqtt_url, agencies=[agency], http_port=infra.free_port(),
                          client_id="vigil-soak-backend-" + agency, secret_key=secret)
        stack.callback(_drop_database, pg_url, database)
        backend = BackendProcess(env, workdir / "backend.log")
        await asyncio.to_thread(backend.start)
        stack.callback(backend.stop)
        fleet = SoakFleet(keys, mqtt_url, agency)
        samples: list[Sample] = []
        started = time.monotonic()

        async def sample() -> Sample:
            m = await asyncio.to_thread(backend.metrics)
            accepted, rejected = metric_sum(m, "vigil_frames_accepted"), metric_sum(m, "vigil_frames_rejected")
            published = sum(fleet.published.values())
            s = Sample(time.monotonic() - started, _rss_mb(backend), published, accepted, rejected,
                       max(0.0, published - accepted - rejected), m.get("vigil_alerts_pending_storage", 0.0),
                       metric_sum(m, "vigil_detection_rows_dropped"), fleet.lag_s)
            samples.append(s)
            print(f"  t={s.t_s:6.0f} s  RSS {s.rss_mb:7.1f} MB  published {s.published:9d}  accepted {s.accepted:9.0f}  "
                  f"in flight {s.in_flight:6.0f}  alerts pending {s.alerts_pending_storage:.0f}  lag {s.publish_lag_s:.2f} s", flush=True)
            return s

        print(f"backend pid {backend.pid} at {backend.url}; publishing for {minutes:g} min ...", flush=True)
        publisher = asyncio.create_task(fleet.run(), name="soak-fleet")
        await sample()
        end, bar = started + minutes * 60, Bar("soak (s)")
        while time.monotonic() < end:
            bar(round(time.monotonic() - started), round(minutes * 60), "publishing")
            await asyncio.sleep(min(sample_s, max(0.0, end - time.monotonic())))
            if publisher.done():
                publisher.result()  # raises the publisher's error
            await sample()
        bar.close()
        fleet.stop.set()
        await publisher
        # let the backend take what is in flight, then the final count
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            m = await asyncio.to_thread(backend.metrics)
            if metric_sum(m, "vigil_frames_accepted") + metric_sum(m, "vigil_frames_rejected") >= sum(fleet.published.values()):
                break
            await asyncio.sleep(0.5)
        final = await sample()
        m = await asyncio.to_thread(backend.metrics)
        accepted = {k: m.get(f"vigil_frames_accepted_total{{kind={k}}}", 0.0) for k in fleet.published}
        rejected = {k.split("reason=")[1].rstrip("}"): v for k, v in m.items()
                    if k.startswith("vigil_frames_rejected_total{") and v}
        lost = int(sum(fleet.published.values()) - sum(accepted.values()))
        warm = [s for s in samples if s.t_s >= min(60.0, minutes * 60 / 3)] or samples
        first, last = warm[0].rss_mb, final.rss_mb
        flat = last - first <= max(FLAT_TOLERANCE * first, FLAT_TOLERANCE_BYTES / 1e6)
        report = SoakReport(devices, minutes, samples, dict(fleet.published), accepted, rejected, lost,
                            first, last, max(s.rss_mb for s in samples), flat, os.getloadavg())
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "soak.json").write_text(json.dumps(dataclasses.asdict(report), indent=1))
        return report


def main(devices: int, minutes: float, sample_s: float, out: Path) -> int:
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(run_soak(devices, minutes, sample_s, out))
    print(report.text())
    print(f"report written to {out / 'soak.json'}; backend log {out / 'backend.log'}")
    return 0 if report.lost == 0 and report.flat and not report.rejected else 1
