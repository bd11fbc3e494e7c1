# The wearable's radio-independent core: what gets sent, in which order, sealed with which
# sequence number, and what a received command does.
#
# Pure logic with time passed in (monotonic uptime in ms), MicroPython and CPython. The
# firmware's app (firmware/app.py) feeds it sample blocks, safety events and battery readings
# and moves its frames over BLE; a simulator can drive the very same object and put the frames
# on a virtual radio.
import struct

from firmware import frame as F
from firmware.ringbuf import RecordRing

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


FIRMWARE_VERSION = (1, 0, 0)

CH_EVENT = const(1)  # the event characteristic: SOS and alerts, ahead of everything else
CH_TELEMETRY = const(2)  # the telemetry characteristic: telemetry and status frames

BACKFILL_AGE_MS = const(1000)  # a block older than this when sent was held by the ring
EVENT_OUTBOX_LEN = const(16)
# Resend an unacknowledged event after 1, 2, 4, 8, 8, ... s: quick at first because an SOS
# matters most in its first seconds, then capped so a lost link does not flood the radio.
EVENT_RESEND_MS = (1000, 2000, 4000, 8000)
COMMAND_REPLAY_WINDOW = const(64)
# Telemetry frames the radio took in the last RESEND_RECENT_MS before a link went are sent again,
# unchanged (same sequence number), when the next link comes up: the radio taking a notification
# is no proof the gateway stored it (it may die with the frame in memory, or the controller drop
# its queue with the link). The backend's replay window refuses the copies that did arrive.
RESEND_RECENT_MS = const(2000)
RESEND_RECENT_MAX = const(8)
_TIME_FORMAT = "<Q"  # record prefix: uptime of the block's first sample


class EventOutbox:
    """Sealed event frames kept until the backend acknowledges them (COMMAND_EVENT_ACK with the
    low 16 bits of the event's sequence number). Preallocated length; when full, the oldest of
    the least urgent events gives way."""

    def __init__(self, capacity: int = EVENT_OUTBOX_LEN) -> None:
        self.capacity = capacity
        self.entries: list = []  # [seq, frame, priority, next_send_ms, attempts]
        self.given_way = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, seq: int, frame: bytes, priority: int, now_ms: int) -> None:
        if len(self.entries) >= self.capacity:
            worst = 0
            for i in range(1, len(self.entries)):
                if _rank(self.entries[i][2]) > _rank(self.entries[worst][2]):
                    worst = i
            self.entries.pop(worst)
            self.given_way += 1
        self.entries.append([seq, frame, priority, now_ms, 0])

    def due(self, now_ms: int):
        """The most urgent entry whose (re)send time has come, or None."""
        best = None
        for e in self.entries:
            if now_ms >= e[3] and (best is None or _rank(e[2]) < _rank(best[2])):
                best = e
        return best

    def sent(self, entry: list, now_ms: int) -> None:
        i = entry[4] if entry[4] < len(EVENT_RESEND_MS) else len(EVENT_RESEND_MS) - 1
        entry[3] = now_ms + EVENT_RESEND_MS[i]
        entry[4] += 1

    def ack(self, seq16: int) -> bool:
        for i in range(len(self.entries)):
            if self.entries[i][0] & 0xFFFF == seq16:
                self.entries.pop(i)
                return True
        return False

    def link_up(self, now_ms: int) -> None:
        """A new link: everything unacknowledged goes out again at once."""
        for e in self.entries:
            e[3] = now_ms


def _rank(priority: int) -> int:
    return priority if priority > 0 else 4  # 1 is most urgent; 0 means the device gave none


class DeviceCore:
    """Frames of one wearable: telemetry ring, event outbox, status, commands.

    keys is a frame.DeviceKeys (derived from the device key, which the core never sees);
    seq a config.SeqAllocator. persist_cmd_seq(seq) stores the highest accepted command
    sequence number before the command takes effect, so a replay after a reboot is refused."""

    def __init__(self, device_id: int, keys, seq, rate_hz: int = 50, block_samples: int = 20,
                 buffer_s: int = 320, cmd_seq: int = -1, persist_cmd_seq=None,
                 firmware: tuple = FIRMWARE_VERSION) -> None:
        if not 1 <= block_samples <= F.MAX_SAMPLES:
            raise ValueError("block_samples 1..%d" % F.MAX_SAMPLES)
        self.device_id = device_id
        self.keys = keys
        self.seq = seq
        self.rate_hz = rate_hz
        self.block_samples = block_samples
        self.firmware = firmware
        payload_len = F.TELEMETRY_HEADER_LEN + block_samples * F.TELEMETRY_SAMPLE_LEN
        blocks = (buffer_s * rate_hz + block_samples - 1) // block_samples
        self.ring = RecordRing(8 + payload_len, blocks)
        self.outbox = EventOutbox()
        self._status: bytes | None = None
        self._clock_offset = -1  # epoch ms minus uptime ms, -1 until a time sync
        self._commands = F.ReplayGuard(COMMAND_REPLAY_WINDOW, cmd_seq)
        self._cmd_floor = cmd_seq  # after a reboot, every number up to the stored one is spent
        self._persist_cmd_seq = persist_cmd_seq
        self._removed = 0  # records removed from the ring's head (sent or overwritten)
        self._cache_id = -1  # which head record _cache holds sealed
        self._cache = b""
        self._pending: tuple | None = None  # what next_uplink returned: ("e", entry) / ("s", None) / ("t", id) / ("r", frame)
        self._recent: list = []  # [sent_ms, frame] of the telemetry frames the radio last took
        self._resend: list = []  # those frames again, queued by link_up ahead of the ring
        self.sent_frames = 0
        self.resent_frames = 0

    # ---- time ------------------------------------------------------------------------------

    @property
    def clock_synced(self) -> bool:
        return self._clock_offset >= 0

    def sync_time(self, epoch_ms: int, uptime_ms: int) -> None:
        self._clock_offset = epoch_ms - uptime_ms

    def frame_time(self, uptime_ms: int) -> tuple:
        """(time_ms, flags) for a frame about something at uptime_ms."""
        if self._clock_offset >= 0:
            return self._clock_offset + uptime_ms, F.FLAG_ENCRYPTED
        return uptime_ms, F.FLAG_ENCRYPTED | F.FLAG_CLOCK_UNSYNCED

    def _seal(self, frame_type: int, payload: bytes, at_ms: int, extra_flags: int = 0) -> tuple:
        time_ms, flags = self.frame_time(at_ms)
        seq = self.seq.next()
        return seq, F.seal(self.keys, frame_type, self.device_id, seq, time_ms, payload, flags | extra_flags)

    # ---- uplink content --------------------------------------------------------------------

    def add_block(self, t0_ms: int, ppg, accel_mg, led_current: int = 0) -> bool:
        """Queue one block of samples (its first sample at uptime t0_ms). Returns True when the
        ring was full and the oldest block was dropped (counted in dropped_samples)."""
        payload = F.encode_telemetry(self.rate_hz, ppg, accel_mg, led_current)
        if len(payload) + 8 != self.ring.record_len:
            raise ValueError("blocks of %d samples" % self.block_samples)
        lost = self.ring.push(struct.pack(_TIME_FORMAT, t0_ms) + payload)
        if lost:
            self._removed += 1
        return lost

    @property
    def dropped_samples(self) -> int:
        return self.ring.overwritten * self.block_samples

    def raise_event(self, code: int, priority: int, detail: int, at_ms: int) -> int:
        """Seal an event now (its sequence number and time are fixed) and queue it until the
        backend acknowledges it. Returns the sequence number."""
        seq, frame = self._seal(F.TYPE_EVENT, F.encode_event(code, detail, priority), at_ms)
        self.outbox.add(seq, frame, priority, at_ms)
        return seq

    def update_status(self, now_ms: int, battery_pct: int, battery_mv: int, status_bits: int) -> bytes:
        """Seal a status frame; it goes out ahead of telemetry (only the newest is kept)."""
        payload = F.encode_status(battery_pct, battery_mv, self.firmware, status_bits,
                                  self.dropped_samples & 0xFFFFFFFF)
        self._status = self._seal(F.TYPE_STATUS, payload, now_ms)[1]
        return self._status

    # ---- uplink scheduling -----------------------------------------------------------------

    def link_up(self, now_ms: int) -> None:
        self.outbox.link_up(now_ms)
        self._cache_id = -1  # re-seal the head block: its backfill flag may have changed
        if self._recent:
            last = self._recent[-1][0]
            for sent_ms, frame in self._recent:
                if last - sent_ms <= RESEND_RECENT_MS and frame not in self._resend:
                    self._resend.append(frame)
            self._recent = []

    def next_uplink(self, now_ms: int):
        """(channel, frame) to send next, or None: due events, then status, then telemetry
        oldest-first. Call uplink_sent() once the radio took it; until then the same frame
        comes back (a failed notification is retried, not lost)."""
        entry = self.outbox.due(now_ms)
        if entry is not None:
            self._pending = ("e", entry)
            return CH_EVENT, entry[1]
        if self._status is not None:
            self._pending = ("s", None)
            return CH_TELEMETRY, self._status
        if self._resend:
            self._pending = ("r", self._resend[0])
            return CH_TELEMETRY, self._resend[0]
        if len(self.ring) == 0:
            self._pending = None
            return None
        if self._cache_id != self._removed:
            rec = self.ring.peek(0)
            t0 = struct.unpack_from(_TIME_FORMAT, rec, 0)[0]
            extra = F.FLAG_BACKFILL if now_ms - t0 > BACKFILL_AGE_MS + self._block_ms() else 0
            self._cache = self._seal(F.TYPE_TELEMETRY, bytes(rec[8:]), t0, extra)[1]
            self._cache_id = self._removed
        self._pending = ("t", self._cache_id)
        return CH_TELEMETRY, self._cache

    def uplink_sent(self, now_ms: int) -> None:
        p = self._pending
        self._pending = None
        if p is None:
            return
        self.sent_frames += 1
        if p[0] == "e":
            if p[1] in self.outbox.entries:
                self.outbox.sent(p[1], now_ms)
        elif p[0] == "s":
            self._status = None
        elif p[0] == "r":
            if self._resend and self._resend[0] is p[1]:
                self._resend.pop(0)
                self.resent_frames += 1
                self._remember(p[1], now_ms)
        elif p[1] == self._removed and len(self.ring):
            self.ring.pop()
            self._removed += 1
            self._remember(self._cache, now_ms)

    def _remember(self, frame: bytes, now_ms: int) -> None:
        recent = self._recent
        while recent and (len(recent) >= RESEND_RECENT_MAX or now_ms - recent[0][0] > RESEND_RECENT_MS):
            recent.pop(0)
        recent.append([now_ms, frame])

    def _block_ms(self) -> int:
        return self.block_samples * 1000 // self.rate_hz

    # ---- downlink --------------------------------------------------------------------------

    def handle_command(self, data, now_ms: int) -> tuple:
        """Verify and apply one command frame written to the control characteristic.

        Returns (code, arg, word); time sync and event acks are applied here, the caller acts
        on help_coming and set_config. Raises frame.FrameError for anything not sealed with
        this device's key, addressed to another device, or replayed."""
        header, payload = F.open_frame(bytes(data), self.keys)
        if header.frame_type != F.TYPE_COMMAND:
            raise F.FrameError("bad_type", "only commands are written to a wearable")
        if header.device_id != self.device_id:
            raise F.FrameError("bad_payload", "command for device %d" % header.device_id)
        code, arg, word = F.decode_command(payload)
        if header.seq <= self._cmd_floor:
            raise F.FrameError("replayed", "command seq %d from before the last start" % header.seq)
        self._commands.check(header.seq)
        if header.seq > self._commands.highest and self._persist_cmd_seq is not None:
            self._persist_cmd_seq(header.seq)
        self._commands.accept(header.seq)
        if code == F.COMMAND_TIME_SYNC:
            self.sync_time(header.time_ms, now_ms)
        elif code == F.COMMAND_EVENT_ACK:
            self.outbox.ack(word)
        return code, arg, word
