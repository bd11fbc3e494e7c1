"""The evaluation's reference impact of a fall file: the last large excursion, not the largest peak."""
import numpy as np

from backend.evaluation.datasets import SisfallRecording
from backend.evaluation.falls import largest_peak_impacts, reference_impacts

RATE = 50


def _recording(peaks: list[tuple[float, float]], seconds: float = 15.0) -> SisfallRecording:
    """1 g at rest on -Y, with a 2-sample spike of ``g`` (magnitude) at each (time, g)."""
    accel = np.zeros((3, int(seconds * RATE)))
    accel[1] = -1.0
    for t, g in peaks:
        i = int(t * RATE)
        accel[1, i:i + 2] = -g
    return SisfallRecording("F05", "SA99", "R01", accel)


class TestReferenceImpacts:
    def test_footstrike_larger_than_the_fall_is_not_the_reference(self):
        # jogging footstrikes up to 7 g, then the trip and fall at 9 s (6.5 g), then lying still
        steps = [(1.0 + 0.35 * k, 4.0 + (3.0 if k == 10 else 0.0)) for k in range(20)]
        rec = _recording(steps + [(9.0, 6.5)])
        assert largest_peak_impacts([rec])[0] == steps[10][0]
        assert reference_impacts([rec])[0] == 9.0

    def test_a_later_small_bump_does_not_move_the_reference(self):
        rec = _recording([(5.0, 5.0), (12.0, 1.5)])  # fall, then shifting while lying
        assert reference_impacts([rec])[0] == 5.0

    def test_second_impact_of_the_same_fall_within_its_excursion_share(self):
        rec = _recording([(5.0, 4.5), (6.1, 3.8)])  # hip, then shoulder: 3.8 >= 0.8 * 4.5
        assert reference_impacts([rec])[0] == 6.1
        assert largest_peak_impacts([rec])[0] == 5.0
