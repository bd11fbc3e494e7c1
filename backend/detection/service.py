"""The streaming detection service: verified frames in; alerts, features, raw windows and
device status out.

``on_frame`` is called by ingest for every verified frame and only does bookkeeping (reorder,
append to the device's ring, status fields): ingest of events and SOS never waits for the
models. The loops of :meth:`DetectionService.run` do the rest:

* hops: every ``detection_tick_s`` (default: the fall step, 0.5 s) the fall steps and windows
  that are due are collected (:mod:`backend.detection.streams`) and analysed in rounds where
  ``VIGIL_DETECTION_WORKER`` says (:mod:`backend.detection.rounds`); each window's results
  become features, status fields and pages (:mod:`backend.detection.results`). Falls are
  decided every fall step (``detection_fall_step_s``), the other models run every hop.
* writers: features (1 Hz per device) and raw windows (one row per device per hop,
  :mod:`backend.detection.raw`) by COPY, through bounded buffers that survive a database
  outage (:mod:`backend.detection.store`).
* status: officer status changes published on the live hub every second; device status,
  raw holds around alerts written periodically (:mod:`backend.detection.status_writer`;
  partitions: the runtime's maintenance loop).

This class only composes those parts, each given what it needs when it is built, and keeps
the interface ingest, the runtime and the pipeline bench use.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.config import BackendSettings
from backend.app.metrics import BackendMetrics
from backend.app.waiting import wait_for_any
from backend.detection.hop import DecisionConfig, FallStepInput
from backend.detection.raw import RAW_COLUMNS, RAW_KINDS, RawHolds, RawRows, RawStored
from backend.detection.results import FEATURE_COLUMNS, WindowResults, frame_to_features
from backend.detection.rounds import RoundRunner
from backend.detection.status import StatusBoard
from backend.detection.status_writer import DeviceStatusWriter
from backend.detection.store import BatchWriter, Copy
from backend.detection.streams import DeviceStreams
from backend.detection.windows import DeviceStream, WindowConfig
from backend.incidents.hub import LiveHub
from backend.incidents.rules import EVENT_ALERTS, alert_id
from backend.ingest.registry import DeviceRegistry
from firmware import frame as F

if TYPE_CHECKING:  # a type only: the alert service imports the status board of this package
    from backend.incidents.alerts import AlertService

# Rounds of analysis per tick before yielding to the next tick (a stream far ahead catches up
# over a few ticks instead of one long stall).
MAX_ROUNDS_PER_TICK = 30


class DetectionService:
    def __init__(self, settings: BackendSettings, engine: AsyncEngine, registry: DeviceRegistry,
                 alerts: AlertService, hub: LiveHub, metrics: BackendMetrics, *,
                 status: StatusBoard, wall: Callable[[], float] = time.time,
                 store_copy: Copy | None = None):
        self._settings = settings
        self._engine = engine
        self._metrics = metrics
        self._wall = wall
        self.window_config = WindowConfig(
            window_s=settings.detection_window_s, hop_s=settings.detection_hop_s,
            fall_step_s=settings.detection_fall_step_s,
            feature_step_s=settings.feature_interval_s, reorder_frames=settings.detection_reorder_frames,
            reorder_wait_s=settings.detection_reorder_wait_s, gap_fill_s=settings.detection_gap_fill_s,
            backlog_s=settings.detection_backlog_s)
        self.decision_config = DecisionConfig(live_alert_max_age_s=settings.live_alert_max_age_s)
        self.status = status  # the officer board, shared with the alert lifecycle
        self.holds = RawHolds(settings.raw_hold_minutes, settings.detection_backlog_s)
        self.features = BatchWriter(engine, "features", FEATURE_COLUMNS, metrics, batch_size=settings.feature_batch_size,
                                    max_buffered=settings.feature_buffer_max, retry_s=settings.db_retry_interval_s,
                                    on_stored=frame_to_features(metrics, wall), copy=store_copy)
        self.raw_stored = RawStored()
        self.raw = BatchWriter(engine, "raw_windows", RAW_COLUMNS, metrics, batch_size=settings.feature_batch_size,
                               max_buffered=settings.raw_buffer_max, retry_s=settings.db_retry_interval_s,
                               prepare=self.holds.mark_held, kinds=RAW_KINDS, copy=store_copy,
                               within=self.raw_stored.within)
        self.raw_rows = RawRows(self.raw, registry, self.window_config.hop_s)
        self.device_streams = DeviceStreams(self.window_config, registry, self.status, self.raw_rows, metrics)
        self.runner = RoundRunner(settings.detection_worker, self.decision_config, metrics)
        self.results = WindowResults(registry, self.status, self.device_streams, self.features, self.holds, alerts,
                                     metrics, self.decision_config)
        self.status_writer = DeviceStatusWriter(engine, self.status, self.device_streams, self.holds, hub,
                                                flush_s=settings.status_flush_s, retry_s=settings.db_retry_interval_s,
                                                wall=wall)
        self.rounds = 0
        self.windows_analysed = 0
        self.fall_steps_analysed = 0

    @property
    def streams(self) -> dict[int, DeviceStream]:
        return self.device_streams.by_device

    @property
    def paged(self) -> deque[tuple[int, str, int]]:
        """(device, kind, seq) of the model alerts paged, newest last."""
        return self.results.paged

    # ---- frames (called by ingest, on the event loop) -----------------------------------------------

    def on_frame(self, frame, received_monotonic: float | None = None) -> None:
        """Account one verified frame (a ``backend.ingest.service.VerifiedFrame``); never blocks."""
        now = self._wall()
        d, h = frame.device, frame.header
        backfill = bool(h.flags & F.FLAG_BACKFILL)
        st = self.status.seen(d.device_id, d.agency_id, d.officer_id, d.officer_name, frame.gateway, now, backfill,
                              d.officer_unit)
        if h.frame_type == F.TYPE_STATUS:
            self.status.status_frame(st, frame.decoded)
        elif h.frame_type == F.TYPE_EVENT:
            kind = EVENT_ALERTS.get(frame.decoded[0])
            if kind is not None:
                st.alert_at = now
                self.holds.hold(d.device_id, alert_id(d.device_id, h.seq, kind), kind, now * 1000.0)
        elif h.frame_type == F.TYPE_TELEMETRY:
            self.device_streams.push(frame, now, backfill)

    async def load_stored(self) -> dict:
        """Which telemetry frames' samples are stored, per device (``raw_stored``), as saved; the
        writer continues from it. For the telemetry journal's replay after a crash."""
        async with self._engine.connect() as conn:
            stored = await RawStored.load(conn)
        self.raw_stored.seed(stored)
        return stored

    def reset_man_down(self, device_id: int) -> None:
        """A supervisor or the officer cleared a man-down alarm: re-arm the detector now."""
        self.device_streams.reset_man_down(device_id)

    # ---- hops ---------------------------------------------------------------------------------------

    async def run_round(self, now: float) -> int:
        """Collect, analyse (inline in chunks, or in the worker), apply. Returns the number of
        hop windows analysed (fall steps: ``fall_steps_analysed``)."""
        batches, resets = self.device_streams.collect(now)
        if not batches:
            return 0
        outcome = await self.runner.analyse(batches, resets, now)
        if outcome is None:
            return 0
        n = 0
        for batch, results in zip(batches, outcome):
            if isinstance(batch, FallStepInput):
                self.fall_steps_analysed += len(results)
                for window, result in zip(batch.windows, results):
                    if result is not None:  # a suspected fall: most steps suspect nothing
                        await self.results.apply(window, result, now)
                continue
            for window, result in zip(batch.windows, results):
                await self.results.apply(window, result, now)
                n += 1
        self.features.wake()  # the round's features go to the database now, not at the next flush tick
        self.rounds += 1
        self.windows_analysed += n
        self._metrics.detection_windows.inc(n)
        return n

    async def run_hops(self, stop: asyncio.Event) -> None:
        # by default as often as falls are decided: a due fall step waits for the next tick
        tick = self._settings.detection_tick_s or min(self._settings.detection_hop_s, self._settings.detection_fall_step_s)
        while not stop.is_set():
            rounds = 0
            while rounds < MAX_ROUNDS_PER_TICK and await self.run_round(self._wall()):
                rounds += 1
            if rounds < MAX_ROUNDS_PER_TICK:
                await wait_for_any(stop, timeout=tick)

    async def run(self, stop: asyncio.Event) -> None:
        """All detection loops until ``stop`` is set (or cancelled)."""
        # The writers stop after the hops, so their last flush also takes the raw samples
        # still waiting to fill a row (a faster ingest used to end before they were written).
        writers_stop = asyncio.Event()

        async def hops() -> None:
            try:
                await self.run_hops(stop)
            finally:
                self.raw_rows.flush()
                writers_stop.set()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hops(), name="detection-hops")
                tg.create_task(self.features.run(writers_stop, self._settings.feature_flush_s), name="features-writer")
                tg.create_task(self.raw.run(writers_stop, self._settings.feature_flush_s), name="raw-writer")
                tg.create_task(self.status_writer.run(stop), name="device-status")
        finally:
            self.runner.shutdown()
