import numpy as np
import pytest

FS = 50


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def ppg_with_arm_swing(rng, bpm=90.0, swing_hz=2.5, seconds=8.0, t0=0.0, swing_amp=3.0):
    """Sinusoidal PPG at ``bpm`` plus a stronger arm-swing artifact that the accelerometer sees."""
    t = t0 + np.arange(int(seconds * FS)) / FS
    swing = np.sin(2 * np.pi * swing_hz * t)
    ppg = np.sin(2 * np.pi * bpm / 60 * t) + swing_amp * swing + 0.1 * rng.standard_normal(t.size)
    accel = np.stack([0.5 * swing, -1.0 + 0.3 * swing, 0.05 * rng.standard_normal(t.size)])
    return ppg, accel
