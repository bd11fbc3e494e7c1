"""One supervised BLE link per provisioned wearable (bleak over BlueZ).

The link waits for the device's advertisement, connects, subscribes to events, telemetry and
status notifications, hands every notification's bytes to the gateway unchanged, writes downlink
commands to the control characteristic, and after a loss reconnects with capped full-jitter
backoff. It logs "lost" once and "recovered" once, retries at DEBUG level.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bleak import BleakClient
from bleak.exc import BleakError

from firmware import frame, profile
from gateway.backoff import retry_delay
from gateway.exceptions import DownlinkError, LinkError
from gateway.metrics import GatewayMetrics
from gateway.scanner import Discovery

log = logging.getLogger("vigil.gateway.link")

# Connect + service discovery budget; a slow device that needs longer is retried with backoff.
CONNECT_TIMEOUT_S = 10.0
# Reconnect right after a working link dropped: the device is usually back within a second.
RELINK_BASE_S = 0.05
# Failed connection attempts back off from here...
RETRY_BASE_S = 0.25
# ...up to this cap: a device in range again is picked up within seconds, and a dead one does
# not keep the radio busy.
RETRY_CAP_S = 8.0
# A refused or timed-out connect (device busy, out of range) backs off faster than a D-Bus error.
SLOW_ERROR_BASE_S = 1.0
# A downlink write that takes longer than this is reported failed (the device may be gone).
WRITE_TIMEOUT_S = 5.0
# Notifications subscribed in this order: events first, so an SOS is never behind telemetry.
NOTIFY_CHARACTERISTICS = (profile.EVENT_CHAR_UUID, profile.TELEMETRY_CHAR_UUID, profile.STATUS_CHAR_UUID)

FrameSink = Callable[[int, str, int, bytes], None]  # device_id, kind, seq, frame bytes


def reconnect_delay(attempt: int, error: BaseException | None, jitter: float) -> float:
    """Seconds to wait before connection attempt ``attempt`` (1 = first retry), full jitter.

    Pure: ``jitter`` is a uniform random number in [0, 1) supplied by the caller. ``error`` is
    why the previous attempt ended: None for a link that worked and then dropped (retry almost at
    once), a timeout for a slow or absent device (back off from a higher base), anything else
    from the normal base. The ceiling doubles per attempt up to RETRY_CAP_S
    (:func:`gateway.backoff.retry_delay`).

    >>> reconnect_delay(1, None, 0.5)
    0.025
    >>> reconnect_delay(20, TimeoutError(), 0.999) <= RETRY_CAP_S
    True
    """
    if error is None:
        base = RELINK_BASE_S
    elif isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        base = SLOW_ERROR_BASE_S
    else:
        base = RETRY_BASE_S
    return retry_delay(attempt, base, RETRY_CAP_S, jitter)


@dataclass(eq=False)
class DownlinkCommand:
    """A command frame for one device, as received from MQTT, waiting to be written."""

    device_id: int
    payload: bytes
    seq: int | None
    received_at: float
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def pending(self) -> bool:
        return not self.done.done()


class DeviceLink:
    """The supervised connection to one wearable."""

    def __init__(self, device_id: int, discovery: Discovery, sink: FrameSink, metrics: GatewayMetrics,
                 *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic):
        self.device_id = device_id
        self.name = profile.device_name(device_id)
        self._label = str(device_id)
        self._discovery = discovery
        self._sink = sink
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._clock = clock
        self._commands: asyncio.Queue[DownlinkCommand] = asyncio.Queue()
        self._state = "new"  # new -> connected -> lost -> connected ...
        self._failure_logged = False
        self._malformed_streak = 0
        self._last_seq: int | None = None
        self.connected = False
        self.connected_at: float | None = None
        self.lost_at: float | None = None
        self.last_reconnect_s: float | None = None  # link loss to notifications flowing again
        self.rssi: int | None = None
        self.frames = 0
        self.malformed = 0
        self.gaps = 0
        self.reconnects = 0

    # ---- downlink -----------------------------------------------------------------------------

    def submit(self, command: DownlinkCommand) -> None:
        self._commands.put_nowait(command)

    @property
    def pending_commands(self) -> int:
        """Commands waiting for the link (written as soon as the device is connected)."""
        return self._commands.qsize()

    # ---- notifications ------------------------------------------------------------------------

    def _on_notification(self, _char, data: bytearray) -> None:
        """Runs in bleak's D-Bus callback: check the cleartext header only, never raise."""
        try:
            header = frame.parse_header(data)
            if header.device_id != self.device_id:
                raise frame.FrameError("foreign_device", f"frame of device {header.device_id}")
            if header.frame_type == frame.TYPE_COMMAND:
                raise frame.FrameError("bad_type", "a command frame sent uplink")
        except frame.FrameError as exc:
            self.malformed += 1
            self._metrics.malformed.labels(self._label, exc.reason).inc()
            if self._malformed_streak == 0:
                log.warning("%s: malformed notification dropped (%s)", self.name, exc)
            self._malformed_streak += 1
            return
        if self._malformed_streak:
            log.info("%s: valid frames again after %d malformed", self.name, self._malformed_streak)
            self._malformed_streak = 0
        if header.flags & frame.FLAG_BACKFILL == 0 and self._last_seq is not None and header.seq > self._last_seq + 1:
            # Informational: the device's own ring buffer usually fills such a gap as backfill.
            self.gaps += header.seq - self._last_seq - 1
            self._metrics.seq_gaps.labels(self._label).inc(header.seq - self._last_seq - 1)
        if self._last_seq is None or header.seq > self._last_seq:
            self._last_seq = header.seq
        self.frames += 1
        if self.lost_at is not None and self.last_reconnect_s is None:
            self.last_reconnect_s = self._clock() - self.lost_at
        self._sink(self.device_id, header.type_name, header.seq, bytes(data))

    # ---- supervision ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        error: BaseException | None = None
        since = float("-inf")
        while not stop.is_set():
            ok, sighting = await _until(stop, self._discovery.wait_for(self.device_id, since))
            if not ok:
                break
            self.rssi = sighting.rssi
            try:
                await self._session(sighting.device, stop)
            except (BleakError, TimeoutError, EOFError, OSError, LinkError) as exc:
                error = exc
                attempt += 1
                self._metrics.connect_failures.labels(self._label).inc()
                if not self._failure_logged:
                    self._failure_logged = True
                    log.warning("%s: cannot connect (%s); retrying with backoff", self.name, _describe(exc))
                else:
                    log.debug("%s: connect attempt %d failed: %s", self.name, attempt, _describe(exc))
            else:
                error, attempt = None, 1  # it worked, then dropped: relink almost at once
            if stop.is_set():
                break
            delay = reconnect_delay(attempt, error, self._rng.random())
            since = self._clock()
            ok, _ = await _until(stop, asyncio.sleep(delay))
            if not ok:
                break

    async def _session(self, device, stop: asyncio.Event) -> None:
        """One connection, from connect to its end; raises when it could not be established."""
        disconnected = asyncio.Event()
        client = BleakClient(device, disconnected_callback=lambda _c: disconnected.set(),
                             timeout=CONNECT_TIMEOUT_S)
        try:
            await client.connect()
        except BleakError:
            raise
        except asyncio.TimeoutError as exc:
            raise LinkError(self.device_id, "connect timed out", "device slow or out of range") from exc
        try:
            for uuid in NOTIFY_CHARACTERISTICS:
                await client.start_notify(uuid, self._on_notification)
            self._up()
            await self._serve(client, disconnected, stop)
        finally:
            self._down(stop.is_set())
            # Also after a link loss: disconnect() is what releases the client's D-Bus connection.
            with contextlib.suppress(BleakError, TimeoutError, EOFError, OSError):
                await asyncio.wait_for(client.disconnect(), 5)

    def _up(self) -> None:
        was = self._state
        self._state = "connected"
        self._failure_logged = False
        self.connected = True
        self.connected_at = self._clock()
        self._last_seq = None
        self._metrics.connected.labels(self._label).set(1)
        if was == "new":
            log.info("%s: connected", self.name)
        else:
            self.reconnects += 1
            self._metrics.reconnects.labels(self._label).inc()
            log.info("%s: recovered after %.1f s", self.name, self._clock() - (self.lost_at or self._clock()))

    def _down(self, stopping: bool) -> None:
        if not self.connected:
            return
        self.connected = False
        self._metrics.connected.labels(self._label).set(0)
        if stopping:
            return
        self._state = "lost"
        self.lost_at = self._clock()
        self.last_reconnect_s = None
        log.warning("%s: link lost; reconnecting", self.name)

    async def _serve(self, client: BleakClient, disconnected: asyncio.Event, stop: asyncio.Event) -> None:
        """While connected: write downlink commands as they come, until the link or we stop."""
        ends = [asyncio.ensure_future(disconnected.wait()), asyncio.ensure_future(stop.wait())]
        try:
            while True:
                getter = asyncio.ensure_future(self._commands.get())
                done, _ = await asyncio.wait([getter, *ends], return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        command = await getter
                        self._requeue_front(command)
                    return
                command = getter.result()
                if not command.pending:
                    continue  # expired while waiting
                try:
                    await asyncio.wait_for(
                        client.write_gatt_char(profile.CONTROL_CHAR_UUID, command.payload, response=True),
                        WRITE_TIMEOUT_S)
                except (BleakError, TimeoutError, EOFError, OSError) as exc:
                    if disconnected.is_set() or not client.is_connected:
                        self._requeue_front(command)  # the link went: try again on the next one
                        return
                    if command.pending:  # the device answered with an error (refused command)
                        command.done.set_exception(DownlinkError(self.device_id, _describe(exc)))
                else:
                    if command.pending:
                        command.done.set_result(None)
        finally:
            for fut in ends:
                fut.cancel()

    def _requeue_front(self, command: DownlinkCommand) -> None:
        rest = []
        while not self._commands.empty():
            rest.append(self._commands.get_nowait())
        for c in [command, *rest]:
            self._commands.put_nowait(c)


async def _until(stop: asyncio.Event, coro) -> tuple[bool, object]:
    """Run ``coro`` unless ``stop`` is set first: (True, its result) or (False, None)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task in done:
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
