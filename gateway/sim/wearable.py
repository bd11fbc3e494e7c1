"""The older stand-in for a Vigil wearable (a model of the firmware's behaviour) and the
simulator's clock. Simulated fleets run the firmware's own code instead (gateway/sim/device.py,
``device="firmware"``: `vigil simulate`, `vigil demo`, the end-to-end and gateway tests); this
model stays only while backend/bench (faults, gateway) drive its internals, then goes.

It produces exactly the firmware's bytes (firmware/frame.py): telemetry frames of 20 samples at
50 Hz, event frames, status frames; one sequence counter for all of them, never reused. While the
link is down, frames wait in a ring buffer that overwrites the oldest telemetry and counts what
it dropped; after reconnect they go out oldest first, flagged FLAG_BACKFILL, events before
telemetry. Commands written to the control characteristic are verified with the device key
(open_frame) and a replay window before they act: "help is coming" is recorded and felt.

Time and randomness are injected: a :class:`SimClock` (real time, or faster for tests) and a seed.
The radio is anything with the :class:`Radio` shape: the virtual BlueZ's ``VirtualDevice``, or
``gateway.sim.direct.MqttRadio`` for load runs straight to MQTT.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from firmware import frame, profile
from gateway.sim import scenarios as scenario_lib
from gateway.sim.bluez import GattCharacteristicSpec, GattServiceSpec, address_for_device_id
from gateway.sim.signals import SensorModel, to_frame_samples

log = logging.getLogger("vigil.sim.wearable")

SAMPLING_RATE_HZ = 50
SAMPLES_PER_FRAME = 20  # 0.4 s per frame, 212 bytes on air
# Five minutes of telemetry at 2.5 frames/s fits the replay window of the backend (4096).
RING_CAPACITY_FRAMES = 750
EVENT_QUEUE_CAPACITY = 64  # events are never overwritten by telemetry
STATUS_INTERVAL_S = 30.0
BATTERY_WARNING_LEVELS = (20, 10, 5)
FIRMWARE_VERSION = (1, 0, 0)
LED_CURRENT = 60  # 12 mA in 0.2 mA steps
EVENT_PRIORITY = {
    frame.EVENT_SOS: 1, frame.EVENT_MANDOWN_ALARM: 1, frame.EVENT_FALL_SUSPECTED: 2,
    frame.EVENT_PREALERT_STARTED: 2, frame.EVENT_PREALERT_CANCELLED: 3, frame.EVENT_HELP_CONFIRMED: 3,
}


def vigil_gatt() -> list[GattServiceSpec]:
    """The wearable's GATT table (firmware/profile.py)."""
    return [GattServiceSpec(profile.VIGIL_SERVICE_UUID, [
        GattCharacteristicSpec(profile.TELEMETRY_CHAR_UUID, ("notify",)),
        GattCharacteristicSpec(profile.EVENT_CHAR_UUID, ("notify", "indicate")),
        GattCharacteristicSpec(profile.CONTROL_CHAR_UUID, ("write",)),
        GattCharacteristicSpec(profile.STATUS_CHAR_UUID, ("read", "notify")),
    ])]


class SimClock:
    """Simulated wall clock: ``speed`` simulated seconds pass per real second."""

    def __init__(self, speed: float = 1.0, start_epoch_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._monotonic = monotonic
        self._mono0 = monotonic()
        self.epoch0 = time.time() if start_epoch_s is None else start_epoch_s

    def now(self) -> float:
        return self.epoch0 + (self._monotonic() - self._mono0) * self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)


class Radio(Protocol):
    on_write: Callable[[str, bytes], None] | None
    on_state_change: Callable[[], None] | None  # link or notification state changed
    in_range: bool

    def is_notifying(self, uuid: str) -> bool: ...

    async def notify(self, uuid: str, value: bytes) -> bool: ...

    async def link_loss(self) -> None: ...


class SimulatedWearable:
    def __init__(self, device_id: int, device_key: bytes, *, scenario: str | scenario_lib.Scenario = "patrol",
                 clock: SimClock | None = None, seed: int = 0, telemetry_frames: int | None = None,
                 ring_capacity: int = RING_CAPACITY_FRAMES, battery_pct: float = 100.0,
                 battery_drain_pct_per_h: float = 7.0, status_interval_s: float = STATUS_INTERVAL_S,
                 notify_spacing_s: float = 0.0, confirm_help: bool = True, first_seq: int = 0,
                 clock_synced: bool = True):
        self.device_id = device_id
        self.keys = frame.DeviceKeys(device_key)
        self.name = profile.device_name(device_id)
        self.address = address_for_device_id(device_id)
        self.scenario = scenario_lib.get(scenario) if isinstance(scenario, str) else scenario
        self.clock = clock or SimClock()
        self.sensors = SensorModel(np.random.default_rng(seed), SAMPLING_RATE_HZ,
                                   resting_hr=62 + (seed % 17))
        self.telemetry_frames = telemetry_frames
        self.ring_capacity = ring_capacity
        self.battery_pct = battery_pct
        self.battery_drain = battery_drain_pct_per_h
        self.status_interval_s = status_interval_s
        self.notify_spacing_s = notify_spacing_s
        self.confirm_help = confirm_help
        self.clock_synced = clock_synced
        self.radio: Radio | None = None
        self.activity = "standing"
        self.worn = True
        self.next_seq = first_seq
        self._ring: deque[tuple[int, str, bytes]] = deque()  # (seq, characteristic uuid, frame)
        self._events: deque[tuple[int, bytes]] = deque()
        self._wake = asyncio.Event()
        self._command_guard = frame.ReplayGuard()
        self._boot_ms = 0
        self._sample_index = 0
        self._t0_ms = int(self.clock.now() * 1000)
        # what happened, for tests and the demo
        self.produced: dict[int, str] = {}  # seq -> kind, every frame ever sealed
        self.sent: list[int] = []  # seqs in the order the radio accepted them
        self.ring_dropped = 0
        self.dropped_samples = 0
        self.commands: list[tuple[int, int, int, int]] = []  # (seq, code, arg, word)
        self.rejected_commands = 0
        self.help_coming = asyncio.Event()
        self.help_coming_count = 0
        self.production_done = asyncio.Event()
        self._sensing = True
        self._warned_levels: set[int] = set()
        self._tasks: set[asyncio.Task] = set()

    # ---- wiring ------------------------------------------------------------------------------

    def attach(self, radio: Radio) -> None:
        self.radio = radio
        radio.on_write = self._on_write
        radio.on_state_change = self._wake.set

    @property
    def backlog(self) -> int:
        """Frames waiting on the device for the link."""
        return len(self._ring) + len(self._events)

    def finish(self) -> None:
        """Stop producing new frames; what is buffered still goes out."""
        self._sensing = False

    def drained(self) -> bool:
        return self.production_done.is_set() and not self.backlog

    # ---- the officer ----------------------------------------------------------------------------

    def press_sos(self) -> int:
        """The SOS button; returns the event frame's sequence number."""
        return self._raise_event(frame.EVENT_SOS)

    def take_off(self) -> None:
        self.worn = False
        self.activity = "off_body"
        self._send_status()

    def put_on(self) -> None:
        self.worn = True
        self.activity = "standing"
        self._send_status()

    # ---- frames ----------------------------------------------------------------------------------

    def _time_ms(self) -> int:
        return self._t0_ms + self._sample_index * 1000 // SAMPLING_RATE_HZ

    def _seal(self, frame_type: int, payload: bytes, buffered: bool) -> tuple[int, bytes]:
        seq = self.next_seq
        self.next_seq += 1  # never reused: the firmware reserves blocks of seqs in flash
        flags = frame.FLAG_ENCRYPTED
        if buffered:
            flags |= frame.FLAG_BACKFILL
        if not self.clock_synced:
            flags |= frame.FLAG_CLOCK_UNSYNCED
        data = frame.seal(self.keys, frame_type, self.device_id, seq, self._time_ms(), payload, flags)
        self.produced[seq] = frame.TYPE_NAMES[frame_type]
        return seq, data

    def _link_up(self, uuid: str) -> bool:
        return self.radio is not None and self.radio.is_notifying(uuid)

    def _raise_event(self, code: int, detail: int = 0) -> int:
        payload = frame.encode_event(code, detail, EVENT_PRIORITY.get(code, 0))
        buffered = bool(self._events) or not self._link_up(profile.EVENT_CHAR_UUID)
        seq, data = self._seal(frame.TYPE_EVENT, payload, buffered)
        if len(self._events) >= EVENT_QUEUE_CAPACITY:
            log.error("%s: event queue full, oldest event lost", self.name)
            self._events.popleft()
        self._events.append((seq, data))
        self._wake.set()
        return seq

    def _buffer(self, seq: int, uuid: str, data: bytes) -> None:
        if len(self._ring) >= self.ring_capacity:
            self._ring.popleft()  # overwrite the oldest, and say so in the next status frame
            self.ring_dropped += 1
            self.dropped_samples += SAMPLES_PER_FRAME
        self._ring.append((seq, uuid, data))
        self._wake.set()

    def _send_telemetry(self) -> None:
        ppg, accel = self.sensors.block(SAMPLES_PER_FRAME, self.activity)
        ppg_l, accel_l = to_frame_samples(ppg, accel)
        payload = frame.encode_telemetry(SAMPLING_RATE_HZ, ppg_l, accel_l, LED_CURRENT)
        buffered = bool(self._ring) or not self._link_up(profile.TELEMETRY_CHAR_UUID)
        seq, data = self._seal(frame.TYPE_TELEMETRY, payload, buffered)
        self._buffer(seq, profile.TELEMETRY_CHAR_UUID, data)
        self._sample_index += SAMPLES_PER_FRAME

    def _send_status(self) -> None:
        bits = (frame.STATUS_SKIN_CONTACT | frame.STATUS_WORN) if self.worn else 0
        pct = max(0, min(100, int(round(self.battery_pct))))
        mv = int(3300 + 9 * pct)
        payload = frame.encode_status(pct, mv, FIRMWARE_VERSION, bits, self.dropped_samples & 0xFFFFFFFF)
        buffered = bool(self._ring) or not self._link_up(profile.STATUS_CHAR_UUID)
        seq, data = self._seal(frame.TYPE_STATUS, payload, buffered)
        self._buffer(seq, profile.STATUS_CHAR_UUID, data)

    # ---- commands from the gateway ---------------------------------------------------------------

    def _on_write(self, uuid: str, data: bytes) -> None:
        if uuid != profile.CONTROL_CHAR_UUID.lower():
            raise ValueError("not writable")
        try:
            header, payload = frame.open_frame(data, self.keys)
            if header.frame_type != frame.TYPE_COMMAND or header.device_id != self.device_id:
                raise frame.FrameError("bad_type", "not a command for this device")
            self._command_guard.accept(header.seq)
            code, arg, word = frame.decode_command(payload)
        except frame.FrameError as exc:
            self.rejected_commands += 1
            log.warning("%s: command rejected: %s", self.name, exc)
            raise
        self.commands.append((header.seq, code, arg, word))
        if code == frame.COMMAND_HELP_COMING:
            self.help_coming_count += 1
            self.help_coming.set()
            log.info("%s: help is coming (haptic pattern %d)", self.name, arg)
            if self.confirm_help:
                self._raise_event(frame.EVENT_HELP_CONFIRMED, detail=header.seq & 0xFFFF)
        elif code == frame.COMMAND_TIME_SYNC:
            self.clock_synced = True
            self._t0_ms = header.time_ms - self._sample_index * 1000 // SAMPLING_RATE_HZ

    # ---- running -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Sense, script and transmit until ``stop`` is set."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._sense(stop), name=f"{self.name}-sense"),
                     tg.create_task(self._transmit(), name=f"{self.name}-radio")]
            await stop.wait()
            for task in tasks:
                task.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _sense(self, stop: asyncio.Event) -> None:
        period_s = SAMPLES_PER_FRAME / SAMPLING_RATE_HZ
        steps = sorted(self.scenario.steps, key=lambda s: s.at_s)
        start = self.clock.now()
        next_status = 0.0
        k = 0
        try:
            while not stop.is_set() and self._sensing:
                if self.telemetry_frames is not None and k >= self.telemetry_frames:
                    break
                elapsed = k * period_s
                while steps and steps[0].at_s <= elapsed:
                    await self._do_step(steps.pop(0))
                if elapsed >= next_status:
                    self._send_status()
                    next_status = elapsed + self.status_interval_s
                self._drain_battery(period_s)
                self._send_telemetry()
                k += 1
                await self.clock.sleep(start + k * period_s - self.clock.now())
        finally:
            self.production_done.set()
            self._wake.set()

    def _drain_battery(self, dt_s: float) -> None:
        before = self.battery_pct
        self.battery_pct = max(0.0, self.battery_pct - self.battery_drain * dt_s / 3600)
        for level in BATTERY_WARNING_LEVELS:
            if before > level >= self.battery_pct and level not in self._warned_levels:
                self._warned_levels.add(level)
                self._send_status()

    async def _do_step(self, step: scenario_lib.Step) -> None:
        kind = step.kind
        if kind == "activity":
            if self.worn or step.arg == "off_body":
                self.activity = str(step.arg)
        elif kind == "event":
            self._raise_event(int(step.arg))
        elif kind == "sos":
            self.press_sos()
        elif kind == "take_off":
            self.take_off()
        elif kind == "put_on":
            self.put_on()
        elif kind == "battery":
            self.battery_pct = float(step.arg)
            self._send_status()
        elif kind == "drain":
            self.battery_drain = float(step.arg)
        elif kind == "dropout":
            self._spawn(self._dropout(float(step.arg)))

    async def _dropout(self, seconds: float) -> None:
        radio = self.radio
        if radio is None:
            return
        radio.in_range = False
        await radio.link_loss()
        await self.clock.sleep(seconds)
        radio.in_range = True

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transmit(self) -> None:
        """Send what waits, events first, oldest first; keep it when the link is not there."""
        while True:
            sent_any = False
            if self._events and self._link_up(profile.EVENT_CHAR_UUID):
                seq, data = self._events[0]
                if await self.radio.notify(profile.EVENT_CHAR_UUID, data):
                    self._events.popleft()
                    self.sent.append(seq)
                    sent_any = True
            elif self._ring and self._link_up(self._ring[0][1]):
                seq, uuid, data = self._ring[0]
                if await self.radio.notify(uuid, data):
                    if self._ring and self._ring[0][0] == seq:
                        self._ring.popleft()
                    self.sent.append(seq)
                    sent_any = True
            if sent_any:
                if self.notify_spacing_s and self.backlog:
                    await asyncio.sleep(self.notify_spacing_s)
                continue
            self._wake.clear()
            await self._wake.wait()  # new frames, or the link or a subscription changed
