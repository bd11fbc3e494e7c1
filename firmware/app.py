# The wearable application: a few named tasks around one Wearable object.
#
#   sampling  wakes on the IMU's FIFO-watermark interrupt (timeout: a lost interrupt never
#             stalls sampling), drains both sensor FIFOs, feeds safety logic and the outbox
#   safety    every 20 ms: button, man-down timers, haptic motor, status every period
#   radio     wakes on BLE IRQs or when frames wait: commands in, frames out (events first)
#   watchdog  feeds the hardware watchdog only while every other task makes progress
#
# Wearable's *_step(now_ms) methods hold all the behaviour and take time as an argument, so a
# host test drives them with emulated chips and a fake radio; the tasks only schedule them.
import asyncio
import time

import machine
import bluetooth

from firmware import board, config, core, safety
from firmware import frame as F
from firmware.ble import VigilRadio
from firmware.drivers.lsm6dso import LSM6DSO
from firmware.drivers.max17048 import MAX17048
from firmware.drivers.max3010x import MAX3010x
from firmware.hr import PulseRate
from firmware.sampler import Sampler

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


_SAFETY_TICK_MS = const(20)
_SAMPLE_TIMEOUT_MS = const(300)  # the IMU watermark fires every ~190 ms
_RADIO_IDLE_MS = const(200)
_HR_PERIOD_MS = const(1000)
_WDT_TIMEOUT_MS = const(8000)
_STALL_MS = const(5000)  # a task silent for this long means something hangs: let the WDT bite
_MOTOR_DUTY = const(59000)  # ~3.0 V average on a 3.3 V rail: the motor's rated voltage
_BLINK_MS = const(500)  # the status LED's half period while the device waits to be provisioned
_FIRST_STATUS_MS = const(1000)  # the first status waits for the first FIFO read (skin contact)
_BATTERY_CHECK_MS = const(10000)  # the fuel gauge is read this often between status frames
BATTERY_WARNINGS = (20, 10, 5)  # crossing one of these (%) sends a status at once


class UptimeClock:
    """Monotonic milliseconds since start. time.ticks_ms() wraps every 2^30 ms (12.4 days);
    this extends it, as long as now() is called at least once a few days (the tasks do)."""

    def __init__(self, ticks_ms=None, ticks_diff=None) -> None:
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._ticks_diff = ticks_diff or time.ticks_diff
        self._last = self._ticks_ms()
        self._uptime = 0

    def now(self) -> int:
        t = self._ticks_ms()
        self._uptime += self._ticks_diff(t, self._last)
        self._last = t
        return self._uptime


def safety_settings(s: dict) -> safety.SafetySettings:
    return safety.SafetySettings(
        sos_hold_ms=s["sos_hold_ds"] * 100, prealert_ms=s["prealert_s"] * 1000,
        alarm_ms=s["alarm_s"] * 1000, motion_mg=s["motion_mg"], lying_deg=s["lying_deg"])


class Wearable:
    """Everything the device does, one step at a time, with time passed in."""

    def __init__(self, i2c, ble, store, button, motor, led, charger_stat=None, now_ms: int = 0,
                 wake_radio=None) -> None:
        self.store = store
        self.rec = store.load()  # config.ConfigError when the device is not provisioned
        self.button = button  # Pin-like: value() 0 when pressed (active low)
        self.motor = motor  # PWM-like: duty_u16()
        self.led = led
        self.charger_stat = charger_stat
        settings = config.settings_of(self.rec)
        keys = F.DeviceKeys(bytes.fromhex(self.rec["key"]))  # only derived keys are kept
        self.seq = config.SeqAllocator(self.rec["seq_limit"], self._persist_seq)
        self.core = core.DeviceCore(self.rec["device_id"], keys, self.seq, cmd_seq=self.rec["cmd_seq"],
                                    persist_cmd_seq=self._persist_cmd_seq)
        self.safety = safety.SafetyMonitor(safety_settings(settings))
        self.ppg = MAX3010x(i2c, board.PPG_ADDR, led="green")
        self.imu = LSM6DSO(i2c, board.IMU_ADDR)
        self.gauge = MAX17048(i2c, board.FUEL_GAUGE_ADDR)
        self.sampler = Sampler(self.ppg, self.imu, self._on_block, self.safety.on_accel)
        self.pulse = PulseRate(self.sampler.rate_hz)
        self.radio = VigilRadio(ble, self.rec["device_id"], core.FIRMWARE_VERSION, wake=wake_radio, now_ms=now_ms)
        self.status_period_ms = settings["status_period_s"] * 1000
        self.hr_service = settings["hr_service"] == 1
        self._next_status = now_ms + _FIRST_STATUS_MS  # skin contact known by then
        self._next_battery = now_ms
        self._reported_contact = -1  # skin contact in the last status frame (-1: none sent yet)
        self._reported_pct = 101  # battery in the last status frame
        self._next_hr = now_ms
        self._motor_on = False
        self.rejected_commands = 0
        self.progress = {"sampling": now_ms, "safety": now_ms, "radio": now_ms}

    # ---- persistence -----------------------------------------------------------------------

    def _persist_seq(self, limit: int) -> None:
        self.rec["seq_limit"] = limit
        self.store.save(self.rec)

    def _persist_cmd_seq(self, seq: int) -> None:
        self.rec["cmd_seq"] = seq
        self.store.save(self.rec)

    # ---- steps -----------------------------------------------------------------------------

    def _on_block(self, t0_ms: int, ppg, accel, led_register: int) -> None:
        self.core.add_block(t0_ms, ppg, accel, led_register)
        period = 1000 // self.sampler.rate_hz
        for i in range(len(ppg)):
            self.pulse.update(ppg[i], t0_ms + i * period)

    def sample_step(self, now_ms: int) -> int:
        n = self.sampler.poll(now_ms)
        self.safety.worn = self.ppg.skin_contact
        self.progress["sampling"] = now_ms
        return n

    def safety_step(self, now_ms: int) -> None:
        self.safety.on_button(self.button.value() == 0, now_ms)
        self.safety.tick(now_ms)
        for code, priority, detail, at_ms in self.safety.take_events():
            self.core.raise_event(code, priority, detail, at_ms)
        on = self.safety.haptic.level(now_ms)
        if on != self._motor_on:
            self.motor.duty_u16(_MOTOR_DUTY if on else 0)
            self._motor_on = on
        if self._reported_contact != -1 and self.ppg.skin_contact != self._reported_contact:
            self._next_status = now_ms  # put on or taken off: say so now, not at the next period
        if now_ms >= self._next_battery:
            self._next_battery = now_ms + _BATTERY_CHECK_MS
            pct = self.gauge.soc_percent()
            for level in BATTERY_WARNINGS:
                if pct <= level < self._reported_pct:
                    self._next_status = now_ms  # a warning level crossed
        if now_ms >= self._next_status:
            self._next_status = now_ms + self.status_period_ms
            self.status_step(now_ms)
        self.progress["safety"] = now_ms

    def status_step(self, now_ms: int) -> bytes:
        pct = self.gauge.soc_percent()
        mv = self.gauge.voltage_mv()
        bits = 0
        charging = self.gauge.charging()
        if self.charger_stat is not None:
            charging = charging or self.charger_stat.value() == 0
        if charging:
            bits |= F.STATUS_CHARGING
        if self.ppg.skin_contact:
            bits |= F.STATUS_SKIN_CONTACT | F.STATUS_WORN
        frame = self.core.update_status(now_ms, pct, mv, bits)
        self._reported_contact = 1 if self.ppg.skin_contact else 0
        self._reported_pct = pct
        self.radio.set_battery(pct)
        self.radio.set_status(frame)
        return frame

    def radio_step(self, now_ms: int) -> bool:
        """Commands in, at most one frame out. Returns True when frames still wait."""
        if self.radio.service(now_ms):
            self.core.link_up(now_ms)
        writes, self.radio.writes = self.radio.writes, []
        for conn, data in writes:
            try:
                code, arg, word = self.core.handle_command(data, now_ms)
            except F.FrameError:
                self.rejected_commands += 1  # forged, replayed or for someone else: ignore
                continue
            self.radio.trust(conn)
            self.apply_command(code, arg, word, now_ms)
        if self.hr_service and now_ms >= self._next_hr:
            self._next_hr = now_ms + _HR_PERIOD_MS
            self.radio.notify_heart_rate(self.pulse.bpm(), self.ppg.skin_contact)
        self.progress["radio"] = now_ms
        if not self.radio.ready(now_ms):
            return self.radio.connected and (len(self.core.ring) > 0 or len(self.core.outbox) > 0)
        nxt = self.core.next_uplink(now_ms)
        if nxt is None:
            return False
        channel, frame = nxt
        if self.radio.can_send(now_ms, len(frame)) and self.radio.send(channel, frame, now_ms):
            self.core.uplink_sent(now_ms)
        return True

    def apply_command(self, code: int, arg: int, word: int, now_ms: int) -> None:
        if code == F.COMMAND_HELP_COMING:
            self.safety.help_coming(arg, now_ms)
        elif code == F.COMMAND_MESSAGE:
            self.safety.message(arg, word, now_ms)  # the kind was checked by decode_command
        elif code == F.COMMAND_SET_CONFIG:
            tunable = config.TUNABLES.get(arg)
            if tunable is None or not tunable[1] <= word <= tunable[2]:
                return
            trial = dict(config.settings_of(self.rec))
            trial[tunable[0]] = word
            try:
                new_settings = safety_settings(trial)
            except ValueError:
                return  # e.g. a pre-alert no earlier than the alarm
            self.rec["settings"][tunable[0]] = word
            self.store.save(self.rec)
            self.safety.settings = new_settings
            self.safety.mandown.s = new_settings
            self.safety.button.debounce_ms = new_settings.debounce_ms
            self.status_period_ms = trial["status_period_s"] * 1000
            self.hr_service = trial["hr_service"] == 1

    def stalled(self, now_ms: int) -> bool:
        for t in self.progress.values():
            if now_ms - t > _STALL_MS:
                return True
        return False

    # ---- tasks -----------------------------------------------------------------------------

    async def sampling_task(self, clock, imu_flag) -> None:
        while True:
            try:
                await asyncio.wait_for_ms(imu_flag.wait(), _SAMPLE_TIMEOUT_MS)
            except asyncio.TimeoutError:
                pass  # read anyway: the FIFOs hold 0.6 s, nothing is lost
            self.sample_step(clock.now())

    async def safety_task(self, clock) -> None:
        while True:
            self.safety_step(clock.now())
            await asyncio.sleep_ms(_SAFETY_TICK_MS)

    async def radio_task(self, clock, radio_flag) -> None:
        while True:
            busy = self.radio_step(clock.now())
            try:
                await asyncio.wait_for_ms(radio_flag.wait(), 40 if busy else _RADIO_IDLE_MS)
            except asyncio.TimeoutError:
                pass

    async def watchdog_task(self, clock, wdt) -> None:
        while True:
            if not self.stalled(clock.now()):
                wdt.feed()
            await asyncio.sleep_ms(1000)


def _pin_in(gpio: int, pull_up: bool):
    if pull_up:
        return machine.Pin(gpio, machine.Pin.IN, machine.Pin.PULL_UP)
    return machine.Pin(gpio, machine.Pin.IN)


async def _run(w: Wearable, clock: UptimeClock, imu_flag, radio_flag, imu_int) -> None:
    imu_int.irq(lambda pin: imu_flag.set(), machine.Pin.IRQ_RISING)
    wdt = machine.WDT(timeout=_WDT_TIMEOUT_MS)
    await asyncio.gather(
        w.sampling_task(clock, imu_flag),
        w.safety_task(clock),
        w.radio_task(clock, radio_flag),
        w.watchdog_task(clock, wdt),
    )


def _blink(led):
    """Toggle the LED from a hardware timer: the REPL stays free for provisioning."""
    state = [0]

    def toggle(_timer) -> None:
        state[0] ^= 1
        led.value(state[0])

    timer = machine.Timer(0)
    timer.init(period=_BLINK_MS, mode=machine.Timer.PERIODIC, callback=toggle)
    return timer


def main(store=None):
    """Boot. ``store`` is the configuration store (default: /vigil.json on the board's flash;
    a simulator gives each device its own file)."""
    machine.freq(80000000)  # plenty for 50 Hz and BLE; ~40 % less current than 240 MHz
    led = machine.Pin(board.PIN_STATUS_LED, machine.Pin.OUT, value=0)
    if _pin_in(board.PIN_SOS_BUTTON, True).value() == 0:
        # SOS held at power-on: maintenance mode. No app and no watchdog, so provisioning and
        # deployment over USB (mpremote) are not cut short by a watchdog reset.
        print("vigil: maintenance mode (SOS held at boot)")
        led.value(1)
        return
    if store is None:
        store = config.ConfigStore()
    try:
        store.load()
    except config.ConfigError as exc:
        # Not provisioned (or the file is damaged): stay at the REPL for `vigil firmware
        # provision` over USB, blinking so a technician sees why.
        print("vigil: not provisioned:", exc)
        _blink(led)
        return
    i2c = machine.I2C(board.I2C0_ID, scl=machine.Pin(board.I2C0_SCL), sda=machine.Pin(board.I2C0_SDA),
                      freq=board.I2C0_FREQ)
    motor = machine.PWM(machine.Pin(board.PIN_HAPTIC), freq=20000, duty_u16=0)
    imu_flag = asyncio.ThreadSafeFlag()
    radio_flag = asyncio.ThreadSafeFlag()
    clock = UptimeClock()
    w = Wearable(i2c, bluetooth.BLE(), store, _pin_in(board.PIN_SOS_BUTTON, True), motor, led,
                 _pin_in(board.PIN_CHARGER_STAT, True), clock.now(), radio_flag.set)
    asyncio.run(_run(w, clock, imu_flag, radio_flag, _pin_in(board.PIN_IMU_INT1, False)))
    return w  # on the device asyncio.run never returns; a simulator's scheduler does
