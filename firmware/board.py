# GENERATED from hardware/pinmap.json by `vigil hardware board`: do not edit by hand.
# Vigil wearable rev A, ESP32-S3-WROOM-1-N8R8.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


MODULE = 'ESP32-S3-WROOM-1-N8R8'
I2C0_ID = const(0)
I2C0_SDA = const(8)
I2C0_SCL = const(9)
I2C0_FREQ = const(400000)
PPG_ADDR = const(0x57)  # U2 MAX30101EFD+ on i2c0
PPG_PART = 'MAX30101EFD+'
IMU_ADDR = const(0x6A)  # U3 LSM6DSOTR on i2c0
IMU_PART = 'LSM6DSOTR'
FUEL_GAUGE_ADDR = const(0x36)  # U4 MAX17048G+T10 on i2c0
FUEL_GAUGE_PART = 'MAX17048G+T10'
PIN_CHARGER_STAT = const(7)  # U5, in, active low
CHARGER_STAT_ACTIVE_LOW = True
CHARGER_STAT_PULL_UP = True
PIN_FUEL_GAUGE_ALRT = const(12)  # U4, in, active low
FUEL_GAUGE_ALRT_ACTIVE_LOW = True
FUEL_GAUGE_ALRT_PULL_UP = True
PIN_HAPTIC = const(5)  # Q1, out, active high
HAPTIC_ACTIVE_LOW = False
PIN_IMU_INT1 = const(10)  # U3, in, active high
IMU_INT1_ACTIVE_LOW = False
IMU_INT1_PULL_UP = False
PIN_PPG_INT = const(11)  # U2, in, active low
PPG_INT_ACTIVE_LOW = True
PPG_INT_PULL_UP = True
PIN_SOS_BUTTON = const(4)  # SW1, in, active low
SOS_BUTTON_ACTIVE_LOW = True
SOS_BUTTON_PULL_UP = True
PIN_STATUS_LED = const(6)  # D2, out, active high
STATUS_LED_ACTIVE_LOW = False
PIN_VBUS_SENSE = const(13)  # R7, in, active high
VBUS_SENSE_ACTIVE_LOW = False
VBUS_SENSE_PULL_UP = False
