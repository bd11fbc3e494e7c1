"""Ingest and detection: from verified telemetry to alerts, features, raw windows and status.

Where things are:

* :mod:`backend.detection.service` - the service ingest feeds (``on_frame``) and its loops: a
  facade over the parts below;
* :mod:`backend.detection.windows` - per-device reorder, gaps and the window/hop scheduler;
* :mod:`backend.detection.streams` - every device's stream fed from telemetry frames (clock
  anchoring), and the due windows collected into model batches;
* :mod:`backend.detection.rounds` - the rounds of the models, inline, in a thread or in a
  process, and the models' per-device states;
* :mod:`backend.detection.hop` - one vectorised model call per placement over the due windows,
  and the decisions that page (with their explanations);
* :mod:`backend.detection.results` - what an analysed window becomes: feature rows, status
  fields, pages;
* :mod:`backend.detection.raw` - released samples grouped into raw rows, and the holds that
  keep them around alerts;
* :mod:`backend.detection.store` - batched, outage-proof COPY writers
  (:mod:`backend.detection.binary_copy` encodes the rows with sample arrays);
* :mod:`backend.detection.status` - device status and the officer status on the live hub;
* :mod:`backend.detection.status_writer` - officer status published, device status and raw
  holds written;
* the tables (raw_windows, raw_holds, device_status) are in :mod:`backend.db.schema`.
"""
from backend.detection.service import DetectionService

__all__ = ["DetectionService"]
