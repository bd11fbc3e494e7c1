"""Stand-ins for the MicroPython modules that have no silicon behind them on a host: the
`bluetooth` radio (a GATT server with NimBLE's observable behaviour, driven by a scripted
central) and the bits of `machine` the app touches (Pin, PWM, WDT). Sensors are not faked
here: they are emulated at register level in firmware/tools/emulators.py.

install() puts them into sys.modules so `import bluetooth` / `import machine` in firmware
code resolve to them. Runs under CPython and MicroPython (the boot test).
"""


class UUID:
    def __init__(self, value) -> None:
        self.value = value if isinstance(value, int) else str(value).lower()

    def __eq__(self, other) -> bool:
        return isinstance(other, UUID) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return "UUID(%r)" % (self.value,)


class FakeBLE:
    """bluetooth.BLE as the firmware sees it, plus central-side actions for tests.

    Characteristic values hold 20 bytes unless gatts_set_buffer says otherwise (as in
    MicroPython), notifications are recorded per connection, and a notification to an unknown
    connection raises OSError like the real stack."""

    DEFAULT_BUFFER = 20

    def __init__(self) -> None:
        self._irq = None
        self.is_active = False
        self.config_values: dict = {}
        self.values: dict[int, bytes] = {}
        self.buffers: dict[int, int] = {}
        self.chars: dict[int, tuple] = {}  # handle -> (service uuid, char uuid, flags)
        self.notifications: list[tuple[int, int, bytes]] = []  # (conn, handle, data)
        self.advertising: list[tuple] = []  # (interval_us, adv_data, resp_data)
        self.connections: set[int] = set()
        self.disconnect_requests: list[int] = []
        self.fail_notify = False

    # ---- the API the firmware calls ---------------------------------------------------------

    def active(self, flag=None):
        if flag is not None:
            self.is_active = bool(flag)
        return self.is_active

    def config(self, *args, **kwargs):
        if args:
            return self.config_values.get(args[0])
        self.config_values.update(kwargs)
        return None

    def irq(self, handler) -> None:
        self._irq = handler

    def gatts_register_services(self, services):
        handles = []
        h = 1
        for service_uuid, chars in services:
            h += 1  # the service declaration
            hs = []
            for char_uuid, flags in chars:
                h += 1  # characteristic declaration
                self.chars[h] = (service_uuid, char_uuid, flags)
                self.values[h] = b""
                hs.append(h)
                h += 1
                if flags & 0x0030:
                    h += 1  # CCCD
            handles.append(tuple(hs))
        return tuple(handles)

    def gatts_set_buffer(self, handle: int, size: int, append: bool = False) -> None:
        self.buffers[handle] = size

    def gatts_write(self, handle: int, data, send_update: bool = False) -> None:
        self.values[handle] = bytes(data)[: self.buffers.get(handle, self.DEFAULT_BUFFER)]

    def gatts_read(self, handle: int) -> bytes:
        return self.values[handle]

    def gatts_notify(self, conn: int, handle: int, data=None) -> None:
        if conn not in self.connections:
            raise OSError(128, "ENOTCONN")
        if self.fail_notify:
            raise OSError(12, "ENOMEM")
        self.notifications.append((conn, handle, bytes(self.values[handle] if data is None else data)))

    def gatts_indicate(self, conn: int, handle: int, data=None) -> None:
        self.gatts_notify(conn, handle, data)

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True) -> None:
        self.advertising.append((interval_us, adv_data, resp_data))

    def gap_disconnect(self, conn: int) -> bool:
        self.disconnect_requests.append(conn)
        if conn in self.connections:
            self.central_disconnect(conn)
            return True
        return False

    # ---- what a central does (tests and simulators) ----------------------------------------

    def central_connect(self, conn: int, addr: bytes = b"\xc0\xff\xee\x00\x00\x01") -> None:
        self.connections.add(conn)
        self._irq(1, (conn, 0, memoryview(addr)))

    def central_disconnect(self, conn: int) -> None:
        self.connections.discard(conn)
        self._irq(2, (conn, 0, memoryview(b"\x00" * 6)))

    def exchange_mtu(self, conn: int, mtu: int = 247) -> None:
        self._irq(21, (conn, mtu))

    def encrypt(self, conn: int) -> None:
        self._irq(28, (conn, True, False, False, 16))

    def central_write(self, conn: int, handle: int, data: bytes) -> None:
        self.values[handle] = bytes(data)[: self.buffers.get(handle, self.DEFAULT_BUFFER)]
        self._irq(3, (conn, handle))

    def handle_of(self, char_uuid) -> int:
        for h, (_, u, _) in self.chars.items():
            if u == UUID(char_uuid):
                return h
        raise KeyError(char_uuid)

    def received(self, conn: int, handle: int) -> list[bytes]:
        return [d for c, h, d in self.notifications if c == conn and h == handle]


class FakePin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, gpio=0, mode=None, pull=None, value=None) -> None:
        self.gpio = gpio
        self._value = 1 if value is None else value
        self.handler = None

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = v
        return None

    def irq(self, handler=None, trigger=None) -> None:
        self.handler = handler


class FakePWM:
    def __init__(self, pin=None, freq: int = 0, duty_u16: int = 0) -> None:
        self._duty = duty_u16
        self.history: list[int] = []

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = value
        self.history.append(value)
        return None


class FakeWDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


def install() -> None:
    """Make `import bluetooth` and `import machine` resolve to the host board's modules
    (firmware/tools/hostboard.py: these fakes, and emulated chips behind machine.I2C)."""
    from firmware.tools import hostboard

    hostboard.install()
