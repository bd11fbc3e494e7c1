"""What one analysed window becomes: feature rows, the officer's man-down phase and worn state,
and pages.

Model alerts go through ``AlertService.raise_alert`` with a deterministic pseudo-seq: the seq
of the frame that carried the first sample of the evidence (the impact of a fall, the start
of the stillness of a man-down, the start of a heart-rate run), so a redelivered or replayed
stream names the same alert and cannot page twice. Every page also holds the raw samples
around its evidence (:class:`backend.detection.raw.RawHolds`).
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.app.metrics import BackendMetrics
from backend.detection.hop import DecisionConfig, DeviceResult
from backend.detection.raw import RawHolds, utc
from backend.detection.status import StatusBoard
from backend.detection.store import BatchWriter
from backend.detection.streams import DeviceStreams
from backend.detection.windows import FallWindow, Window
from backend.incidents.rules import alert_id
from backend.ingest.registry import DeviceRegistry

if TYPE_CHECKING:  # a type only: the alert service imports the status board of this package
    from backend.incidents.alerts import AlertService

log = logging.getLogger("vigil.detection")

FEATURE_COLUMNS = ("time", "device_id", "officer_id", "heart_rate", "hr_quality", "activity", "posture",
                   "cadence", "motion_energy")


def frame_to_features(metrics: BackendMetrics, wall: Callable[[], float]) -> Callable[[list[int]], None]:
    """The features writer's ``on_stored``: how long after its last frame arrived a window's features were stored."""
    def observe(stamps_ms: list[int]) -> None:
        now_ms = wall() * 1000.0
        for stamp in stamps_ms:
            metrics.frame_to_features.observe(max(0.0, now_ms - stamp) / 1000.0)
    return observe


class WindowResults:
    def __init__(self, registry: DeviceRegistry, status: StatusBoard, streams: DeviceStreams, features: BatchWriter,
                 holds: RawHolds, alerts: AlertService, metrics: BackendMetrics, config: DecisionConfig):
        self._registry = registry
        self._status = status
        self._streams = streams
        self._features = features
        self._holds = holds
        self._alerts = alerts
        self._metrics = metrics
        self._config = config
        self.paged: deque[tuple[int, str, int]] = deque(maxlen=1000)  # (device, kind, seq), newest last

    async def apply(self, window: Window | FallWindow, result: DeviceResult, now: float) -> None:
        """A hop window's result, or a fall step's (no features, no man-down phase: only its page)."""
        record = self._registry.get(result.device_id)
        officer_id = record.officer_id if record else None
        last = len(result.features) - 1
        for i, f in enumerate(result.features):
            self._features.add([utc(f.wall_ms), result.device_id, officer_id, f.heart_rate, f.hr_quality,
                                f.activity, f.posture, f.cadence, f.motion_energy],
                               window.last_frame_wall_ms if i == last else None)
        st = self._status.devices.get(result.device_id)
        if st is not None and result.man_down_phase is not None:
            st.man_down_phase = result.man_down_phase
            st.model_worn = result.worn
        for kind in result.stale:
            self._metrics.detection_alerts_stale.labels(kind).inc()
            log.info("device %d: %s from a window older than %.0f s not paged (backfill)", result.device_id, kind,
                     self._config.live_alert_max_age_s)
        if record is None or not result.alerts:
            return
        stream = self._streams[result.device_id]
        offset = window.wall_end_ms - window.end_ms
        for c in result.alerts:
            seq = stream.seq_at(c.evidence_ms, c.window_seq)
            await self._alerts.raise_alert(
                agency_id=record.agency_id, device_id=record.device_id, seq=seq, kind=c.kind,
                officer_id=record.officer_id, officer_name=record.officer_name, explanation=c.explanation,
                device_time=utc(c.evidence_ms + offset), location=None, received_monotonic=None)
            self.paged.append((record.device_id, c.kind, seq))
            if st is not None:
                st.alert_at = now
            self._holds.hold(record.device_id, alert_id(record.device_id, seq, c.kind), c.kind, c.evidence_ms + offset)
