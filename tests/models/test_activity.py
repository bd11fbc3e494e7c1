import numpy as np
import pytest

import models.activity
from models.activity import classify_activity, motion_energy
from tests.models.conftest import FS


def upright(seconds=8.0, swing_hz=None, amp=0.0, lying=False):
    t = np.arange(int(seconds * FS)) / FS
    a = np.zeros((3, t.size))
    if lying:
        a[2] = 1.0
    else:
        a[1] = -1.0
    if swing_hz:
        a[1] += amp * np.sin(2 * np.pi * swing_hz * t)
    return a


class TestMotionEnergy:
    def test_empty(self):
        assert motion_energy(np.zeros((0, 3, 400)), FS).shape == (0,)

    def test_still_and_moving(self):
        e = motion_energy(np.stack([upright(), upright(swing_hz=2.0, amp=0.3)]), FS)
        assert e[0] == pytest.approx(0.0, abs=1e-12)
        assert e[1] == pytest.approx(0.3 / np.sqrt(2), rel=0.05)

    def test_wrong_method(self):
        with pytest.raises(ValueError, match="vector_rms"):
            motion_energy(np.zeros((1, 3, 400)), FS, method="vm")


class TestClassifyActivity:
    def test_empty(self):
        assert classify_activity(np.zeros((0, 3, 400)), FS).activity.shape == (0,)

    def test_still_walking_running_lying(self):
        batch = np.stack([upright(), upright(swing_hz=1.8, amp=0.25), upright(swing_hz=2.8, amp=0.8), upright(lying=True)])
        r = classify_activity(batch, FS)
        assert r.activity.tolist() == ["still", "walking", "running", "still"]
        assert r.posture.tolist() == ["upright", "upright", "upright", "lying"]
        assert r.cadence_spm[1] == pytest.approx(108, abs=1.5)
        assert r.cadence_spm[2] == pytest.approx(168, abs=1.5)
        assert np.isnan(r.cadence_spm[0])

    def test_wrist_posture_unknown(self):
        assert classify_activity(upright(lying=True)[None], FS, placement="wrist").posture[0] == "unknown"

    def test_batch_equals_single(self):
        batch = np.stack([upright(), upright(swing_hz=1.8, amp=0.25), upright(lying=True)])
        r = classify_activity(batch, FS)
        for d in range(3):
            one = classify_activity(batch[d:d + 1], FS)
            assert one.activity[0] == r.activity[d] and one.posture[0] == r.posture[d]
            np.testing.assert_allclose(one.tilt_deg[0], r.tilt_deg[d])

    def test_chunks_equal_one_pass(self, monkeypatch):
        batch = np.stack([upright(), upright(swing_hz=1.8, amp=0.25), upright(lying=True),
                          upright(swing_hz=2.8, amp=0.8), upright(swing_hz=1.2, amp=0.1)])
        whole = classify_activity(batch, FS)
        monkeypatch.setattr(models.activity, "DEVICE_CHUNK", 2)
        chunked = classify_activity(batch, FS)
        for field in ("activity", "posture", "cadence_spm", "motion_energy_g", "tilt_deg"):
            np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))

    def test_wrong_placement(self):
        with pytest.raises(ValueError, match="wrist, upper_arm, chest, waist"):
            classify_activity(np.zeros((1, 3, 400)), FS, placement="boot")

    def test_wrong_shape(self):
        with pytest.raises(ValueError):
            classify_activity(np.zeros((1, 2, 400)), FS)
