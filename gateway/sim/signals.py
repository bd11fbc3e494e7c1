"""Synthetic sensor signals of a wearable on an officer's chest: PPG raw counts and
accelerometer samples in milli-g, block by block, for a named activity.

Not a physiological model; realistic enough that the backend's models see what they will see in
the field: heart rate that follows activity with a lag, motion artefacts in the PPG that grow
with movement, gait rhythms, a car's vibration, and the free fall / impact / stillness of a fall.

Device axes (worn on the chest): +y up along the torso, +z out of the chest, +x to the officer's
left. A resting upright officer reads about (0, +1000, 0) mg.

All randomness comes from the ``numpy.random.Generator`` passed in, so a seed replays exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware.frame import ACCEL_LIMIT_MG, PPG_LIMIT

ACTIVITIES = ("standing", "walking", "running", "sitting_car", "lying", "fall", "off_body")


@dataclass(frozen=True)
class ActivityProfile:
    hr_bpm: float  # heart rate this activity settles at
    gravity_mg: tuple[float, float, float]  # posture: where gravity points in device axes
    step_hz: float  # gait frequency, 0 when not walking or running
    step_mg: float  # vertical gait amplitude
    vibration_mg: float  # broadband motion (vehicle, fidgeting)
    artifact_gain: float  # PPG counts per mg of movement (sensor shifts on the skin)


PROFILES = {
    "standing": ActivityProfile(78, (0, 1000, 0), 0.0, 0, 12, 6.0),
    "walking": ActivityProfile(98, (0, 990, 140), 1.85, 320, 25, 9.0),
    "running": ActivityProfile(158, (0, 960, 280), 2.8, 1100, 60, 12.0),
    "sitting_car": ActivityProfile(72, (0, 930, 360), 0.0, 0, 28, 4.0),
    "lying": ActivityProfile(64, (0, 80, 995), 0.0, 0, 4, 3.0),
    "fall": ActivityProfile(110, (0, 80, 995), 0.0, 0, 4, 3.0),  # ends lying, see fall_samples
    "off_body": ActivityProfile(0, (0, 0, 1000), 0.0, 0, 2, 0.0),
}

# Heart-rate time constants: it rises faster with exertion than it recovers.
HR_RISE_TAU_S = 15.0
HR_FALL_TAU_S = 45.0
PPG_DC_COUNTS = 480_000  # reflected green light at the LED current the firmware uses
PPG_AC_FRACTION = 0.012  # pulsatile part of the signal
PPG_OFF_BODY_COUNTS = 9_000  # ambient light only
FALL_FREEFALL_S = 0.35
FALL_IMPACT_S = 0.12
FALL_IMPACT_MG = 5200.0  # within the 3-8 g of recorded falls


class SensorModel:
    """Continuous signal state of one wearable (heart rate, pulse and gait phases).

    >>> import numpy as np
    >>> model = SensorModel(np.random.default_rng(1), sampling_rate=50)
    >>> ppg, accel = model.block(20, "walking")
    >>> len(ppg), accel.shape
    (20, (20, 3))
    """

    def __init__(self, rng: np.random.Generator, sampling_rate: int, resting_hr: float = 70.0):
        if sampling_rate <= 0:
            raise ValueError("sampling_rate must be positive")
        self.rng = rng
        self.fs = float(sampling_rate)
        self.hr = resting_hr
        self.resting_offset = resting_hr - 70.0  # a personal baseline
        self.pulse_phase = 0.0
        self.step_phase = 0.0
        self.resp_phase = 0.0
        self.fall_elapsed: float | None = None  # seconds since a fall started

    def block(self, n: int, activity: str) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples of (ppg counts int, accel mg int array (n, 3)) for ``activity``."""
        if activity not in PROFILES:
            raise ValueError(f"unknown activity {activity!r}; valid: {', '.join(ACTIVITIES)}")
        profile = PROFILES[activity]
        dt = 1.0 / self.fs
        t = np.arange(n) * dt
        accel = self._accel(n, activity, profile, t)
        movement = np.abs(np.linalg.norm(accel, axis=1) - 1000.0)
        ppg = self._ppg(n, activity, profile, movement)
        return ppg, accel

    # ---- accelerometer ----------------------------------------------------------------------

    def _accel(self, n: int, activity: str, p: ActivityProfile, t: np.ndarray) -> np.ndarray:
        if activity == "fall":
            return self._fall(n)
        self.fall_elapsed = None
        g = np.tile(np.array(p.gravity_mg, dtype=float), (n, 1))
        if p.step_hz:
            phase = self.step_phase + 2 * math.pi * p.step_hz * t
            vertical = p.step_mg * np.sin(phase)
            if activity == "running":  # heel strikes: sharp positive peaks
                vertical = vertical + 0.6 * p.step_mg * np.maximum(np.sin(phase), 0) ** 6
            g[:, 1] += vertical
            g[:, 0] += 0.35 * p.step_mg * np.sin(phase / 2)  # sway at stride frequency
            g[:, 2] += 0.25 * p.step_mg * np.cos(phase)
            self.step_phase = float((phase[-1] + 2 * math.pi * p.step_hz / self.fs) % (2 * math.pi))
        g += self.rng.normal(0.0, p.vibration_mg, size=(n, 3))
        if activity == "sitting_car" and self.rng.random() < 0.02:  # braking or a turn
            g[:, 0] += self.rng.normal(0, 150)
            g[:, 2] += self.rng.normal(0, 120)
        return g

    def _fall(self, n: int) -> np.ndarray:
        """Free fall, impact, then lying still; continues across blocks."""
        if self.fall_elapsed is None:
            self.fall_elapsed = 0.0
        out = np.empty((n, 3))
        upright = np.array(PROFILES["standing"].gravity_mg, dtype=float)
        lying = np.array(PROFILES["lying"].gravity_mg, dtype=float)
        for i in range(n):
            s = self.fall_elapsed
            if s < FALL_FREEFALL_S:
                frac = s / FALL_FREEFALL_S
                out[i] = upright * (1 - 0.85 * frac) + self.rng.normal(0, 30, 3)
            elif s < FALL_FREEFALL_S + FALL_IMPACT_S:
                k = (s - FALL_FREEFALL_S) / FALL_IMPACT_S
                spike = FALL_IMPACT_MG * math.sin(math.pi * k)
                out[i] = lying * (1 + spike / 1000) + self.rng.normal(0, 200, 3)
            elif s < FALL_FREEFALL_S + FALL_IMPACT_S + 0.8:
                out[i] = lying + self.rng.normal(0, 120, 3)  # settling
            else:
                out[i] = lying + self.rng.normal(0, 3, 3)  # no motion
            self.fall_elapsed += 1.0 / self.fs
        return out

    # ---- PPG ----------------------------------------------------------------------------------

    def _ppg(self, n: int, activity: str, p: ActivityProfile, movement: np.ndarray) -> np.ndarray:
        if activity == "off_body":
            counts = PPG_OFF_BODY_COUNTS + self.rng.normal(0, 150, n)
            return np.clip(counts, 0, PPG_LIMIT).astype(np.int64)
        target = p.hr_bpm + self.resting_offset
        if activity == "fall" and (self.fall_elapsed or 0) > 2.0:
            target = 115.0 + self.resting_offset  # shock / stress response while lying
        dt = n / self.fs
        tau = HR_RISE_TAU_S if target > self.hr else HR_FALL_TAU_S
        self.hr += (target - self.hr) * (1 - math.exp(-dt / tau))
        self.hr += self.rng.normal(0, 0.4)  # beat-to-beat variability
        beat_hz = self.hr / 60.0
        phases = self.pulse_phase + np.arange(1, n + 1) * beat_hz / self.fs
        self.pulse_phase = float(phases[-1] % 1.0)
        ph = phases % 1.0
        # Systolic peak and a smaller dicrotic wave; light absorbed by blood lowers the counts.
        pulse = np.exp(-((ph - 0.18) / 0.07) ** 2) + 0.35 * np.exp(-((ph - 0.48) / 0.09) ** 2)
        resp = np.sin(self.resp_phase + 2 * math.pi * 0.25 * np.arange(n) / self.fs)
        self.resp_phase = float((self.resp_phase + 2 * math.pi * 0.25 * n / self.fs) % (2 * math.pi))
        counts = (PPG_DC_COUNTS * (1 - PPG_AC_FRACTION * pulse + 0.004 * resp)
                  + p.artifact_gain * movement * self.rng.choice((-1.0, 1.0))
                  + self.rng.normal(0, 120, n))
        return np.clip(counts, 0, PPG_LIMIT).astype(np.int64)


def to_frame_samples(ppg: np.ndarray, accel: np.ndarray) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Round and clip to what the firmware's encoder accepts (uint24 counts, int16 milli-g)."""
    a = np.clip(np.rint(accel), -ACCEL_LIMIT_MG, ACCEL_LIMIT_MG).astype(int)
    return [int(v) for v in ppg], [tuple(int(c) for c in row) for row in a]
