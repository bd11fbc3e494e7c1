# MAX17048 single-cell fuel gauge (Analog Devices / Maxim), over I2C. ModelGauge needs no
# sense resistor and draws 23 uA; the chip tracks state of charge on its own, the firmware
# only reads it every status period.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


_VCELL = const(0x02)
_SOC = const(0x04)
_MODE = const(0x06)
_VERSION = const(0x08)
_CONFIG = const(0x0C)
_CRATE = const(0x16)
_STATUS = const(0x1A)

ADDRESS = const(0x36)
_VERSION_MASK = const(0xFFF0)
_VERSION_FAMILY = const(0x0010)  # MAX17048/MAX17049 report 0x001X
_ALRT = const(0x0020)


class MAX17048:
    """Cell voltage (mV), state of charge (%) and charge rate (%/h, positive when charging)."""

    def __init__(self, i2c, address: int = ADDRESS) -> None:
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(2)
        version = self._read16(_VERSION)  # OSError if nothing answers
        if version & _VERSION_MASK != _VERSION_FAMILY:
            raise ValueError("no MAX17048 at 0x%02x: version 0x%04x" % (address, version))
        self.version = version

    def _read16(self, reg: int) -> int:
        self.i2c.readfrom_mem_into(self.address, reg, self._buf)
        return (self._buf[0] << 8) | self._buf[1]  # registers are big-endian

    def _write16(self, reg: int, value: int) -> None:
        self._buf[0] = value >> 8
        self._buf[1] = value & 0xFF
        self.i2c.writeto_mem(self.address, reg, self._buf)

    def voltage_mv(self) -> int:
        return self._read16(_VCELL) * 78125 // 1000000  # 78.125 uV per LSB

    def soc_percent(self) -> int:
        pct = self._read16(_SOC) >> 8  # 1/256 % per LSB
        return pct if pct < 100 else 100

    def charge_rate(self) -> float:
        raw = self._read16(_CRATE)
        if raw & 0x8000:
            raw -= 0x10000
        return raw * 0.208  # % of capacity per hour

    def charging(self) -> bool:
        return self.charge_rate() > 0.5

    def clear_alert(self) -> None:
        self._write16(_CONFIG, self._read16(_CONFIG) & ~_ALRT)
