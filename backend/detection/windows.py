"""Per-device sample streams: reorder, gap handling and the sliding-window scheduler.

Pure bookkeeping over arrays: no I/O, no clock. The caller passes the wall time in (``now``)
so tests replay exactly.

A :class:`DeviceStream` receives verified telemetry chunks (one frame = 20 samples) in any
order. A small jitter buffer releases them in device-time order: at once when a chunk
continues the stream, otherwise when more than ``reorder_frames`` wait or the oldest waited
``reorder_wait_s``. Released samples go into a ring buffer indexed by an absolute sample
number (0 = first sample since the stream (re)started), so the stream is always contiguous in
time:

* a gap of at most ``gap_fill_s`` (a lost notification) is filled by holding the last
  sample and counted;
* a longer gap (link lost without backfill, clock changed, rate changed) restarts the stream:
  the windows refill from the next chunk, and the restart is counted;
* the next frame (a newer sequence number) dated up to ``TIME_JITTER_SAMPLES`` samples early
  continues the stream: the device dates a block at the poll that completed it, and its sampler
  drops a sample when its oscillators drift apart;
* a chunk older than what was already released arrives too late to be analysed; it is
  counted and left out of the windows, and handed back by :meth:`DeviceStream.take_late` so its
  samples are still stored (acknowledged to the broker means kept).

Windows are analysed in hops: the first window ends once ``window + hop - feature_step``
samples are in (features are computed for every ``feature_step`` inside a hop, so a hop
needs that much history), then every ``hop`` samples. A device whose stream ran ahead (a
backfill burst, simulated time) has several windows due; the service analyses them in
rounds, oldest first, so every model sees each window exactly once and in order.

Falls are decided more often than the hop, in fall steps: the last ``window`` of accelerometer
every ``fall_step`` samples, the first once ``window`` samples are in. A fall can be decided
``post_impact_s`` (1.5 s) after its impact; at a 2 s hop that was 1.5-3.5 s, at a 0.5 s fall
step it is 1.5-2.0 s. The fall steps ending up to a hop's end are taken before that hop (its
man-down needs their suspicion), never beyond it, so each impact is decided by exactly one step
and a hop sees the suspicions of the steps since the previous hop.
"""
from __future__ import annotations

import collections
import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class WindowConfig:
    window_s: float = 8.0
    hop_s: float = 2.0
    feature_step_s: float = 1.0
    fall_step_s: float = 0.5
    reorder_frames: int = 3
    reorder_wait_s: float = 1.0
    gap_fill_s: float = 1.0
    backlog_s: float = 60.0

    def __post_init__(self) -> None:
        if not (0 < self.hop_s <= self.window_s):
            raise ValueError("detection hop must be positive and at most the window")
        steps = self.hop_s / self.feature_step_s
        if self.feature_step_s <= 0 or abs(steps - round(steps)) > 1e-9:
            raise ValueError("the hop must be a whole number of feature steps")
        if not (0 < self.fall_step_s <= self.hop_s):
            raise ValueError("the fall step must be positive and at most the hop")

    def samples(self, rate_hz: int) -> tuple[int, int, int]:
        """(window, hop, feature step) in samples at ``rate_hz``."""
        return (int(round(self.window_s * rate_hz)), int(round(self.hop_s * rate_hz)),
                int(round(self.feature_step_s * rate_hz)))

    def fall_step_samples(self, rate_hz: int) -> int:
        """The fall step in samples at ``rate_hz`` (at least one)."""
        return max(1, int(round(self.fall_step_s * rate_hz)))


@dataclass(slots=True)
class TelemetryChunk:
    """The samples of one verified telemetry frame."""

    seq: int
    time_ms: int                # device time of the first sample
    rate_hz: int
    ppg: np.ndarray             # (n,) raw uint24 counts
    accel_mg: np.ndarray        # (n, 3) milli-g, device axes
    backfill: bool
    wall_offset_ms: int = 0     # add to device time for wall time (non-zero when the clock is unsynced)


# How early (in sample periods) the next frame of a device may start and still continue its stream:
# block times are estimated at the device's FIFO poll, and a sampler slip drops one sample.
TIME_JITTER_SAMPLES = 5


@dataclass(slots=True)
class StreamCounters:
    gaps_filled: int = 0
    samples_filled: int = 0
    restarts: int = 0
    late_frames: int = 0
    clock_jumps: int = 0        # restarts because the device's clock went back (a newer frame, an earlier time)
    jitter_frames: int = 0      # the next frame up to TIME_JITTER_SAMPLES early, taken as continuing the stream
    skipped_windows: int = 0
    skipped_fall_steps: int = 0  # fall steps whose samples the ring no longer held (a stream far behind)


@dataclass(slots=True)
class Window:
    """One due window of one device, copied out of the ring for analysis."""

    device_id: int
    end_index: int              # absolute index of the sample after the window
    end_ms: int                 # device time of that sample
    wall_end_ms: int
    ppg: np.ndarray             # (span,) counts
    accel_mg: np.ndarray        # (span, 3)
    seq: np.ndarray             # (span,) frame seq of every sample
    first: bool                 # first window since the stream (re)started
    backfill: bool              # the newest samples came from backfill frames
    last_frame_wall_ms: int | None = None   # wall time stamped on the frame of the window's last sample


@dataclass(slots=True)
class FallWindow:
    """One due fall step of one device: the last ``window`` of accelerometer, copied out of the ring."""

    device_id: int
    end_index: int              # absolute index of the sample after the window
    end_ms: int                 # device time of that sample
    wall_end_ms: int
    accel_mg: np.ndarray        # (window, 3)
    last_seq: int               # frame seq of the window's last sample
    first: bool                 # first fall step since the stream (re)started: the whole window is new
    backfill: bool              # the newest samples came from backfill frames


_tiebreak = itertools.count()
# chunk marks kept per device: a window is normally taken within a few frames of its end
CHUNK_MARKS = 8
MAX_CHUNK_SAMPLES = 23  # firmware.frame.MAX_SAMPLES


@dataclass
class DeviceStream:
    device_id: int
    config: WindowConfig
    rate_hz: int | None = None
    counters: StreamCounters = field(default_factory=StreamCounters)

    def __post_init__(self) -> None:
        self._pending: list[tuple[int, int, TelemetryChunk, float]] = []  # (time_ms, tiebreak, chunk, arrived)
        self._late: list[TelemetryChunk] = []  # chunks too late for the windows, for the raw store
        # (absolute index after the chunk, the chunk's wall ms) of the newest chunks: which frame
        # ended a window, for the frame -> features latency
        self._chunk_ends: collections.deque[tuple[int, int]] = collections.deque(maxlen=CHUNK_MARKS)
        self._restart(None)

    # ---- ingest --------------------------------------------------------------------------------

    def _restart(self, rate_hz: int | None) -> None:
        self._chunk_ends.clear()
        self.rate_hz = rate_hz
        self.total = 0                  # samples appended since the (re)start
        self.t0_ms: int | None = None   # device time of absolute sample 0
        self.wall_offset_ms = 0
        self.next_end = 0
        self.analysed = 0               # windows analysed since the (re)start
        self.fall_end = 0               # absolute index after the next fall step's window
        self.fall_steps = 0             # fall steps taken (or skipped) since the (re)start
        self.backfill_until = -1        # absolute index up to which samples came from backfill
        if rate_hz:
            window, hop, step = self._samples = self.config.samples(rate_hz)
            self._span = window + hop - step
            self.capacity = window + hop + int(self.config.backlog_s * rate_hz)
            self.next_end = window + hop - step
            self.fall_end = window
            self._fall_step = self.config.fall_step_samples(rate_hz)
            self._ppg = np.zeros(self.capacity, np.int32)
            self._accel = np.zeros((self.capacity, 3), np.int16)
            self._seq = np.zeros(self.capacity, np.int64)

    @property
    def expected_ms(self) -> float | None:
        if self.t0_ms is None:
            return None
        return self.t0_ms + self.total * 1000.0 / self.rate_hz

    def push(self, chunk: TelemetryChunk, now: float) -> list[TelemetryChunk]:
        """Queue a chunk; returns the chunks released to the windows (in order)."""
        if not self._pending and self._in_order(chunk):  # nothing waits and it continues the stream: no queue
            return [chunk] if self._append(chunk) else []
        heapq.heappush(self._pending, (chunk.time_ms, next(_tiebreak), chunk, now))
        return self.release(now)

    def take_late(self) -> list[TelemetryChunk]:
        """The chunks found too late for the windows since the last call (their samples are
        still to be stored)."""
        late, self._late = self._late, []
        return late

    def release(self, now: float) -> list[TelemetryChunk]:
        """Release the waiting chunks that continue the stream, arrived too late to wait for,
        or waited long enough (``now``: wall seconds, passed in)."""
        out: list[TelemetryChunk] = []
        while self._pending:
            _, _, chunk, arrived = self._pending[0]
            overdue = len(self._pending) > self.config.reorder_frames or now - arrived >= self.config.reorder_wait_s
            if not (self._in_order(chunk) or overdue):
                break  # a gap ahead: wait a little for the frame that fills it
            heapq.heappop(self._pending)
            if self._append(chunk):
                out.append(chunk)
        return out

    def _in_order(self, chunk: TelemetryChunk) -> bool:
        """The chunk starts where the stream ends, within half a sample (or the stream is new)."""
        expected = self.expected_ms
        return expected is None or chunk.time_ms <= expected + 500.0 / chunk.rate_hz

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def continue_with(self, chunk: TelemetryChunk) -> bool:
        """The usual frame, appended at once: nothing waits, the stream runs at its rate, and the
        chunk starts where the stream ends (within half a sample) on the same wall offset.
        Returns False, having done nothing, for any other chunk (:meth:`push` takes it). The
        same checks and writes as :meth:`push` and :meth:`_append` for this case, minus their
        branches and queue (tests/backend/test_detection_fastpath.py replays both)."""
        if self._pending or self.t0_ms is None or self.rate_hz != chunk.rate_hz:
            return False
        rate = chunk.rate_hz
        expected = self.t0_ms + self.total * 1000.0 / rate
        time_ms = chunk.time_ms
        period = 1000.0 / rate
        if time_ms > expected + 500.0 / rate or (not chunk.backfill and abs(chunk.wall_offset_ms - self.wall_offset_ms) > period):
            return False
        delta = time_ms - expected
        if delta < -period / 2 or delta > period / 2:
            return False  # early (jitter, late, clock jump) or a gap: push decides
        self._write(chunk.ppg, chunk.accel_mg, chunk.seq)
        self._chunk_ends.append((self.total, time_ms + chunk.wall_offset_ms))
        if chunk.backfill:
            self.backfill_until = self.total
        return True

    def _append(self, chunk: TelemetryChunk) -> bool:
        if self.rate_hz != chunk.rate_hz:
            if self.rate_hz is not None:
                self.counters.restarts += 1
            self._restart(chunk.rate_hz)
        period = 1000.0 / chunk.rate_hz
        if self.t0_ms is None:
            self.t0_ms = chunk.time_ms
            self.wall_offset_ms = chunk.wall_offset_ms
        elif not chunk.backfill and abs(chunk.wall_offset_ms - self.wall_offset_ms) > period:
            # the device clock was re-anchored to wall time (unsynced, or not believable): a new stream
            self.counters.restarts += 1
            self._restart(chunk.rate_hz)
            self.t0_ms = chunk.time_ms
            self.wall_offset_ms = chunk.wall_offset_ms
        else:
            delta = chunk.time_ms - self.expected_ms
            if delta < -period / 2 and chunk.seq > self._last_seq() and delta >= -TIME_JITTER_SAMPLES * period:
                # the next frame, a little early: the device dates a block at the poll that completed
                # it, and its sampler drops a sample when its two oscillators drift apart (a slip):
                # the stream goes on, nothing is late
                self.counters.jitter_frames += 1
                delta = 0
            if delta < -period / 2:
                if chunk.backfill or chunk.seq <= self._last_seq():
                    self.counters.late_frames += 1  # an older frame: it arrived too late
                    self._late.append(chunk)  # too late to analyse, never too late to store
                    return False
                # a newer frame with an earlier time: the clock went back (-1 h, a reset to 1970, a
                # clock counting from boot). Every later frame would look late: start a new stream.
                self.counters.restarts += 1
                self.counters.clock_jumps += 1
                self._restart(chunk.rate_hz)
                self.t0_ms = chunk.time_ms
                self.wall_offset_ms = chunk.wall_offset_ms
                delta = 0
            if delta > period / 2:
                missing = int(round(delta / period))
                if missing * period > self.config.gap_fill_s * 1000.0:
                    self.counters.restarts += 1
                    self._restart(chunk.rate_hz)
                    self.t0_ms = chunk.time_ms
                    self.wall_offset_ms = chunk.wall_offset_ms
                else:
                    self.counters.gaps_filled += 1
                    self.counters.samples_filled += missing
                    last = (self.total - 1) % self.capacity
                    self._write(np.full(missing, self._ppg[last]), np.tile(self._accel[last], (missing, 1)),
                                self._seq[last])
        self._write(chunk.ppg, chunk.accel_mg, chunk.seq)
        self._chunk_ends.append((self.total, chunk.time_ms + chunk.wall_offset_ms))
        if chunk.backfill:
            self.backfill_until = self.total
        return True

    def _last_seq(self) -> int:
        return int(self._seq[(self.total - 1) % self.capacity]) if self.total else -1

    def _write(self, ppg: np.ndarray, accel: np.ndarray, seq: int) -> None:
        # slices, not an index array: this runs for every frame of every device
        n = len(ppg)
        start = self.total % self.capacity
        end = start + n
        if end <= self.capacity:  # the usual case: one piece of the ring
            self._ppg[start:end] = ppg
            self._accel[start:end] = accel
            self._seq[start:end] = seq
        else:  # wraps around the ring's end
            first = self.capacity - start
            self._ppg[start:] = ppg[:first]
            self._accel[start:] = accel[:first]
            self._seq[start:] = seq
            self._ppg[:n - first] = ppg[first:]
            self._accel[:n - first] = accel[first:]
            self._seq[:n - first] = seq
        self.total += n
        # A stream far ahead of the analysis (the ring would overwrite unanalysed samples):
        # skip the windows that can no longer be formed.
        oldest = self.total - self.capacity
        span = self._span
        if self.next_end - span < oldest or self.fall_end - self._samples[0] < oldest:
            window, hop, _ = self._samples
            while self.next_end - span < oldest:
                self.next_end += hop
                self.analysed += 1
                self.counters.skipped_windows += 1
            while self.fall_end - window < oldest:
                self.fall_end += self._fall_step
                self.fall_steps += 1
                self.counters.skipped_fall_steps += 1

    # ---- windows ---------------------------------------------------------------------------------

    def due(self) -> bool:
        return self.rate_hz is not None and self.total >= self.next_end

    def take_window(self) -> Window:
        """Copy the next due window (with ``hop - feature_step`` samples of extra history) and
        advance to the next hop."""
        _, hop, _ = self._samples
        span = self._span
        end = self.next_end
        start = (end - span) % self.capacity
        if start + span <= self.capacity:  # one piece of the ring: slices, copied
            cut = slice(start, start + span)
            ppg, accel, seq = self._ppg[cut].copy(), self._accel[cut].copy(), self._seq[cut].copy()
        else:  # wraps around the ring's end
            idx = np.arange(start, start + span) % self.capacity
            ppg, accel, seq = self._ppg[idx], self._accel[idx], self._seq[idx]
        end_ms = int(round(self.t0_ms + end * 1000.0 / self.rate_hz))
        w = Window(self.device_id, end, end_ms, end_ms + self.wall_offset_ms, ppg, accel, seq, self.analysed == 0,
                   end <= self.backfill_until, self._frame_wall_ms(end))
        self.next_end += hop
        self.analysed += 1
        return w

    def fall_due(self) -> bool:
        """A fall step is due: its window is in, and it ends no later than the next hop's
        window (whose man-down takes its suspicion)."""
        return self.rate_hz is not None and self.fall_end <= self.total and self.fall_end <= self.next_end

    def take_fall_steps(self, undecidable: int) -> list[tuple[int, bool, np.ndarray | None]]:
        """Advance past every due fall step. Returns, oldest first, the end of each step's window
        (absolute index), whether it is the first since the (re)start, and the accelerometer
        samples it makes decidable: those from ``undecidable + fall step`` to ``undecidable``
        samples before its end (a view of the ring unless it wraps; None for a first step, whose
        whole window is new). :meth:`fall_window` copies a step's window out, until the next
        sample is written."""
        out = []
        step, capacity, limit = self._fall_step, self.capacity, min(self.total, self.next_end)
        while self.fall_end <= limit:
            end, first = self.fall_end, self.fall_steps == 0
            self.fall_end += step
            self.fall_steps += 1
            if first:
                out.append((end, True, None))
                continue
            start = (end - undecidable - step) % capacity
            if start + step <= capacity:
                out.append((end, False, self._accel[start:start + step]))
            else:
                out.append((end, False, self._accel[np.arange(start, start + step) % capacity]))
        return out

    def fall_window(self, end: int, first: bool) -> FallWindow:
        """Copy the last ``window`` of accelerometer before sample ``end`` (a step just taken)."""
        window = self._samples[0]
        start = (end - window) % self.capacity
        if start + window <= self.capacity:
            accel = self._accel[start:start + window].copy()
        else:  # wraps around the ring's end
            accel = self._accel[np.arange(start, start + window) % self.capacity]
        end_ms = int(round(self.t0_ms + end * 1000.0 / self.rate_hz))
        return FallWindow(self.device_id, end, end_ms, end_ms + self.wall_offset_ms, accel,
                          int(self._seq[(end - 1) % self.capacity]), first, end <= self.backfill_until)

    def take_fall_window(self) -> FallWindow:
        """The window of the next due fall step, advancing past it: every step's window, with
        no screening (the reference of the tests; the service screens, :meth:`DeviceStreams.collect`)."""
        end = self.fall_end
        self.fall_end += self._fall_step
        self.fall_steps += 1
        return self.fall_window(end, self.fall_steps == 1)

    def skip_fall_steps(self) -> None:
        """Pass over the due fall steps without analysing them (a device nobody wears)."""
        while self.fall_due():
            self.fall_end += self._fall_step
            self.fall_steps += 1

    def _frame_wall_ms(self, end: int) -> int | None:
        """Wall ms of the chunk that carried sample ``end - 1`` (None once it left the marks)."""
        if not self._chunk_ends or self._chunk_ends[0][0] - MAX_CHUNK_SAMPLES >= end:
            return None
        for after, wall_ms in self._chunk_ends:
            if after >= end:
                return wall_ms
        return None

    def seq_at(self, device_ms: float, default: int) -> int:
        """Seq of the frame that carried the sample at ``device_ms`` (``default`` if no longer held)."""
        if self.t0_ms is None or not np.isfinite(device_ms):
            return default
        i = int(round((device_ms - self.t0_ms) * self.rate_hz / 1000.0))
        if i < max(0, self.total - self.capacity) or i >= self.total:
            return default
        return int(self._seq[i % self.capacity])
