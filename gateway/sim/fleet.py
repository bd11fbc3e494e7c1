"""A simulated fleet: a virtual BlueZ with N simulated wearables behind it, each running the
firmware's own code (gateway/sim/device.py).

    async with SimulatedFleet({device_id: key, ...}, scenarios="sos", speed=1.0) as fleet:
        ...  # a Gateway in the same event loop finds them through bleak
        fleet.wearables[device_id].press_sos()

Start it before the gateway's first use of bleak in that event loop (it sets
DBUS_SYSTEM_BUS_ADDRESS; bleak's BlueZ manager lives per loop).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

from firmware import profile
from gateway.sim.bluez import VirtualBlueZ, VirtualDevice, address_for_device_id
from gateway.sim.clock import SimClock
from gateway.sim.device import FirmwareWearable, vigil_gatt

# Every simulated wearable runs firmware/app.py (gateway/sim/device.py); there is no other device.
DEVICES = ("firmware",)
DEFAULT_DEVICE = "firmware"


def make_wearable(device: str, device_id: int, key: bytes, **options) -> FirmwareWearable:
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    return FirmwareWearable(device_id, key, **options)


class SimulatedFleet:
    def __init__(self, devices: Mapping[int, bytes], *, scenarios: str | Sequence[str] = "patrol",
                 speed: float = 1.0, seed: int = 0, bluez: VirtualBlueZ | None = None,
                 start: bool = True, state_dir=None, device: str = DEFAULT_DEVICE, **wearable_options):
        """``devices``: device id -> 32-byte key. ``scenarios``: one name for all, or one per
        device in order. ``start=False`` adds the devices but lets the test start them with
        :meth:`start_wearable`. ``state_dir``: where each device keeps its configuration file
        (sequence numbers survive a restart of the simulator; default: a temporary directory).
        ``device``: "firmware" (the only device). Further keyword arguments go to every wearable."""
        ids = list(devices)
        names = [scenarios] * len(ids) if isinstance(scenarios, str) else list(scenarios)
        if len(names) != len(ids):
            raise ValueError("give one scenario for all devices or one per device")
        self.clock = SimClock(speed)
        self.bluez = bluez or VirtualBlueZ(seed=seed)
        self._own_bluez = bluez is None
        self._autostart = start
        self.wearables: dict[int, FirmwareWearable] = {
            device_id: make_wearable(device, device_id, devices[device_id], scenario=name, clock=self.clock,
                                     seed=seed * 7919 + device_id, state_dir=state_dir, **wearable_options)
            for device_id, name in zip(ids, names)}
        self.radios: dict[int, VirtualDevice] = {}
        self._stop = asyncio.Event()
        self._tasks: dict[int, asyncio.Task] = {}

    async def __aenter__(self) -> "SimulatedFleet":
        if self._own_bluez:
            await self.bluez.start()
        for device_id, wearable in self.wearables.items():
            radio = self.bluez.add_device(wearable.address, wearable.name, [profile.VIGIL_SERVICE_UUID], vigil_gatt())
            wearable.attach(radio)
            self.radios[device_id] = radio
            if self._autostart:
                self.start_wearable(device_id)
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_bluez:
            await self.bluez.stop()

    def start_wearable(self, device_id: int) -> None:
        if device_id not in self._tasks:
            wearable = self.wearables[device_id]
            self._tasks[device_id] = asyncio.get_running_loop().create_task(
                wearable.run(self._stop), name=f"wearable-{wearable.name}")

    def add_stranger(self, device_id: int, name: str | None = None) -> VirtualDevice:
        """A device that advertises the Vigil service but is not in the fleet (not provisioned)."""
        return self.bluez.add_device(address_for_device_id(device_id), name or profile.device_name(device_id),
                                     [profile.VIGIL_SERVICE_UUID], vigil_gatt())

    async def wait(self, predicate, timeout: float, poll_s: float = 0.05) -> None:
        """Wait until ``predicate()`` is true; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(poll_s)
