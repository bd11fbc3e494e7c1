"""A short soak (50 devices for 30 s, sampled every 5 s) of the command that runs the long one
(`vigil bench soak --devices 1000 --minutes 60`): zero loss against the backend's counters, no
refusals, memory sampled and bounded."""
from __future__ import annotations

import pytest

from backend.bench.soak import run_soak

pytestmark = pytest.mark.integration


async def test_short_soak_zero_loss(tmp_path, mqtt_broker, pg_server):
    report = await run_soak(50, 0.5, 5.0, tmp_path, mqtt_url=f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}",
                            pg_url=pg_server + "/postgres")
    print("\n" + report.text())
    assert len(report.samples) >= 6
    assert report.published["telemetry"] >= 50 * 30 / 0.4 * 0.8  # the publishers kept (roughly) to real time
    assert report.lost == 0 and not report.rejected
    assert report.accepted["telemetry"] == report.published["telemetry"]
    assert report.rss_max_mb < 1500  # bounded; flatness is judged by the long run
