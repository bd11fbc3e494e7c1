"""A simulated wearable that runs the firmware's own code: firmware/app.py main() with its tasks
(sampling, safety, radio, watchdog), core, safety, sampler, BLE service, ring buffer and drivers,
on CPython through a thin shim (firmware/tools/hostboard.py for ``machine`` and ``bluetooth``,
firmware/tools/vasyncio.py for ``asyncio`` and ``time``: a virtual clock per device, advanced to
the simulator's clock). What is simulated is only what is not the device:

- silicon: the chips are emulated at register level (firmware/tools/emulators.py); what they
  measure comes from the officer (:class:`OfficerBody`: gateway/sim/signals.py's physiology and
  motion for the scenario's current activity, skin contact, the battery);
- radio: :class:`RadioBLE` is the NimBLE-like stack of firmware/tools/fakes.py whose central is
  a radio of the simulator (the virtual BlueZ's VirtualDevice, so the gateway's bleak connects
  to it as to a real wearable, or gateway/sim/direct.py's MQTT radio);
- the officer: scenario steps (gateway/sim/scenarios.py) change activity, press the SOS button,
  take the device off, and drain the battery; nothing here raises an event or seals a frame.

This is the only simulated wearable: the older model of the device (its own ring buffer,
priorities and event handling) is gone. What a test or bench needs from the device it reads from
what the device put on air (:class:`SosPress`: the SOS's sequence number as notified) or sets as
the world would (the officer's button, the link, the battery, the clock a time sync sets).

Configuration (device id, key, the flash-reserved sequence numbers) lives in a config file per
device in ``state_dir``, written by the firmware itself: sequence numbers survive a simulator
restart as they survive a reboot on the device.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware import board as B
from firmware import config as fw_config
from firmware import frame, profile
from firmware.tools import fakes, hostboard, vasyncio
from firmware.tools.emulators import FakeI2C, Lsm6dsoEmulator, Max17048Emulator, Max30101Emulator
from gateway.sim import scenarios as scenario_lib
from gateway.sim.bluez import GattCharacteristicSpec, GattServiceSpec, address_for_device_id
from gateway.sim.clock import SimClock
from gateway.sim.signals import SensorModel

hostboard.install()  # `import machine` / `import bluetooth` in the firmware resolve to the host board

from firmware import app  # noqa: E402  (after the board shim)

app.asyncio = vasyncio  # the port's asyncio and ticks, on each device's virtual clock
app.time = vasyncio.time

log = logging.getLogger("vigil.sim.device")

SAMPLING_RATE_HZ = 50
SAMPLES_PER_FRAME = 20  # the firmware's block (firmware/core.py): 0.4 s per telemetry frame
STATUS_INTERVAL_S = 30.0  # the firmware's default status period (firmware/config.py status_period_s)
SOS_HOLD_S = 2.5  # the officer holds SOS past the firmware's 2 s
HELP_CONFIRM_AFTER_S = 1.5  # the officer presses once to confirm "help is coming"
CONFIRM_PRESS_S = 0.3
MESSAGE_CONFIRM_AFTER_S = 5.0  # a message is answered once its rhythm played out (the longest: 2.4 s)
# Advance each device this often (real seconds): writes and link changes act at the next tick.
TICK_S = 0.02
# Notifications the simulated controller holds before gatts_notify raises ENOMEM (the firmware
# keeps the frame and retries, as with NimBLE's full buffers).
RADIO_QUEUE = 8
# Counts per mA of LED current on skin: the physiology model's 480,000-count DC level at the
# firmware's 6.4 mA becomes the MAX30101's ~109,000 (18-bit ADC).
_PPG_SCALE = 17000.0 / 480000.0


def vigil_gatt() -> list[GattServiceSpec]:
    """The wearable's GATT table (firmware/profile.py), as the virtual BlueZ exposes it."""
    return [GattServiceSpec(profile.VIGIL_SERVICE_UUID, [
        GattCharacteristicSpec(profile.TELEMETRY_CHAR_UUID, ("notify",)),
        GattCharacteristicSpec(profile.EVENT_CHAR_UUID, ("notify", "indicate")),
        GattCharacteristicSpec(profile.CONTROL_CHAR_UUID, ("write",)),
        GattCharacteristicSpec(profile.STATUS_CHAR_UUID, ("read", "notify")),
    ])]


class SosPress:
    """One SOS press, as the world sees it: when the officer pressed, and the SOS event the
    firmware put on air for it (its sequence number, and when the firmware handed it to the
    radio controller). The firmware raises the SOS once the button was held 2 s."""

    def __init__(self, pressed_monotonic: float):
        self.pressed = pressed_monotonic  # time.monotonic() at the press
        self.seq: int | None = None
        self.notified: float | None = None  # time.monotonic() when the firmware notified it
        self.raised = asyncio.Event()

    def _on_air(self, seq: int, at: float) -> None:
        self.seq, self.notified = seq, at
        self.raised.set()


class OfficerBody:
    """What the officer's body and movement put in front of the chips: gateway/sim/signals.py's
    model for the current activity, sampled at 50 Hz and read by the emulated chips at their own
    oscillators' rates (accel in g for the LSM6DSO, reflected light for the MAX30101)."""

    def __init__(self, seed: int, resting_hr: float):
        self.model = SensorModel(np.random.default_rng(seed), SAMPLING_RATE_HZ, resting_hr=resting_hr)
        self.activity = "standing"
        self.on_skin = True
        self._base = 0  # sample index of _ppg[0]
        self._ppg: collections.deque[float] = collections.deque()
        self._acc: collections.deque[tuple[float, float, float]] = collections.deque()

    def _index(self, t: float) -> int:
        i = max(int(t * SAMPLING_RATE_HZ), self._base)
        while i >= self._base + len(self._ppg):
            ppg, accel = self.model.block(SAMPLES_PER_FRAME, self.activity if self.on_skin else "off_body")
            self._ppg.extend(ppg.tolist())
            self._acc.extend((a[0] / 1000.0, a[1] / 1000.0, a[2] / 1000.0) for a in accel.tolist())
            while len(self._ppg) > 400:  # 8 s of history: the chips lag by at most a FIFO's worth
                self._ppg.popleft()
                self._acc.popleft()
                self._base += 1
        return i - self._base

    def accel_g(self, t: float) -> tuple[float, float, float]:
        return self._acc[self._index(t)]

    def counts(self, t: float, led_ma: float) -> int:
        return int(self._ppg[self._index(t)] * _PPG_SCALE * led_ma)


class RadioBLE(fakes.FakeBLE):
    """The device's BLE controller, its far side a simulator radio. The firmware sees a central
    connect once the gateway has subscribed to the Vigil characteristics (and the MTU exchanged),
    and a disconnect when the link goes; notifications go out through the radio in order."""

    CONN = 1

    def __init__(self, device: "FirmwareWearable"):
        super().__init__()
        self._device = device
        self.queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self.link_up = False
        self.lost_in_flight: list[int] = []  # seqs queued in the controller when a link went

    def uuid_of(self, handle: int) -> str | None:
        char = self.chars.get(handle)
        if char is None or not isinstance(char[1].value, str):
            return None  # the standard 16-bit services are not bridged
        return char[1].value

    def gatts_notify(self, conn: int, handle: int, data=None) -> None:
        if conn not in self.connections:
            raise OSError(errno.ENOTCONN, "ENOTCONN")
        uuid = self.uuid_of(handle)
        if uuid is None:
            return
        if len(self.queue) >= RADIO_QUEUE:
            raise OSError(errno.ENOMEM, "ENOMEM")
        value = bytes(self.values[handle] if data is None else data)
        self.queue.append((uuid, value))
        self._device._notified(value)
        self._device._kick.set()

    def sync_link(self, up: bool) -> None:
        if up and not self.link_up:
            self.link_up = True
            self.central_connect(self.CONN)
            self.exchange_mtu(self.CONN, 247)
        elif not up and self.link_up:
            self.link_up = False
            # queued in the controller: lost with the link, as notifications are on air
            self.lost_in_flight.extend(frame.parse_header(v).seq for _, v in self.queue)
            self.queue.clear()
            self.central_disconnect(self.CONN)


class FirmwareWearable:
    """One officer's wearable running the firmware. ``scenario`` drives the officer; ``clock`` is
    the simulator's (SimClock, possibly faster than real time)."""

    def __init__(self, device_id: int, device_key: bytes, *, scenario: str | scenario_lib.Scenario = "patrol",
                 clock=None, seed: int = 0, telemetry_frames: int | None = None, battery_pct: float = 80.0,
                 battery_drain_pct_per_h: float = 7.0, state_dir: Path | str | None = None,
                 confirm_help: bool = True):
        self.device_id = device_id
        self.key = device_key
        self.keys = frame.DeviceKeys(device_key)
        self.name = profile.device_name(device_id)
        self.address = address_for_device_id(device_id)
        self.scenario = scenario_lib.get(scenario) if isinstance(scenario, str) else scenario
        self.clock = clock or SimClock()
        self.telemetry_frames = telemetry_frames
        self.confirm_help = confirm_help
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vigil-wearable-")
            state_dir = self._tmp.name
        Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # the devices' keys: owner only
        self.store = fw_config.ConfigStore(str(Path(state_dir) / f"{self.name}.json"))
        self.body = OfficerBody(seed, resting_hr=62 + (seed % 17))
        capacity = 1000.0
        self.gauge = Max17048Emulator(soc=battery_pct, capacity_mah=capacity,
                                      current_ma=-battery_drain_pct_per_h * capacity / 100.0)
        self.ppg_chip = Max30101Emulator(self.body)
        self.imu_chip = Lsm6dsoEmulator(self.body)
        self.bus = FakeI2C({B.PPG_ADDR: self.ppg_chip, B.IMU_ADDR: self.imu_chip, B.FUEL_GAUGE_ADDR: self.gauge})
        self.ble = RadioBLE(self)
        self.board = hostboard.HostBoard(self.bus, self.ble)
        self.loop = vasyncio.VirtualLoop(hook=self._hook)
        self.radio = None
        self.firmware: app.Wearable | None = None
        self._boot_s: float | None = None
        self._frozen_s: float | None = None  # sensors quiet from here (finish)
        self._actions: list[tuple[float, object]] = []  # (device seconds, callable) the officer does
        self._steps = sorted(self.scenario.steps, key=lambda s: s.at_s)
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        # what went over the radio, for tests and the demo (the device's own state is in .firmware)
        self.produced: dict[int, str] = {}  # seq -> kind of every distinct frame notified
        self.sent: list[int] = []  # seqs in the order the radio took them (resent events and telemetry repeat)
        self.commands: list[tuple[int, int, int, int]] = []  # (seq, code, arg, word) written to the device
        self.help_coming = asyncio.Event()
        self.help_coming_count = 0
        self.messages: list[tuple[int, int]] = []  # (kind, id) of each message command written to the device
        self.production_done = asyncio.Event()
        self.sos_presses: list[SosPress] = []
        self._sos_seqs: set[int] = set()

    # ---- boot ---------------------------------------------------------------------------

    def _provision(self) -> None:
        existing = None
        try:
            existing = self.store.load()
        except fw_config.ConfigError:
            pass
        if existing is None or existing["device_id"] != self.device_id or existing["key"] != self.key.hex():
            # as `vigil firmware provision` does over USB; the same key keeps its reservation
            self.store.save(fw_config.new_record(self.device_id, self.key.hex(),
                                                 existing if existing and existing["device_id"] == self.device_id else None))

    def boot(self) -> None:
        """Power on: firmware main() on this board, at the simulator's current time."""
        if self.firmware is not None:
            return
        self._provision()
        self._boot_s = self.clock.now()
        hostboard.use(self.board)
        vasyncio.use(self.loop)
        self.firmware = app.main(self.store)
        if self.firmware is None:
            raise RuntimeError(f"{self.name}: the firmware did not start (see its output)")

    def _now_ms(self) -> int:
        return int((self.clock.now() - self._boot_s) * 1000)

    # ---- the officer and the world --------------------------------------------------------

    def _hook(self, now_ms: int) -> None:
        t = now_ms / 1000
        while self._steps and self._steps[0].at_s <= t:
            self._do_step(self._steps.pop(0), t)
        while self._actions and self._actions[0][0] <= t:
            self._actions.pop(0)[1]()
        if self._frozen_s is None and self.telemetry_frames is not None and self.firmware is not None \
                and self.firmware.sampler.samples >= self.telemetry_frames * SAMPLES_PER_FRAME:
            self.finish()
        if self._frozen_s is not None:
            now_ms = min(now_ms, int(self._frozen_s * 1000))  # the chips' clocks stop: no new samples
        self.board.tick(now_ms)

    def _at(self, delay_s: float, action) -> None:
        t = self.loop.now / 1000 + delay_s
        self._actions.append((t, action))
        self._actions.sort(key=lambda a: a[0])

    def _do_step(self, step: scenario_lib.Step, t: float) -> None:
        kind = step.kind
        if kind == "activity":
            self.body.activity = str(step.arg)
            self.body.on_skin = step.arg != "off_body"
        elif kind == "sos":
            self.press_sos()
        elif kind == "take_off":
            self.take_off()
        elif kind == "put_on":
            self.put_on()
        elif kind == "battery":
            self.gauge.soc = float(step.arg)
        elif kind == "drain":
            self.gauge.current_ma = -float(step.arg) * self.gauge.capacity / 100.0
        elif kind == "dropout":
            self._spawn(self._dropout(float(step.arg)))

    def press_sos(self) -> SosPress:
        """The officer holds the SOS button for 2.5 s; the firmware raises the SOS after 2 s.
        The returned press learns the SOS's sequence number when the firmware notifies it."""
        press = SosPress(time.monotonic())
        self.sos_presses.append(press)
        self.board.press(True)
        self._at(SOS_HOLD_S, lambda: self.board.press(False))
        self._kick.set()
        return press

    def _notified(self, value: bytes) -> None:
        """The firmware handed a frame to the radio controller: an SOS answers the oldest press
        still waiting for one (resends carry the seq already seen)."""
        header = frame.parse_header(value)
        if header.frame_type != frame.TYPE_EVENT or header.seq in self._sos_seqs:
            return
        waiting = [p for p in self.sos_presses if p.seq is None]
        if not waiting:
            return
        _, payload = frame.open_frame(value, self.keys)
        if frame.decode_event(payload)[0] == frame.EVENT_SOS:
            self._sos_seqs.add(header.seq)
            waiting[0]._on_air(header.seq, time.monotonic())

    # ---- the device's wall clock --------------------------------------------------------------

    def wall_clock_ms(self) -> int:
        """The time the firmware would put in a frame now (uptime when it was never synced)."""
        return self.firmware.core.frame_time(self.loop.now)[0]

    def set_wall_clock(self, epoch_ms: int | None) -> None:
        """The device's clock goes wrong. ``epoch_ms``: its clock reads this now, as after a time
        sync that carried it (the firmware's own ``sync_time``). ``None``: it knows no time and
        counts from boot with FLAG_CLOCK_UNSYNCED, as after a restart (the firmware keeps the
        offset only in RAM; the rest of a restart is not simulated here). Either way the backend
        sees the frames' times and corrects the device with TIME_SYNC."""
        core = self.firmware.core
        if epoch_ms is None:
            core._clock_offset = -1  # what a restart does to it: RAM only, -1 until a sync
        else:
            core.sync_time(int(epoch_ms), self.loop.now)

    def take_off(self) -> None:
        self.body.on_skin = False
        self.body.activity = "off_body"

    def put_on(self) -> None:
        self.body.on_skin = True
        self.body.activity = "standing"

    def finish(self) -> None:
        """The sensors go quiet: no new samples; what the device holds still goes out."""
        if self._frozen_s is None:
            self._frozen_s = self.loop.now / 1000
            self.production_done.set()

    async def _dropout(self, seconds: float) -> None:
        radio = self.radio
        if radio is None:
            return
        radio.in_range = False
        await radio.link_loss()
        await self.clock.sleep(seconds)
        radio.in_range = True

    # ---- radio --------------------------------------------------------------------------------

    def attach(self, radio) -> None:
        self.radio = radio
        radio.on_write = self._on_write
        radio.on_state_change = self._on_radio_state

    def _link_ready(self) -> bool:
        r = self.radio
        return r is not None and all(r.is_notifying(u) for u in (
            profile.EVENT_CHAR_UUID, profile.TELEMETRY_CHAR_UUID, profile.STATUS_CHAR_UUID))

    def _on_radio_state(self) -> None:
        if self.firmware is None:
            return  # not powered on: its radio does nothing (boot() looks at the link)
        self.ble.sync_link(self._link_ready())
        self._kick.set()

    def _on_write(self, uuid: str, data: bytes) -> None:
        if uuid.lower() != profile.CONTROL_CHAR_UUID.lower():
            raise ValueError("not writable")
        if self.firmware is None:
            raise ValueError("the device is not powered on")
        if not self.ble.link_up and self._link_ready():
            self.ble.sync_link(True)
        self.ble.central_write(RadioBLE.CONN, self.ble.handle_of(profile.CONTROL_CHAR_UUID), data)
        try:  # what the radio carried, for tests; the firmware verifies it for itself
            header, payload = frame.open_frame(bytes(data), self.keys)
            code, arg, word = frame.decode_command(payload)
        except frame.FrameError:
            code = None
        if code is not None and header.frame_type == frame.TYPE_COMMAND and header.device_id == self.device_id:
            self.commands.append((header.seq, code, arg, word))
            if code == frame.COMMAND_HELP_COMING:
                self.help_coming_count += 1
                self.help_coming.set()
                if self.confirm_help:  # the officer feels it and presses: once to reset a latched
                    for k in range(2):  # man-down alarm (the firmware's rule), once to confirm
                        at = HELP_CONFIRM_AFTER_S + k * 3 * CONFIRM_PRESS_S
                        self._at(at, lambda: self.board.press(True))
                        self._at(at + CONFIRM_PRESS_S, lambda: self.board.press(False))
            elif code == frame.COMMAND_MESSAGE:
                self.messages.append((arg, word))
                if self.confirm_help:  # the officer feels the message's rhythm and presses once to answer
                    self._at(MESSAGE_CONFIRM_AFTER_S, lambda: self.board.press(True))
                    self._at(MESSAGE_CONFIRM_AFTER_S + CONFIRM_PRESS_S, lambda: self.board.press(False))
        self._kick.set()

    async def _send(self) -> None:
        """Notifications out through the radio, in the order the firmware made them."""
        queue = self.ble.queue
        while True:
            while queue:
                uuid, value = queue[0]
                ok = await self.radio.notify(uuid, value)
                if queue and queue[0][1] is value:
                    queue.popleft()
                if ok:
                    header = frame.parse_header(value)
                    self.sent.append(header.seq)
                    self.produced.setdefault(header.seq, frame.TYPE_NAMES[header.frame_type])
            self._kick.clear()
            await self._kick.wait()

    # ---- observations ---------------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return self.firmware.seq._next if self.firmware is not None else 0

    @property
    def backlog(self) -> int:
        """Frames the device still holds for the link: telemetry blocks, a status, events never sent."""
        if self.firmware is None:
            return 0
        core = self.firmware.core
        unsent_events = sum(1 for e in core.outbox.entries if e[4] == 0)
        return len(core.ring) + (core._status is not None) + unsent_events + len(self.ble.queue)

    def drained(self) -> bool:
        return self.production_done.is_set() and self.backlog == 0

    @property
    def rejected_commands(self) -> int:
        return self.firmware.rejected_commands if self.firmware is not None else 0

    @property
    def ring_dropped(self) -> int:
        return self.firmware.core.ring.overwritten if self.firmware is not None else 0

    @property
    def dropped_samples(self) -> int:
        return self.firmware.core.dropped_samples if self.firmware is not None else 0

    @property
    def unacked_events(self) -> int:
        return len(self.firmware.core.outbox) if self.firmware is not None else 0

    @property
    def clock_synced(self) -> bool:
        return self.firmware is not None and self.firmware.core.clock_synced

    @property
    def motor_on(self) -> bool:
        motor = self.board.motor
        return bool(motor and motor.duty_u16())

    # ---- running ----------------------------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def advance(self) -> None:
        """Run the firmware up to the simulator's now."""
        self.loop.advance(self._now_ms())

    async def run(self, stop: asyncio.Event) -> None:
        """Boot, then keep the firmware's clock with the simulator's until ``stop``."""
        self.boot()
        if self.radio is not None:
            self._on_radio_state()
        sender = asyncio.get_running_loop().create_task(self._send(), name=f"{self.name}-radio")
        try:
            while not stop.is_set():
                try:
                    self.advance()
                except Exception:  # the firmware raised: on the device the watchdog would reset it
                    log.exception("%s: the firmware crashed at %d ms", self.name, self.loop.now)
                    raise
                await asyncio.sleep(TICK_S)
        finally:
            sender.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._tmp is not None:
                self._tmp.cleanup()
