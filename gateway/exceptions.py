"""The gateway package's exception tree. Lower-layer errors (bleak, sqlite3, httpx)
are mapped to these at the boundary and chained with ``raise ... from exc``; each message says
what to do about it."""
from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The gateway's configuration is incomplete or contradictory."""


class ProvisioningError(GatewayError):
    """The provisioned device list could not be fetched from the backend; the last good list
    stays in use."""


class LinkError(GatewayError):
    """A BLE link to a wearable could not be opened or was lost. ``device_id`` says which one,
    ``advice`` what usually helps."""

    def __init__(self, device_id: int, message: str, advice: str = ""):
        super().__init__(f"VG-{device_id:08X}: {message}" + (f" ({advice})" if advice else ""))
        self.device_id = device_id
        self.advice = advice


class DownlinkError(GatewayError):
    """A command could not be written to a wearable's control characteristic."""

    def __init__(self, device_id: int, reason: str):
        super().__init__(f"VG-{device_id:08X}: downlink failed: {reason}")
        self.device_id = device_id
        self.reason = reason


class QueueError(GatewayError):
    """The durable store-and-forward queue could not be opened or written (disk full, corrupt
    file); frames can no longer be kept across an outage."""


class VirtualBlueZError(GatewayError):
    """The virtual BlueZ of the simulator could not start or was misused."""


class GatewayIdInUse(GatewayError):
    """Another gateway (or simulator) is online with this agency/gateway id: both would share one
    MQTT client id and knock each other off the broker, so this one does not start."""

    def __init__(self, agency: str, gateway_id: str, other: dict):
        since = other.get("since")
        super().__init__(
            f"gateway id {gateway_id!r} of agency {agency!r} is already online"
            + (f" (instance {other.get('instance', '?')} on {other.get('host', '?')}, since {since})" if since else "")
            + ": two gateways with one id would knock each other off the broker. Stop the other one, or give this "
              "one its own id (VIGIL_GATEWAY_GATEWAY_ID / --gateway-id).")
        self.agency = agency
        self.gateway_id = gateway_id
        self.other = other
