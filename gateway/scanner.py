"""Discovery: one long-running bleak scan for the Vigil service UUID.

Advertisements of provisioned wearables wake the link waiting for that device; anything else
that advertises the Vigil service (an unknown or not-yet-provisioned wearable, a foreign name) is
logged once and counted, never connected to.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from firmware import profile
from gateway.metrics import GatewayMetrics

log = logging.getLogger("vigil.gateway.scanner")

# A scan that fails (adapter gone, bluetoothd restarting) is retried after this long.
SCAN_RETRY_S = 2.0


class Sighting:
    __slots__ = ("device", "rssi", "at")

    def __init__(self, device: BLEDevice, rssi: int, at: float):
        self.device = device
        self.rssi = rssi
        self.at = at


class Discovery:
    def __init__(self, is_provisioned: Callable[[int], bool], metrics: GatewayMetrics,
                 adapter: str | None = None, clock: Callable[[], float] = time.monotonic):
        self._is_provisioned = is_provisioned
        self._metrics = metrics
        self._adapter = adapter
        self._clock = clock
        self._seen: dict[int, Sighting] = {}
        self._waiters: dict[int, asyncio.Event] = {}
        self._unknown_logged: set[str] = set()

    def last_sighting(self, device_id: int) -> Sighting | None:
        return self._seen.get(device_id)

    async def wait_for(self, device_id: int, newer_than: float) -> Sighting:
        """The device's next advertisement seen after ``newer_than`` (a ``clock()`` value)."""
        while True:
            sighting = self._seen.get(device_id)
            if sighting is not None and sighting.at > newer_than:
                return sighting
            event = self._waiters.setdefault(device_id, asyncio.Event())
            event.clear()
            await event.wait()

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        name = adv.local_name or device.name
        device_id = profile.parse_device_name(name)
        if device_id is None or not self._is_provisioned(device_id):
            self._metrics.unknown_devices.inc()
            key = name or device.address
            if key not in self._unknown_logged:
                self._unknown_logged.add(key)
                log.warning("%s (%s): advertises the Vigil service but is not provisioned for this"
                            " gateway; ignored", key, device.address)
            return
        self._seen[device_id] = Sighting(device, adv.rssi, self._clock())
        event = self._waiters.get(device_id)
        if event is not None:
            event.set()

    def forget_unknown(self) -> None:
        """After the provisioned list changed, log unknown devices again."""
        self._unknown_logged.clear()

    async def run(self, stop: asyncio.Event) -> None:
        failing = False
        bluez = {"adapter": self._adapter} if self._adapter else {}
        while not stop.is_set():
            try:
                async with BleakScanner(self._on_advertisement, service_uuids=[profile.VIGIL_SERVICE_UUID],
                                        bluez=bluez):
                    if failing:
                        log.info("scanning again")
                        failing = False
                    await stop.wait()
            except (BleakError, OSError, EOFError) as exc:
                if not failing:
                    log.error("scan failed: %s; retrying every %.0f s", exc, SCAN_RETRY_S)
                    failing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SCAN_RETRY_S)
