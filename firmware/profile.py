# The wearable's BLE profile: one definition for firmware, virtual BlueZ, simulator and gateway.
# MicroPython-compatible.
_SUFFIX = "-7c3a-4d6e-9b1f-7a6e5c0f1a00"
VIGIL_SERVICE_UUID = "5a1e0001" + _SUFFIX
TELEMETRY_CHAR_UUID = "5a1e0002" + _SUFFIX  # notify: telemetry frames (and status frames)
EVENT_CHAR_UUID = "5a1e0003" + _SUFFIX  # notify/indicate: event frames, ahead of telemetry
CONTROL_CHAR_UUID = "5a1e0004" + _SUFFIX  # write: command frames from the backend
STATUS_CHAR_UUID = "5a1e0005" + _SUFFIX  # read/notify: status frames

HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
DEVICE_INFO_SERVICE_UUID = "0000180a-0000-1000-8000-00805f9b34fb"

DEVICE_NAME_PREFIX = "VG-"


def device_name(device_id):
    """Advertised local name of a wearable: VG- and the device id as 8 hex digits."""
    return "VG-%08X" % device_id


def parse_device_name(name):
    """The device id in an advertised name, or None when it is not a Vigil wearable's name."""
    if not name or not name.startswith(DEVICE_NAME_PREFIX) or len(name) != 11:
        return None
    try:
        return int(name[3:], 16)
    except ValueError:
        return None
