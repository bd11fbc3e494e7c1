# BLE peripheral on MicroPython's low-level `bluetooth` module (NimBLE on the ESP32-S3).
#
# GATT: the Vigil service (telemetry notify, event notify/indicate, control write, status
# read/notify) plus the standard Heart Rate (0x180D), Battery (0x180F) and Device Information
# (0x180A) services. Vigil frames are sealed (encrypted and authenticated) by frame.py before
# they reach the radio, so a sniffer or an unknown central sees only ciphertext; the heart
# rate of the standard service goes only to links encrypted by LE Secure Connections pairing.
# The IRQ handler only records what happened and wakes the radio task; everything else runs in
# that task (firmware/app.py).
import bluetooth

from firmware import profile

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)

_FLAG_READ = const(0x0002)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_INDICATE = const(0x0020)
_FLAG_READ_ENCRYPTED = const(0x0200)

_IO_NO_INPUT_OUTPUT = const(3)
_ADV_TYPE_FLAGS = const(0x01)
_ADV_TYPE_UUID16_COMPLETE = const(0x03)
_ADV_TYPE_UUID128_COMPLETE = const(0x07)
_ADV_TYPE_NAME = const(0x09)
_ADV_TYPE_APPEARANCE = const(0x19)
_APPEARANCE_HR_BELT = const(0x0341)  # "Heart Rate Sensor: Heart Rate Belt"

ATT_MTU = const(247)  # 244-byte notifications: one frame each
DEFAULT_MTU = const(23)
MAX_CONNECTIONS = const(3)  # the gateway, a phone's heart-rate app, one spare
# Advertise fast (100 ms) for 30 s after the link is lost, when the gateway is most likely
# trying to reconnect, then slowly (1 s) to save power.
ADV_FAST_US = const(100000)
ADV_SLOW_US = const(1000000)
FAST_ADV_MS = const(30000)
# Back-to-back notifications make some centrals drop the link: keep 40 ms between them
# (25 frames/s, ~5.3 kB/s of backfill, ten times the live rate of ~0.55 kB/s).
NOTIFY_SPACING_MS = const(40)
_CONTROL_BUFFER = const(128)
_WRITE_QUEUE = const(8)

CH_EVENT = const(1)  # same values as firmware.core
CH_TELEMETRY = const(2)


def uuid_le_bytes(uuid: str) -> bytes:
    """A 128-bit UUID string as the little-endian bytes that go on air."""
    raw = bytes.fromhex(uuid.replace("-", ""))
    out = bytearray(16)
    for i in range(16):
        out[i] = raw[15 - i]
    return bytes(out)


def advertising_payload(name: str = "", uuids16=(), uuid128: str = "", appearance: int = 0) -> bytes:
    """AD structures for an advertisement or scan response (legacy: at most 31 bytes)."""
    out = bytearray()

    def add(ad_type: int, value: bytes) -> None:
        out.extend(bytes((len(value) + 1, ad_type)))
        out.extend(value)

    add(_ADV_TYPE_FLAGS, b"\x06")  # LE general discoverable, no BR/EDR
    if uuid128:
        add(_ADV_TYPE_UUID128_COMPLETE, uuid_le_bytes(uuid128))
    if appearance:
        add(_ADV_TYPE_APPEARANCE, bytes((appearance & 0xFF, appearance >> 8)))
    if uuids16:
        b = bytearray()
        for u in uuids16:
            b.extend(bytes((u & 0xFF, u >> 8)))
        add(_ADV_TYPE_UUID16_COMPLETE, bytes(b))
    if name:
        add(_ADV_TYPE_NAME, name.encode())
    if len(out) > 31:
        raise ValueError("advertising payload of %d bytes > 31" % len(out))
    return bytes(out)


def scan_response_payload(name: str, uuids16=()) -> bytes:
    out = bytearray()
    b = bytearray()
    for u in uuids16:
        b.extend(bytes((u & 0xFF, u >> 8)))
    if b:
        out.extend(bytes((len(b) + 1, _ADV_TYPE_UUID16_COMPLETE)))
        out.extend(b)
    nb = name.encode()
    out.extend(bytes((len(nb) + 1, _ADV_TYPE_NAME)))
    out.extend(nb)
    if len(out) > 31:
        raise ValueError("scan response of %d bytes > 31" % len(out))
    return bytes(out)


def hr_measurement(bpm: int, skin_contact: bool) -> bytes:
    """Heart Rate Measurement (0x2A37): uint8 format, sensor contact supported (+ detected)."""
    flags = 0x06 if skin_contact else 0x04
    return bytes((flags, bpm if bpm < 255 else 255))


class Link:
    """One connected central."""

    def __init__(self, handle: int, now_ms: int) -> None:
        self.handle = handle
        self.mtu = DEFAULT_MTU
        self.encrypted = False
        self.trusted = False  # it delivered an authenticated command: the gateway
        self.since = now_ms


class VigilRadio:
    """The wearable's GATT server, advertising and links. ble is a bluetooth.BLE()."""

    def __init__(self, ble, device_id: int, firmware: tuple, wake=None, model: str = "Vigil W1",
                 hardware_rev: str = "A", now_ms: int = 0) -> None:
        self._ble = ble
        self.device_id = device_id
        self.name = profile.device_name(device_id)
        self._wake = wake
        self.links: dict = {}
        self._events: list = []  # (irq, data) recorded in the IRQ handler
        self.writes: list = []  # (conn_handle, bytes) written to the control characteristic
        self._last_notify = -NOTIFY_SPACING_MS
        self._lost_at = now_ms
        self._advertising = 0  # interval in use, 0 when not advertising
        self._battery = -1
        self.notify_failures = 0
        ble.active(True)
        ble.config(gap_name=self.name, mtu=ATT_MTU)
        try:
            # LE Secure Connections, Just Works: an ECDH-encrypted link a passive sniffer cannot
            # read, for heart-rate apps. Frames do not depend on it (they are sealed anyway).
            ble.config(le_secure=True, bond=False, mitm=False, io=_IO_NO_INPUT_OUTPUT)
        except (OSError, ValueError):
            pass  # a port without pairing support: the HR service then stays silent
        ble.irq(self._irq)
        U = bluetooth.UUID
        vigil = (U(profile.VIGIL_SERVICE_UUID), (
            (U(profile.TELEMETRY_CHAR_UUID), _FLAG_NOTIFY),
            (U(profile.EVENT_CHAR_UUID), _FLAG_NOTIFY | _FLAG_INDICATE),
            (U(profile.CONTROL_CHAR_UUID), _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE),
            (U(profile.STATUS_CHAR_UUID), _FLAG_READ | _FLAG_NOTIFY),
        ))
        heart = (U(0x180D), ((U(0x2A37), _FLAG_NOTIFY), (U(0x2A38), _FLAG_READ | _FLAG_READ_ENCRYPTED)))
        battery = (U(0x180F), ((U(0x2A19), _FLAG_READ | _FLAG_NOTIFY),))
        info = (U(0x180A), (
            (U(0x2A29), _FLAG_READ), (U(0x2A24), _FLAG_READ), (U(0x2A25), _FLAG_READ),
            (U(0x2A26), _FLAG_READ), (U(0x2A27), _FLAG_READ),
        ))
        handles = ble.gatts_register_services((vigil, heart, battery, info))
        (self.h_telemetry, self.h_event, self.h_control, self.h_status) = handles[0]
        (self.h_hr, self.h_hr_location) = handles[1]
        (self.h_battery,) = handles[2]
        (h_maker, h_model, h_serial, h_fw, h_hw) = handles[3]
        ble.gatts_set_buffer(self.h_control, _CONTROL_BUFFER)
        ble.gatts_set_buffer(self.h_status, _CONTROL_BUFFER)
        ble.gatts_write(self.h_hr_location, b"\x00")  # "other": the waist has no code
        ble.gatts_write(h_maker, b"Vigil")
        ble.gatts_write(h_model, model.encode())
        ble.gatts_write(h_serial, ("%08X" % device_id).encode())
        ble.gatts_write(h_fw, ("%d.%d.%d" % firmware).encode())
        ble.gatts_write(h_hw, hardware_rev.encode())
        self._adv_data = advertising_payload(uuid128=profile.VIGIL_SERVICE_UUID, appearance=_APPEARANCE_HR_BELT)
        self._resp_data = scan_response_payload(self.name, (0x180D,))

    # ---- IRQ: record and wake, nothing else -----------------------------------------------

    def _irq(self, event: int, data) -> None:
        if event == _IRQ_GATTS_WRITE:
            conn, attr = data[0], data[1]
            if attr == self.h_control and len(self.writes) < _WRITE_QUEUE:
                self.writes.append((conn, bytes(self._ble.gatts_read(attr))))
        elif event in (_IRQ_CENTRAL_CONNECT, _IRQ_CENTRAL_DISCONNECT, _IRQ_MTU_EXCHANGED, _IRQ_ENCRYPTION_UPDATE):
            # data's buffers belong to the stack: keep plain integers and booleans only
            self._events.append((event, tuple(d if isinstance(d, (int, bool)) else 0 for d in data)))
        if self._wake is not None:
            self._wake()

    # ---- radio task ------------------------------------------------------------------------

    def service(self, now_ms: int) -> list:
        """Apply recorded IRQs, keep advertising right. Returns handles of new links."""
        new = []
        events, self._events = self._events, []
        for event, data in events:
            if event == _IRQ_CENTRAL_CONNECT:
                self.links[data[0]] = Link(data[0], now_ms)
                self._advertising = 0  # the stack stops advertising on a connection
                new.append(data[0])
            elif event == _IRQ_CENTRAL_DISCONNECT:
                self.links.pop(data[0], None)
                self._lost_at = now_ms
                self._advertising = 0
            elif event == _IRQ_MTU_EXCHANGED:
                link = self.links.get(data[0])
                if link is not None:
                    link.mtu = data[1]
            elif event == _IRQ_ENCRYPTION_UPDATE:
                link = self.links.get(data[0])
                if link is not None:
                    link.encrypted = bool(data[1])
        self._keep_advertising(now_ms)
        return new

    def _keep_advertising(self, now_ms: int) -> None:
        if len(self.links) >= MAX_CONNECTIONS:
            self._make_room()
            return
        want = ADV_FAST_US if now_ms - self._lost_at < FAST_ADV_MS and not self.links else ADV_SLOW_US
        if self._advertising != want:
            self._ble.gap_advertise(want, adv_data=self._adv_data, resp_data=self._resp_data)
            self._advertising = want

    def _make_room(self) -> None:
        # All slots taken: a bystander's phones must not lock the gateway out. Drop the oldest
        # link that never proved itself (no authenticated command, not an encrypted HR app).
        oldest = None
        for link in self.links.values():
            if not link.trusted and not link.encrypted and (oldest is None or link.since < oldest.since):
                oldest = link
        if oldest is not None:
            self._ble.gap_disconnect(oldest.handle)

    def trust(self, conn: int) -> None:
        link = self.links.get(conn)
        if link is not None:
            link.trusted = True

    @property
    def connected(self) -> bool:
        return bool(self.links)

    def ready(self, now_ms: int) -> bool:
        """A link exists and the spacing since the last notification has passed."""
        return bool(self.links) and now_ms - self._last_notify >= NOTIFY_SPACING_MS

    def can_send(self, now_ms: int, nbytes: int) -> bool:
        if now_ms - self._last_notify < NOTIFY_SPACING_MS:
            return False
        for link in self.links.values():
            if link.mtu - 3 >= nbytes:
                return True
        return False

    def send(self, channel: int, frame: bytes, now_ms: int) -> bool:
        """Notify a sealed frame to every link whose MTU carries it whole. False when no link
        took it (the caller keeps it and retries)."""
        handle = self.h_event if channel == CH_EVENT else self.h_telemetry
        ok = False
        for link in self.links.values():
            if link.mtu - 3 < len(frame):
                continue
            try:
                self._ble.gatts_notify(link.handle, handle, frame)
                ok = True
            except OSError:  # the stack's buffers are full: try again later
                self.notify_failures += 1
        if ok:
            self._last_notify = now_ms
        return ok

    def set_status(self, frame: bytes) -> None:
        self._ble.gatts_write(self.h_status, frame)

    def set_battery(self, pct: int) -> None:
        if pct == self._battery:
            return
        self._battery = pct
        self._ble.gatts_write(self.h_battery, bytes((pct,)))
        for link in self.links.values():
            try:
                self._ble.gatts_notify(link.handle, self.h_battery)
            except OSError:
                pass

    def notify_heart_rate(self, bpm: int, skin_contact: bool) -> None:
        """Standard HR measurement, only to links encrypted by pairing: a heart rate is
        biometric data and must not go out in clear."""
        value = hr_measurement(bpm, skin_contact)
        for link in self.links.values():
            if link.encrypted:
                try:
                    self._ble.gatts_notify(link.handle, self.h_hr, value)
                except OSError:
                    pass
