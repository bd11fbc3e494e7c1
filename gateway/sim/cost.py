"""What one simulated wearable costs on CPython: N wearables running the firmware (gateway/sim/
device.py) for S seconds of device time, as fast as the CPU goes, their notifications taken by a
radio that accepts everything (no gateway, no D-Bus: those are measured by `vigil bench gateway`).
Prints frames per device-second, CPU per device-second, and how many devices one core keeps in
real time.

    python -m gateway.sim.cost --devices 20 --seconds 60 [--scenario patrol] [--live]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time

from firmware import profile
from gateway.sim import scenarios


class NullRadio:
    """Connected, subscribed, takes every notification at once."""

    def __init__(self):
        self.on_write = None
        self.on_state_change = None
        self.in_range = True
        self.connected = True
        self.frames = 0

    def is_notifying(self, uuid: str) -> bool:
        return True

    async def notify(self, uuid: str, value: bytes) -> bool:
        self.frames += 1
        return True

    async def link_loss(self) -> None:
        pass


async def measure_live(devices: int, seconds: float, scenario: str, speed: float = 1.0) -> dict:
    """The wearables as a fleet runs them: each on its own task, kept with the simulator's clock."""
    from gateway.sim.device import FirmwareWearable
    from gateway.sim.clock import SimClock

    clock = SimClock(speed)
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="vigil-cost-") as tmp:
        wearables = []
        for i in range(devices):
            w = FirmwareWearable(0x00C05700 + i, hashlib.sha256(b"cost/%d" % i).digest(), scenario=scenario,
                                 state_dir=tmp, seed=i, clock=clock)
            radio = NullRadio()
            w.attach(radio)
            wearables.append((w, radio))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        tasks = [asyncio.get_running_loop().create_task(w.run(stop)) for w, _ in wearables]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        frames = sum(r.frames for _, r in wearables)
    device_s = devices * wall * speed
    return {"devices": devices, "device_seconds": device_s, "frames": frames, "frames_per_device_s": frames / device_s,
            "samples_per_device_s": sum(w.firmware.sampler.samples for w, _ in wearables) / device_s,
            "cpu_s": cpu, "wall_s": wall, "cpu_ms_per_device_s": 1000 * cpu / device_s,
            "realtime_devices_per_core": device_s / cpu if cpu else None}


async def measure(devices: int, seconds: float, scenario: str, step_ms: int = 20) -> dict:
    """The firmware alone: device time advanced as fast as the CPU goes."""
    from gateway.sim.device import FirmwareWearable

    with tempfile.TemporaryDirectory(prefix="vigil-cost-") as tmp:
        wearables = []
        for i in range(devices):
            key = hashlib.sha256(b"cost/%d" % i).digest()
            w = FirmwareWearable(0x00C05700 + i, key, scenario=scenario, state_dir=tmp, seed=i)
            radio = NullRadio()
            w.attach(radio)
            w.boot()
            w._on_radio_state()
            wearables.append((w, radio))
        senders = [asyncio.get_running_loop().create_task(w._send()) for w, _ in wearables]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for now in range(0, int(seconds * 1000) + 1, step_ms):
            for w, _ in wearables:
                w.loop.advance(now)
            await asyncio.sleep(0)  # the radio senders run
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        for task in senders:
            task.cancel()
        frames = sum(r.frames for _, r in wearables)
        samples = sum(w.firmware.sampler.samples for w, _ in wearables)
    device_s = devices * seconds
    return {"devices": devices, "device_seconds": device_s, "frames": frames, "frames_per_device_s": frames / device_s,
            "samples_per_device_s": samples / device_s, "cpu_s": cpu, "wall_s": wall,
            "cpu_ms_per_device_s": 1000 * cpu / device_s, "realtime_devices_per_core": device_s / cpu if cpu else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.sim.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0, help="device time to simulate")
    p.add_argument("--scenario", default="patrol", choices=list(scenarios.SCENARIOS))
    p.add_argument("--live", action="store_true",
                   help="run them as a fleet does, on the wall clock for --seconds (includes the per-device task "
                        "that keeps each firmware's clock with the simulator's)")
    args = p.parse_args(argv)
    if args.live:
        r = asyncio.run(measure_live(args.devices, args.seconds, args.scenario))
    else:
        r = asyncio.run(measure(args.devices, args.seconds, args.scenario))
    how = "live, wall clock" if args.live else "device time as fast as the CPU goes"
    print(f"{r['devices']} firmware wearables x {args.seconds:.0f} s ({args.scenario}, {how}), CPython, one process:")
    print(f"  frames over the radio   {r['frames']}  ({r['frames_per_device_s']:.2f} per device-second)")
    print(f"  samples from the FIFOs  {r['samples_per_device_s']:.1f} per device-second")
    print(f"  CPU                     {r['cpu_s']:.2f} s  ({r['cpu_ms_per_device_s']:.2f} ms per device-second)")
    print(f"  real time on one core   ~{r['realtime_devices_per_core']:.0f} devices (firmware only; gateway, D-Bus "
          f"and broker not included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
