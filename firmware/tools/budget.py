"""The BLE throughput budget of one wearable, from the frame format's own constants."""
from __future__ import annotations

from dataclasses import dataclass

from firmware import frame as F
from firmware.config import DEFAULT_SETTINGS
from firmware.tools import fakes

fakes.install()  # firmware.ble imports the port's `bluetooth`; only its constants are used here
from firmware.ble import NOTIFY_SPACING_MS  # noqa: E402

ATT_L2CAP_OVERHEAD = 3 + 4  # ATT opcode + handle, L2CAP length + channel id, per notification


@dataclass(frozen=True)
class ThroughputBudget:
    rate_hz: int
    samples_per_frame: int
    telemetry_frame_bytes: int
    telemetry_frames_per_s: float
    status_frame_bytes: int
    status_period_s: int
    live_frame_bytes_per_s: float
    live_att_bytes_per_s: float
    max_notifications_per_s: float
    backfill_frame_bytes_per_s: float
    buffer_s: int
    drain_s: float

    def report(self) -> str:
        return "\n".join([
            "telemetry: %d samples at %d Hz per frame, %d bytes, %.1f frames/s"
            % (self.samples_per_frame, self.rate_hz, self.telemetry_frame_bytes, self.telemetry_frames_per_s),
            "status: %d bytes every %d s; events: %d bytes each, rare"
            % (self.status_frame_bytes, self.status_period_s, F.HEADER_LEN + 4 + F.TAG_LEN),
            "live uplink per device: %.0f B/s of frames, %.0f B/s with ATT/L2CAP headers"
            % (self.live_frame_bytes_per_s, self.live_att_bytes_per_s),
            "notification pacing: %d ms -> at most %.0f frames/s, %.0f B/s for backfill"
            % (NOTIFY_SPACING_MS, self.max_notifications_per_s, self.backfill_frame_bytes_per_s),
            "a full %d s ring drains in %.0f s after reconnect while live data keeps flowing"
            % (self.buffer_s, self.drain_s),
            "needs an ATT MTU >= %d (frames are never fragmented)" % (self.telemetry_frame_bytes + 3),
        ])


def ble_throughput(rate_hz: int = 50, samples_per_frame: int = 20, buffer_s: int = 320) -> ThroughputBudget:
    tele = F.HEADER_LEN + F.TELEMETRY_HEADER_LEN + samples_per_frame * F.TELEMETRY_SAMPLE_LEN + F.TAG_LEN
    status = F.HEADER_LEN + 11 + F.TAG_LEN
    fps = rate_hz / samples_per_frame
    period = DEFAULT_SETTINGS["status_period_s"]
    live = fps * tele + status / period
    live_att = fps * (tele + ATT_L2CAP_OVERHEAD) + (status + ATT_L2CAP_OVERHEAD) / period
    max_nps = 1000 / NOTIFY_SPACING_MS
    backlog_frames = buffer_s * fps
    return ThroughputBudget(rate_hz, samples_per_frame, tele, fps, status, period, live, live_att, max_nps,
                            max_nps * tele, buffer_s, backlog_frames / (max_nps - fps))
