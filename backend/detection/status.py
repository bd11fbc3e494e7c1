"""Device status and the officer status shown to supervisors.

From every verified frame: last seen and the gateway that carried it; from status frames:
battery, firmware, charging, worn and skin contact, the device's count of dropped samples.
"Device offline during shift" (no frame for ``offline_s``) and "device removed" (status bits
without worn or skin contact, or an off-body PPG) are fleet conditions: they make the
officer's status "check", never a distress alert.

The officer status published on the live hub (``officer_status``) says ok / check / alert and
the device's condition; it never carries heart rate or other biometrics. It is published only
when it changes. Time (wall seconds) is passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from firmware import frame as F

# an alert keeps the officer's status at "alert" this long (the incident view has the rest)
ALERT_STATUS_S = 300.0


@dataclass
class DeviceStatus:
    device_id: int
    agency_id: str
    officer_id: int | None = None
    officer_name: str | None = None
    gateway: str | None = None
    last_seen: float | None = None       # wall seconds
    battery_pct: int | None = None
    battery_mv: int | None = None
    charging: bool | None = None
    worn: bool | None = None              # from status bits
    skin_contact: bool | None = None
    firmware: str | None = None
    dropped_samples: int | None = None
    model_worn: bool | None = None        # from the PPG of the latest window
    man_down_phase: str = "idle"
    alert_at: float | None = None
    backfill_frames: int = 0
    published: dict | None = None
    dirty: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def removed(self) -> bool:
        return self.worn is False or self.skin_contact is False or self.model_worn is False


class StatusBoard:
    def __init__(self, offline_s: float, battery_low_pct: int):
        self.offline_s = offline_s
        self.battery_low_pct = battery_low_pct
        self.devices: dict[int, DeviceStatus] = {}

    def get(self, device_id: int, agency_id: str) -> DeviceStatus:
        st = self.devices.get(device_id)
        if st is None:
            st = self.devices[device_id] = DeviceStatus(device_id, agency_id)
        return st

    def seen(self, device_id: int, agency_id: str, officer_id: int | None, officer_name: str | None,
             gateway: str, now: float, backfill: bool) -> DeviceStatus:
        st = self.get(device_id, agency_id)
        st.officer_id, st.officer_name = officer_id, officer_name
        if st.gateway != gateway:
            st.dirty = True
        st.gateway = gateway
        if not backfill or st.last_seen is None:
            st.last_seen = now
        else:
            st.backfill_frames += 1
        return st

    def status_frame(self, st: DeviceStatus, decoded: tuple) -> None:
        pct, mv, fw, bits, dropped = decoded
        st.battery_pct, st.battery_mv = pct, mv
        st.firmware = "%d.%d.%d" % fw
        st.charging = bool(bits & F.STATUS_CHARGING)
        st.worn = bool(bits & F.STATUS_WORN)
        st.skin_contact = bool(bits & F.STATUS_SKIN_CONTACT)
        if st.worn and st.skin_contact:
            st.model_worn = None  # the device says it is worn again; the next window re-judges
        st.dropped_samples = dropped
        st.dirty = True

    def officer_status(self, st: DeviceStatus, now: float) -> dict:
        connected = st.last_seen is not None and now - st.last_seen < self.offline_s
        reasons = []
        if not connected:
            reasons.append("device_offline")
        if st.removed:
            reasons.append("device_removed")
        if st.battery_pct is not None and st.battery_pct <= self.battery_low_pct and not st.charging:
            reasons.append("battery_low")
        if st.man_down_phase == "pre_alert":
            reasons.append("man_down_pre_alert")
        alerting = st.alert_at is not None and now - st.alert_at < ALERT_STATUS_S
        state = "alert" if alerting else "check" if reasons else "ok"
        return {
            "officer_id": st.officer_id, "officer_name": st.officer_name, "device_id": st.device_id,
            "state": state, "reasons": reasons,
            "device": "connected" if connected else "offline",
            "worn": None if st.worn is None and st.model_worn is None else not st.removed,
            "battery_pct": st.battery_pct, "charging": st.charging, "firmware": st.firmware,
        }

    def changes(self, now: float) -> list[tuple[DeviceStatus, dict]]:
        """Officer statuses that differ from what was last published (marks them published)."""
        out = []
        for st in self.devices.values():
            if st.officer_id is None:
                continue
            status = self.officer_status(st, now)
            if status != st.published:
                st.published = status
                st.dirty = True
                out.append((st, {**status, "last_seen": st.last_seen}))
        return out
