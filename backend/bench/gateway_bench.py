"""``vigil bench gateway``: what one gateway sustains, and how fast it relinks.

The simulated fleet and the virtual BlueZ run in this process; the gateway runs as its own
process (``vigil gateway run``), exactly as deployed, so its CPU use is measured alone from
/proc. For each step, N wearables stream at 50 Hz (times ``speed``) for a window; reported are
frames/s in and out of the gateway, its CPU share of one core, the queue depth at the end
(a growing queue means it did not keep up), and the equivalent number of 50 Hz devices.
CPU is per process as a share of one core: the gateway, the simulator (fleet + virtual BlueZ
service) and the private dbus-daemon (which stands in for bluetoothd's D-Bus traffic).
Then link losses are injected one device at a time and the time until the device's
notifications are subscribed again is measured, as is the SOS -> MQTT latency: from the moment
the wearable's firmware handed the SOS event to its radio (after the officer's 2 s hold) to the
frame with that sequence number on MQTT. Every wearable runs the firmware's own code
(gateway/sim/device.py); the simulator's CPU is mostly theirs.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import httpx

from firmware import frame, profile
from gateway import topics
from gateway.sim.fleet import SimulatedFleet
from gateway.sim.device import SAMPLES_PER_FRAME, SAMPLING_RATE_HZ
from backend.cli.progress import track

FRAMES_PER_DEVICE_S = SAMPLING_RATE_HZ / SAMPLES_PER_FRAME  # 2.5 telemetry frames/s at 50 Hz
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


async def _metric(http: httpx.AsyncClient, url: str, name: str) -> float:
    text = (await http.get(url)).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _key(device_id: int) -> bytes:
    return device_id.to_bytes(4, "big") * 8


async def _wait(predicate, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def _step(mqtt_url: str, n_devices: int, seconds: float, speed: float, link_losses: int) -> dict:
    from backend.local.infra import free_port

    agency = f"bench{os.getpid()}n{n_devices}"
    ids = [0x00BE0000 + i for i in range(1, n_devices + 1)]
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    sos_latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        async with SimulatedFleet({d: _key(d) for d in ids}, scenarios="patrol", speed=speed) as fleet:
            env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": fleet.bluez.bus_address,
                   "VIGIL_GATEWAY_AGENCY": agency, "VIGIL_GATEWAY_GATEWAY_ID": "bench",
                   "VIGIL_GATEWAY_MQTT_URL": mqtt_url, "VIGIL_GATEWAY_DEVICES": ",".join(map(str, ids)),
                   "VIGIL_GATEWAY_QUEUE_PATH": str(Path(tmp) / "queue.sqlite3"),
                   "VIGIL_GATEWAY_METRICS_PORT": str(port)}
            proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "gateway", "run", "--log-level", "ERROR"],
                                    env=env, stdout=subprocess.DEVNULL)
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    await _wait(lambda: all(r.is_notifying(profile.TELEMETRY_CHAR_UUID)
                                            for r in fleet.radios.values()), 60)
                    await asyncio.sleep(2.0)  # let the initial backlog drain before measuring
                    in0 = await _metric(http, url, "vigil_gateway_frames_in_total")
                    out0 = await _metric(http, url, "vigil_gateway_frames_out_total")
                    bus_pid = fleet.bluez.daemon_pid
                    cpu0, t0, sim_cpu0 = _cpu_seconds(proc.pid), time.monotonic(), time.process_time()
                    bus0 = _cpu_seconds(bus_pid)
                    await asyncio.sleep(seconds)
                    in1 = await _metric(http, url, "vigil_gateway_frames_in_total")
                    out1 = await _metric(http, url, "vigil_gateway_frames_out_total")
                    cpu1, t1, sim_cpu1 = _cpu_seconds(proc.pid), time.monotonic(), time.process_time()
                    bus1 = _cpu_seconds(bus_pid)
                    depth = await _metric(http, url, "vigil_gateway_queue_depth")
                    relink = await _link_losses(fleet, ids, link_losses)
                    sos_latencies = await _sos_latency(fleet, mqtt_url, agency, ids[: min(5, len(ids))])
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
    wall = t1 - t0
    return {"devices": n_devices, "speed": speed, "in_fps": (in1 - in0) / wall, "out_fps": (out1 - out0) / wall,
            "gateway_cpu": (cpu1 - cpu0) / wall, "sim_cpu": (sim_cpu1 - sim_cpu0) / wall,
            "bus_cpu": (bus1 - bus0) / wall, "queue_depth": depth,
            "relink_s": relink, "sos_s": sos_latencies}


async def _link_losses(fleet: SimulatedFleet, ids: list[int], count: int) -> list[float]:
    times = []
    for i in range(count):
        radio = fleet.radios[ids[i % len(ids)]]
        start = time.monotonic()
        await radio.link_loss()
        await radio.wait_state(lambda d: d.is_notifying(profile.TELEMETRY_CHAR_UUID), 30)
        times.append(time.monotonic() - start)
        await asyncio.sleep(0.2)
    return times


async def _sos_latency(fleet: SimulatedFleet, mqtt_url: str, agency: str, ids: list[int]) -> list[float]:
    from urllib.parse import urlsplit

    parts = urlsplit(mqtt_url)
    latencies = []
    async with aiomqtt.Client(parts.hostname, parts.port or 1883) as client:
        await client.subscribe(f"vigil/{agency}/gw/+/up/+/event", qos=1)
        for device_id in ids:
            press = fleet.wearables[device_id].press_sos()
            async with asyncio.timeout(15):
                async for msg in client.messages:
                    if press.seq is not None and topics.parse(str(msg.topic)).device_id == device_id \
                            and frame.parse_header(bytes(msg.payload)).seq == press.seq:
                        latencies.append(time.monotonic() - press.notified)
                        break
    return latencies


async def run_benchmark(mqtt_url: str | None, device_counts: list[int], seconds: float, link_losses: int,
                        speed: float = 1.0) -> list[dict]:
    from backend.local.infra import PrivateMosquitto

    broker = None
    if not mqtt_url:
        broker = PrivateMosquitto().start()
        mqtt_url = broker.url
    results = []
    try:
        print(f"broker {mqtt_url}; {os.cpu_count()} CPUs; window {seconds:.0f} s per step; speed x{speed:g}")
        print("devices  in fr/s  out fr/s  gateway CPU  sim CPU  dbus CPU  queue  =50Hz devices"
              "  relink med/max ms  SOS->MQTT med/max ms")
        for n in track(device_counts, "device counts"):
            r = await _step(mqtt_url, n, seconds, speed, link_losses)
            results.append(r)
            rel, sos = r["relink_s"], r["sos_s"]
            print(f"{n:7d}  {r['in_fps']:7.1f}  {r['out_fps']:8.1f}  {100 * r['gateway_cpu']:10.1f}%  "
                  f"{100 * r['sim_cpu']:6.1f}%  {100 * r['bus_cpu']:7.1f}%  {r['queue_depth']:5.0f}  {r['out_fps'] / FRAMES_PER_DEVICE_S:13.0f}  "
                  f"{1000 * statistics.median(rel):8.0f} / {1000 * max(rel):4.0f}     "
                  f"{1000 * statistics.median(sos):8.1f} / {1000 * max(sos):5.1f}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    return results
