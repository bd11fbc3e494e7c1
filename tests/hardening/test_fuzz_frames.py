"""The coverage-guided fuzzer runs (a short run here; `vigil bench fuzz` runs a million) and only
FrameError ever escapes the decoder: libFuzzer exits non-zero on any other exception."""
import subprocess
import sys

import pytest

pytest.importorskip("atheris")


def test_short_fuzz_run_finds_no_crash(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backend.cli", "bench", "fuzz", "--runs", "20000", "--corpus", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "runs 20000" in proc.stdout


def test_fuzz_target_reports_a_foreign_exception(tmp_path, monkeypatch):
    # The harness must be able to fail: a decoder that raises something else is reported.
    from backend.bench import fuzz_frames
    monkeypatch.setattr(fuzz_frames.F, "decode_payload", lambda t, p: (_ for _ in ()).throw(KeyError("boom")))
    with pytest.raises(KeyError):
        fuzz_frames.one_input(b"\x01" + bytes(10))
