import numpy as np
import pytest
from scipy.ndimage import maximum_filter1d

import models.fall
from models.fall import FEATURE_NAMES, detect_fall, fall_features, fall_probability, find_impact, fit_fall_classifier
from models.thresholds import FallConfig, fall_model
from tests.models.conftest import FS


def fall_recording(rng, seconds=8.0, impact_s=5.5):
    """Walking upright, 0.4 s free fall, 5 g impact, then lying still."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    a = np.zeros((3, n))
    a[1] = -1.0 + 0.2 * np.sin(2 * np.pi * 1.8 * t)
    i = int(impact_s * FS)
    a[:, i - 20:i] = 0.0
    a[1, i - 20:i] = -0.2
    a[:, i] = [3.0, -3.0, 2.0]
    a[:, i + 1:] = 0.0
    a[2, i + 1:] = 1.0
    return a + 0.01 * rng.standard_normal(a.shape), i


def sit_down(rng, seconds=8.0):
    n = int(seconds * FS)
    a = np.zeros((3, n))
    a[1] = -1.0
    a[1, 200:210] = -1.9
    a[0, 210:] = 0.3
    return a + 0.01 * rng.standard_normal(a.shape)


class TestFindImpact:
    def test_empty(self):
        assert find_impact(np.zeros((0, 3, 400)), FS).shape == (0,)

    def test_finds_the_impact_once(self, rng):
        a, i = fall_recording(rng)
        assert find_impact(a[None], FS)[0] == i
        # a later window whose new samples do not contain the impact reports nothing new
        assert find_impact(a[None, :, :-5], FS, new_samples=1)[0] == -1

    def test_no_impact(self):
        a = np.zeros((1, 3, 400)); a[0, 1] = -1.0
        assert find_impact(a, FS)[0] == -1

    @pytest.mark.parametrize("new_samples", [None, 1, 25, 100, 300])
    def test_same_as_searching_the_whole_window(self, rng, new_samples):
        # jolts every few samples: whether one is a local maximum depends on samples on both sides
        a = np.zeros((6, 3, 400)); a[:, 1] = -1.0
        a += 0.6 * rng.standard_normal(a.shape) * (rng.random((6, 1, 400)) < 0.15)
        svm = np.sqrt((a ** 2).sum(axis=1))
        hi = 400 - int(round(1.5 * FS))
        lo = 0 if new_samples is None else max(0, hi - new_samples)
        peak = svm >= maximum_filter1d(svm, size=51, axis=-1, mode="nearest")
        zone = np.where((svm >= 1.2) & peak, svm, -np.inf)[:, lo:hi]
        expected = np.where(np.isfinite(zone.max(axis=-1)), lo + np.argmax(zone, axis=-1), -1)
        cfg = FallConfig(impact_g=1.2)
        assert find_impact(a, FS, new_samples=new_samples, config=cfg).tolist() == expected.tolist()


class TestFallFeatures:
    def test_empty(self):
        assert fall_features(np.zeros((0, 3, 400)), FS, np.zeros(0, int)).shape == (0, len(FEATURE_NAMES))

    def test_values(self, rng):
        a, i = fall_recording(rng)
        f = dict(zip(FEATURE_NAMES, fall_features(a[None], FS, [i])[0]))
        assert f["impact_g"] == pytest.approx(np.sqrt(22), rel=0.02)
        assert f["free_fall_min_g"] < 0.3
        assert f["orientation_change_deg"] > 60
        assert f["post_tilt_deg"] > 80 and f["pre_tilt_deg"] < 20
        assert f["post_activity_g"] < 0.05

    @pytest.mark.parametrize("impact", [0, 40, 380, 399])
    def test_samples_past_the_window_repeat_its_edge(self, rng, impact):
        a, _ = fall_recording(rng)
        padded = np.concatenate([np.repeat(a[:, :1], 200, axis=1), a, np.repeat(a[:, -1:], 200, axis=1)], axis=1)
        np.testing.assert_array_equal(fall_features(a[None], FS, [impact]),
                                      fall_features(padded[None], FS, [impact + 200]))

    def test_wrong_index_count(self):
        with pytest.raises(ValueError):
            fall_features(np.zeros((2, 3, 400)), FS, [1])

    def test_lying_before_is_the_least_trunk_angle_of_the_five_seconds_before(self, rng):
        a, i = fall_recording(rng)
        lying = FEATURE_NAMES.index("lying_before_deg")
        assert fall_features(a[None], FS, [i])[0, lying] < 15           # walked upright before
        rolled = a.copy()
        rolled[:, :i - 20] = [[0.0], [0.0], [1.0]]                        # lay on the back before ...
        assert fall_features(rolled[None], FS, [i])[0, lying] > 85
        rolled[:, i - 150:i - 100] = [[0.0], [-1.0], [0.0]]               # ... but sat up for one second of them
        assert fall_features(rolled[None], FS, [i])[0, lying] < 15


def _always_fall() -> "models.thresholds.BoostedTrees":
    from models.thresholds import BoostedTrees
    return BoostedTrees(models.fall.CLASSIFIER_FEATURES, np.zeros((1, 7), np.intp), np.full((1, 7), BoostedTrees.NO_SPLIT),
                        np.zeros((1, 8)), 10.0, 0.1)


class TestAlreadyLying:
    def test_an_impact_after_lying_five_seconds_is_no_fall_whatever_the_classifier_says(self, rng):
        a, i = fall_recording(rng)
        rolled = a.copy()
        rolled[:, :i - 20] = [[0.0], [0.0], [1.0]]
        both = np.stack([a, rolled])
        d = detect_fall(both, FS, model=_always_fall())
        assert d.probability.tolist() == pytest.approx([1.0, 1.0], abs=1e-3)
        assert d.suspected.tolist() == [True, False]
        off = detect_fall(both, FS, model=_always_fall(), config=FallConfig(lying_before_deg=None))
        assert off.suspected.tolist() == [True, True]

    def test_the_rule_reads_its_angle(self):
        rows = np.zeros((3, len(FEATURE_NAMES)))
        rows[:, FEATURE_NAMES.index("lying_before_deg")] = [59.0, 71.0, np.nan]
        assert models.fall.already_lying(rows, FallConfig(lying_before_deg=70.0)).tolist() == [False, True, False]
        assert models.fall.already_lying(rows, FallConfig(lying_before_deg=55.0)).tolist() == [True, True, False]


class TestDetectFall:
    def test_empty(self):
        assert detect_fall(np.zeros((0, 3, 400)), FS).suspected.shape == (0,)

    @pytest.mark.parametrize("method", ["boosted_trees", "threshold"])
    def test_fall_and_sitting(self, rng, method):
        fall, _ = fall_recording(rng)
        d = detect_fall(np.stack([fall, sit_down(rng)]), FS, method=method)
        assert d.suspected.tolist() == [True, False]
        assert d.fired[0] and not d.fired[1]
        assert d.seconds_since_impact[0] == pytest.approx(2.48, abs=0.05)

    def test_batch_equals_single(self, rng):
        batch = np.stack([fall_recording(rng)[0], sit_down(rng), fall_recording(rng, impact_s=4.0)[0]])
        d = detect_fall(batch, FS)
        for k in range(3):
            one = detect_fall(batch[k:k + 1], FS)
            assert one.suspected[0] == d.suspected[k] and one.impact_index[0] == d.impact_index[k]
            np.testing.assert_allclose(one.probability[0], d.probability[k])

    def test_chunks_equal_one_pass(self, rng, monkeypatch):
        batch = np.stack([fall_recording(rng)[0], sit_down(rng), fall_recording(rng, impact_s=4.0)[0],
                          fall_recording(rng, impact_s=5.0)[0], sit_down(rng)])
        whole = detect_fall(batch, FS)
        monkeypatch.setattr(models.fall, "DEVICE_CHUNK", 2)
        chunked = detect_fall(batch, FS)
        np.testing.assert_array_equal(chunked.features, whole.features)
        np.testing.assert_array_equal(chunked.probability, whole.probability)
        assert chunked.fired == whole.fired

    def test_wrong_method(self):
        with pytest.raises(ValueError, match="boosted_trees, threshold"):
            detect_fall(np.zeros((1, 3, 400)), FS, method="svm")

    def test_wrong_placement(self):
        with pytest.raises(ValueError, match="wrist, upper_arm, chest, waist"):
            detect_fall(np.zeros((1, 3, 400)), FS, placement="pocket")


class TestFitFallClassifier:
    def test_separable(self, rng):
        x = rng.normal(size=(300, 2))
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)
        m = fit_fall_classifier(x, y, n_trees=40, depth=3, feature_names=("a", "b"))
        assert ((fall_probability(x, m) > 0.5) == y).mean() > 0.95

    def test_needs_both_classes(self):
        with pytest.raises(ValueError):
            fit_fall_classifier(np.zeros((5, 2)), np.zeros(5), feature_names=("a", "b"))

    def test_nodes_split_on_their_own(self, rng):
        # an XOR needs a different split in each branch, which an oblivious tree cannot place per node
        x = rng.uniform(-1, 1, size=(400, 2))
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0.5)).astype(float)
        m = fit_fall_classifier(x, y, n_trees=60, depth=2, learning_rate=0.3, feature_names=("a", "b"))
        assert ((fall_probability(x, m) > 0.5) == y).mean() > 0.95
        assert not np.all(m.thresholds[:, 1] == m.thresholds[:, 2])

    def test_deterministic(self, rng):
        x = rng.normal(size=(200, 3)); y = (x[:, 0] > 0).astype(float)
        a = fit_fall_classifier(x, y, n_trees=10, feature_names=("a", "b", "c"))
        b = fit_fall_classifier(x, y, n_trees=10, feature_names=("a", "b", "c"))
        np.testing.assert_array_equal(a.leaves, b.leaves)

    def test_shipped_model_matches_features(self):
        m = fall_model()
        assert set(m.feature_names) <= set(FEATURE_NAMES) and len(m.feature_names) >= len(FEATURE_NAMES) - 2

    def test_round_trip(self):
        m = fall_model()
        again = type(m).from_dict(m.to_dict())
        x = np.random.default_rng(0).normal(size=(10, len(FEATURE_NAMES)))
        np.testing.assert_allclose(fall_probability(x, m), fall_probability(x, again))


class TestFallProbability:
    def test_empty(self):
        assert fall_probability(np.zeros((0, len(FEATURE_NAMES))), fall_model()).shape == (0,)

    def test_wrong_width(self):
        with pytest.raises(ValueError):
            fall_probability(np.zeros((1, 3)), fall_model())


class TestSmallerModels:
    """Issue 18: selection compares prefixes of one boosting fit and models on a feature subset."""

    def test_prefix_is_the_model_with_fewer_rounds(self, rng):
        x = rng.normal(size=(300, 3)); y = (x[:, 0] - x[:, 2] > 0).astype(float)
        full = fit_fall_classifier(x, y, n_trees=30, depth=2, feature_names=("a", "b", "c"))
        short = fit_fall_classifier(x, y, n_trees=10, depth=2, feature_names=("a", "b", "c"))
        np.testing.assert_allclose(fall_probability(x, full, trees=10), fall_probability(x, short), rtol=1e-12)
        assert not np.allclose(fall_probability(x, full), fall_probability(x, short))

    def test_subset_model_reads_its_own_columns_of_full_rows(self, rng):
        names = tuple(n for n in FEATURE_NAMES if n not in ("pre_tilt_deg", "post_tilt_deg"))
        cols = [FEATURE_NAMES.index(n) for n in names]
        x = rng.normal(size=(200, len(FEATURE_NAMES))); y = (x[:, cols[0]] > 0).astype(float)
        m = fit_fall_classifier(x[:, cols], y, n_trees=10, depth=2, feature_names=names)
        np.testing.assert_array_equal(fall_probability(x, m), fall_probability(x[:, cols], m))
        # a decision on a full window uses the same columns
        a = np.zeros((1, 3, 400)); a[0, 1] = -1.0; a[0, 1, 250] = -4.0
        d = detect_fall(a, FS, model=m)
        full_row = d.features[0][None]
        assert d.probability[0] == pytest.approx(fall_probability(full_row, m)[0])


class TestPlacement:
    """Issue 18: one placement for the product, the one the fall detector was validated at."""

    def test_only_the_product_placement_has_a_validated_fall_detector(self):
        from models.thresholds import PLACEMENTS, PRODUCT_PLACEMENT, thresholds_for

        assert PRODUCT_PLACEMENT == "waist"
        product = thresholds_for(PRODUCT_PLACEMENT)
        assert product.fall.validated and "fall" in product.validated
        for other in set(PLACEMENTS) - {PRODUCT_PLACEMENT}:
            t = thresholds_for(other)
            assert not t.fall.validated and "fall" not in t.validated, other

    def test_hardware_notes_name_the_same_placement_and_up_axis(self):
        from pathlib import Path

        notes = (Path(__file__).resolve().parents[2] / "hardware" / "README.md").read_text(encoding="utf-8")
        flat = " ".join(notes.split())
        assert "worn on the trunk at the waist" in flat
        assert "+Y axis pointing up the trunk" in flat and "+Y axis points up the trunk" in flat
        assert "upper arm" not in flat.replace("the upper arm or the wrist", "")

    def test_an_upright_wearer_at_the_waist_reads_as_upright(self):
        # SisFall's axes (the models'): upright reads -1 g on Y; lying on the back +1 g on Z
        from models.activity import classify_activity

        upright = np.zeros((1, 3, 400)); upright[0, 1] = -1.0
        lying = np.zeros((1, 3, 400)); lying[0, 2] = 1.0
        assert classify_activity(upright, FS, placement="waist").posture[0] == "upright"
        assert classify_activity(lying, FS, placement="waist").posture[0] == "lying"
