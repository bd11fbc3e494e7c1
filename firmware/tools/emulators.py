"""Register-level emulators of the wearable's chips behind a fake ``machine.I2C``.

Each emulator implements the registers the firmware touches with the chip's semantics (reset
bits that clear themselves, FIFO pointers, overflow counters, auto-increment and the LSM6DSO
FIFO address roll-back, big-endian 16-bit registers on the fuel gauge) and generates samples at
its own oscillator's rate from a waveform as simulated time passes. Time is the bus's ``now``
(seconds), set by the test or simulator: nothing sleeps. Runs under CPython and MicroPython
(the boot test runs firmware main() over it).
"""
import errno
import math

from firmware.tools.waveforms import MotionScript, PpgWaveform


class FakeI2C:
    """The subset of machine.I2C the drivers use. A missing address raises OSError(ENODEV),
    as MicroPython does when nothing acknowledges."""

    def __init__(self, devices: dict | None = None) -> None:
        self.devices = dict(devices or {})
        self.now = 0.0
        self.transactions = 0

    def _dev(self, addr: int):
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(errno.ENODEV, "no device at 0x%02x" % addr)
        self.transactions += 1
        dev.advance(self.now)
        return dev

    def scan(self) -> list[int]:
        return sorted(self.devices)

    def readfrom_mem_into(self, addr: int, memaddr: int, buf, *, addrsize: int = 8) -> None:
        data = self._dev(addr).read(memaddr, len(buf))
        buf[:] = data

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        return bytes(self._dev(addr).read(memaddr, nbytes))

    def writeto_mem(self, addr: int, memaddr: int, buf, *, addrsize: int = 8) -> None:
        self._dev(addr).write(memaddr, bytes(buf))


class _RegisterChip:
    def __init__(self) -> None:
        self.regs = bytearray(256)
        self.t = 0.0

    def advance(self, now: float) -> None:
        self.t = max(self.t, now)

    def read(self, reg: int, n: int) -> bytearray:
        out = bytearray()
        for i in range(n):
            out.append(self.read_byte((reg + i) & 0xFF))
        return out

    def read_byte(self, reg: int) -> int:
        return self.regs[reg]

    def write(self, reg: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.write_byte((reg + i) & 0xFF, b)

    def write_byte(self, reg: int, value: int) -> None:
        self.regs[reg] = value


class Max30101Emulator(_RegisterChip):
    """MAX30101 (or MAX30102 with leds=2): 32-sample FIFO, multi-LED mode, SMP_AVE, rollover,
    OVF counter, almost-full interrupt. ``clock_error`` skews its internal oscillator."""

    def __init__(self, waveform: PpgWaveform | None = None, leds: int = 3, clock_error: float = 0.002) -> None:
        super().__init__()
        self.waveform = waveform or PpgWaveform()
        self.leds = leds
        self.clock_error = clock_error
        self._reset()

    def _reset(self) -> None:
        self.regs[:] = bytes(256)
        self.regs[0x00] = 0x01  # PWR_RDY
        self.regs[0xFE] = 0x03
        self.regs[0xFF] = 0x15
        self.fifo: list[tuple[int, ...]] = []
        self.wr = self.rd = self.ovf = 0
        self._byte_pos = 0
        self._next_sample_t: float | None = None
        self.samples_made = 0

    # FIFO pointers are derived from the list so they stay consistent
    def _sync_ptrs(self) -> None:
        self.wr = (self.rd + len(self.fifo)) & 0x1F

    def _rate(self) -> float:
        sr = (50, 100, 200, 400, 800, 1000, 1600, 3200)[(self.regs[0x0A] >> 2) & 0x07]
        ave = 1 << min((self.regs[0x08] >> 5) & 0x07, 5)
        return sr / ave * (1 + self.clock_error)

    def _slots(self) -> list[int]:
        s = [self.regs[0x11] & 0x07, (self.regs[0x11] >> 4) & 0x07, self.regs[0x12] & 0x07, (self.regs[0x12] >> 4) & 0x07]
        out = []
        for slot in s:
            if slot == 0:
                break
            out.append(slot)
        return out

    def _running(self) -> bool:
        mode = self.regs[0x09]
        return not mode & 0x80 and (mode & 0x07) == 0x07 and bool(self._slots())

    def advance(self, now: float) -> None:
        if not self._running():
            self._next_sample_t = None
            self.t = max(self.t, now)
            return
        period = 1.0 / self._rate()
        if self._next_sample_t is None:  # started by the last transaction (at self.t)
            self._next_sample_t = self.t + period
        pw_bits = (15, 16, 17, 18)[self.regs[0x0A] & 0x03]
        mask = (0x3FFFF >> (18 - pw_bits)) << (18 - pw_bits)
        while self._next_sample_t <= now:
            t = self._next_sample_t
            values = []
            for slot in self._slots():
                if slot > self.leds:
                    values.append(0)
                    continue
                pa = self.regs[0x0C + slot - 1]
                values.append(self.waveform.counts(t, pa * 0.2) & mask)
            self._push(tuple(values))
            self._next_sample_t += period
        self.t = max(self.t, now)

    def _push(self, sample: tuple[int, ...]) -> None:
        self.samples_made += 1
        if len(self.fifo) >= 32:
            if self.regs[0x08] & 0x10:  # rollover: overwrite the oldest
                self.fifo.pop(0)
                self.rd = (self.rd + 1) & 0x1F
                self._byte_pos = 0
            else:
                self.ovf = min(self.ovf + 1, 0x1F)
                return
            self.ovf = min(self.ovf + 1, 0x1F)
        self.fifo.append(sample)
        self._sync_ptrs()
        free = 32 - len(self.fifo)
        if self.regs[0x02] & 0x80 and free <= (self.regs[0x08] & 0x0F):
            self.regs[0x00] |= 0x80

    def read(self, reg: int, n: int) -> bytearray:
        if reg == 0x07:  # FIFO_DATA: the register pointer does not advance while bursting
            out = bytearray()
            for _ in range(n):
                out.append(self._fifo_byte())
            return out
        return super().read(reg, n)

    def _fifo_byte(self) -> int:
        if not self.fifo:
            return 0
        sample = self.fifo[0]
        ch, byte = divmod(self._byte_pos, 3)
        v = sample[ch]
        b = (v >> (16 - 8 * byte)) & 0xFF
        self._byte_pos += 1
        if self._byte_pos == 3 * len(sample):
            self.fifo.pop(0)
            self.rd = (self.rd + 1) & 0x1F
            self._byte_pos = 0
            self.ovf = 0  # reset when a complete sample is popped
        return b

    def read_byte(self, reg: int) -> int:
        if reg == 0x00:
            v = self.regs[0]
            self.regs[0] = 0  # reading clears the interrupt flags
            return v
        if reg == 0x04:
            return self.wr
        if reg == 0x05:
            return self.ovf
        if reg == 0x06:
            return self.rd
        return self.regs[reg]

    def write_byte(self, reg: int, value: int) -> None:
        if reg == 0x09 and value & 0x40:
            self._reset()  # RESET clears every register and then clears itself
            return
        if reg == 0x04:
            self.fifo.clear()
            self.wr = self.rd = value & 0x1F
            self._byte_pos = 0
            return
        if reg == 0x05:
            self.ovf = value & 0x1F
            return
        if reg == 0x06:
            self.rd = value & 0x1F
            self.fifo.clear()
            self._byte_pos = 0
            return
        if reg in (0xFE, 0xFF):
            return  # read-only
        self.regs[reg] = value


class Lsm6dsoEmulator(_RegisterChip):
    """LSM6DSO: WHO_AM_I, software reset, ODR/full scale, FIFO in continuous mode with tagged
    words, watermark and overrun flags, address roll-back 0x7E -> 0x78, INTERNAL_FREQ_FINE."""

    FIFO_WORDS = 512
    _ODR = {1: 12.5, 2: 26, 3: 52, 4: 104, 5: 208, 6: 416}
    _COEFF = {1: 512, 2: 256, 3: 128, 4: 64, 5: 32, 6: 16}
    _SENS_MG = {0: 0.061, 1: 0.488, 2: 0.122, 3: 0.244}

    def __init__(self, motion: MotionScript | None = None, freq_fine: int = -4, who_am_i: int = 0x6C) -> None:
        super().__init__()
        self.motion = motion or MotionScript([("stand", 1e6)])
        self.freq_fine = freq_fine
        self.who_am_i = who_am_i
        self._reset()

    def _reset(self) -> None:
        self.regs[:] = bytes(256)
        self.regs[0x0F] = self.who_am_i
        self.regs[0x12] = 0x04  # IF_INC on by default
        self.regs[0x63] = self.freq_fine & 0xFF
        self.fifo: list[bytes] = []
        self.overrun = False
        self._word = b""
        self._pos = 0
        self._next_t: float | None = None
        self._cnt = 0
        self.samples_made = 0

    def _odr_code(self) -> int:
        return self.regs[0x10] >> 4

    def actual_odr(self) -> float:
        code = self._odr_code()
        return 6667.0 * (1 + 0.0015 * self.freq_fine) / self._COEFF[code]

    def advance(self, now: float) -> None:
        code = self._odr_code()
        bdr = self.regs[0x09] & 0x0F
        fifo_on = (self.regs[0x0A] & 0x07) == 0x06 and bdr == code
        if code not in self._ODR or not fifo_on:
            self._next_t = None
            self.t = max(self.t, now)
            return
        period = 1.0 / self.actual_odr()
        if self._next_t is None:  # started by the last transaction (at self.t)
            self._next_t = self.t + period
        sens = self._SENS_MG[(self.regs[0x10] >> 2) & 0x03]
        full_scale = {0: 2, 1: 16, 2: 4, 3: 8}[(self.regs[0x10] >> 2) & 0x03]
        gyro_on = (self.regs[0x11] >> 4) != 0 and (self.regs[0x09] >> 4) != 0
        while self._next_t <= now:
            gx, gy, gz = self.motion.accel_g(self._next_t)
            raw = []
            for g in (gx, gy, gz):
                g = max(-full_scale, min(full_scale, g))
                raw.append(max(-32768, min(32767, int(round(g * 1000 / sens)))))
            if gyro_on:
                self._push(0x01, (12, -7, 3))
            self._push(0x02, tuple(raw))
            self._next_t += period
        self.t = max(self.t, now)

    def _push(self, tag: int, xyz: tuple[int, int, int]) -> None:
        self.samples_made += tag == 0x02
        b = bytearray(7)
        b[0] = (tag << 3) | ((self._cnt & 0x03) << 1)
        self._cnt += 1
        for i, v in enumerate(xyz):
            v &= 0xFFFF
            b[1 + 2 * i] = v & 0xFF
            b[2 + 2 * i] = v >> 8
        if len(self.fifo) >= self.FIFO_WORDS:
            self.fifo.pop(0)  # continuous mode: the oldest word is overwritten
            self.overrun = True
        self.fifo.append(bytes(b))

    def read(self, reg: int, n: int) -> bytearray:
        out = bytearray()
        r = reg
        for _ in range(n):
            out.append(self.read_byte(r))
            if r == 0x7E:
                r = 0x78  # FIFO output registers roll back to the tag: multi-word bursts
            elif self.regs[0x12] & 0x04:
                r = (r + 1) & 0xFF
        return out

    def read_byte(self, reg: int) -> int:
        if reg == 0x3A:
            return len(self.fifo) & 0xFF
        if reg == 0x3B:
            level = len(self.fifo)
            wtm = self.regs[0x07] | ((self.regs[0x08] & 0x01) << 8)
            v = (level >> 8) & 0x03
            if wtm and level >= wtm:
                v |= 0x80
            if self.overrun:
                v |= 0x40 | 0x08
                self.overrun = False  # FIFO_OVR_LATCHED clears on read
            if level >= self.FIFO_WORDS:
                v |= 0x20
            return v
        if 0x78 <= reg <= 0x7E:
            if reg == 0x78:
                self._word = self.fifo.pop(0) if self.fifo else bytes(7)
            return self._word[reg - 0x78] if self._word else 0
        return self.regs[reg]

    def write_byte(self, reg: int, value: int) -> None:
        if reg == 0x12 and value & 0x01:
            self._reset()
            return
        if reg in (0x0F, 0x63, 0x3A, 0x3B):
            return
        if reg == 0x0A and (value & 0x07) == 0:
            self.fifo.clear()  # bypass mode empties the FIFO
        self.regs[reg] = value


class Max17048Emulator(_RegisterChip):
    """MAX17048: big-endian 16-bit registers; cell voltage and state of charge from a simple
    discharge model (``soc`` in %, ``current_ma`` positive when charging)."""

    def __init__(self, soc: float = 80.0, capacity_mah: float = 1000.0, current_ma: float = -20.0,
                 version: int = 0x0012) -> None:
        super().__init__()
        self.soc = soc
        self.capacity = capacity_mah
        self.current_ma = current_ma
        self.version = version
        self.config = 0x971C

    def advance(self, now: float) -> None:
        dt_h = max(0.0, now - self.t) / 3600.0
        self.soc = max(0.0, min(100.0, self.soc + 100.0 * self.current_ma * dt_h / self.capacity))
        self.t = max(self.t, now)

    def vcell_mv(self) -> float:
        # a LiPo curve: 3.3 V empty, a plateau near 3.7-3.9 V, 4.2 V full
        s = self.soc / 100.0
        return 3300 + 600 * s + 300 * (1 - math.exp(-12 * s)) - 100 * s * s

    def _reg16(self, reg: int) -> int:
        if reg == 0x02:
            return int(self.vcell_mv() * 1000 / 78.125) & 0xFFFF
        if reg == 0x04:
            return int(self.soc * 256) & 0xFFFF
        if reg == 0x08:
            return self.version
        if reg == 0x0C:
            return self.config
        if reg == 0x16:
            return int(round(100.0 * self.current_ma / self.capacity / 0.208)) & 0xFFFF
        if reg == 0x18:
            return 0x9600
        return 0

    def read(self, reg: int, n: int) -> bytearray:
        out = bytearray()
        r = reg
        while len(out) < n:
            v = self._reg16(r & 0xFE)
            out += bytes((v >> 8, v & 0xFF))
            r += 2
        return out[:n]

    def write(self, reg: int, data: bytes) -> None:
        if reg == 0x0C and len(data) >= 2:
            self.config = (data[0] << 8) | data[1]


def wearable_bus(motion: MotionScript | None = None, ppg: PpgWaveform | None = None,
                 soc: float = 80.0) -> FakeI2C:
    """The wearable's I2C bus with all three chips at their board addresses."""
    from firmware import board

    return FakeI2C({
        board.PPG_ADDR: Max30101Emulator(ppg),
        board.IMU_ADDR: Lsm6dsoEmulator(motion),
        board.FUEL_GAUGE_ADDR: Max17048Emulator(soc),
    })
