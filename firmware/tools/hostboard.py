# The wearable's board on a host: `machine` and `bluetooth` as the firmware sees them, over
# chips emulated at register level (firmware/tools/emulators.py) and a BLE stack with NimBLE's
# observable behaviour (firmware/tools/fakes.py FakeBLE, or a subclass bridged to a radio).
#
# The firmware is unchanged: main() builds its pins, bus, motor and radio from `machine` and
# `bluetooth`; here those constructors hand out the parts of the *current* HostBoard, so many
# boards (a simulated fleet) can boot one after another in one process. HostBoard.tick(now_ms)
# moves the silicon to a time (FIFOs fill) and raises the interrupt pins it drives (IMU INT1 at
# its FIFO watermark); a VirtualLoop (firmware/tools/vasyncio.py) calls it before each step.
#
# Runs under CPython and MicroPython (tests/firmware/test_fw_boot.py boots main() with it).
import sys

from firmware import board as B
from firmware.tools import fakes

_current = [None]

_IMU_FIFO_CTRL1 = 0x07  # watermark, low byte
_IMU_FIFO_CTRL2 = 0x08
_IMU_INT1_CTRL = 0x0D
_INT1_FIFO_TH = 0x08


def current():
    board = _current[0]
    if board is None:
        raise RuntimeError("no HostBoard in use: call hostboard.use(board) before main()")
    return board


def use(board):
    _current[0] = board


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, gpio, mode=None, pull=None, value=None):
        self.board = current()
        self.gpio = gpio
        self.mode = mode
        self.handler = None
        self.trigger = 0
        if mode == Pin.OUT and value is not None:
            self.board.write_output(gpio, value)
        self.board.pins.setdefault(gpio, []).append(self)

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return self.board.outputs.get(self.gpio, 0)
            return self.board.levels.get(self.gpio, 0)
        self.board.write_output(self.gpio, 1 if v else 0)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        self.handler = handler
        self.trigger = trigger


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.gpio = pin.gpio
        self.freq = freq
        self._duty = duty_u16
        self.history = []
        pin.board.pwms[pin.gpio] = self

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = value
        self.history.append(value)
        return None

    def deinit(self):
        self._duty = 0


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        current().wdt = self

    def feed(self):
        self.feeds += 1


class Timer:
    PERIODIC = 1
    ONE_SHOT = 0

    def __init__(self, id=0):
        self.period = 0
        self.callback = None
        self.fired = 0
        current().timers.append(self)

    def init(self, period=1000, mode=1, callback=None, freq=None):
        self.period = period if freq is None else 1000 // freq
        self.callback = callback

    def deinit(self):
        self.callback = None

    def fire(self):
        if self.callback is not None:
            self.fired += 1
            self.callback(self)


def I2C(id=0, scl=None, sda=None, freq=400000):  # noqa: N802 - machine.I2C is a class on the device
    return current().bus


class _Machine:
    """The `machine` module."""

    Pin = Pin
    PWM = PWM
    WDT = WDT
    Timer = Timer
    I2C = staticmethod(I2C)

    def freq(self, hz=None):
        if hz is None:
            return current().cpu_hz
        current().cpu_hz = hz
        return None

    def reset(self):
        raise SystemExit("machine.reset()")


class _Bluetooth:
    """The `bluetooth` module."""

    UUID = fakes.UUID

    def BLE(self):  # noqa: N802
        return current().ble


machine = _Machine()
bluetooth = _Bluetooth()


class HostBoard:
    """One wearable's pins, bus, radio, motor and watchdog. levels[gpio] are the input levels
    the world drives (the SOS button is active low, released = 1)."""

    def __init__(self, bus, ble=None):
        self.bus = bus
        self.ble = ble if ble is not None else fakes.FakeBLE()
        self.levels = {B.PIN_SOS_BUTTON: 1, B.PIN_CHARGER_STAT: 1, B.PIN_PPG_INT: 1, B.PIN_IMU_INT1: 0}
        self.outputs = {}
        self.output_changes = {}  # gpio -> number of level changes (a blinking LED)
        self.pins = {}
        self.pwms = {}
        self.timers = []
        self.wdt = None
        self.cpu_hz = 240000000
        self._imu = bus.devices.get(B.IMU_ADDR)

    # ---- the world drives inputs ------------------------------------------------------------

    def set_level(self, gpio, level):
        old = self.levels.get(gpio, 0)
        self.levels[gpio] = level
        if level == old:
            return
        edge = Pin.IRQ_RISING if level else Pin.IRQ_FALLING
        for pin in self.pins.get(gpio, ()):
            if pin.handler is not None and pin.trigger & edge:
                pin.handler(pin)

    def write_output(self, gpio, level):
        if self.outputs.get(gpio) != level:
            self.output_changes[gpio] = self.output_changes.get(gpio, 0) + 1
        self.outputs[gpio] = level

    def press(self, pressed=True):
        self.set_level(B.PIN_SOS_BUTTON, 0 if pressed else 1)

    def tick(self, now_ms):
        """Silicon at now_ms: the bus's clock moves on; INT1 follows the IMU FIFO watermark."""
        self.bus.now = now_ms / 1000
        imu = self._imu
        if imu is None or not imu.regs[_IMU_INT1_CTRL] & _INT1_FIFO_TH:
            return
        imu.advance(self.bus.now)
        wtm = imu.regs[_IMU_FIFO_CTRL1] | ((imu.regs[_IMU_FIFO_CTRL2] & 0x01) << 8)
        self.set_level(B.PIN_IMU_INT1, 1 if wtm and len(imu.fifo) >= wtm else 0)

    @property
    def motor(self):
        return self.pwms.get(B.PIN_HAPTIC)

    @property
    def led(self):
        return self.outputs.get(B.PIN_STATUS_LED, 0)


def install():
    """Make `import machine` and `import bluetooth` resolve to this board shim (CPython and
    MicroPython), also for firmware modules already imported."""
    sys.modules["machine"] = machine
    sys.modules["bluetooth"] = bluetooth
    for name in ("firmware.app", "firmware.ble"):
        mod = sys.modules.get(name)
        if mod is not None:
            if hasattr(mod, "machine"):
                mod.machine = machine
            mod.bluetooth = bluetooth
