"""Where officers are, and who is near a colleague in distress.

Positions come from gateways: a gateway states its configured position in its retained state
message (``vigil/{agency}/gw/{gateway}/state``, gateway/publisher.py) and an event frame it
forwards carries it too (MQTT user properties ``lat``/``lon``). An officer's last known position
is the position of the gateway that last carried their device's frames, as old as that frame:
it says "near this gateway", not a GPS fix, and the map says so.

When a colleague's SOS or man-down alarm raises an incident (IncidentEvents RAISED), every other
officer on shift whose device was heard within ``device_offline_s`` through a gateway within
``nearby_radius_m`` of the colleague gets "colleague needs help" on their wearable (a message,
backend/incidents/messages.py, through the downlink); the incident records who was told, and
later who confirmed. Never the officer in distress, never an unassigned or retired device."""
from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from backend.app.config import BackendSettings
from backend.detection.status import StatusBoard
from backend.incidents import events as ev
from backend.incidents import messages as msg
from backend.incidents.model import Alert
from backend.ingest.registry import DeviceRegistry

log = logging.getLogger("vigil.nearby")

# The alerts that tell colleagues: the officer's own SOS, a man-down (device alarm or detected).
NEARBY_KINDS = ("sos", "device_alarm", "man_down")
# Incidents remembered as told (an upgrade, e.g. a man-down alarm then an SOS, tells no one twice).
TOLD_REMEMBERED = 10_000
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine); metres, good to ~0.5 % at these ranges."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class GatewayFix:
    gateway_id: str
    lat: float
    lon: float
    at: float     # wall seconds: when the gateway stated it
    source: str   # "gateway" (its configured position, from its state or a forwarded event)


def _valid(lat, lon) -> bool:
    return (isinstance(lat, (int, float)) and isinstance(lon, (int, float)) and not isinstance(lat, bool)
            and -90 <= lat <= 90 and -180 <= lon <= 180)


class GatewayPositions:
    """The last position each gateway stated, per agency."""

    def __init__(self) -> None:
        self._fixes: dict[tuple[str, str], GatewayFix] = {}

    def state_message(self, agency_id: str, gateway_id: str, payload: bytes, now: float) -> GatewayFix | None:
        """A gateway's retained state (JSON). Returns the fix it states, or None (none, or malformed)."""
        try:
            state = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(state, dict) or not _valid(state.get("lat"), state.get("lon")):
            return None
        at = state.get("at")
        at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else now
        return self.observe(agency_id, gateway_id, float(state["lat"]), float(state["lon"]), at, "gateway")

    def location(self, agency_id: str, gateway_id: str, location: dict | None, now: float) -> GatewayFix | None:
        """The location an event frame carried (ingest's ``location``: lat, lon, source)."""
        if not location or not _valid(location.get("lat"), location.get("lon")):
            return None
        return self.observe(agency_id, gateway_id, float(location["lat"]), float(location["lon"]), now,
                            str(location.get("source", "gateway")))

    def observe(self, agency_id: str, gateway_id: str, lat: float, lon: float, at: float, source: str) -> GatewayFix:
        fix = GatewayFix(gateway_id, lat, lon, at, source)
        self._fixes[(agency_id, gateway_id)] = fix
        return fix

    def get(self, agency_id: str, gateway_id: str | None) -> GatewayFix | None:
        return None if gateway_id is None else self._fixes.get((agency_id, gateway_id))

    def of_agency(self, agency_id: str) -> list[GatewayFix]:
        return [f for (a, _), f in self._fixes.items() if a == agency_id]


@dataclass(frozen=True, slots=True)
class OfficerPosition:
    officer_id: int
    officer_name: str | None
    unit: str | None
    device_id: int
    gateway: GatewayFix
    heard_at: float  # wall seconds: the device's latest frame through that gateway

    def public(self, now: float) -> dict:
        return {
            "officer_id": self.officer_id, "officer_name": self.officer_name, "unit": self.unit,
            "device_id": self.device_id, "lat": self.gateway.lat, "lon": self.gateway.lon,
            "source": self.gateway.source, "gateway_id": self.gateway.gateway_id,
            "heard_at": dt.datetime.fromtimestamp(self.heard_at, dt.timezone.utc).isoformat(),
            "age_s": round(max(0.0, now - self.heard_at), 1),
        }


def officer_positions(registry: DeviceRegistry, status: StatusBoard, positions: GatewayPositions,
                      agency_id: str) -> list[OfficerPosition]:
    """Officers on shift (an active device assigned now) whose device some gateway with a known
    position carried since the backend started, each at that gateway."""
    out = []
    for d in registry.devices.values():
        if d.agency_id != agency_id or d.officer_id is None or d.status != "active":
            continue
        st = status.devices.get(d.device_id)
        if st is None or st.last_seen is None:
            continue
        fix = positions.get(agency_id, st.gateway)
        if fix is None:
            continue
        out.append(OfficerPosition(d.officer_id, d.officer_name, d.officer_unit, d.device_id, fix, st.last_seen))
    return sorted(out, key=lambda p: p.officer_id)


# send(agency, officer id, officer name, device id, kind, sent by, alert id, distance m)
SendMessage = Callable[..., msg.OfficerMessage]
# note(alert id, step, actor, note): a step for the incident's timeline, recorded in the background
NoteStep = Callable[[uuid.UUID, str, str, str], None]


class NearbyColleagues:
    """Tells officers near a colleague's SOS or man-down on their own wearables."""

    def __init__(self, settings: BackendSettings, registry: DeviceRegistry, status: StatusBoard,
                 positions: GatewayPositions, send: SendMessage, note_step: NoteStep,
                 events: ev.IncidentEvents, *, wall_clock=time.time):
        self._settings = settings
        self._registry = registry
        self._status = status
        self._positions = positions
        self._send = send
        self._note_step = note_step
        self._wall_clock = wall_clock
        self._told: collections.OrderedDict[uuid.UUID, bool] = collections.OrderedDict()  # incidents whose colleagues were told
        events.subscribe(self._on_incident)

    @property
    def radius_m(self) -> float:
        return self._settings.nearby_radius_m

    def _on_incident(self, event: ev.IncidentEvent) -> None:
        # raised as an SOS or man-down, or a fall upgraded to one; once per incident
        if event.change in (ev.RAISED, ev.UPGRADED) and event.incident.kind in NEARBY_KINDS:
            if event.incident.id in self._told:
                return
            self._told[event.incident.id] = True
            while len(self._told) > TOLD_REMEMBERED:
                self._told.popitem(last=False)
            self.notify(event.incident)

    def origin(self, incident: Alert) -> GatewayFix | None:
        """Where the colleague is: the incident's location, else their gateway's position."""
        loc = incident.location
        if loc and _valid(loc.get("lat"), loc.get("lon")):
            gateway = incident.explanation.get("gateway") or "?"
            return GatewayFix(str(gateway), float(loc["lat"]), float(loc["lon"]), self._wall_clock(),
                              str(loc.get("source", "gateway")))
        return self._positions.get(incident.agency_id, self._status.last_gateway(incident.device_id))

    def nearby(self, incident: Alert) -> list[tuple[OfficerPosition, float]]:
        """(position, distance m) of each officer to tell, nearest first."""
        origin = self.origin(incident)
        if origin is None or self.radius_m <= 0:
            return []
        now = self._wall_clock()
        out = []
        for p in officer_positions(self._registry, self._status, self._positions, incident.agency_id):
            if p.device_id == incident.device_id or (incident.officer_id is not None and p.officer_id == incident.officer_id):
                continue  # never the officer in distress
            if now - p.heard_at > self._settings.device_offline_s:
                continue  # not heard lately: neither the position nor the link is current
            d = distance_m(origin.lat, origin.lon, p.gateway.lat, p.gateway.lon)
            if d <= self.radius_m:
                out.append((p, d))
        out.sort(key=lambda x: x[1])
        nearest: dict[int, tuple[OfficerPosition, float]] = {}  # an officer wearing two devices: the nearer one
        for p, d in out:
            nearest.setdefault(p.officer_id, (p, d))
        return list(nearest.values())

    def _unplaced(self, incident: Alert) -> int:
        """Other officers on shift heard lately through a gateway whose position is unknown."""
        now = self._wall_clock()
        officers = set()
        for d in self._registry.devices.values():
            if (d.agency_id != incident.agency_id or d.officer_id is None or d.status != "active"
                    or d.device_id == incident.device_id or d.officer_id == incident.officer_id):
                continue
            st = self._status.devices.get(d.device_id)
            if (st is not None and st.last_seen is not None and now - st.last_seen <= self._settings.device_offline_s
                    and self._positions.get(incident.agency_id, st.gateway) is None):
                officers.add(d.officer_id)
        return len(officers)

    def notify(self, incident: Alert) -> list[msg.OfficerMessage]:
        if self.radius_m <= 0:
            return []
        origin = self.origin(incident)
        sent = [self._send(incident.agency_id, p.officer_id, p.officer_name, p.device_id, msg.COLLEAGUE_KIND,
                           "system", incident.id, d) for p, d in self.nearby(incident)]
        if origin is None:
            note = "no colleague told: the officer's position is unknown"
        elif not sent:
            note = f"no colleague on shift within {self.radius_m:g} m"
        else:
            note = ", ".join(f"{m.officer_name or m.officer_id} ({m.distance_m:.0f} m)" for m in sent)
        unplaced = self._unplaced(incident)
        if unplaced:
            note += f"; {unplaced} colleague(s) on shift not told: their gateway states no position"
        log.info("incident %s (%s): colleagues told: %s", incident.id, incident.kind, note)
        self._note_step(incident.id, msg.STEP_COLLEAGUES_TOLD, "system", note)
        return sent
