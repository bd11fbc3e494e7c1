"""Prometheus metrics of the backend (served at /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.frames_accepted = Counter("vigil_frames_accepted", "Uplink frames verified and accepted", ["kind"], registry=self.registry)
        self.frames_rejected = Counter("vigil_frames_rejected", "Uplink frames refused, by reason", ["reason"], registry=self.registry)
        self.journal_replayed = Counter("vigil_journal_replayed", "Telemetry frames replayed from the local journal "
                                        "after a restart (accepted before it; not counted as accepted again)",
                                        registry=self.registry)
        self.journal_skipped = Counter("vigil_journal_skipped", "Journaled telemetry frames skipped at a restart: "
                                       "their samples were stored", registry=self.registry)
        self.frames_poisoned = Counter("vigil_frames_poisoned", "Uplink messages whose handling raised (refused, "
                                       "acknowledged, kept in dead_letters), by stage", ["stage"], registry=self.registry)
        self.ingest_compiled = Gauge("vigil_ingest_compiled", "1: frames are verified on ingest's compiled path; 0: on "
                                     "the pure-Python reference (not built; the log says why)", registry=self.registry)
        self.dead_letters_dropped = Counter("vigil_dead_letters_dropped", "Dead letters dropped while the database was away",
                                            registry=self.registry)
        self.task_failures = Counter("vigil_task_failures", "Long-running tasks of the backend that crashed and were restarted",
                                     ["task"], registry=self.registry)
        self.alerts_raised = Counter("vigil_alerts_raised", "Alerts raised", ["kind"], registry=self.registry)
        self.alerts_pending_storage = Gauge("vigil_alerts_pending_storage", "Alert changes waiting for the database", registry=self.registry)
        self.storage_failures = Counter("vigil_storage_failures", "Database writes that failed and were kept for retry", registry=self.registry)
        self.event_to_push = Histogram(
            "vigil_event_to_push_seconds", "From an event frame's arrival to the live push",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=self.registry,
        )
        # ingest and detection (backend/detection)
        self.detection_hop = Histogram(
            "vigil_detection_hop_seconds", "Duration of one detection round (all models over all due windows)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0), registry=self.registry,
        )
        self.detection_windows = Counter("vigil_detection_windows", "Windows analysed by the models", registry=self.registry)
        self.detection_stream = Counter("vigil_detection_stream_events", "Telemetry stream irregularities, by kind",
                                        ["kind"], registry=self.registry)
        self.detection_alerts_stale = Counter("vigil_detection_alerts_stale", "Model alerts withheld because their window was too old",
                                              ["kind"], registry=self.registry)
        self.detection_failures = Counter("vigil_detection_failures", "Detection rounds that failed", registry=self.registry)
        self.detection_rows_written = Counter("vigil_detection_rows_written", "Rows written by the batch writers", ["table"], registry=self.registry)
        self.frame_to_features = Histogram(
            "vigil_frame_to_features_seconds",
            "From a window's last frame (its device time, on the wall clock) to its features stored",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0), registry=self.registry,
        )
        self.detection_rows_dropped = Counter("vigil_detection_rows_dropped", "Rows dropped from a full write buffer", ["table"], registry=self.registry)

    def rejected_count(self, reason: str) -> float:
        return self.frames_rejected.labels(reason)._value.get()

    def accepted_count(self, kind: str) -> float:
        return self.frames_accepted.labels(kind)._value.get()
