"""Device clocks that jump: detection goes on, and nothing is stored with a time in the future.

A clock that goes back (-1 h, a reset to 1970, a clock counting from boot) made every later frame
look late, so the device's detection stopped; a clock ahead stored its features in the future."""
from __future__ import annotations

import os

import numpy as np
import pytest

from backend.app.config import BackendSettings
from backend.app.runtime import Runtime
from backend.detection.service import DetectionService
from backend.detection.windows import DeviceStream, TelemetryChunk, WindowConfig
from backend.ingest.clock import FUTURE_TOLERANCE_MS, believable
from backend.ingest.registry import DeviceRecord
from backend.ingest.service import IngestService
from firmware import frame as F
from gateway import topics

RATE, N = 50, 20
FRAME_MS = N * 1000 // RATE
T0_MS = 1_770_000_000_000
HOUR_MS = 3_600_000


def _chunk(seq: int, time_ms: int, backfill: bool = False) -> TelemetryChunk:
    return TelemetryChunk(seq, time_ms, RATE, np.full(N, 480_000, np.int32),
                          np.tile(np.array([0, 1000, 0], np.int16), (N, 1)), backfill)


class TestStreamAcrossABackwardClock:
    @pytest.mark.parametrize("jump_ms", [-HOUR_MS, -T0_MS, -T0_MS + 5_000])  # -1 h, 1970, boot-relative
    def test_a_newer_frame_with_an_earlier_time_restarts_the_stream(self, jump_ms):
        s = DeviceStream(1, WindowConfig())
        for k in range(30):
            assert s.push(_chunk(k, T0_MS + k * FRAME_MS), 0.0)
        t = T0_MS + 30 * FRAME_MS + jump_ms
        for k in range(30, 60):
            assert s.push(_chunk(k, t + (k - 30) * FRAME_MS), 0.0), f"frame {k} refused after the clock went back"
        assert s.counters.clock_jumps == 1 and s.counters.late_frames == 0
        assert s.due()  # the windows refilled from the new clock

    def test_an_older_frame_is_still_late_not_a_jump(self):
        s = DeviceStream(1, WindowConfig())
        for k in range(10):
            s.push(_chunk(k, T0_MS + k * FRAME_MS), 0.0)
        assert s.push(_chunk(3, T0_MS + 3 * FRAME_MS), 5.0) == []  # a re-sent frame
        assert s.push(_chunk(4, T0_MS + 4 * FRAME_MS, backfill=True), 5.0) == []
        assert s.counters.late_frames == 2 and s.counters.clock_jumps == 0 and s.counters.restarts == 0


def test_believable_device_times():
    now = T0_MS
    assert believable(now, now) and believable(now + FUTURE_TOLERANCE_MS, now)
    assert not believable(now + HOUR_MS, now)       # a synced clock an hour ahead
    assert not believable(5_000, now)               # 1970, or a clock counting from boot
    assert not believable(2 ** 62)                  # no clock at all
    assert believable(now - HOUR_MS, now)           # behind is how queued frames arrive


AGENCY, DEVICE = "clocks", 4242


@pytest.mark.parametrize("skew_ms", [HOUR_MS, 2 ** 62 - T0_MS])  # an hour ahead; beyond the year 9999
async def test_features_never_carry_a_future_time(skew_ms):
    """A device whose synced clock runs an hour (or millennia) ahead: its windows are anchored to
    the receive time, so features and raw rows are stored at about now, not in the future."""
    wall = [T0_MS / 1000.0]
    s = BackendSettings(database_url="postgresql+asyncpg://vigil@127.0.0.1:1/none", mqtt_url="mqtt://127.0.0.1:1",
                        agencies=[AGENCY])
    rt = Runtime(s)
    written: list = []

    async def sink(batch, data) -> None:
        written.append(batch)

    detection = DetectionService(s, rt.engine, rt.registry, rt.alerts, rt.hub, rt.metrics, status=rt.status,
                                 wall=lambda: wall[0], store_copy=sink)
    ingest = IngestService(s, rt.registry, rt.alerts, rt.metrics, detection)
    keys = F.DeviceKeys(os.urandom(F.KEY_LEN))
    rt.registry.devices[DEVICE] = DeviceRecord(DEVICE, AGENCY, keys, "active", "upper_arm", 1, "Officer", None)
    ppg, accel = [480_000] * N, [(0, 1000, 0)] * N
    for k in range(60):
        payload = F.encode_telemetry(RATE, ppg, accel)
        frame = F.seal(keys, F.TYPE_TELEMETRY, DEVICE, k + 1, T0_MS + skew_ms + k * FRAME_MS, payload)
        assert (await ingest.handle_batch([(topics.uplink(AGENCY, "gw", DEVICE, "telemetry"), frame, None)]))[0] is not None
        wall[0] += FRAME_MS / 1000
    stream = detection.device_streams[DEVICE]
    assert stream.total == 60 * N
    window = stream.take_window()
    assert window.wall_end_ms <= wall[0] * 1000 + FUTURE_TOLERANCE_MS, (window.wall_end_ms - wall[0] * 1000)
    assert window.wall_end_ms >= wall[0] * 1000 - 60_000
