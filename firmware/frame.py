# Vigil frame format v1: the one definition shared by firmware, simulator, gateway and backend.
#
# Written in the subset of Python that runs unchanged on MicroPython (ESP32) and CPython:
# struct and hashlib only, no dataclasses, no typing, no hmac module on the device.
# The byte layout is documented in firmware/FRAME_SPEC.md and pinned by the golden
# vectors in tests/vectors/frames.json.
import hashlib
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:  # CPython: the C implementation, ~10x faster for the backend's bulk verification
    from hmac import digest as _hmac_digest
except ImportError:  # MicroPython
    _hmac_digest = None

VERSION = const(1)

TYPE_TELEMETRY = const(1)
TYPE_EVENT = const(2)
TYPE_STATUS = const(3)
TYPE_COMMAND = const(4)
TYPE_NAMES = {1: "telemetry", 2: "event", 3: "status", 4: "command"}

FLAG_ENCRYPTED = const(0x01)  # payload is XOR'ed with the HMAC-SHA256 keystream
FLAG_BACKFILL = const(0x02)  # sent from the ring buffer after a link outage
FLAG_CLOCK_UNSYNCED = const(0x04)  # time_ms counts from boot, not from the Unix epoch
_KNOWN_FLAGS = const(0x07)

EVENT_SOS = const(1)
EVENT_PREALERT_STARTED = const(2)
EVENT_PREALERT_CANCELLED = const(3)
EVENT_FALL_SUSPECTED = const(4)
EVENT_MANDOWN_ALARM = const(5)
EVENT_HELP_CONFIRMED = const(6)  # the officer felt the "help is coming" pattern
EVENT_MESSAGE_CONFIRMED = const(7)  # the officer felt a message (detail = the message's word)
EVENT_NAMES = {
    1: "sos",
    2: "prealert_started",
    3: "prealert_cancelled",
    4: "fall_suspected",
    5: "mandown_alarm",
    6: "help_confirmed",
    7: "message_confirmed",
}

COMMAND_TIME_SYNC = const(1)
COMMAND_HELP_COMING = const(2)
COMMAND_EVENT_ACK = const(3)
COMMAND_SET_CONFIG = const(4)
COMMAND_MESSAGE = const(5)  # arg = message kind (below), word = message id, echoed in the confirmation
COMMAND_NAMES = {1: "time_sync", 2: "help_coming", 3: "event_ack", 4: "set_config", 5: "message"}

# Messages to an officer's wearable (COMMAND_MESSAGE's arg); each plays its own haptic pattern
# (firmware/safety.py MESSAGE_PATTERNS) and a press within the confirm window answers it.
MESSAGE_HELP_COMING = const(1)
MESSAGE_STAY_PUT = const(2)
MESSAGE_FALL_BACK = const(3)
MESSAGE_CHECK_IN = const(4)
MESSAGE_ALL_CLEAR = const(5)
MESSAGE_COLLEAGUE_NEEDS_HELP = const(6)  # sent by the backend to officers near a colleague's SOS
MESSAGE_NAMES = {
    1: "help_coming",
    2: "stay_put",
    3: "fall_back",
    4: "check_in",
    5: "all_clear",
    6: "colleague_needs_help",
}

# version, type, flags, device_id, seq, time_ms, payload_len
HEADER_FORMAT = "<BBBIIQB"
HEADER_LEN = const(20)
TAG_LEN = const(8)  # truncated HMAC-SHA256: 64 bits against online forgery
MAX_FRAME_LEN = const(244)  # one notification at the negotiated ATT MTU of 247
MAX_PAYLOAD_LEN = const(216)  # MAX_FRAME_LEN - HEADER_LEN - TAG_LEN
KEY_LEN = const(32)

TELEMETRY_HEADER_FORMAT = "<BBBB"  # rate_hz, n_samples, ppg_led_current (0.2 mA steps), reserved
TELEMETRY_HEADER_LEN = const(4)
TELEMETRY_SAMPLE_LEN = const(9)  # PPG uint24 + accel x, y, z int16 in milli-g
MAX_SAMPLES = const(23)  # (216 - 4) // 9
ACCEL_LIMIT_MG = const(32767)
PPG_LIMIT = const(0xFFFFFF)

EVENT_FORMAT = "<BBH"  # code, priority hint (0 = device has none), detail
STATUS_FORMAT = "<BHBBBBI"  # battery %, battery mV, fw major, minor, patch, status bits, dropped
STATUS_CHARGING = const(0x01)
STATUS_SKIN_CONTACT = const(0x02)
STATUS_WORN = const(0x04)
COMMAND_FORMAT = "<BBH"  # code, argument byte, argument word

_MAC_LABEL = b"vigil/mac/v1"
_ENC_LABEL = b"vigil/enc/v1"


class FrameError(ValueError):
    """Raised for every frame that must not be trusted. ``reason`` is a short stable code:
    truncated, oversize, bad_version, bad_type, bad_flags, bad_length, bad_tag, bad_payload,
    bad_key, out_of_range, replayed."""

    def __init__(self, reason, detail=""):
        # super(), not ValueError.__init__(self, ...): MicroPython's native exception types
        # have no __init__ attribute, so the explicit call raised AttributeError on the device.
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail


def _hmac_sha256_pure(key, msg):
    # RFC 2104 with a 64-byte block; keys here are always 32 bytes.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256(key, msg):
    if _hmac_digest is not None:
        return _hmac_digest(key, msg, "sha256")
    return _hmac_sha256_pure(key, msg)


# the keystream's block counters, packed once (a payload has at most 7 blocks)
_COUNTERS = tuple(struct.pack("<I", i) for i in range((MAX_PAYLOAD_LEN + 31) // 32))


class _KeyedHmac:
    # HMAC-SHA256 under one fixed key. On CPython the two hashed pads are kept and copied per
    # message: two SHA-256 compressions and the key handling fewer per call, which halves the
    # backend's cost of verifying a frame (7 HMACs each). MicroPython's hashlib has no copy().

    def __init__(self, key):
        self.key = key
        self._inner = self._outer = None
        if _hmac_digest is not None:
            padded = key + bytes(64 - len(key))
            self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
            self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(self, msg):
        if self._inner is None or self._outer is None:
            return hmac_sha256(self.key, msg)
        # copy() exists on CPython only, where _inner is set (the ESP32 stubs rightly lack it)
        inner = self._inner.copy()  # type: ignore[attr-defined]
        inner.update(msg)
        outer = self._outer.copy()  # type: ignore[attr-defined]
        outer.update(inner.digest())
        return outer.digest()

    def blocks(self, prefix, count):
        # HMAC(key, prefix || counter) for counter 0..count-1, joined. On CPython the inner
        # hash takes the prefix once and is copied per block.
        if self._inner is None or self._outer is None:
            return b"".join(self.digest(prefix + struct.pack("<I", i)) for i in range(count))
        base = self._inner.copy()  # type: ignore[attr-defined]
        base.update(prefix)
        out = []
        for i in range(count):
            inner = base.copy()
            inner.update(_COUNTERS[i] if i < len(_COUNTERS) else struct.pack("<I", i))
            outer = self._outer.copy()  # type: ignore[attr-defined]
            outer.update(inner.digest())
            out.append(outer.digest())
        return b"".join(out)


class DeviceKeys:
    """The two keys derived from a device's 32-byte secret: one to authenticate, one to encrypt."""

    def __init__(self, device_key):
        if not isinstance(device_key, (bytes, bytearray)) or len(device_key) != KEY_LEN:
            raise FrameError("bad_key", "a device key is exactly 32 bytes")
        self.mac_key = hmac_sha256(bytes(device_key), _MAC_LABEL)
        self.enc_key = hmac_sha256(bytes(device_key), _ENC_LABEL)
        self.mac = _KeyedHmac(self.mac_key)
        self.enc = _KeyedHmac(self.enc_key)


def _keystream_xor(enc, header_bytes, payload):
    # Keystream block i = HMAC(enc_key, header[:20 with len] || i); the (device_id, seq) pair in
    # the header is unique for a device key, so no block is ever reused. ``enc`` is the
    # device's keyed HMAC (DeviceKeys.enc).
    n = len(payload)
    if n == 0:
        return b""
    stream = enc.blocks(header_bytes, (n + 31) // 32)
    x = int.from_bytes(payload, "big") ^ int.from_bytes(stream[:n], "big")
    return x.to_bytes(n, "big")


class Header:
    """The cleartext part of a frame: what a gateway may read without any key."""

    def __init__(self, version, frame_type, flags, device_id, seq, time_ms, payload_len):
        self.version = version
        self.frame_type = frame_type
        self.flags = flags
        self.device_id = device_id
        self.seq = seq
        self.time_ms = time_ms
        self.payload_len = payload_len

    @property
    def type_name(self):
        return TYPE_NAMES.get(self.frame_type, "unknown")


def parse_header(buf):
    """Read and check the cleartext header of a frame; needs no key. Raises FrameError."""
    n = len(buf)
    if n > MAX_FRAME_LEN:
        raise FrameError("oversize", "%d bytes > %d" % (n, MAX_FRAME_LEN))
    if n < HEADER_LEN + TAG_LEN:
        raise FrameError("truncated", "%d bytes < %d" % (n, HEADER_LEN + TAG_LEN))
    version, frame_type, flags, device_id, seq, time_ms, plen = struct.unpack_from(
        HEADER_FORMAT, buf, 0
    )
    if version != VERSION:
        raise FrameError("bad_version", "version %d, expected %d" % (version, VERSION))
    if frame_type not in TYPE_NAMES:
        raise FrameError("bad_type", "type %d" % frame_type)
    if flags & ~_KNOWN_FLAGS:
        raise FrameError("bad_flags", "flags 0x%02x" % flags)
    if HEADER_LEN + plen + TAG_LEN != n:
        raise FrameError("bad_length", "payload length %d in a %d-byte frame" % (plen, n))
    return Header(version, frame_type, flags, device_id, seq, time_ms, plen)


def seal(keys, frame_type, device_id, seq, time_ms, payload, flags=FLAG_ENCRYPTED):
    """Build one frame: header, (encrypted) payload and truncated tag over both."""
    if frame_type not in TYPE_NAMES:
        raise FrameError("bad_type", "type %d" % frame_type)
    if flags & ~_KNOWN_FLAGS:
        raise FrameError("bad_flags", "flags 0x%02x" % flags)
    if len(payload) > MAX_PAYLOAD_LEN:
        raise FrameError("oversize", "payload %d > %d" % (len(payload), MAX_PAYLOAD_LEN))
    if not (0 <= device_id <= 0xFFFFFFFF and 0 <= seq <= 0xFFFFFFFF and time_ms >= 0):
        raise FrameError("out_of_range", "device_id, seq and time_ms are unsigned")
    header = struct.pack(
        HEADER_FORMAT, VERSION, frame_type, flags, device_id, seq, time_ms, len(payload)
    )
    body = _keystream_xor(keys.enc, header, payload) if flags & FLAG_ENCRYPTED else payload
    tag = keys.mac.digest(header + body)[:TAG_LEN]
    return header + body + tag


def _tags_equal(a, b):
    # Constant time over the tag length, so a forger learns nothing from timing.
    diff = len(a) ^ len(b)
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0


def open_frame(buf, keys):
    """Verify a frame's tag and decrypt it. Returns (Header, payload bytes). Raises FrameError."""
    header = parse_header(buf)
    end = HEADER_LEN + header.payload_len
    mv = memoryview(buf)
    expected = keys.mac.digest(bytes(mv[:end]))[:TAG_LEN]
    if not _tags_equal(expected, bytes(mv[end:])):
        raise FrameError("bad_tag", "device %d seq %d" % (header.device_id, header.seq))
    body = bytes(mv[HEADER_LEN:end])
    if header.flags & FLAG_ENCRYPTED:
        body = _keystream_xor(keys.enc, bytes(mv[:HEADER_LEN]), body)
    return header, body


# ---- payloads ---------------------------------------------------------------------------


def encode_telemetry(rate_hz, ppg, accel_mg, led_current=0):
    """ppg: sequence of n raw counts (0..2^24-1); accel_mg: sequence of n (x, y, z) in milli-g."""
    n = len(ppg)
    if n == 0 or n > MAX_SAMPLES:
        raise FrameError("bad_payload", "1..%d samples per frame, got %d" % (MAX_SAMPLES, n))
    if len(accel_mg) != n:
        raise FrameError("bad_payload", "ppg and accel sample counts differ")
    if not (0 < rate_hz <= 255 and 0 <= led_current <= 255):
        raise FrameError("out_of_range", "rate_hz 1..255, led_current 0..255")
    out = bytearray(TELEMETRY_HEADER_LEN + n * TELEMETRY_SAMPLE_LEN)
    struct.pack_into(TELEMETRY_HEADER_FORMAT, out, 0, rate_hz, n, led_current, 0)
    pos = TELEMETRY_HEADER_LEN
    for v in ppg:
        if not 0 <= v <= PPG_LIMIT:
            raise FrameError("out_of_range", "ppg count %d" % v)
        out[pos] = v & 0xFF
        out[pos + 1] = (v >> 8) & 0xFF
        out[pos + 2] = (v >> 16) & 0xFF
        pos += 3
    for xyz in accel_mg:
        for a in xyz:
            if not -ACCEL_LIMIT_MG <= a <= ACCEL_LIMIT_MG:
                raise FrameError("out_of_range", "acceleration %d mg" % a)
        struct.pack_into("<hhh", out, pos, xyz[0], xyz[1], xyz[2])
        pos += 6
    return bytes(out)


def decode_telemetry(payload):
    """Returns (rate_hz, led_current, ppg list, accel list of (x, y, z) milli-g)."""
    if len(payload) < TELEMETRY_HEADER_LEN:
        raise FrameError("bad_payload", "telemetry payload of %d bytes" % len(payload))
    rate_hz, n, led_current, _ = struct.unpack_from(TELEMETRY_HEADER_FORMAT, payload, 0)
    if n == 0 or n > MAX_SAMPLES or rate_hz == 0:
        raise FrameError("bad_payload", "%d samples at %d Hz" % (n, rate_hz))
    if len(payload) != TELEMETRY_HEADER_LEN + n * TELEMETRY_SAMPLE_LEN:
        raise FrameError("bad_payload", "%d samples in %d bytes" % (n, len(payload)))
    pos = TELEMETRY_HEADER_LEN
    ppg = []
    for _ in range(n):
        ppg.append(payload[pos] | (payload[pos + 1] << 8) | (payload[pos + 2] << 16))
        pos += 3
    accel = []
    for _ in range(n):
        accel.append(struct.unpack_from("<hhh", payload, pos))
        pos += 6
    return rate_hz, led_current, ppg, accel


def encode_event(code, detail=0, priority=0):
    if code not in EVENT_NAMES:
        raise FrameError("bad_payload", "event code %d" % code)
    if not (0 <= detail <= 0xFFFF and 0 <= priority <= 3):
        raise FrameError("out_of_range", "detail 0..65535, priority 0..3")
    return struct.pack(EVENT_FORMAT, code, priority, detail)


def decode_event(payload):
    """Returns (code, priority, detail)."""
    if len(payload) != struct.calcsize(EVENT_FORMAT):
        raise FrameError("bad_payload", "event payload of %d bytes" % len(payload))
    code, priority, detail = struct.unpack(EVENT_FORMAT, payload)
    if code not in EVENT_NAMES or priority > 3:
        raise FrameError("bad_payload", "event code %d priority %d" % (code, priority))
    return code, priority, detail


def encode_status(battery_pct, battery_mv, firmware, status_bits=0, dropped=0):
    if not (0 <= battery_pct <= 100 and 0 <= battery_mv <= 0xFFFF):
        raise FrameError("out_of_range", "battery %d%% %d mV" % (battery_pct, battery_mv))
    if len(firmware) != 3:
        raise FrameError("bad_payload", "firmware version is (major, minor, patch)")
    return struct.pack(
        STATUS_FORMAT, battery_pct, battery_mv, firmware[0], firmware[1], firmware[2],
        status_bits, dropped,
    )


def decode_status(payload):
    """Returns (battery_pct, battery_mv, (major, minor, patch), status_bits, dropped)."""
    if len(payload) != struct.calcsize(STATUS_FORMAT):
        raise FrameError("bad_payload", "status payload of %d bytes" % len(payload))
    pct, mv, ma, mi, pa, bits, dropped = struct.unpack(STATUS_FORMAT, payload)
    if pct > 100:
        raise FrameError("bad_payload", "battery %d%%" % pct)
    return pct, mv, (ma, mi, pa), bits, dropped


def encode_command(code, arg=0, word=0):
    if code not in COMMAND_NAMES:
        raise FrameError("bad_payload", "command code %d" % code)
    if not (0 <= arg <= 0xFF and 0 <= word <= 0xFFFF):
        raise FrameError("out_of_range", "arg 0..255, word 0..65535")
    if code == COMMAND_MESSAGE and arg not in MESSAGE_NAMES:
        raise FrameError("bad_payload", "message kind %d" % arg)
    return struct.pack(COMMAND_FORMAT, code, arg, word)


def decode_command(payload):
    """Returns (code, arg, word)."""
    if len(payload) != struct.calcsize(COMMAND_FORMAT):
        raise FrameError("bad_payload", "command payload of %d bytes" % len(payload))
    code, arg, word = struct.unpack(COMMAND_FORMAT, payload)
    if code not in COMMAND_NAMES:
        raise FrameError("bad_payload", "command code %d" % code)
    if code == COMMAND_MESSAGE and arg not in MESSAGE_NAMES:
        raise FrameError("bad_payload", "message kind %d" % arg)
    return code, arg, word


def decode_payload(frame_type, payload):
    """Dispatch to the decoder of the frame type; the result is a tuple as documented above."""
    if frame_type == TYPE_TELEMETRY:
        return decode_telemetry(payload)
    if frame_type == TYPE_EVENT:
        return decode_event(payload)
    if frame_type == TYPE_STATUS:
        return decode_status(payload)
    if frame_type == TYPE_COMMAND:
        return decode_command(payload)
    raise FrameError("bad_type", "type %d" % frame_type)


# ---- replay protection ----------------------------------------------------------------------

REPLAY_WINDOW = const(4096)  # > 5 minutes of backfill at 2.5 telemetry frames/s plus events


class ReplayGuard:
    """Sliding-window replay check for one device's sequence numbers (as in IPsec/DTLS).

    Frames may arrive out of order (events overtake telemetry, backfill arrives late) but each
    sequence number is accepted at most once; anything older than the window is refused."""

    def __init__(self, window=REPLAY_WINDOW, highest=-1):
        self.window = window
        self.highest = highest
        self._seen = 0  # bit i set: highest - i was accepted

    def check(self, seq):
        """Raise FrameError('replayed') unless seq is new; does not record it."""
        if seq > self.highest:
            return
        age = self.highest - seq
        if age >= self.window:
            raise FrameError("replayed", "seq %d is older than the window (highest %d)" % (seq, self.highest))
        if (self._seen >> age) & 1:
            raise FrameError("replayed", "seq %d was already accepted" % seq)

    def accept(self, seq):
        """Record seq as accepted (call after the frame's tag verified)."""
        self.check(seq)
        if seq > self.highest:
            shift = seq - self.highest
            self._seen = ((self._seen << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            self.highest = seq
        else:
            self._seen |= 1 << (self.highest - seq)

    def state(self):
        """(highest, bitmap) to save: bit i set means highest - i was accepted."""
        return self.highest, self._seen

    def restore(self, highest, seen):
        """Continue from a saved state (the backend's windows across a restart)."""
        self.highest = highest
        self._seen = seen & ((1 << self.window) - 1)
