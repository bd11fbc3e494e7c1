"""Realistic, seeded signals for the chip emulators and the gateway simulator.

PPG: a pulse per beat (systolic wave plus a smaller diastolic wave), a DC level that depends on
skin contact and LED current, respiration baseline wander and motion artefact. Motion: an
activity script of named segments (walk, stand, sit, lie, fall) in g along the device axes,
with +Y up the upper arm when standing.
"""
import math

FULL_SCALE = (1 << 18) - 1  # MAX3010x 18-bit ADC


class Rng:
    """A small seeded generator (xorshift32, Box-Muller) that runs under MicroPython too, whose
    random module has no Random class and no gauss()."""

    def __init__(self, seed: int = 1) -> None:
        self._s = ((seed * 2654435761) ^ 0x9E3779B9) & 0xFFFFFFFF or 1
        self._spare = None

    def random(self) -> float:
        x = self._s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._s = x
        return x / 4294967296.0

    def gauss(self, mu: float, sigma: float) -> float:
        if self._spare is not None:
            z, self._spare = self._spare, None
            return mu + sigma * z
        u1 = 1.0 - self.random()
        u2 = self.random()
        r = math.sqrt(-2.0 * math.log(u1))
        self._spare = r * math.sin(2 * math.pi * u2)
        return mu + sigma * r * math.cos(2 * math.pi * u2)


class PpgWaveform:
    """Raw PPG counts as a function of time, LED current and skin contact."""

    def __init__(self, hr_bpm: float = 72.0, seed: int = 1, counts_per_ma_on_skin: float = 17000.0,
                 perfusion: float = 0.012, ambient_counts: float = 1800.0) -> None:
        self.hr_bpm = hr_bpm
        self.counts_per_ma = counts_per_ma_on_skin
        self.perfusion = perfusion
        self.ambient = ambient_counts
        self._rng = Rng(seed)
        self.on_skin = True
        self.motion_g = 0.0  # the emulator sets this from the motion script: artefact source
        self._beat_phase = 0.0
        self._t_last = 0.0

    def _pulse(self, phase: float) -> float:
        # systolic peak at 0.15 of the beat, diastolic (after the dicrotic notch) at 0.45
        sys = math.exp(-((phase - 0.15) ** 2) / (2 * 0.05**2))
        dia = 0.35 * math.exp(-((phase - 0.45) ** 2) / (2 * 0.08**2))
        return sys + dia

    def counts(self, t: float, led_ma: float) -> int:
        dt = max(0.0, t - self._t_last)
        self._t_last = t
        self._beat_phase = (self._beat_phase + dt * self.hr_bpm / 60.0) % 1.0
        if not self.on_skin:
            return int(self.ambient + self._rng.gauss(0, 40))
        dc = self.counts_per_ma * led_ma
        breathing = 1 + 0.004 * math.sin(2 * math.pi * 0.25 * t)
        # blood volume rises with the pulse, so absorbed light rises and reflected counts fall
        ac = -dc * self.perfusion * self._pulse(self._beat_phase)
        artefact = dc * 0.02 * self.motion_g * math.sin(2 * math.pi * 1.7 * t)
        v = dc * breathing + ac + artefact + self.ambient + self._rng.gauss(0, 25)
        return max(0, min(FULL_SCALE, int(v)))


def _rot(g: tuple, tilt_deg: float) -> tuple:
    # rotate gravity from +Y towards +Z by tilt_deg (0 upright, 90 lying on the back)
    a = math.radians(tilt_deg)
    return (g[0], g[1] * math.cos(a) - g[2] * math.sin(a), g[1] * math.sin(a) + g[2] * math.cos(a))


class MotionScript:
    """Acceleration in g along the device's axes for a sequence of segments.

    segments: list of (kind, seconds). Kinds: walk, run, stand, sit, lie, fall (about 1 s of
    free fall and impact, then the posture of the next segment), slump (fall against a wall,
    tilted ~50 degrees)."""

    KINDS = ("walk", "run", "stand", "sit", "lie", "fall", "slump")

    def __init__(self, segments: list[tuple[str, float]], seed: int = 2) -> None:
        for kind, dur in segments:
            if kind not in self.KINDS or dur <= 0:
                raise ValueError("segment %r: kinds %s, positive seconds" % (kind, self.KINDS))
        self.segments = segments
        self._rng = Rng(seed)
        self.duration = sum(d for _, d in segments)

    def segment_at(self, t: float) -> tuple[str, float]:
        start = 0.0
        for kind, dur in self.segments:
            if t < start + dur:
                return kind, t - start
            start += dur
        return self.segments[-1][0], t - start + self.segments[-1][1]

    def accel_g(self, t: float) -> tuple[float, float, float]:
        kind, dt = self.segment_at(t)
        n = self._rng.gauss
        if kind in ("walk", "run"):
            f, amp = (1.9, 0.35) if kind == "walk" else (2.8, 0.9)
            s = math.sin(2 * math.pi * f * t)
            return (0.08 + 0.5 * amp * math.sin(math.pi * f * t) + n(0, 0.03),
                    1.0 + amp * max(s, -0.4) + n(0, 0.03),
                    0.1 + 0.3 * amp * math.cos(2 * math.pi * f * t) + n(0, 0.03))
        if kind in ("stand", "sit"):
            sway = 0.004 * math.sin(2 * math.pi * 0.3 * t)
            return (sway + n(0, 0.004), 1.0 + n(0, 0.004), 0.02 + n(0, 0.004))
        if kind == "lie":
            g = _rot((0.0, 1.0, 0.0), 90)
            breathe = 0.003 * math.sin(2 * math.pi * 0.25 * t)
            return (g[0] + n(0, 0.004), g[1] + n(0, 0.004), g[2] + breathe + n(0, 0.004))
        if kind == "slump":
            g = _rot((0.0, 1.0, 0.0), 50)
            return (g[0] + n(0, 0.004), g[1] + n(0, 0.004), g[2] + n(0, 0.004))
        # fall: 0.45 s free fall, 0.08 s impact, then the body lies (its next segment's posture)
        if dt < 0.45:
            return (n(0, 0.05), 0.12 + n(0, 0.05), n(0, 0.05))
        if dt < 0.53:
            return (1.8, 2.6, 4.6)
        return self._after_fall(t)

    def _after_fall(self, t: float) -> tuple[float, float, float]:
        g = _rot((0.0, 1.0, 0.0), 90)
        return (g[0] + self._rng.gauss(0, 0.004), g[1] + self._rng.gauss(0, 0.004), g[2])

    def moving(self, t: float) -> float:
        """How much the arm moves (0..1), for the PPG motion artefact."""
        kind, _ = self.segment_at(t)
        return {"walk": 0.5, "run": 1.0, "fall": 1.0}.get(kind, 0.0)
