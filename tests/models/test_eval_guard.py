"""Regression guard: the real evaluations on ../shared/datasets must stay at the measured levels.

Heart rate: the full nested leave-one-subject-out of `vigil eval hr` (without the slower library
comparison), a few seconds. Falls: the nested run of `vigil eval falls` fits 171 models (minutes),
too slow for the suite (its outer figures are guarded by `vigil eval falls --check`); here the shipped model is scored on the real data (an in-sample figure)
and a plain leave-one-subject-out refit with the shipped settings (chosen by that nested run on all
subjects) checks unseen subjects; about 45 s on 2 cores. The nested figures are in the note.
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


@pytest.fixture(scope="module")
def sisfall_candidates():
    from backend.evaluation import falls
    from backend.evaluation.datasets import load_sisfall

    recs = load_sisfall(ROOT / "sisfall_dev.tar.xz")
    cands = falls.stream_candidates(recs, hop_s=0.5)
    ref = falls.reference_impacts(recs)
    return recs, cands, ref


@needs_sisfall
def test_fall_guard_shipped_model(sisfall_candidates):
    from backend.evaluation import falls
    from models.fall import fall_probability
    from models.thresholds import fall_model, thresholds_for

    recs, cands, ref = sisfall_candidates
    cfg = thresholds_for("waist").fall
    prob = falls.gated(fall_probability(cands.features, fall_model()), cands.features, cfg.lying_before_deg)
    r = falls.score(recs, cands, ref, prob, cfg.probability)
    assert r["fall_recordings"] == 900 and r["adl_recordings"] == 1291
    assert r["sensitivity"] >= commands.FALL_SHIPPED_MIN_SENSITIVITY
    assert r["specificity"] >= commands.FALL_SHIPPED_MIN_SPECIFICITY
    assert r["false_events_per_hour"] <= commands.FALL_SHIPPED_MAX_FALSE_PER_HOUR
    assert np.isfinite(r["latency_max_s"]) and r["latency_max_s"] <= commands.FALL_MAX_LATENCY_S


@needs_sisfall
def test_fall_guard_unseen_subjects(sisfall_candidates):
    from backend.evaluation import falls
    from models.fall import fall_model_default
    from models.thresholds import thresholds_for

    recs, cands, ref = sisfall_candidates
    label, usable = falls.training_labels(recs, cands, ref)
    shipped = fall_model_default()
    depth = int(np.log2(shipped.leaves.shape[1]))
    prob = falls.leave_one_subject_out(recs, cands, label, usable, n_trees=shipped.leaves.shape[0], depth=depth,
                                       learning_rate=shipped.learning_rate,
                                       lying_before_deg=thresholds_for("waist").fall.lying_before_deg)
    r = falls.score(recs, cands, ref, prob, thresholds_for("waist").fall.probability)
    assert r["sensitivity"] >= commands.FALL_LOSO_MIN_SENSITIVITY
    assert r["specificity"] >= commands.FALL_LOSO_MIN_SPECIFICITY
    assert r["false_events_per_hour"] <= commands.FALL_LOSO_MAX_FALSE_PER_HOUR
    assert r["latency_max_s"] <= commands.FALL_MAX_LATENCY_S
    soft = sum(r["by_code"][c][0] - r["by_code"][c][1] for c in commands.SOFT_FALLS) / sum(
        r["by_code"][c][0] for c in commands.SOFT_FALLS)
    assert soft >= commands.FALL_LOSO_MIN_SOFT_SENSITIVITY


@pytest.mark.parametrize("argv", [["eval", "hr", "--help"], ["eval", "falls", "--help"]])
def test_commands_registered(argv, capsys):
    from backend.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--check" in capsys.readouterr().out
