"""Drivers against register-level emulators: identification, configuration, FIFO bursts,
physical units, skin contact."""
import errno

import numpy as np
import pytest

from firmware import board
from firmware.drivers.lsm6dso import LSM6DSO
from firmware.drivers.max17048 import MAX17048
from firmware.drivers.max3010x import MAX3010x
from firmware.ringbuf import IntRing
from firmware.tools.emulators import FakeI2C, Lsm6dsoEmulator, Max17048Emulator, Max30101Emulator
from firmware.tools.waveforms import MotionScript, PpgWaveform


def _bus(**devices):
    return FakeI2C(devices)


class TestMax3010x:
    def test_missing_chip_raises_oserror(self):
        with pytest.raises(OSError) as exc:
            MAX3010x(FakeI2C({}))
        assert exc.value.errno == errno.ENODEV

    def test_wrong_part_id_raises_valueerror(self):
        emu = Max30101Emulator()
        emu.regs[0xFF] = 0x11
        emu_bus = FakeI2C({0x57: emu})
        emu.write_byte = lambda reg, v: None  # a chip that is not ours ignores our writes
        emu.read_byte = lambda reg: 0x11
        with pytest.raises(ValueError, match="part id 0x11"):
            MAX3010x(emu_bus)

    def test_bad_arguments_raise_valueerror(self):
        bus = FakeI2C({0x57: Max30101Emulator()})
        for kwargs in ({"led": "blue"}, {"rate_hz": 60}, {"led_current_ma": 60}, {"pulse_width_us": 100}):
            with pytest.raises(ValueError):
                MAX3010x(bus, **kwargs)

    def test_configures_multi_led_green_50hz(self):
        emu = Max30101Emulator()
        ppg = MAX3010x(FakeI2C({0x57: emu}), led_current_ma=6.4)
        assert emu.regs[0x09] == 0x07  # multi-LED mode, running
        assert emu.regs[0x11] & 0x07 == 3  # slot 1 = LED3, green
        assert emu.regs[0x0E] == 32 and ppg.led_register == 32  # 6.4 mA in 0.2 mA steps
        assert (emu.regs[0x0A] >> 2) & 7 == 1 and (emu.regs[0x08] >> 5) == 1  # 100 sps / 2
        assert emu.regs[0x08] & 0x10  # rollover keeps the newest samples

    def test_fifo_burst_reads_realistic_counts_at_50hz(self):
        emu = Max30101Emulator(PpgWaveform(hr_bpm=75), clock_error=0.0)
        bus = FakeI2C({0x57: emu})
        ppg = MAX3010x(bus)
        out = IntRing(1, 1000)
        before = bus.transactions
        total = 0
        for step in range(1, 51):  # 10 s in 0.2 s polls
            bus.now = step * 0.2
            total += ppg.read_fifo(out)
        assert abs(total - 500) <= 2
        assert (bus.transactions - before) == 100  # two I2C transactions per poll: pointers, burst
        values = [out.get(i) for i in range(len(out))]
        assert all(0 < v < (1 << 18) for v in values)
        assert 90000 < sum(values) / len(values) < 130000  # DC level at 6.4 mA on skin
        assert ppg.skin_contact
        # the pulse is in the data: the autocorrelation peaks at one beat (0.8 s at 75 bpm)
        x = np.asarray(values, float) - np.mean(values)
        lags = range(20, 75)  # 0.4 .. 1.5 s at 50 Hz
        best = max(lags, key=lambda k: float(np.dot(x[:-k], x[k:])))
        assert 38 <= best <= 42

    def test_fifo_overflow_is_counted_and_newest_kept(self):
        emu = Max30101Emulator(clock_error=0.0)
        bus = FakeI2C({0x57: emu})
        ppg = MAX3010x(bus)
        out = IntRing(1, 100)
        bus.now = 2.0  # 100 samples arrive, the FIFO holds 32
        assert ppg.read_fifo(out) == 32
        assert ppg.overflows > 0

    def test_skin_contact_follows_the_ppg_level_with_hysteresis(self):
        wave = PpgWaveform()
        bus = FakeI2C({0x57: Max30101Emulator(wave)})
        ppg = MAX3010x(bus)
        out = IntRing(1, 2000)
        bus.now = 0.4
        ppg.read_fifo(out)
        assert ppg.skin_contact
        wave.on_skin = False  # taken off the arm
        bus.now = 0.8
        ppg.read_fifo(out)
        assert not ppg.skin_contact
        wave.on_skin = True
        bus.now = 1.2
        ppg.read_fifo(out)
        assert ppg.skin_contact

    def test_max30102_uses_infrared(self):
        emu = Max30101Emulator(leds=2)
        MAX3010x(FakeI2C({0x57: emu}), led="ir")
        assert emu.regs[0x11] & 0x07 == 2 and emu.regs[0x0D] > 0


class TestLsm6dso:
    def test_missing_and_wrong_chip(self):
        with pytest.raises(OSError):
            LSM6DSO(FakeI2C({}))
        with pytest.raises(ValueError, match="WHO_AM_I 0x69"):
            LSM6DSO(FakeI2C({0x6A: Lsm6dsoEmulator(who_am_i=0x69)}))
        with pytest.raises(ValueError):
            LSM6DSO(FakeI2C({0x6A: Lsm6dsoEmulator()}), odr_hz=50)

    def test_configuration_registers(self):
        emu = Lsm6dsoEmulator(freq_fine=-4)
        imu = LSM6DSO(FakeI2C({0x6A: emu}), watermark=10)
        assert emu.regs[0x10] == (3 << 4) | (1 << 2)  # 52 Hz, +-16 g
        assert emu.regs[0x11] == 0  # gyro off
        assert emu.regs[0x15] & 0x10  # low-power accelerometer
        assert emu.regs[0x0A] & 7 == 6 and emu.regs[0x09] == 3  # continuous FIFO, BDR 52 Hz
        assert emu.regs[0x07] == 10 and emu.regs[0x0D] == 0x08  # watermark on INT1
        assert imu.odr_hz == pytest.approx(emu.actual_odr())
        assert imu.odr_hz == pytest.approx(52.08 * (1 - 0.006), rel=1e-3)

    def test_fifo_burst_returns_milli_g(self):
        bus = FakeI2C({0x6A: Lsm6dsoEmulator(MotionScript([("lie", 100)]))})
        imu = LSM6DSO(bus)
        out = IntRing(3, 600)
        bus.now = 5.0
        n = imu.read_fifo(out)
        assert abs(n - 5 * imu.odr_hz) <= 2
        z = [out.get(i, 2) for i in range(n)]
        y = [out.get(i, 1) for i in range(n)]
        assert all(960 < v < 1040 for v in z)  # lying: gravity on Z, in mg
        assert all(abs(v) < 40 for v in y)

    def test_impacts_are_not_clipped_at_16g_scale(self):
        bus = FakeI2C({0x6A: Lsm6dsoEmulator(MotionScript([("walk", 2), ("fall", 2), ("lie", 2)]))})
        imu = LSM6DSO(bus)
        out = IntRing(3, 600)
        bus.now = 6.0
        n = imu.read_fifo(out)
        peak = max(abs(out.get(i, 2)) for i in range(n))
        assert 4000 < peak < 5000

    def test_gyro_words_are_separated_by_tag(self):
        bus = FakeI2C({0x6A: Lsm6dsoEmulator()})
        imu = LSM6DSO(bus, gyro=True)
        acc, gyro = IntRing(3, 200), IntRing(3, 200)
        bus.now = 1.0
        n = imu.read_fifo(acc, gyro)
        assert n == len(acc) and len(gyro) == n > 40
        assert gyro.get(0, 0) == 12 * 70  # 2000 dps scale: 70 mdps per LSB

    def test_overrun_is_counted(self):
        bus = FakeI2C({0x6A: Lsm6dsoEmulator()})
        imu = LSM6DSO(bus)
        bus.now = 20.0  # > 512 words at 52 Hz
        imu.read_fifo(IntRing(3, 600))
        assert imu.overruns == 1


class TestMax17048:
    def test_identification(self):
        with pytest.raises(OSError):
            MAX17048(FakeI2C({}))
        with pytest.raises(ValueError):
            MAX17048(FakeI2C({0x36: Max17048Emulator(version=0x0300)}))

    def test_voltage_soc_and_charging(self):
        emu = Max17048Emulator(soc=80.0, current_ma=-25.0)
        bus = FakeI2C({0x36: emu})
        gauge = MAX17048(bus)
        assert gauge.soc_percent() == 80
        assert abs(gauge.voltage_mv() - emu.vcell_mv()) <= 1
        assert 3900 < gauge.voltage_mv() < 4200
        assert not gauge.charging() and gauge.charge_rate() < 0
        bus.now = 3600.0  # one hour at 25 mA from 1000 mAh
        assert gauge.soc_percent() == 77
        emu.current_ma = 200.0
        assert gauge.charging()


def test_board_addresses_match_the_drivers_defaults():
    from firmware.drivers import lsm6dso, max17048, max3010x

    assert (board.PPG_ADDR, board.IMU_ADDR, board.FUEL_GAUGE_ADDR) == (
        max3010x.ADDRESS, lsm6dso.ADDRESS, max17048.ADDRESS)
