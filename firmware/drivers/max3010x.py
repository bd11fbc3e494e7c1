# MAX30101 / MAX30102 optical heart-rate front end (Analog Devices / Maxim), over I2C.
#
# One LED slot in multi-LED mode: green (LED3) on the MAX30101, infrared (LED2) on the
# MAX30102, which has no green LED. Both report part id 0x15, so the board says which is
# fitted. 100 samples/s averaged by 2 in the chip gives 50 Hz into its 32-sample FIFO; the
# firmware drains the FIFO in one burst every 0.2-0.4 s. Counts are 18-bit left-justified ADC
# values, reported raw together with the LED current that produced them.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


_INT_STATUS1 = const(0x00)
_INT_ENABLE1 = const(0x02)
_INT_ENABLE2 = const(0x03)
_FIFO_WR_PTR = const(0x04)
_OVF_COUNTER = const(0x05)
_FIFO_RD_PTR = const(0x06)
_FIFO_DATA = const(0x07)
_FIFO_CONFIG = const(0x08)
_MODE_CONFIG = const(0x09)
_SPO2_CONFIG = const(0x0A)
_LED1_PA = const(0x0C)  # red
_LED2_PA = const(0x0D)  # infrared
_LED3_PA = const(0x0E)  # green (MAX30101 only)
_MULTI_LED_1 = const(0x11)  # SLOT2[6:4], SLOT1[2:0]
_MULTI_LED_2 = const(0x12)
_PART_ID = const(0xFF)

PART_ID = const(0x15)
ADDRESS = const(0x57)
FIFO_DEPTH = const(32)

_MODE_RESET = const(0x40)
_MODE_SHDN = const(0x80)
_MODE_MULTI_LED = const(0x07)
_INT_A_FULL = const(0x80)
_FIFO_ROLLOVER = const(0x10)
_DATA_MASK = const(0x3FFFF)

# chip codes
_SR_CODES = {50: 0, 100: 1, 200: 2, 400: 3}
_AVE_CODES = {1: 0, 2: 1, 4: 2, 8: 3}
_PW_CODES = {69: 0, 118: 1, 215: 2, 411: 3}
_RANGE_CODES = {2048: 0, 4096: 1, 8192: 2, 16384: 3}
_LED_SLOT = {"red": (1, _LED1_PA), "ir": (2, _LED2_PA), "green": (3, _LED3_PA)}

SKIN_ON_COUNTS = const(30000)  # reflected light with skin under the window (see hardware/)
SKIN_OFF_COUNTS = const(15000)  # hysteresis: below this the device is off the skin


class MAX3010x:
    """PPG front end. read_fifo(out) pushes raw counts into out (a ringbuf.IntRing)."""

    def __init__(self, i2c, address: int = ADDRESS, led: str = "green", rate_hz: int = 50,
                 led_current_ma: float = 6.4, pulse_width_us: int = 215, adc_range_na: int = 16384) -> None:
        if led not in _LED_SLOT:
            raise ValueError("led must be one of %s" % ", ".join(_LED_SLOT))
        if not 0 <= led_current_ma <= 51.0:
            raise ValueError("LED current 0..51 mA")
        if pulse_width_us not in _PW_CODES or adc_range_na not in _RANGE_CODES:
            raise ValueError("pulse width %s us, ADC range %s nA" % (list(_PW_CODES), list(_RANGE_CODES)))
        # sample rate in the chip, averaging to reach rate_hz: more samples, less noise
        ave = 2 if rate_hz * 2 in _SR_CODES else 1
        if rate_hz * ave not in _SR_CODES:
            raise ValueError("rate_hz must be one of 25, 50, 100, 200")
        self.i2c = i2c
        self.address = address
        self.rate_hz = rate_hz
        self._buf = bytearray(FIFO_DEPTH * 3)
        self._mv = memoryview(self._buf)
        self._reg = bytearray(1)
        self.overflows = 0  # samples the chip lost because its FIFO was full
        self.skin_contact = False
        part = self._read(_PART_ID)  # OSError if nothing answers
        if part != PART_ID:
            raise ValueError("no MAX3010x at 0x%02x: part id 0x%02x" % (address, part))
        self._write(_MODE_CONFIG, _MODE_RESET)
        for _ in range(100):  # the reset bit clears itself within a few I2C transactions
            if not self._read(_MODE_CONFIG) & _MODE_RESET:
                break
        else:
            raise OSError("MAX3010x reset did not complete")
        slot, pa_reg = _LED_SLOT[led]
        self.led_register = int(led_current_ma * 5 + 0.5)  # 0.2 mA per step
        # rollover: when the firmware falls behind, keep the newest samples; the chip counts
        # what it overwrote in OVF_COUNTER. Almost-full at 17 samples (15 free).
        self._write(_FIFO_CONFIG, (_AVE_CODES[ave] << 5) | _FIFO_ROLLOVER | 15)
        self._write(_SPO2_CONFIG, (_RANGE_CODES[adc_range_na] << 5) | (_SR_CODES[rate_hz * ave] << 2)
                    | _PW_CODES[pulse_width_us])
        self._write(pa_reg, self.led_register)
        self._write(_MULTI_LED_1, slot)
        self._write(_MULTI_LED_2, 0)
        self._write(_INT_ENABLE1, _INT_A_FULL)
        self._write(_INT_ENABLE2, 0)
        self.clear_fifo()
        self._write(_MODE_CONFIG, _MODE_MULTI_LED)

    def _read(self, reg: int) -> int:
        self.i2c.readfrom_mem_into(self.address, reg, self._reg)
        return self._reg[0]

    def _write(self, reg: int, value: int) -> None:
        self._reg[0] = value
        self.i2c.writeto_mem(self.address, reg, self._reg)

    @property
    def led_current_ma(self) -> float:
        return self.led_register / 5

    def clear_fifo(self) -> None:
        self._write(_FIFO_WR_PTR, 0)
        self._write(_OVF_COUNTER, 0)
        self._write(_FIFO_RD_PTR, 0)

    def available(self) -> int:
        """Samples waiting in the chip's FIFO (reads the three pointer registers in one go)."""
        mv = self._mv
        self.i2c.readfrom_mem_into(self.address, _FIFO_WR_PTR, mv[:3])
        wr, ovf, rd = mv[0] & 0x1F, mv[1] & 0x1F, mv[2] & 0x1F
        if ovf:
            self.overflows += ovf
            return FIFO_DEPTH
        return (wr - rd) & 0x1F

    def read_fifo(self, out) -> int:
        """Drain the FIFO in one burst; push each raw count into out. Returns the count read."""
        n = self.available()
        if n == 0:
            return 0
        mv = self._mv
        self.i2c.readfrom_mem_into(self.address, _FIFO_DATA, mv[:n * 3])
        total = 0
        for i in range(0, n * 3, 3):
            v = ((mv[i] << 16) | (mv[i + 1] << 8) | mv[i + 2]) & _DATA_MASK
            total += v
            out.push(v)
        self._update_contact(total // n)
        return n

    def _update_contact(self, mean_counts: int) -> None:
        # Reflected LED light is strong only with skin against the window; off the arm the
        # photodiode sees ambient light only. Hysteresis keeps the flag from chattering.
        if self.skin_contact:
            self.skin_contact = mean_counts >= SKIN_OFF_COUNTS
        else:
            self.skin_contact = mean_counts >= SKIN_ON_COUNTS

    def interrupt_status(self) -> int:
        """Read (and so clear) INT_STATUS1; bit 7 is FIFO almost full."""
        return self._read(_INT_STATUS1)

    def shutdown(self) -> None:
        self._write(_MODE_CONFIG, _MODE_SHDN | _MODE_MULTI_LED)
