import numpy as np
import pytest

from models.activity import classify_activity
from models.man_down import ALARM, ManDownState, reset_man_down, update_man_down
from tests.models.conftest import FS


def run(accel, *, placement="waist", hop_s=1.0, window_s=2.0, falls=()):
    """Feed a recording (3, samples) through activity -> man-down like the backend does."""
    state = ManDownState.initial(1)
    events, phases = [], []
    hop, win = int(hop_s * FS), int(window_s * FS)
    for end in range(win, accel.shape[1] + 1, hop):
        now = end / FS
        act = classify_activity(accel[None, :, end - win:end], FS, placement=placement)
        state, d = update_man_down(state, now, moving=act.activity != "still", lying=act.posture == "lying",
                                   fall_suspected=np.array([any(abs(now - f) < hop_s / 2 for f in falls)]),
                                   placement=placement)
        if d.event[0]:
            events.append((now - window_s, d.event[0]))
        phases.append(d.phase[0])
    return events, phases, state


def lying_still(seconds, rng):
    a = np.zeros((3, int(seconds * FS)))
    a[2] = 1.0
    return a + 0.002 * rng.standard_normal(a.shape)


def moving_burst(seconds, lying=True):
    t = np.arange(int(seconds * FS)) / FS
    a = np.zeros((3, t.size))
    a[2 if lying else 1] = 1.0 if lying else -1.0
    a[0] += 0.4 * np.sin(2 * np.pi * 2.0 * t)
    return a


class TestUpdateManDown:
    def test_empty(self):
        state, d = update_man_down(ManDownState.initial(0), 0.0, moving=[], lying=[])
        assert d.phase.shape == (0,)

    def test_lying_still_35_s(self, rng):
        # stillness counted from the first still window; windows end 2 s after they start
        events, phases, _ = run(lying_still(37, rng))
        assert events == [(20.0, "pre_alert"), (30.0, "alarm")]
        assert phases[-1] == "alarm"

    def test_direct_timing(self):
        s = ManDownState.initial(1)
        seen = {}
        for t in np.arange(0, 35.5, 0.5):
            s, d = update_man_down(s, t, moving=[False], lying=[True])
            if d.event[0]:
                seen[d.event[0]] = t
        assert seen == {"pre_alert": 20.0, "alarm": 30.0}

    def test_movement_during_pre_alert_cancels(self, rng):
        rec = np.concatenate([lying_still(25, rng), moving_burst(3), lying_still(10, rng)], axis=1)
        events, phases, _ = run(rec)
        kinds = [e for _, e in events]
        assert kinds == ["pre_alert", "cancelled"]
        assert "alarm" not in phases

    def test_alarm_needs_manual_reset(self):
        s = ManDownState.initial(1)
        for t in range(31):
            s, d = update_man_down(s, float(t), moving=[False], lying=[True])
        s, d = update_man_down(s, 31.0, moving=[True], lying=[True])
        assert d.phase[0] == "alarm"
        s = reset_man_down(s, np.array([True]))
        s, d = update_man_down(s, 32.0, moving=[True], lying=[True])
        assert d.phase[0] == "idle" and s.phase[0] != ALARM

    @pytest.mark.parametrize("placement", ["waist", "chest", "wrist"])
    def test_sitting_upright_typing_ten_minutes_raises_nothing(self, rng, placement):
        seconds = 600
        a = np.zeros((3, seconds * FS))
        a[1] = -1.0
        a[0] = 0.25  # leaning back a little
        a += 0.01 * rng.standard_normal(a.shape)  # typing-level motion
        events, phases, _ = run(a, placement=placement, hop_s=2.0, window_s=8.0)
        assert events == [] and set(phases) == {"idle"}

    def test_after_a_fall_even_when_not_lying(self):
        s = ManDownState.initial(1)
        seen = {}
        for t in range(0, 40):
            s, d = update_man_down(s, float(t), moving=[False], lying=[False], fall_suspected=[t == 0])
            if d.event[0]:
                seen[d.event[0]] = t
        assert seen == {"pre_alert": 20, "alarm": 30}

    def test_fall_disarmed_after_walking_away(self):
        s = ManDownState.initial(1)
        s, _ = update_man_down(s, 0.0, moving=[False], lying=[False], fall_suspected=[True])
        for t in range(1, 13):
            s, _ = update_man_down(s, float(t), moving=[True], lying=[False])
        for t in range(13, 60):
            s, d = update_man_down(s, float(t), moving=[False], lying=[False])
        assert d.phase[0] == "idle"

    def test_batch_equals_single(self, rng):
        moving = rng.random((60, 4)) < 0.2
        lying = rng.random((60, 4)) < 0.7
        batch = ManDownState.initial(4)
        singles = [ManDownState.initial(1) for _ in range(4)]
        for t in range(60):
            batch, db = update_man_down(batch, float(t), moving=moving[t], lying=lying[t])
            for d in range(4):
                singles[d], ds = update_man_down(singles[d], float(t), moving=moving[t, d:d + 1], lying=lying[t, d:d + 1])
                assert ds.phase[0] == db.phase[d] and ds.event[0] == db.event[d]

    def test_wrong_arguments(self):
        with pytest.raises(ValueError, match="one flag per device"):
            update_man_down(ManDownState.initial(2), 0.0, moving=[True], lying=[True, False])
        with pytest.raises(ValueError, match="wrist, upper_arm, chest, waist"):
            update_man_down(ManDownState.initial(1), 0.0, moving=[True], lying=[True], placement="hat")
