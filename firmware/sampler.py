# 50 Hz sampling from the sensors' FIFOs: no sleep loop sets the rate, the chips' own clocks do.
#
# The IMU batches at its nearest rate (52.08 Hz, trimmed by INTERNAL_FREQ_FINE) and raises INT1
# at its FIFO watermark; the app then calls poll(), which drains both FIFOs in bursts,
# resamples the accelerometer to 50 Hz by linear interpolation, pairs it sample by sample with
# the PPG (50 Hz from the MAX3010x's own oscillator) and hands out blocks of 20 samples.
# The two oscillators drift apart by a fraction of a percent; when one stream runs ahead by
# more than SLIP_SAMPLES, its oldest sample is dropped and counted in ``slips``.
from firmware.ringbuf import IntRing

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


SLIP_SAMPLES = const(10)
_ONE = const(65536)  # Q16 fixed point


class Resampler:
    """Linear-interpolation rate converter for (x, y, z) samples, in Q16 fixed point."""

    def __init__(self, in_hz: float, out_hz: float) -> None:
        if in_hz <= 0 or out_hz <= 0:
            raise ValueError("rates must be positive")
        self.step = int(in_hz * _ONE / out_hz + 0.5)
        self._pos = 0
        self._primed = False
        self._px = self._py = self._pz = 0

    def push(self, x: int, y: int, z: int, out) -> None:
        """Feed one input sample; pushes 0, 1 or 2 output samples into out (an IntRing)."""
        if not self._primed:
            self._primed = True
            self._px, self._py, self._pz = x, y, z
            out.push(x, y, z)
            self._pos = self.step
            return
        px, py, pz = self._px, self._py, self._pz
        while self._pos <= _ONE:
            f = self._pos
            out.push(px + (x - px) * f // _ONE, py + (y - py) * f // _ONE, pz + (z - pz) * f // _ONE)
            self._pos += self.step
        self._pos -= _ONE
        self._px, self._py, self._pz = x, y, z


class Sampler:
    """Blocks of paired PPG and acceleration samples at rate_hz.

    on_sample(x, y, z, t_ms) sees every accelerometer sample (for the safety logic);
    on_block(t0_ms, ppg, accel, led_register) gets each full block (for the outbox)."""

    def __init__(self, ppg, imu, on_block, on_sample=None, rate_hz: int = 50, block: int = 20) -> None:
        self.ppg = ppg
        self.imu = imu
        self.rate_hz = rate_hz
        self.block = block
        self.on_block = on_block
        self.on_sample = on_sample
        self._period_ms = 1000 // rate_hz
        self._resampler = Resampler(imu.odr_hz, rate_hz)
        self._raw = IntRing(3, 160)  # one full burst of the IMU FIFO at most
        self._acc = IntRing(3, 96)
        self._ppg = IntRing(1, 96)
        self._block_ppg = [0] * block
        self._block_acc: list = [(0, 0, 0)] * block
        self._n = 0
        self._t0 = 0
        self.slips = 0
        self.samples = 0

    def poll(self, now_ms: int) -> int:
        """Drain both FIFOs; returns the number of paired samples produced."""
        self.ppg.read_fifo(self._ppg)
        self.imu.read_fifo(self._raw)
        raw = self._raw
        for i in range(len(raw)):
            self._resampler.push(raw.get(i, 0), raw.get(i, 1), raw.get(i, 2), self._acc)
        raw.clear()
        acc, ppg = self._acc, self._ppg
        while len(ppg) > len(acc) + SLIP_SAMPLES:
            ppg.drop(1)
            self.slips += 1
        while len(acc) > len(ppg) + SLIP_SAMPLES:
            acc.drop(1)
            self.slips += 1
        k = len(ppg) if len(ppg) < len(acc) else len(acc)
        for i in range(k):
            t = now_ms - (k - 1 - i) * self._period_ms
            x, y, z = acc.get(i, 0), acc.get(i, 1), acc.get(i, 2)
            if self.on_sample is not None:
                self.on_sample(x, y, z, t)
            if self._n == 0:
                self._t0 = t
            self._block_ppg[self._n] = ppg.get(i)
            self._block_acc[self._n] = (x, y, z)
            self._n += 1
            if self._n == self.block:
                self._n = 0
                self.on_block(self._t0, self._block_ppg, self._block_acc, self.ppg.led_register)
        acc.drop(k)
        ppg.drop(k)
        self.samples += k
        return k
