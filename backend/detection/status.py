"""Device status and the officer status shown to supervisors.

From every verified frame: last seen and the gateway that carried it; from status frames:
battery, firmware, charging, worn and skin contact, the device's count of dropped samples.
"Device offline during shift" (no frame for ``offline_s``) and "device removed" (status bits
without worn or skin contact, or an off-body PPG) are fleet conditions: they make the
officer's status "check", never a distress alert.

The officer status (:class:`OfficerStatus`) is the one schema of what a supervisor's board shows
for an officer: ok / check / alert, the device's condition, its last gateway and the open
incident. ``GET /api/v1/live/officers`` answers it and the live hub carries it as the
``officer_status`` event, both built here; it never carries heart rate or other biometrics. It
is published only when it changes. Time (wall seconds) is passed in.

The board is also the one owner of each device's last gateway (where "help is coming" goes):
it sees every verified frame; before any frame arrived after a restart, the database answers.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from firmware import frame as F

if TYPE_CHECKING:
    from backend.ingest.registry import DeviceRecord

# an alert keeps the officer's status at "alert" this long (the incident view has the rest)
ALERT_STATUS_S = 300.0


@dataclass
class DeviceStatus:
    device_id: int
    agency_id: str
    officer_id: int | None = None
    officer_name: str | None = None
    unit: str | None = None
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
    published: OfficerStatus | None = None
    dirty: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def removed(self) -> bool:
        return self.worn is False or self.skin_contact is False or self.model_worn is False


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An officer's open incident as the board shows it."""
    id: str
    kind: str
    priority: int
    state: str
    escalated: bool


@dataclass(frozen=True, slots=True)
class OfficerStatus:
    """One officer on the board. Equal statuses are not published again: the time last seen
    and the gateway change with every frame, so they do not count."""
    officer_id: int
    officer_name: str | None
    unit: str | None
    device_id: int
    state: str                    # ok / check / alert
    reasons: tuple[str, ...]      # why "check": device_offline, device_removed, battery_low, ...
    device: str                   # connected / offline
    worn: bool | None
    battery_pct: int | None
    charging: bool | None
    firmware: str | None
    incident: OpenIncident | None
    gateway: str | None = field(default=None, compare=False)
    last_seen: float | None = field(default=None, compare=False)  # wall seconds

    def to_json(self) -> dict:
        """The event and the API row: times as ISO 8601 UTC."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["reasons"] = list(self.reasons)
        out["incident"] = None if self.incident is None else dataclasses.asdict(self.incident)
        out["last_seen"] = None if self.last_seen is None else (
            dt.datetime.fromtimestamp(self.last_seen, dt.timezone.utc).isoformat())
        return out


class StatusBoard:
    def __init__(self, offline_s: float, battery_low_pct: int, engine: AsyncEngine | None = None):
        self.offline_s = offline_s
        self.battery_low_pct = battery_low_pct
        self.devices: dict[int, DeviceStatus] = {}
        self.incidents: dict[int, OpenIncident] = {}  # officer id -> open incident
        self._engine = engine  # the fallback before a device's first frame after a restart

    def get(self, device_id: int, agency_id: str) -> DeviceStatus:
        st = self.devices.get(device_id)
        if st is None:
            st = self.devices[device_id] = DeviceStatus(device_id, agency_id)
        return st

    def seen(self, device_id: int, agency_id: str, officer_id: int | None, officer_name: str | None,
             gateway: str, now: float, backfill: bool, unit: str | None = None) -> DeviceStatus:
        st = self.get(device_id, agency_id)
        st.officer_id, st.officer_name, st.unit = officer_id, officer_name, unit
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

    def officer_status(self, st: DeviceStatus, now: float) -> OfficerStatus:
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
        return OfficerStatus(
            officer_id=st.officer_id, officer_name=st.officer_name, unit=st.unit, device_id=st.device_id,
            state=state, reasons=tuple(reasons), device="connected" if connected else "offline",
            worn=None if st.worn is None and st.model_worn is None else not st.removed,
            battery_pct=st.battery_pct, charging=st.charging, firmware=st.firmware,
            incident=self.incidents.get(st.officer_id), gateway=st.gateway, last_seen=st.last_seen,
        )

    def _publishable(self, st: DeviceStatus, now: float) -> OfficerStatus | None:
        status = self.officer_status(st, now)
        if status == st.published:
            return None
        st.published = status
        st.dirty = True
        return status

    def changes(self, now: float) -> list[tuple[DeviceStatus, dict]]:
        """Officer statuses that differ from what was last published, as their live events
        (marks them published)."""
        out = []
        for st in self.devices.values():
            if st.officer_id is None:
                continue
            status = self._publishable(st, now)
            if status is not None:
                out.append((st, status.to_json()))
        return out

    def incident_changed(self, device_id: int, agency_id: str, officer_id: int, officer_name: str | None,
                         incident: OpenIncident | None, now: float) -> OfficerStatus | None:
        """The officer's incident opened, changed or closed (None): their status to publish,
        or None when the board shows nothing new."""
        if incident is None:
            self.incidents.pop(officer_id, None)
        else:
            self.incidents[officer_id] = incident
        st = self.get(device_id, agency_id)
        if st.officer_id is None:
            st.officer_id, st.officer_name = officer_id, officer_name
        return self._publishable(st, now)

    async def on_duty(self, devices: Iterable[DeviceRecord], now: float) -> list[OfficerStatus]:
        """The status of the officer wearing each registry device: who wears it comes from the
        registry; a device without a frame since the backend started is described as stored
        (the registry alone answers while the database is away)."""
        devices = list(devices)
        stored = await self._stored([d.device_id for d in devices if d.device_id not in self.devices])
        out = []
        for d in devices:
            known = self.devices.get(d.device_id) or stored.get(d.device_id)
            st = DeviceStatus(d.device_id, d.agency_id) if known is None else dataclasses.replace(known)
            st.officer_id, st.officer_name, st.unit = d.officer_id, d.officer_name, d.officer_unit
            out.append(self.officer_status(st, now))
        return out

    async def _stored(self, device_ids: list[int]) -> dict[int, DeviceStatus]:
        if not device_ids or self._engine is None:
            return {}
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(t.devices.c.id, t.devices.c.agency_id, t.devices.c.last_seen, t.devices.c.battery_pct,
                              t.devices.c.firmware).where(t.devices.c.id.in_(device_ids)))
                return {r.id: DeviceStatus(r.id, r.agency_id, battery_pct=r.battery_pct, firmware=r.firmware,
                                           last_seen=r.last_seen.timestamp() if r.last_seen else None) for r in rows}
        except (sa.exc.SQLAlchemyError, OSError):
            return {}

    # ---- the last gateway: where a command to the device goes --------------------------------

    def last_gateway(self, device_id: int) -> str | None:
        """The gateway that carried the device's latest frame since the backend started."""
        st = self.devices.get(device_id)
        return st.gateway if st is not None else None

    async def gateway_for(self, device_id: int) -> str | None:
        """The last gateway; before the device's first frame after a restart, a gateway the
        database says serves it. Raises the database's error when it is away."""
        gateway = self.last_gateway(device_id)
        if gateway is not None or self._engine is None:
            return gateway
        async with self._engine.connect() as conn:
            return (await conn.execute(
                sa.select(t.gateway_devices.c.gateway_id).where(t.gateway_devices.c.device_id == device_id)
                .order_by(t.gateway_devices.c.gateway_id).limit(1)
            )).scalar()
