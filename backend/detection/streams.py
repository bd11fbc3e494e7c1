"""Every device's sample stream, fed from telemetry frames, and the due windows collected into
model batches.

A device whose clock is not synced stamps its frames from boot: its time is anchored to wall
time at its first frame, and again when it drifts further than ``CLOCK_REANCHOR_MS`` (not on
backfill, whose frames are old by design). The samples a stream releases go on to the raw rows
(:class:`backend.detection.raw.RawRows`); its counters (gaps filled, restarts, late frames) to
the ``vigil_detection_stream`` metric.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from backend.app.metrics import BackendMetrics
from backend.detection.hop import FallStepInput, HopInput, impact_screen, may_hold_impact
from backend.detection.raw import RawRows
from backend.detection.status import StatusBoard
from backend.detection.windows import DeviceStream, FallWindow, StreamCounters, TelemetryChunk, Window, WindowConfig
from backend.ingest.clock import believable
from backend.ingest.registry import DeviceRegistry
from firmware import frame as F

log = logging.getLogger("vigil.detection")

# an unsynced device clock is re-anchored to wall time when it drifts further than this
CLOCK_REANCHOR_MS = 60_000
# The sampling rates the detectors run at: every model was fitted and checked at 50 Hz (the
# recordings resampled to it; firmware/sampler.py makes 50 Hz), and the fall features need at
# least 50 Hz (a 20 ms segment). A verified frame at another rate is stored but never analysed,
# counted and logged: one device's odd rate must never fail the round of every device.
MODEL_RATES_HZ = frozenset({50})


class DeviceStreams:
    def __init__(self, config: WindowConfig, registry: DeviceRegistry, status: StatusBoard, raw_rows: RawRows,
                 metrics: BackendMetrics):
        self.config = config
        self._registry = registry
        self._status = status
        self._raw_rows = raw_rows
        self._metrics = metrics
        self.by_device: dict[int, DeviceStream] = {}
        self._clock_offsets: dict[int, int] = {}  # unsynced devices: device time + offset = wall time
        self._rebased: dict[int, int] = {}  # devices whose synced time is not believable: rebased onto wall time
        self._resets: set[int] = set()
        self._rate_logged: set[int] = set()  # devices whose unsupported rate was logged

    def push(self, frame, now: float, backfill: bool) -> None:
        """One verified telemetry frame into its device's stream: the usual frame (it continues
        its stream, nothing waits) straight into the ring and the raw rows
        (:meth:`DeviceStream.continue_with`), any other through :meth:`push_reference`'s path."""
        device_id, chunk = self._chunk(frame, now, backfill)
        if chunk.rate_hz not in MODEL_RATES_HZ:
            self._unanalysed(device_id, chunk, now)
            return
        stream = self.by_device.get(device_id)
        if stream is not None and stream.continue_with(chunk):
            self._raw_rows.released_one(device_id, chunk, now)
        else:
            self._push_queued(device_id, stream, chunk, now)

    def push_reference(self, frame, now: float, backfill: bool) -> None:
        """:meth:`push` with every frame through the stream's reorder queue (the path before the
        fast one, which must give the same windows and raw rows): the reference of the tests."""
        device_id, chunk = self._chunk(frame, now, backfill)
        if chunk.rate_hz not in MODEL_RATES_HZ:
            self._unanalysed(device_id, chunk, now)
            return
        self._push_queued(device_id, self.by_device.get(device_id), chunk, now)

    def _unanalysed(self, device_id: int, chunk: TelemetryChunk, now: float) -> None:
        """A frame at a rate the detectors do not run at: its samples are stored, never analysed."""
        self._raw_rows.released_one(device_id, chunk, now)
        self._metrics.detection_stream.labels("unsupported_rate").inc()
        if device_id not in self._rate_logged:
            self._rate_logged.add(device_id)
            log.error("device %#010x sends telemetry at %d Hz; the detectors run at %s Hz only: its samples are "
                      "stored but NOT analysed (no fall or man-down detection for this device)",
                      device_id, chunk.rate_hz, "/".join(str(r) for r in sorted(MODEL_RATES_HZ)))

    def _chunk(self, frame, now: float, backfill: bool) -> tuple[int, TelemetryChunk]:
        d, h = frame.device, frame.header
        rate_hz, _led, ppg, accel = frame.decoded
        time_ms, offset = h.time_ms, 0
        if h.flags & F.FLAG_CLOCK_UNSYNCED:  # time_ms counts from boot: anchor it to wall time
            offset = self._anchor(self._clock_offsets, d.device_id, h.time_ms, now, backfill)
        elif not believable(h.time_ms, now * 1000):
            # no time to believe (1970, beyond 9999, a synced clock well ahead of ours:
            # backend/ingest/clock.py): the stream runs on the receive time instead, rebased once
            # (exact integers: a time near 2**62 has no millisecond left as a float)
            time_ms = h.time_ms + self._anchor(self._rebased, d.device_id, h.time_ms, now, backfill)
        return d.device_id, TelemetryChunk(h.seq, time_ms, rate_hz, np.asarray(ppg, np.int32),
                                           np.asarray(accel, np.int16), backfill, offset)

    def _push_queued(self, device_id: int, stream: DeviceStream | None, chunk: TelemetryChunk, now: float) -> None:
        if stream is None:
            stream = self.by_device[device_id] = DeviceStream(device_id, self.config)
        c = stream.counters
        before = (c.gaps_filled, c.restarts, c.late_frames, c.clock_jumps, c.jitter_frames)
        self._raw_rows.released(device_id, stream.push(chunk, now), now)
        if stream.counters.late_frames != before[2]:
            self._raw_rows.released(device_id, stream.take_late(), now)
        self._count(stream, before)

    @staticmethod
    def _anchor(offsets: dict[int, int], device_id: int, time_ms: int, now: float, backfill: bool) -> int:
        """The device's offset from its clock to wall time; set again when it drifts further
        than CLOCK_REANCHOR_MS (never from a backfill frame, whose time is old by nature)."""
        known = offsets.get(device_id)
        if known is None or abs(time_ms + known - now * 1000) > CLOCK_REANCHOR_MS and not backfill:
            known = offsets[device_id] = int(now * 1000) - time_ms
        return known

    def _count(self, stream: DeviceStream, before: tuple[int, ...]) -> None:
        c = stream.counters
        after = (c.gaps_filled, c.restarts, c.late_frames, c.clock_jumps, c.jitter_frames)
        if before == after:
            return  # nothing happened to the stream: the usual case
        for kind, old, new in zip(("gap_filled", "restart", "late_frame", "clock_jump", "time_jitter"), before, after):
            if new > old:
                self._metrics.detection_stream.labels(kind).inc(new - old)

    def __getitem__(self, device_id: int) -> DeviceStream:
        return self.by_device[device_id]

    def counters(self, device_id: int) -> StreamCounters | None:
        stream = self.by_device.get(device_id)
        return stream.counters if stream else None

    def reset_man_down(self, device_id: int) -> None:
        """A supervisor or the officer cleared a man-down alarm: re-arm the detector with the device's next window."""
        self._resets.add(device_id)

    def collect(self, now: float) -> tuple[list[HopInput | FallStepInput], frozenset[int]]:
        """Take every device's due fall steps and one due window from every device that has one,
        grouped into batches: fall steps by (placement, rate, first step or not), windows by
        (placement, rate); one model call per batch, the fall steps' batches first (a hop's man-down
        takes the suspicion of the steps up to its end). Also returns the devices among them
        whose man-down alarm is to be re-armed."""
        for device_id, stream in self.by_device.items():
            if stream.waiting:
                self._raw_rows.released(device_id, stream.release(now), now)
                self._raw_rows.released(device_id, stream.take_late(), now)
        self._raw_rows.flush_paused(now)
        groups: dict[tuple, list[tuple[Window, bool]]] = defaultdict(list)
        fall_groups: dict[tuple, list[FallWindow]] = defaultdict(list)
        screened: dict[tuple, list[tuple[DeviceStream, int, np.ndarray]]] = defaultdict(list)
        resets = set()
        for device_id, stream in self.by_device.items():
            hop_due, fall_due = stream.due(), stream.fall_due()
            if not (hop_due or fall_due):
                continue
            record = self._registry.get(device_id)
            if record is None or record.officer_id is None:
                stream.skip_fall_steps()  # unassigned now: skip, never page for nobody
                if hop_due:
                    stream.take_window()
                continue
            if fall_due:  # the steps up to the next hop's end, oldest first
                screen = impact_screen(record.placement, stream.rate_hz)
                for end, first, decidable in stream.take_fall_steps(screen[0] if screen else 0):
                    if first or screen is None:
                        fall_groups[(record.placement, stream.rate_hz, first)].append(stream.fall_window(end, first))
                    else:
                        screened[(record.placement, stream.rate_hz)].append((stream, end, decidable))
            if not hop_due:
                continue
            if device_id in self._resets:
                resets.add(device_id)
                self._resets.discard(device_id)
            window = stream.take_window()
            st = self._status.devices.get(device_id)
            worn = st is None or not (st.worn is False or st.skin_contact is False)
            groups[(record.placement, stream.rate_hz)].append((window, worn))
        # the model sees only the steps that may hold an impact (the windows are copied for them only)
        for (placement, rate), steps in screened.items():
            maybe = may_hold_impact(np.stack([s[2] for s in steps]), impact_screen(placement, rate)[1])
            for (stream, end, _), keep in zip(steps, maybe.tolist()):
                if keep:
                    fall_groups[(placement, rate, False)].append(stream.fall_window(end, False))
        batches: list[HopInput | FallStepInput] = []
        for (placement, rate, first), falls in fall_groups.items():
            batches.append(FallStepInput(placement, rate, self.config.samples(rate)[0],
                                         None if first else self.config.fall_step_samples(rate), falls))
        for (placement, rate), items in groups.items():
            w, hop, step = self.config.samples(rate)
            batches.append(HopInput(placement, rate, w, hop, step, [i[0] for i in items], [],
                                    np.array([i[1] for i in items])))
        return batches, frozenset(resets)
