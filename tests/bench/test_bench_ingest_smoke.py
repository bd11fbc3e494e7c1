"""``vigil bench ingest`` end to end at a tiny size: real Mosquitto, PostgreSQL, a backend
process, generator processes and a WebSocket. Asserts what must hold at any size (no frame
lost, every SOS pushed, the result file complete), never a timing."""
from __future__ import annotations

import json

import pytest

from backend.local import infra
from backend.bench.ingest_bench import BenchConfig, format_table, run

pytestmark = pytest.mark.integration

RESULT_FIELDS = {"devices", "offered_fps", "ingested_fps", "published", "accepted", "rejected", "lost",
                 "frame_to_features_p50_s", "frame_to_features_p99_s", "sos_to_ws_p50_s", "sos_to_ws_p99_s",
                 "cpu_pct", "backend_rss_mb", "kept_up"}


@pytest.mark.timeout(120)
def test_tiny_ingest_bench_loses_nothing(pg_server, tmp_path, capsys):
    if infra.find_binary("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    config = BenchConfig(steps=(20,), step_s=11.0, generators=1, agencies=2, ceiling_s=2.0, sos_per_step=2,
                         out=tmp_path, database_url=pg_server + "/postgres", tag="smoke")
    result = run(config)

    (step,) = result.steps
    assert step.published == 20 * int(11.0 / 0.4) + 2  # every telemetry frame and both SOS, acknowledged
    assert (step.lost, step.rejected, step.accepted) == (0, 0, step.published)
    assert step.sos_received == step.sos_sent == 2
    assert step.frame_to_features_p99_s is not None  # the first windows (9 s of samples) were analysed and stored
    assert result.ceiling["delivered_fps"] > 0 and result.ceiling["lost"] == 0

    saved = json.loads((tmp_path / "ingest-smoke.json").read_text())
    assert RESULT_FIELDS <= set(saved["steps"][0])
    assert {"delivered_fps", "published_fps", "cpu_pct"} <= set(saved["ceiling"])
    assert set(saved["steps"][0]["cpu_pct"]) == {"backend", "broker", "generators", "postgres"}
    assert (tmp_path / "ingest-smoke.png").exists()
    assert "devices" in format_table(result) and "20" in capsys.readouterr().out
