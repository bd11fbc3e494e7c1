"""Regression guard: the real evaluations on ../shared/datasets must stay at the measured levels.

Runs `vigil eval hr` (without the slower library comparison) and `vigil eval falls` on the full
data; about a minute on 2 cores.
"""
import numpy as np
import pytest

from backend.evaluation import commands
from backend.evaluation.datasets import default_datasets_root

ROOT = default_datasets_root()
needs_spc = pytest.mark.skipif(not (ROOT / "ieee_spc2015_train").is_dir(),
                               reason=f"dataset folder {ROOT / 'ieee_spc2015_train'} is absent")
needs_sisfall = pytest.mark.skipif(not (ROOT / "sisfall_dev.tar.xz").is_file(),
                                   reason=f"dataset {ROOT / 'sisfall_dev.tar.xz'} is absent")


@needs_spc
def test_heart_rate_guard():
    result = commands.hr_evaluation(None, libraries=False, quiet=True)
    outer, inner = result["outer"], result["inner"]
    assert outer["windows"] == 1768
    assert outer["reported_mae"] <= commands.HR_MAX_MAE_BPM
    assert outer["reported_share"] >= commands.HR_MIN_REPORTED
    assert outer["mae"] <= commands.HR_MAX_MAE_ALL_BPM
    # the selection never saw the held-out recording: each fold's threshold came from the others
    assert len(result["chosen_settings"]) == 12 and all(0 < c["min_quality"] < 1 for c in result["chosen_settings"])
    assert inner["reported_share"] >= 0.85 > commands.HR_TARGET_REPORTED


@needs_sisfall
def test_fall_guard():
    result = commands.falls_evaluation(None, quiet=True)
    r = result["boosted_trees"]
    assert r["fall_recordings"] == 900 and r["adl_recordings"] == 1291
    assert r["sensitivity"] >= commands.FALL_MIN_SENSITIVITY
    assert r["specificity"] >= commands.FALL_MIN_SPECIFICITY
    assert r["false_events_per_hour"] <= commands.FALL_MAX_FALSE_PER_HOUR
    assert np.isfinite(r["latency_max_s"]) and r["latency_max_s"] <= commands.FALL_MAX_LATENCY_S


@pytest.mark.parametrize("argv", [["eval", "hr", "--help"], ["eval", "falls", "--help"]])
def test_commands_registered(argv, capsys):
    from backend.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--check" in capsys.readouterr().out
