import numpy as np
import pytest

from models.strain import StrainState, update_strain
from models.thresholds import PLACEMENTS, THRESHOLDS_VERSION, thresholds_for


def feed(hr_of_t, activity, seconds, q=0.9, state=None, start=0):
    state = state or StrainState.initial(1)
    d = None
    for t in range(start, start + seconds, 2):
        state, d = update_strain(state, float(t), bpm=np.array([hr_of_t(t)]), quality=np.array([q]),
                                 activity=np.array([activity]))
    return state, d


class TestUpdateStrain:
    def test_empty(self):
        s, d = update_strain(StrainState.initial(0), 0.0, bpm=[], quality=[], activity=[])
        assert d.strain.shape == (0,)

    def test_baseline_learned_from_quiet_periods(self):
        s, d = feed(lambda t: 55.0, "still", 300)
        assert d.baseline_bpm[0] == pytest.approx(55.0)

    def test_high_for_activity_sustained(self):
        s, _ = feed(lambda t: 55.0, "still", 300)
        s, d = feed(lambda t: 120.0, "still", 50, state=s, start=300)
        assert not d.strain[0]                      # not yet sustained
        s, d = feed(lambda t: 120.0, "still", 30, state=s, start=350)
        assert d.strain[0] and d.limit_bpm[0] == pytest.approx(95.0)

    def test_running_high_heart_rate_is_normal(self):
        s, _ = feed(lambda t: 55.0, "still", 300)
        s, d = feed(lambda t: 150.0, "running", 200, state=s, start=300)
        assert not d.strain[0] and not d.extreme[0]

    def test_extreme_needs_10_s_and_good_quality(self):
        s, d = feed(lambda t: 35.0, "still", 10)
        assert not d.extreme[0]
        s, d = feed(lambda t: 35.0, "still", 4, state=s, start=10)
        assert d.extreme[0]
        _, d = feed(lambda t: 35.0, "still", 30, q=0.1)
        assert not d.extreme[0]

    def test_batch_equals_single(self, rng):
        hr = 60 + 80 * rng.random((100, 3))
        q = rng.random((100, 3))
        act = rng.choice(["still", "walking", "running"], size=(100, 3))
        batch = StrainState.initial(3)
        singles = [StrainState.initial(1) for _ in range(3)]
        for k in range(100):
            batch, db = update_strain(batch, 2.0 * k, bpm=hr[k], quality=q[k], activity=act[k])
            for d in range(3):
                singles[d], ds = update_strain(singles[d], 2.0 * k, bpm=hr[k, d:d + 1], quality=q[k, d:d + 1],
                                               activity=act[k, d:d + 1])
                assert ds.strain[0] == db.strain[d] and ds.baseline_bpm[0] == pytest.approx(db.baseline_bpm[d])

    def test_wrong_activity(self):
        with pytest.raises(ValueError, match="still, walking, running"):
            update_strain(StrainState.initial(1), 0.0, bpm=[80.0], quality=[1.0], activity=["dancing"])


class TestThresholdsFor:
    def test_every_placement(self):
        for p in PLACEMENTS:
            t = thresholds_for(p)
            assert t.placement == p and t.version == THRESHOLDS_VERSION
            assert t.man_down.pre_alert_s == 20.0 and t.man_down.alarm_s == 30.0

    def test_wrong_placement(self):
        with pytest.raises(ValueError, match="wrist, upper_arm, chest, waist"):
            thresholds_for("knee")
