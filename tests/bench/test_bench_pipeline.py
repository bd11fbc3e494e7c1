"""``vigil bench pipeline`` at a tiny size: every frame goes through ingest and detection, the
result file is complete, and the backend's garbage-collector settings are what it reports.
Asserts counts and settings, never a timing."""
from __future__ import annotations

import json
import subprocess
import sys

from backend.bench.pipeline_bench import run


def test_tiny_pipeline_bench_verifies_every_frame_and_analyses_windows(tmp_path):
    result = run(devices=12, simulated_s=12.0, gc_mode="default", out=tmp_path, tag="t")
    assert result.frames == 12 * 30  # 30 frames of 0.4 s each, none rejected
    # first window after 9 s of samples (23 frames), then one per hop of 2 s (5 frames): 2 per device
    assert result.windows == 12 * 2
    assert result.ingest_cpu_s > 0 and result.detection_cpu_s > 0
    saved = json.loads((tmp_path / "pipeline-t.json").read_text())
    assert saved["frames"] == 360 and saved["us_per_frame"] > 0 and saved["gc_mode"] == "default"
    assert len(saved["gc_collections"]) == 3


def test_settle_heap_freezes_what_exists_and_raises_the_young_threshold():
    code = ("import gc; from backend.app.runtime import settle_heap, GC_YOUNG_THRESHOLD; "
            "assert gc.get_freeze_count() == 0; settle_heap(); "
            "assert gc.get_freeze_count() > 1000 and gc.get_threshold()[0] == GC_YOUNG_THRESHOLD; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
