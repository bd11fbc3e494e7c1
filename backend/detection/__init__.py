"""Ingest and detection: from verified telemetry to alerts, features, raw windows and status.

Where things are:

* :mod:`backend.detection.windows` - per-device reorder, gaps and the window/hop scheduler;
* :mod:`backend.detection.hop` - one vectorised model call per placement over the due windows,
  and the decisions that page (with their explanations);
* :mod:`backend.detection.service` - the service ingest feeds (``on_frame``) and its loops;
* :mod:`backend.detection.store` - batched, outage-proof COPY writers;
* :mod:`backend.detection.status` - device status and the officer status on the live hub;
* the tables (raw_windows, raw_holds, device_status) are in :mod:`backend.db.schema`.
"""
from backend.detection.service import DetectionService

__all__ = ["DetectionService"]
