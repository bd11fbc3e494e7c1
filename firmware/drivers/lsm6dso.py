# LSM6DSO 6-axis IMU (STMicroelectronics), over I2C. Accelerometer only by default: the gyro
# costs ~0.55 mA and telemetry carries acceleration; it can be batched too (gyro=True).
#
# The chip batches samples into its FIFO at 52 Hz (its nearest rate to 50 Hz; the exact rate
# comes from INTERNAL_FREQ_FINE) and raises INT1 at the watermark. Each FIFO word is a tag
# byte and six data bytes; the address pointer rolls back from FIFO_DATA_OUT_Z_H (0x7E) to the
# tag (0x78), so many words come in one burst read.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


_FIFO_CTRL1 = const(0x07)
_FIFO_CTRL2 = const(0x08)
_FIFO_CTRL3 = const(0x09)
_FIFO_CTRL4 = const(0x0A)
_INT1_CTRL = const(0x0D)
_WHO_AM_I = const(0x0F)
_CTRL1_XL = const(0x10)
_CTRL2_G = const(0x11)
_CTRL3_C = const(0x12)
_CTRL6_C = const(0x15)
_FIFO_STATUS1 = const(0x3A)
_INTERNAL_FREQ_FINE = const(0x63)
_FIFO_DATA_OUT_TAG = const(0x78)

WHO_AM_I = const(0x6C)
ADDRESS = const(0x6A)  # SA0 low
_SW_RESET = const(0x01)
_BDU = const(0x40)
_IF_INC = const(0x04)
_XL_HM_MODE = const(0x10)  # 1 = high-performance off: low-power/normal mode, ~26 uA at 52 Hz
_FIFO_CONTINUOUS = const(0x06)
_INT1_FIFO_TH = const(0x08)
_TAG_GYRO = const(0x01)
_TAG_ACCEL = const(0x02)
_STATUS_OVR = const(0x40)
_WORD = const(7)
_BURST_WORDS = const(32)

_ODR_CODES = {12: 1, 26: 2, 52: 3, 104: 4, 208: 5, 416: 6}
_ODR_COEFF = {12: 512, 26: 256, 52: 128, 104: 64, 208: 32, 416: 16}  # datasheet ODR formula
_FS_CODES = {2: 0, 16: 1, 4: 2, 8: 3}
_SENS_UG = {2: 61, 4: 122, 8: 244, 16: 488}  # micro-g per LSB
_GYRO_FS_CODES = {250: 0, 500: 1, 1000: 2, 2000: 3}
_GYRO_SENS_MDPS = {250: 8750, 500: 17500, 1000: 35000, 2000: 70000}  # micro-dps per LSB / 1000


class LSM6DSO:
    """Accelerometer (and optional gyro) through the FIFO, in milli-g (and milli-dps)."""

    def __init__(self, i2c, address: int = ADDRESS, odr_hz: int = 52, scale_g: int = 16,
                 watermark: int = 10, low_power: bool = True, gyro: bool = False,
                 gyro_dps: int = 2000) -> None:
        if odr_hz not in _ODR_CODES:
            raise ValueError("odr_hz must be one of %s" % sorted(_ODR_CODES))
        if scale_g not in _FS_CODES or gyro_dps not in _GYRO_FS_CODES:
            raise ValueError("scale_g one of %s, gyro_dps one of %s" % (sorted(_FS_CODES), sorted(_GYRO_FS_CODES)))
        if not 1 <= watermark <= 511:
            raise ValueError("watermark 1..511 words")
        self.i2c = i2c
        self.address = address
        self.scale_g = scale_g
        self._sens_ug = _SENS_UG[scale_g]
        self._gyro_sens = _GYRO_SENS_MDPS[gyro_dps]
        self.gyro = gyro
        self._buf = bytearray(_BURST_WORDS * _WORD)
        self._mv = memoryview(self._buf)
        self._reg = bytearray(1)
        self.overruns = 0  # times the FIFO overflowed and lost samples
        who = self._read(_WHO_AM_I)  # OSError if nothing answers
        if who != WHO_AM_I:
            raise ValueError("no LSM6DSO at 0x%02x: WHO_AM_I 0x%02x" % (address, who))
        self._write(_CTRL3_C, _SW_RESET)
        for _ in range(100):  # SW_RESET clears itself after ~50 us
            if not self._read(_CTRL3_C) & _SW_RESET:
                break
        else:
            raise OSError("LSM6DSO reset did not complete")
        self._write(_CTRL3_C, _BDU | _IF_INC)
        self._write(_CTRL6_C, _XL_HM_MODE if low_power else 0)
        odr = _ODR_CODES[odr_hz]
        self._write(_CTRL1_XL, (odr << 4) | (_FS_CODES[scale_g] << 2))
        self._write(_CTRL2_G, ((odr << 4) | (_GYRO_FS_CODES[gyro_dps] << 2)) if gyro else 0)
        self._write(_FIFO_CTRL1, watermark & 0xFF)
        self._write(_FIFO_CTRL2, (watermark >> 8) & 0x01)
        self._write(_FIFO_CTRL3, ((odr << 4) if gyro else 0) | odr)
        self._write(_FIFO_CTRL4, _FIFO_CONTINUOUS)
        self._write(_INT1_CTRL, _INT1_FIFO_TH)
        fine = self._read(_INTERNAL_FREQ_FINE)
        if fine > 127:
            fine -= 256
        # Actual ODR = (6667 Hz + 0.15 % * fine * 6667 Hz) / coefficient (datasheet, sec. 6.4)
        self.odr_hz = 6667.0 * (1.0 + 0.0015 * fine) / _ODR_COEFF[odr_hz]

    def _read(self, reg: int) -> int:
        self.i2c.readfrom_mem_into(self.address, reg, self._reg)
        return self._reg[0]

    def _write(self, reg: int, value: int) -> None:
        self._reg[0] = value
        self.i2c.writeto_mem(self.address, reg, self._reg)

    def fifo_level(self) -> int:
        """Words waiting in the FIFO; counts an overrun when the chip reports one."""
        mv = self._mv
        self.i2c.readfrom_mem_into(self.address, _FIFO_STATUS1, mv[:2])
        if mv[1] & _STATUS_OVR:
            self.overruns += 1
        return mv[0] | ((mv[1] & 0x03) << 8)

    def read_fifo(self, accel_out, gyro_out=None) -> int:
        """Drain the FIFO in bursts; push (x, y, z) milli-g into accel_out (an IntRing of
        width 3), gyro words in milli-dps into gyro_out. Returns accelerometer samples read."""
        words = self.fifo_level()
        got = 0
        mv = self._mv
        while words > 0:
            k = words if words < _BURST_WORDS else _BURST_WORDS
            self.i2c.readfrom_mem_into(self.address, _FIFO_DATA_OUT_TAG, mv[:k * _WORD])
            for w in range(k):
                p = w * _WORD
                tag = mv[p] >> 3
                if tag == _TAG_ACCEL:
                    s = self._sens_ug
                    accel_out.push(_i16(mv, p + 1) * s // 1000, _i16(mv, p + 3) * s // 1000,
                                   _i16(mv, p + 5) * s // 1000)
                    got += 1
                elif tag == _TAG_GYRO and gyro_out is not None:
                    s = self._gyro_sens
                    gyro_out.push(_i16(mv, p + 1) * s // 1000, _i16(mv, p + 3) * s // 1000,
                                  _i16(mv, p + 5) * s // 1000)
            words -= k
        return got

    def power_down(self) -> None:
        self._write(_CTRL1_XL, 0)
        self._write(_CTRL2_G, 0)


def _i16(mv, p: int) -> int:
    v = mv[p] | (mv[p + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v
