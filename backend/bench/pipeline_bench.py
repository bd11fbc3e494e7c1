"""``vigil bench pipeline``: the backend's own CPU per frame, with no broker and no database.

``vigil bench ingest`` measures the node: broker, load generators, PostgreSQL and the backend
share two cores, and on a shared machine its figures move with the neighbours' load. This bench
measures only the backend's code, in one process, so that a change to it can be compared with
the one before: it replays pre-encoded MQTT 5 PUBLISH packets of ``devices`` simulated wearables
through the uplink subscriber's parser, ingest (verification, bulk decode, bookkeeping) and
detection (windows, model rounds, alerts, feature and raw rows, the raw rows' binary COPY
encoding) on simulated time: a frame per device every 0.4 s, a detection tick every 0.25 s, as
fast as the CPU goes. Left out: the sockets, the database round trips (batches go to a sink),
and asyncpg's encoding of the feature rows.

It prints process CPU per frame (ingest, detection, all), per device-window, the share of one
core that ``devices`` wearables would take in real time, and what the cyclic garbage collector
took (``--gc default`` leaves CPython's settings; ``tuned`` applies the backend's
:func:`backend.app.runtime.settle_heap`, as ``vigil backend run`` does). Result file:
``artifacts/bench/pipeline[-tag].json``.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.bench import load
from backend.cli.progress import track
from backend.app.config import BackendSettings
from backend.detection.service import DetectionService
from backend.ingest.mqtt import UplinkSubscriber, encode_utf8, encode_varint
from backend.ingest.registry import DeviceRecord
from backend.ingest.service import IngestService
from backend.app.runtime import Runtime, settle_heap
from firmware import frame as F
from gateway import topics

AGENCY = "benchpipe"
GATEWAY = "bench-g0"
TICK_S = 0.25
READ_BYTES = 1 << 16  # what one socket read of the real subscriber hands over at most
T0 = 1_800_000_000.0  # simulated wall time of the first frame


@dataclass
class PipelineResult:
    devices: int
    simulated_s: float
    frames: int
    windows: int
    ingest_cpu_s: float
    detection_cpu_s: float
    gc_mode: str
    gc_s: float
    gc_collections: list[int]
    gc_seconds_by_generation: list[float]

    @property
    def us_per_frame(self) -> float:
        return (self.ingest_cpu_s + self.detection_cpu_s) / self.frames * 1e6

    def summary(self) -> dict:
        return {**asdict(self), "us_per_frame": self.us_per_frame,
                "ingest_us_per_frame": self.ingest_cpu_s / self.frames * 1e6,
                "detection_ms_per_window": self.detection_cpu_s / max(1, self.windows) * 1e3,
                "core_share_at_real_time": (self.ingest_cpu_s + self.detection_cpu_s) / self.simulated_s}


def _publish(topic: str, payload: bytes, packet_id: int) -> bytes:
    # MQTT 5 PUBLISH, QoS 1, no properties: what the broker delivers to the backend
    body = encode_utf8(topic) + packet_id.to_bytes(2, "big") + b"\x00" + payload
    return b"\x32" + encode_varint(len(body)) + body


def _reads(devices: int, keys: list[F.DeviceKeys], slots: int) -> list[list[bytes]]:
    """Per 0.4 s slot, the socket reads that carry every device's frame of that slot."""
    loops = load.signal_payloads()
    out = []
    for s in range(slots):
        stream = b"".join(
            _publish(topics.uplink(AGENCY, GATEWAY, 1000 + i, "telemetry"),
                     F.seal(keys[i], F.TYPE_TELEMETRY, 1000 + i, s + 1, int((T0 + s * load.FRAME_PERIOD_S) * 1000),
                            loops[i % load.SIGNAL_LOOPS][(s + 7 * i) % load.LOOP_FRAMES]),
                     (s * devices + i) % 65535 + 1)
            for i in range(devices))
        out.append([stream[k:k + READ_BYTES] for k in range(0, len(stream), READ_BYTES)])
    return out


class _GcClock:
    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            g = info["generation"]
            self.count[g] += 1
            self.seconds[g] += time.perf_counter() - self._started


async def _run(devices: int, simulated_s: float, gc_mode: str, progress) -> PipelineResult:
    settings = BackendSettings(database_url="postgresql+asyncpg://vigil@127.0.0.1:1/none", mqtt_url="mqtt://127.0.0.1:1",
                               agencies=[AGENCY], detection_tick_s=TICK_S)
    runtime = Runtime(settings)  # nothing connects: the engine is lazy and no loop is started
    now = [T0]

    async def sink(batch, data) -> None:
        return None

    detection = DetectionService(settings, runtime.engine, runtime.registry, runtime.alerts, runtime.hub, runtime.metrics,
                                 status=runtime.status, wall=lambda: now[0], store_copy=sink)
    ingest = IngestService(settings, runtime.registry, runtime.alerts, runtime.metrics, detection)
    keys = [F.DeviceKeys(os.urandom(F.KEY_LEN)) for _ in range(devices)]
    for i, k in enumerate(keys):
        runtime.registry.devices[1000 + i] = DeviceRecord(1000 + i, AGENCY, k, "active", "chest", 5000 + i, f"Officer {i}", None)
    slots = int(simulated_s / load.FRAME_PERIOD_S)
    progress(f"encoding {slots * devices:,} frames of {devices:,} devices ({slots * load.FRAME_PERIOD_S:.0f} s simulated)")
    reads = _reads(devices, keys, slots)
    parser = UplinkSubscriber("mqtt://127.0.0.1:1", "vigil-bench-pipeline")  # its parser only (feed); never connects
    clock = _GcClock()
    if gc_mode == "tuned":
        settle_heap()
    gc.callbacks.append(clock)
    frames = windows = 0
    ingest_cpu = detection_cpu = 0.0
    tick = T0
    try:
        for s, chunks in enumerate(track(reads, "simulated frame slots", total=slots)):
            now[0] = T0 + s * load.FRAME_PERIOD_S + 0.05  # the frames of the slot arrive 50 ms after their time
            c0 = time.process_time()
            for chunk in chunks:
                batch = parser.feed(chunk)
                if batch:
                    frames += sum(f is not None for f in await ingest.handle_batch(batch))
            c1 = time.process_time()
            while tick + TICK_S <= now[0]:
                tick += TICK_S
                while n := await detection.run_round(now[0]):
                    windows += n
                await detection.features.flush()
                await detection.raw.flush()
            c2 = time.process_time()
            ingest_cpu += c1 - c0
            detection_cpu += c2 - c1
            if s and s % 50 == 0:
                progress(f"  {s * load.FRAME_PERIOD_S:4.0f} s simulated: {frames:,} frames, {windows:,} windows, "
                         f"{(ingest_cpu + detection_cpu) / frames * 1e6:.1f} us/frame so far")
    finally:
        gc.callbacks.remove(clock)
        await runtime.engine.dispose()
    return PipelineResult(devices, slots * load.FRAME_PERIOD_S, frames, windows, ingest_cpu, detection_cpu, gc_mode,
                          sum(clock.seconds), clock.count, clock.seconds)


def run(devices: int, simulated_s: float, gc_mode: str, out: Path, tag: str = "") -> PipelineResult:
    print(f"vigil bench pipeline: {devices:,} devices, {simulated_s:.0f} s simulated, gc {gc_mode}; one process, "
          f"no broker, no database; CPU time of this process", flush=True)
    result = asyncio.run(_run(devices, simulated_s, gc_mode, lambda line: print(line, flush=True)))
    r = result.summary()
    print(f"frames {result.frames:,}, device-windows {result.windows:,}")
    print(f"CPU per frame: {r['us_per_frame']:.1f} us (ingest {r['ingest_us_per_frame']:.1f} us; "
          f"detection {r['detection_ms_per_window']:.3f} ms per device-window)")
    print(f"{devices:,} devices in real time would take {100 * r['core_share_at_real_time']:.0f} % of one core")
    print(f"garbage collector: {result.gc_s:.2f} s of {result.ingest_cpu_s + result.detection_cpu_s:.2f} s "
          f"(collections by generation {result.gc_collections}, seconds {[round(x, 3) for x in result.gc_seconds_by_generation]})")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pipeline{'-' + tag if tag else ''}.json"
    path.write_text(json.dumps(r, indent=2))
    print(f"results: {path}")
    return result
