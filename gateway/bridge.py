"""The gateway: provisioned wearables over BLE in, MQTT out, with a durable queue between.

    stop = asyncio.Event()
    await Gateway(GatewaySettings.load()).run(stop)   # returns after stop.set()

Inside ``run`` one TaskGroup holds named, supervised tasks: the provisioned-device refresh, the
BLE discovery scan, the MQTT bridge, and one link per provisioned device. A task that fails
unexpectedly is logged and restarted; nothing a wearable or the broker does ends the gateway.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from gateway.config import GatewaySettings
from gateway.exceptions import QueueError
from gateway.link import DeviceLink
from gateway.metrics import GatewayMetrics
from gateway.provisioning import ProvisionedDevices
from gateway.publisher import MqttBridge
from gateway.scanner import Discovery
from gateway.store import FrameQueue, IncomingFrame

log = logging.getLogger("vigil.gateway")

# A supervised task that crashed is restarted after this long (a bug, not a radio condition).
RESTART_DELAY_S = 1.0


class Gateway:
    def __init__(self, settings: GatewaySettings, *, rng: random.Random | None = None,
                 wall_clock: Callable[[], float] = time.time):
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.links: dict[int, DeviceLink] = {}
        self.metrics_port: int | None = None
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self.store = FrameQueue(settings.queue_path, settings.queue_max_frames)
        self._pending: list[IncomingFrame] = []
        self._flush_scheduled = False
        self._link_tasks: dict[int, asyncio.Task] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stop: asyncio.Event | None = None
        self.mqtt: MqttBridge | None = None
        self.discovery: Discovery | None = None
        self.provisioned: ProvisionedDevices | None = None

    # ---- frames in ------------------------------------------------------------------------------

    def _accept(self, device_id: int, kind: str, seq: int, data: bytes) -> None:
        """A valid-looking frame from a link: into the durable queue before anything else."""
        lat = lon = None
        if kind == "event" and self.settings.location is not None:
            lat, lon = self.settings.location
        self._pending.append(IncomingFrame(kind, device_id, seq, data, self._wall_clock(), lat, lon))
        self.metrics.frames_in.labels(str(device_id), kind).inc()
        if not self._flush_scheduled:
            # Frames arriving in the same loop iteration share one SQLite transaction.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        frames, self._pending = self._pending, []
        try:
            dropped = self.store.put_many(frames)
        except QueueError:
            log.exception("frame queue write failed; keeping %d frames in memory and retrying", len(frames))
            self._pending = frames + self._pending
            asyncio.get_running_loop().call_later(RESTART_DELAY_S, self._flush)
            return
        for kind, n in dropped.items():
            self.metrics.queue_dropped.labels(kind).inc(n)
            log.warning("frame queue full (%d): dropped %d oldest %s frames", self.settings.queue_max_frames, n, kind)
        self.metrics.queue_depth.set(self.store.depth)
        if self.mqtt is not None:
            self.mqtt.wake(events=any(f.kind == "event" for f in frames))

    # ---- devices ----------------------------------------------------------------------------------

    def _provisioned_changed(self, ids: set[int]) -> None:
        self.metrics.provisioned.set(len(ids))
        if self.discovery is not None:
            self.discovery.forget_unknown()
        for device_id in sorted(ids - set(self.links)):
            link = DeviceLink(device_id, self.discovery, self._accept, self.metrics,
                              rng=random.Random(self._rng.random()))
            self.links[device_id] = link
            self._link_tasks[device_id] = self._tg.create_task(
                self._supervise(link.name, link.run), name=f"link-{link.name}")
        for device_id in sorted(set(self.links) - ids):
            log.info("VG-%08X: no longer provisioned here; disconnecting", device_id)
            self._link_tasks.pop(device_id).cancel()
            del self.links[device_id]

    async def _supervise(self, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                await run(stop)
                return
            except Exception:
                log.exception("%s failed unexpectedly; restarting in %.0f s", name, RESTART_DELAY_S)
                try:
                    await asyncio.wait_for(stop.wait(), RESTART_DELAY_S)
                except TimeoutError:
                    pass

    # ---- running -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set. Signal handlers, if any, only set ``stop``."""
        s = self.settings
        self._stop = stop
        self.store.open()
        self.metrics.queue_depth.set(self.store.depth)
        server = None
        if s.metrics_port is not None:
            server, self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port)
        log.info("gateway %s/%s starting: MQTT %s, queue %s", s.agency, s.gateway_id, s.mqtt_url, s.queue_path)
        try:
            self.provisioned = ProvisionedDevices(s, self.store, self._provisioned_changed)
            self.discovery = Discovery(lambda device_id: device_id in self.provisioned, self.metrics, s.adapter)
            self.mqtt = MqttBridge(s, self.store, self.metrics, lambda: self.links,
                                   rng=random.Random(self._rng.random()))
            await self.mqtt.check_presence()  # GatewayIdInUse: another gateway holds this id
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._supervise("provisioning", self.provisioned.run), name="provisioning")
                tg.create_task(self._supervise("discovery", self.discovery.run), name="ble-discovery")
                tg.create_task(self._supervise("mqtt", self.mqtt.run), name="mqtt")
                await stop.wait()
        finally:
            self._tg = None
            self._flush()
            self.store.close()
            if server is not None:
                server.shutdown()
                server.server_close()
            log.info("gateway %s/%s stopped", s.agency, s.gateway_id)
