"""The streaming detection service: verified frames in; alerts, features, raw windows and
device status out.

``on_frame`` is called by ingest for every verified frame and only does bookkeeping (reorder,
append to the device's ring, status fields): ingest of events and SOS never waits for the
models. The loops of :meth:`DetectionService.run` do the rest:

* hops: every ``detection_tick_s`` (default: the hop, 2 s) the windows that are due are
  collected and analysed in rounds; each round is one call per model per placement over all
  its devices (:mod:`backend.detection.hop`). By default the calls run on the event loop
  itself, at most ``INLINE_CHUNK`` windows at a time with a turn for ingest and SOS in between:
  a worker thread shares the GIL with the busy loop (a round of 900 windows took 1.1 s in the
  thread against 0.2 s alone, most likely waiting for the GIL after every large numpy call), and a worker process costs the
  pickling. ``VIGIL_DETECTION_WORKER`` chooses. A round's duration goes to the
  ``vigil_detection_hop_seconds`` histogram.
* writers: features (1 Hz per device) and raw windows (one row per device per hop) by COPY,
  through bounded buffers that survive a database outage (:mod:`backend.detection.store`).
* status: officer status changes published on the live hub every second; device status,
  raw holds around alerts written periodically (partitions: the runtime's maintenance loop).

Model alerts go through ``AlertService.raise_alert`` with a deterministic pseudo-seq: the seq
of the frame that carried the first sample of the evidence (the impact of a fall, the start
of the stillness of a man-down, the start of a heart-rate run), so a redelivered or replayed
stream names the same alert and cannot page twice.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import multiprocessing
import pickle
import time
from collections import defaultdict, deque
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.incidents.rules import EVENT_ALERTS, alert_id
from backend.incidents.alerts import AlertService
from backend.db import schema as t
from backend.app.config import BackendSettings
from backend.detection.hop import DecisionConfig, DeviceResult, HopInput, ModelStates, run_in_process
from backend.detection.status import StatusBoard
from backend.detection.store import BatchWriter, Copy, _is_db_error
from backend.detection.windows import DeviceStream, TelemetryChunk, Window, WindowConfig
from backend.incidents.hub import LiveHub
from backend.app.metrics import BackendMetrics
from backend.ingest.registry import DeviceRegistry
from backend.app.waiting import wait_for_any
from firmware import frame as F

log = logging.getLogger("vigil.detection")

# Rounds of analysis per tick before yielding to the next tick (a stream far ahead catches up
# over a few ticks instead of one long stall).
MAX_ROUNDS_PER_TICK = 30
# Windows analysed on the event loop between two turns for ingest (~45 ms of models at most).
INLINE_CHUNK = 200
STATUS_SWEEP_S = 1.0
FEATURE_COLUMNS = ("time", "device_id", "officer_id", "heart_rate", "hr_quality", "activity", "posture",
                   "cadence", "motion_energy")
RAW_COLUMNS = ("time", "device_id", "officer_id", "rate_hz", "samples", "ppg", "accel_mg", "backfill", "held_by_alert")
# their binary COPY kinds (t.raw_windows); the sample arrays stay numpy arrays until encoded
RAW_KINDS = ("timestamptz", "int8", "int4", "int2", "int2", "int4[]", "int2[]", "bool", "uuid")
# an unsynced device clock is re-anchored to wall time when it drifts further than this
CLOCK_REANCHOR_MS = 60_000


def _utc(ms: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000.0, dt.timezone.utc)


class DetectionService:
    def __init__(self, settings: BackendSettings, engine: AsyncEngine, registry: DeviceRegistry,
                 alerts: AlertService, hub: LiveHub, metrics: BackendMetrics, *,
                 wall: Callable[[], float] = time.time, store_copy: Copy | None = None):
        self._settings = settings
        self._engine = engine
        self._registry = registry
        self._alerts = alerts
        self._hub = hub
        self._metrics = metrics
        self._wall = wall
        self.window_config = WindowConfig(
            window_s=settings.detection_window_s, hop_s=settings.detection_hop_s,
            feature_step_s=settings.feature_interval_s, reorder_frames=settings.detection_reorder_frames,
            reorder_wait_s=settings.detection_reorder_wait_s, gap_fill_s=settings.detection_gap_fill_s,
            backlog_s=settings.detection_backlog_s)
        self.decision_config = DecisionConfig(live_alert_max_age_s=settings.live_alert_max_age_s)
        self.streams: dict[int, DeviceStream] = {}
        self.model_states = ModelStates()  # used when the models run inline or in a thread
        self.status = StatusBoard(settings.device_offline_s, settings.battery_low_pct)
        self._clock_offsets: dict[int, int] = {}
        self._raw_pending: dict[int, list[TelemetryChunk]] = defaultdict(list)
        self._raw_samples: dict[int, int] = defaultdict(int)  # samples in _raw_pending[device]
        self._raw_touched: dict[int, float] = {}  # device -> wall time samples were last released
        self._holds: dict[int, list[tuple[float, float, object]]] = defaultdict(list)  # device -> (start ms, until ms, alert id)
        self._hold_rows: list[dict] = []
        self._resets: set[int] = set()
        self._executor = self._new_executor()
        self._failure_logged = False
        self._status_failing = False
        self.features = BatchWriter(engine, "features", FEATURE_COLUMNS, metrics, batch_size=settings.feature_batch_size,
                                    max_buffered=settings.feature_buffer_max, retry_s=settings.db_retry_interval_s,
                                    on_stored=self._features_stored, copy=store_copy)
        self.raw = BatchWriter(engine, "raw_windows", RAW_COLUMNS, metrics, batch_size=settings.feature_batch_size,
                               max_buffered=settings.raw_buffer_max, retry_s=settings.db_retry_interval_s,
                               prepare=self._mark_held, kinds=RAW_KINDS, copy=store_copy)
        self.rounds = 0
        self.windows_analysed = 0
        self.paged: deque[tuple[int, str, int]] = deque(maxlen=1000)  # (device, kind, seq), newest last

    # ---- frames (called by ingest, on the event loop) -----------------------------------------------

    def on_frame(self, frame, received_monotonic: float | None = None) -> None:
        """Account one verified frame (a ``backend.ingest.service.VerifiedFrame``); never blocks."""
        now = self._wall()
        d, h = frame.device, frame.header
        backfill = bool(h.flags & F.FLAG_BACKFILL)
        st = self.status.seen(d.device_id, d.agency_id, d.officer_id, d.officer_name, frame.gateway, now, backfill)
        if h.frame_type == F.TYPE_STATUS:
            self.status.status_frame(st, frame.decoded)
        elif h.frame_type == F.TYPE_EVENT:
            kind = EVENT_ALERTS.get(frame.decoded[0])
            if kind is not None:
                st.alert_at = now
                self._hold(d.device_id, alert_id(d.device_id, h.seq, kind), kind, now * 1000.0)
        elif h.frame_type == F.TYPE_TELEMETRY:
            self._on_telemetry(frame, now, backfill)

    def _on_telemetry(self, frame, now: float, backfill: bool) -> None:
        d, h = frame.device, frame.header
        rate_hz, _led, ppg, accel = frame.decoded
        offset = 0
        if h.flags & F.FLAG_CLOCK_UNSYNCED:  # time_ms counts from boot: anchor it to wall time
            known = self._clock_offsets.get(d.device_id)
            if known is None or abs(h.time_ms + known - now * 1000) > CLOCK_REANCHOR_MS and not backfill:
                known = self._clock_offsets[d.device_id] = int(now * 1000) - h.time_ms
            offset = known
        chunk = TelemetryChunk(h.seq, h.time_ms, rate_hz, np.asarray(ppg, np.int32), np.asarray(accel, np.int16),
                               backfill, offset)
        stream = self.streams.get(d.device_id)
        if stream is None:
            stream = self.streams[d.device_id] = DeviceStream(d.device_id, self.window_config)
        before = (stream.counters.gaps_filled, stream.counters.restarts, stream.counters.late_frames)
        self._released(d.device_id, stream.push(chunk, now), now)
        self._count_stream(stream, before)

    def _count_stream(self, stream: DeviceStream, before: tuple[int, int, int]) -> None:
        c = stream.counters
        if before == (c.gaps_filled, c.restarts, c.late_frames):
            return  # nothing happened to the stream: the usual case
        for kind, old, new in zip(("gap_filled", "restart", "late_frame"), before, (c.gaps_filled, c.restarts, c.late_frames)):
            if new > old:
                self._metrics.detection_stream.labels(kind).inc(new - old)

    def _released(self, device_id: int, chunks: list[TelemetryChunk], now: float) -> None:
        """Group released chunks into raw rows of about one hop each."""
        if not chunks:
            return
        self._raw_touched[device_id] = now
        pending = self._raw_pending[device_id]
        hop = int(round(self.window_config.hop_s * chunks[0].rate_hz))
        for c in chunks:
            if pending:
                first, last = pending[0], pending[-1]
                contiguous = (c.rate_hz == first.rate_hz and c.backfill == first.backfill
                              and abs(c.time_ms - (last.time_ms + len(last.ppg) * 1000.0 / last.rate_hz)) <= 500.0 / c.rate_hz)
                if not contiguous:
                    pending = self._raw_row(device_id)
            pending.append(c)
            self._raw_samples[device_id] += len(c.ppg)
            # a full row goes to the writer at once (not when the next chunk arrives)
            if self._raw_samples[device_id] >= hop:
                pending = self._raw_row(device_id)

    def flush_raw_pending(self) -> None:
        """Every device's samples that wait to fill a raw row become a (shorter) row now."""
        for device_id, pending in list(self._raw_pending.items()):
            if pending:
                self._raw_row(device_id)

    def _raw_row(self, device_id: int) -> list[TelemetryChunk]:
        """The device's pending samples become one raw row; returns its new, empty pending list."""
        chunks = self._raw_pending[device_id]
        fresh = self._raw_pending[device_id] = []
        self._raw_samples[device_id] = 0
        d = self._registry.get(device_id)
        first = chunks[0]
        ppg = np.concatenate([c.ppg for c in chunks])
        accel = np.concatenate([c.accel_mg for c in chunks])
        self.raw.add([_utc(first.time_ms + first.wall_offset_ms), device_id, d.officer_id if d else None,
                      first.rate_hz, len(ppg), ppg, accel.reshape(-1), first.backfill, None])
        return fresh

    # ---- raw holds around alerts --------------------------------------------------------------------

    def _hold(self, device_id: int, aid, kind: str, at_ms: float) -> None:
        span = self._settings.raw_hold_minutes * 60_000.0
        start, until = at_ms - span, at_ms + span
        self._holds[device_id].append((start, until, aid))
        self._hold_rows.append({"alert_id": aid, "device_id": device_id, "start": _utc(start), "until": _utc(until), "kind": kind})

    def _mark_held(self, row: list) -> tuple:
        if row[8] is None:
            ms = row[0].timestamp() * 1000.0
            for start, until, aid in self._holds.get(row[1], ()):
                if start <= ms < until:
                    row[8] = aid
                    break
        return tuple(row)

    def reset_man_down(self, device_id: int) -> None:
        """A supervisor or the officer cleared a man-down alarm: re-arm the detector now."""
        self._resets.add(device_id)

    # ---- hops ---------------------------------------------------------------------------------------

    def collect(self, now: float) -> tuple[list[HopInput], frozenset[int]]:
        """Take one due window from every device that has one, grouped into batches by
        (placement, rate, first window or not): one model call per batch. Also returns the
        devices among them whose man-down alarm is to be re-armed."""
        for device_id, stream in self.streams.items():
            if stream.waiting:
                self._released(device_id, stream.release(now), now)
        for device_id, pending in list(self._raw_pending.items()):
            if pending and now - self._raw_touched.get(device_id, now) >= self.window_config.hop_s:
                self._raw_row(device_id)  # the stream paused: do not hold its last samples back
        groups: dict[tuple, list[tuple[Window, bool]]] = defaultdict(list)
        resets = set()
        for device_id, stream in self.streams.items():
            if not stream.due():
                continue
            record = self._registry.get(device_id)
            if record is None or record.officer_id is None:
                stream.take_window()  # unassigned now: skip, never page for nobody
                continue
            if device_id in self._resets:
                resets.add(device_id)
                self._resets.discard(device_id)
            window = stream.take_window()
            st = self.status.devices.get(device_id)
            worn = st is None or not (st.worn is False or st.skin_contact is False)
            groups[(record.placement, stream.rate_hz, window.first)].append((window, worn))
        batches = []
        for (placement, rate, first), items in groups.items():
            w, hop, step = self.window_config.samples(rate)
            batches.append(HopInput(placement, rate, w, hop, step, None if first else hop,
                                    [i[0] for i in items], [], np.array([i[1] for i in items])))
        return batches, frozenset(resets)

    def _new_executor(self) -> concurrent.futures.Executor | None:
        # process: the models get a core without the GIL that ingest needs; the windows travel
        # pickled (about 5 kB per device and hop), the model states stay there. thread: shares
        # the GIL with the event loop. inline: no executor.
        if self._settings.detection_worker == "process":
            return concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        if self._settings.detection_worker == "thread":
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vigil-detection")
        return None  # inline: on the event loop

    async def run_round(self, now: float) -> int:
        """Collect, analyse (inline in chunks, or in the worker), apply. Returns the number of
        windows analysed."""
        batches, resets = self.collect(now)
        if not batches:
            return 0
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            if self._settings.detection_worker == "process":
                sent = pickle.dumps((batches, resets, int(now * 1000), self.decision_config), protocol=pickle.HIGHEST_PROTOCOL)
                outcome = pickle.loads(await loop.run_in_executor(self._executor, run_in_process, sent))
            elif self._settings.detection_worker == "inline":
                outcome = []
                for batch in batches:
                    parts = []
                    for i in range(0, len(batch.windows), INLINE_CHUNK):
                        part = dataclasses.replace(batch, windows=batch.windows[i:i + INLINE_CHUNK],
                                                   worn_reported=batch.worn_reported[i:i + INLINE_CHUNK])
                        parts += self.model_states.run([part], resets, int(now * 1000), self.decision_config)[0]
                        await asyncio.sleep(0)
                    outcome.append(parts)
            else:
                outcome = await loop.run_in_executor(self._executor, self.model_states.run, batches, resets,
                                                     int(now * 1000), self.decision_config)
        except Exception as exc:  # a model error must not stop ingest: log it once, count every one
            self._metrics.detection_failures.inc()
            if isinstance(exc, concurrent.futures.BrokenExecutor):  # the worker process died: a new one
                log.error("detection worker lost (%s); starting a new one (model states start afresh)",
                          exc.__class__.__name__)
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            if not self._failure_logged:
                self._failure_logged = True
                log.exception("DETECTION ROUND FAILED; the windows of this round are skipped")
            return 0
        finally:
            self._metrics.detection_hop.observe(time.perf_counter() - started)
        n = 0
        for batch, results in zip(batches, outcome):
            for window, result in zip(batch.windows, results):
                await self._apply(window, result, now)
                n += 1
        self.features.wake()  # the round's features go to the database now, not at the next flush tick
        self.rounds += 1
        self.windows_analysed += n
        self._metrics.detection_windows.inc(n)
        return n

    def _features_stored(self, stamps_ms: list[int]) -> None:
        now_ms = self._wall() * 1000.0
        for stamp in stamps_ms:
            self._metrics.frame_to_features.observe(max(0.0, now_ms - stamp) / 1000.0)

    async def _apply(self, window: Window, result: DeviceResult, now: float) -> None:
        record = self._registry.get(result.device_id)
        officer_id = record.officer_id if record else None
        last = len(result.features) - 1
        for i, f in enumerate(result.features):
            self.features.add([_utc(f.wall_ms), result.device_id, officer_id, f.heart_rate, f.hr_quality,
                               f.activity, f.posture, f.cadence, f.motion_energy],
                              window.last_frame_wall_ms if i == last else None)
        st = self.status.devices.get(result.device_id)
        if st is not None:
            st.man_down_phase = result.man_down_phase
            st.model_worn = result.worn
        for kind in result.stale:
            self._metrics.detection_alerts_stale.labels(kind).inc()
            log.info("device %d: %s from a window older than %.0f s not paged (backfill)", result.device_id, kind,
                     self.decision_config.live_alert_max_age_s)
        if record is None or not result.alerts:
            return
        stream = self.streams[result.device_id]
        offset = window.wall_end_ms - window.end_ms
        for c in result.alerts:
            seq = stream.seq_at(c.evidence_ms, c.window_seq)
            await self._alerts.raise_alert(
                agency_id=record.agency_id, device_id=record.device_id, seq=seq, kind=c.kind,
                officer_id=record.officer_id, officer_name=record.officer_name, explanation=c.explanation,
                device_time=_utc(c.evidence_ms + offset), location=None, received_monotonic=None)
            self.paged.append((record.device_id, c.kind, seq))
            if st is not None:
                st.alert_at = now
            self._hold(record.device_id, alert_id(record.device_id, seq, c.kind), c.kind, c.evidence_ms + offset)

    async def run_hops(self, stop: asyncio.Event) -> None:
        tick = self._settings.detection_tick_s or self._settings.detection_hop_s
        while not stop.is_set():
            rounds = 0
            while rounds < MAX_ROUNDS_PER_TICK and await self.run_round(self._wall()):
                rounds += 1
            if rounds < MAX_ROUNDS_PER_TICK:
                await wait_for_any(stop, timeout=tick)

    # ---- status and holds -----------------------------------------------------------------------------

    def publish_status(self, now: float) -> int:
        changes = self.status.changes(now)
        for st, status in changes:
            self._hub.publish(st.agency_id, "officer_status", status)
        return len(changes)

    async def write_status(self) -> None:
        """Device status of changed devices and pending raw holds; kept for retry on failure."""
        dirty = [st for st in self.status.devices.values() if st.dirty and st.last_seen is not None]
        holds = list(self._hold_rows)
        if not dirty and not holds:
            return
        now = _utc(self._wall() * 1000)
        rows = []
        for st in dirty:
            stream = self.streams.get(st.device_id)
            c = stream.counters if stream else None
            connected = st.published["device"] == "connected" if st.published else True
            rows.append({
                "device_id": st.device_id, "last_seen": _utc(st.last_seen * 1000), "gateway": st.gateway,
                "connected": connected, "battery_pct": st.battery_pct, "battery_mv": st.battery_mv,
                "charging": st.charging, "worn": st.worn, "skin_contact": st.skin_contact, "firmware": st.firmware,
                "dropped_samples": st.dropped_samples,
                "link_gaps": (c.gaps_filled + c.restarts) if c else 0, "late_frames": c.late_frames if c else 0,
                "backfill_frames": st.backfill_frames, "updated_at": now})
        async with self._engine.begin() as conn:
            if rows:
                ins = pg_insert(t.device_status)
                await conn.execute(ins.on_conflict_do_update(
                    index_elements=["device_id"], set_={k: ins.excluded[k] for k in rows[0] if k != "device_id"}), rows)
                await conn.execute(
                    sa.update(t.devices).where(t.devices.c.id == sa.bindparam("b_id")).values(
                        last_seen=sa.bindparam("b_seen"),
                        battery_pct=sa.func.coalesce(sa.bindparam("b_pct", type_=sa.SmallInteger), t.devices.c.battery_pct),
                        firmware=sa.func.coalesce(sa.bindparam("b_fw", type_=sa.Text), t.devices.c.firmware)),
                    [{"b_id": r["device_id"], "b_seen": r["last_seen"], "b_pct": r["battery_pct"], "b_fw": r["firmware"]} for r in rows])
            for h in holds:
                await conn.execute(pg_insert(t.raw_holds).values(**h).on_conflict_do_nothing())
                await conn.execute(
                    sa.update(t.raw_windows)
                    .where(t.raw_windows.c.device_id == h["device_id"], t.raw_windows.c.time >= h["start"],
                           t.raw_windows.c.time < h["until"], t.raw_windows.c.held_by_alert.is_(None))
                    .values(held_by_alert=h["alert_id"]))
        for st in dirty:
            st.dirty = False
        del self._hold_rows[:len(holds)]
        self._prune_holds(self._wall() * 1000)

    def _prune_holds(self, now_ms: float) -> None:
        # a hold only matters in memory until its rows are written (the database keeps it)
        margin = 60_000.0 + self._settings.detection_backlog_s * 1000.0
        for device_id in list(self._holds):
            kept = [h for h in self._holds[device_id] if h[1] > now_ms - margin]
            if kept:
                self._holds[device_id] = kept
            else:
                del self._holds[device_id]

    async def run_status(self, stop: asyncio.Event) -> None:
        next_write = 0.0
        while not stop.is_set():
            now = self._wall()
            self.publish_status(now)
            try:
                if now >= next_write:
                    next_write = now + self._settings.status_flush_s
                    await self.write_status()
                if self._status_failing:
                    log.warning("device status writes recovered")
                    self._status_failing = False
            except Exception as exc:  # noqa: BLE001 - database errors only; others re-raised
                if not _is_db_error(exc):
                    raise
                next_write = now + self._settings.db_retry_interval_s
                if not self._status_failing:
                    self._status_failing = True
                    log.error("DEVICE STATUS WRITE FAILED (%s); kept in memory, retrying", exc.__class__.__name__)
            await wait_for_any(stop, timeout=STATUS_SWEEP_S)

    async def run(self, stop: asyncio.Event) -> None:
        """All detection loops until ``stop`` is set (or cancelled)."""
        # The writers stop after the hops, so their last flush also takes the raw samples
        # still waiting to fill a row (a faster ingest used to end before they were written).
        writers_stop = asyncio.Event()

        async def hops() -> None:
            try:
                await self.run_hops(stop)
            finally:
                self.flush_raw_pending()
                writers_stop.set()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hops(), name="detection-hops")
                tg.create_task(self.features.run(writers_stop, self._settings.feature_flush_s), name="features-writer")
                tg.create_task(self.raw.run(writers_stop, self._settings.feature_flush_s), name="raw-writer")
                tg.create_task(self.run_status(stop), name="device-status")
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
