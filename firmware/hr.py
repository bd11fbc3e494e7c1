# Pulse rate from raw PPG counts, for the standard Heart Rate service only: a phone app sees a
# plausible number. The backend's models/ estimate heart rate properly (under motion, with a
# signal-quality index); nothing here is an accuracy claim.


class PulseRate:
    """Band-pass as the difference of a 0.1 s and a 1 s moving average, peaks above half the
    running amplitude at least 300 ms apart (200 bpm at most), median of the last intervals."""

    def __init__(self, rate_hz: int = 50) -> None:
        self._a_fast = 1.0 / (0.1 * rate_hz)
        self._a_slow = 1.0 / (1.0 * rate_hz)
        self._fast = 0.0
        self._slow = 0.0
        self._amp = 0.0
        self._prev = 0.0
        self._rising = False
        self._primed = False
        self._last_peak = -1
        self._intervals = [0, 0, 0, 0, 0]
        self._n = 0

    def update(self, counts: int, t_ms: int) -> None:
        if not self._primed:
            self._fast = self._slow = float(counts)
            self._primed = True
        self._fast += (counts - self._fast) * self._a_fast
        self._slow += (counts - self._slow) * self._a_slow
        bp = self._slow - self._fast  # reflected light dips with each pulse: invert
        self._amp += (abs(bp) - self._amp) * 0.02
        if bp < self._prev and self._rising and self._prev > 0.5 * self._amp:
            if self._last_peak >= 0:
                dt = t_ms - self._last_peak
                if dt < 300:
                    self._rising = bp > self._prev
                    self._prev = bp
                    return
                if dt < 2000:
                    self._intervals[self._n % 5] = dt
                    self._n += 1
            self._last_peak = t_ms
        self._rising = bp > self._prev
        self._prev = bp

    def bpm(self) -> int:
        """Beats per minute, 0 until five intervals were seen."""
        if self._n < 5:
            return 0
        s = sorted(self._intervals)
        return int(60000 / s[2] + 0.5)
