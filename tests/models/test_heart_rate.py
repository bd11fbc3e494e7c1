import numpy as np
import pytest

import models.heart_rate
from models.heart_rate import HeartRateState, estimate_heart_rate
from models.quality import ppg_quality, skin_contact
from tests.models.conftest import FS, ppg_with_arm_swing


def stream(rng, bpm, hops=6, swing_hz=2.5):
    state = None
    for k in range(hops):
        ppg, acc = ppg_with_arm_swing(rng, bpm=bpm, swing_hz=swing_hz, t0=2.0 * k)
        est, state = estimate_heart_rate(ppg[None], acc[None], FS, state)
    return est, state


class TestEstimateHeartRate:
    def test_empty_devices(self):
        est, state = estimate_heart_rate(np.zeros((0, 400)), np.zeros((0, 3, 400)), FS)
        assert est.bpm.shape == (0,) and state.posterior.shape[0] == 0

    def test_clean_sinusoid(self):
        t = np.arange(400) / FS
        est, _ = estimate_heart_rate(np.sin(2 * np.pi * 1.2 * t)[None], np.zeros((1, 3, 400)), FS)
        assert est.bpm[0] == pytest.approx(72, abs=1.5)
        assert est.reliable[0]

    def test_arm_swing_is_not_read_as_heart_rate(self, rng):
        # 2.5 Hz swing = 150 per minute, three times stronger than the pulse
        est, _ = stream(rng, 90.0)
        assert est.tracked_bpm[0] == pytest.approx(90, abs=2)
        assert est.motion_bpm[0] == pytest.approx(150, abs=2)

    def test_plain_peak_is_fooled_by_the_swing(self, rng):
        ppg, acc = ppg_with_arm_swing(rng, bpm=90.0)
        est, _ = estimate_heart_rate(ppg[None], acc[None], FS, method="spectral_peak")
        assert est.tracked_bpm[0] == pytest.approx(150, abs=2)

    def test_noise_gives_no_reliable_estimate(self, rng):
        est, _ = estimate_heart_rate(rng.standard_normal((20, 400)), np.zeros((20, 3, 400)), FS)
        assert (~est.reliable).mean() >= 0.9
        assert np.isnan(est.bpm[~est.reliable]).all()

    def test_no_contact_withholds(self):
        t = np.arange(400) / FS
        est, _ = estimate_heart_rate(np.sin(2 * np.pi * 1.2 * t)[None], np.zeros((1, 3, 400)), FS, contact=[False])
        assert np.isnan(est.bpm[0]) and est.tracked_bpm[0] == pytest.approx(72, abs=1.5)

    def test_two_channels(self, rng):
        ppg, acc = ppg_with_arm_swing(rng, bpm=110.0, swing_hz=1.4)
        est, _ = estimate_heart_rate(np.stack([ppg, ppg])[None], acc[None], FS)
        assert est.tracked_bpm[0] == pytest.approx(110, abs=2)

    def test_wrong_method(self):
        with pytest.raises(ValueError, match="spectral_tracking, spectral_peak"):
            estimate_heart_rate(np.zeros((1, 400)), np.zeros((1, 3, 400)), FS, method="fft")

    def test_wrong_placement(self):
        with pytest.raises(ValueError, match="wrist, upper_arm, chest, waist"):
            estimate_heart_rate(np.zeros((1, 400)), np.zeros((1, 3, 400)), FS, placement="ankle")

    @pytest.mark.parametrize("rate", [0, -50, float("nan"), "fast"])
    def test_bad_sampling_rate(self, rate):
        with pytest.raises(ValueError):
            estimate_heart_rate(np.zeros((1, 400)), np.zeros((1, 3, 400)), rate)

    def test_bad_shapes(self):
        with pytest.raises(ValueError):
            estimate_heart_rate(np.zeros((2, 400)), np.zeros((1, 3, 400)), FS)
        with pytest.raises(ValueError):
            estimate_heart_rate(np.zeros((1, 400)), np.zeros((1, 2, 400)), FS)
        with pytest.raises(ValueError):
            estimate_heart_rate(np.zeros((1, 50)), np.zeros((1, 3, 50)), FS)


class TestBatchEquivalence:
    def test_batch_equals_single_calls(self, rng):
        bpms, swings = [70.0, 90.0, 130.0, 160.0], [1.0, 2.5, 1.6, 2.9]
        windows = [[ppg_with_arm_swing(rng, b, s, t0=2.0 * k) for k in range(5)] for b, s in zip(bpms, swings)]
        batch_state, singles = None, [None] * len(bpms)
        for k in range(5):
            ppg = np.stack([w[k][0] for w in windows])
            acc = np.stack([w[k][1] for w in windows])
            batch, batch_state = estimate_heart_rate(ppg, acc, FS, batch_state)
            for d in range(len(bpms)):
                one, singles[d] = estimate_heart_rate(ppg[d:d + 1], acc[d:d + 1], FS, singles[d])
                np.testing.assert_allclose(batch.tracked_bpm[d], one.tracked_bpm[0])
                np.testing.assert_allclose(batch.quality[d], one.quality[0], rtol=1e-9)
        merged = HeartRateState.concatenate(singles)
        np.testing.assert_allclose(merged.posterior, batch_state.posterior, rtol=1e-9, atol=1e-15)

    @pytest.mark.parametrize("method", ["spectral_tracking", "spectral_peak"])
    def test_chunks_equal_one_pass(self, rng, monkeypatch, method):
        windows = [[ppg_with_arm_swing(rng, b, s, t0=2.0 * k) for k in range(3)]
                   for b, s in zip([65.0, 80.0, 95.0, 120.0, 150.0, 170.0, 100.0], [1.0, 2.5, 1.6, 2.9, 1.2, 2.0, 0.0])]
        runs = []
        for chunk in (3, 1000):
            monkeypatch.setattr(models.heart_rate, "DEVICE_CHUNK", chunk)
            state, estimates = None, []
            for k in range(3):
                ppg = np.stack([w[k][0] for w in windows])
                acc = np.stack([w[k][1] for w in windows])
                est, state = estimate_heart_rate(ppg, acc, FS, state, method=method)
                estimates.append(est)
            runs.append((estimates, state))
        (chunked, chunked_state), (whole, whole_state) = runs
        for a, b in zip(chunked, whole):
            for field in ("bpm", "tracked_bpm", "motion_bpm", "reliable"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            np.testing.assert_allclose(a.quality, b.quality, rtol=1e-12)  # matrix products round by batch shape
        np.testing.assert_allclose(chunked_state.posterior, whole_state.posterior, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(chunked_state.motion_history, whole_state.motion_history, rtol=1e-12)

    def test_select_and_merge(self, rng):
        ppg = np.stack([ppg_with_arm_swing(rng, 80.0)[0] for _ in range(3)])
        acc = np.stack([ppg_with_arm_swing(rng, 80.0)[1] for _ in range(3)])
        _, state = estimate_heart_rate(ppg, acc, FS)
        _, part = estimate_heart_rate(ppg[[2]], acc[[2]], FS, state.select([2]))
        merged = state.merge([2], part)
        assert merged.windows_seen.tolist() == [1, 1, 2]


class TestPpgQuality:
    def test_empty(self):
        assert ppg_quality(np.zeros((0, 400)), FS).shape == (0,)

    def test_clean_beats_noise(self, rng):
        t = np.arange(400) / FS
        clean = ppg_quality(np.sin(2 * np.pi * 1.3 * t)[None], FS)[0]
        noise = ppg_quality(rng.standard_normal((1, 400)), FS)[0]
        assert clean > 0.8 > 0.45 > noise

    def test_wrong_method(self):
        with pytest.raises(ValueError, match="spectral_concentration"):
            ppg_quality(np.zeros((1, 400)), FS, method="snr")


class TestSkinContact:
    def test_empty(self):
        assert skin_contact(np.zeros((0, 400)), FS).contact.shape == (0,)

    def test_on_and_off_skin(self, rng):
        t = np.arange(400) / FS
        on = 2e6 + 4e3 * np.sin(2 * np.pi * 1.2 * t)
        ambient = 3e3 + 20 * rng.standard_normal(400)
        saturated = np.full(400, 16_777_215.0)
        flat = np.full(400, 2e6)
        res = skin_contact(np.stack([on, ambient, saturated, flat]), FS)
        assert res.contact.tolist() == [True, False, False, False]

    def test_wrong_placement(self):
        with pytest.raises(ValueError, match="waist"):
            skin_contact(np.zeros((1, 400)), FS, placement="helmet")
