"""Who is told of a colleague's SOS or man-down (backend/incidents/nearby.py), decided from the
registry (who is on shift), the status board (which gateway last heard each device, when) and
the gateways' stated positions, with the clock passed in. The whole path, firmware to firmware,
is tests/test_nearby_end_to_end.py."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from types import SimpleNamespace

import pytest

from backend.detection.status import StatusBoard
from backend.incidents import events as ev
from backend.incidents import messages as msg
from backend.incidents.model import Alert
from backend.incidents.nearby import GatewayPositions, NearbyColleagues, distance_m, officer_positions
from backend.ingest.registry import DeviceRecord
from firmware import frame as F

AGENCY = "a1"
NOW = 1_800_000_000.0
KEYS = F.DeviceKeys(bytes(32))


class Registry:
    def __init__(self, records):
        self.devices = {r.device_id: r for r in records}


def _device(device_id, officer_id, name=None, status="active", agency=AGENCY):
    return DeviceRecord(device_id=device_id, agency_id=agency, keys=KEYS, status=status, placement="upper_arm",
                        officer_id=officer_id, officer_name=name or (f"Officer {officer_id}" if officer_id else None),
                        officer_unit="U1")


def _incident(device_id, officer_id, kind="sos", location=None):
    now = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    return Alert(id=uuid.uuid4(), agency_id=AGENCY, device_id=device_id, officer_id=officer_id, officer_name="X",
                 kind=kind, priority=1, state="raised", raised_at=now, device_time=None, seq=1,
                 explanation={"gateway": "gw-a"}, location=location)


class World:
    """Gateways gw-a (origin), gw-b 1.1 km north, gw-c 11 km north; devices heard through them."""

    def __init__(self, radius_m=2000.0, records=None):
        self.registry = Registry(records or [])
        self.status = StatusBoard(offline_s=30.0, battery_low_pct=15)
        self.positions = GatewayPositions()
        self.positions.observe(AGENCY, "gw-a", 40.0, -74.0, NOW, "gateway")
        self.positions.observe(AGENCY, "gw-b", 40.01, -74.0, NOW, "gateway")
        self.positions.observe(AGENCY, "gw-c", 40.10, -74.0, NOW, "gateway")
        self.sent, self.steps = [], []
        self.events = ev.IncidentEvents()
        settings = SimpleNamespace(nearby_radius_m=radius_m, device_offline_s=30.0)
        self.nearby = NearbyColleagues(settings, self.registry, self.status, self.positions, self._send,
                                       lambda *step: self.steps.append(step), self.events, wall_clock=lambda: NOW)

    def _send(self, agency, officer_id, name, device_id, kind, sent_by, alert_id, distance):
        m = msg.OfficerMessage(uuid.uuid4(), agency, officer_id, name, device_id, kind, sent_by,
                               dt.datetime.now(dt.timezone.utc), alert_id, distance)
        self.sent.append(m)
        return m

    def heard(self, device_id, gateway, ago_s=1.0):
        record = self.registry.devices[device_id]
        self.status.seen(device_id, AGENCY, record.officer_id, record.officer_name, gateway, NOW - ago_s, False)


def test_distance_is_the_great_circle_one():
    assert distance_m(40.0, -74.0, 40.0, -74.0) == 0
    assert distance_m(40.0, -74.0, 40.01, -74.0) == pytest.approx(1112, rel=0.01)  # 0.01 deg of latitude
    assert distance_m(0, 0, 0, 180) == pytest.approx(20_015_000, rel=0.001)  # half the equator


def test_officers_within_the_radius_are_told_nearest_first_and_the_step_names_them():
    w = World(records=[_device(1, 11), _device(2, 12), _device(3, 13), _device(4, 14)])
    w.heard(1, "gw-a")
    w.heard(2, "gw-b")
    w.heard(3, "gw-a")
    w.heard(4, "gw-c")  # 11 km away
    incident = _incident(1, 11)
    w.events.emit(ev.RAISED, incident)
    assert [(m.device_id, m.kind, m.sent_by, m.alert_id) for m in w.sent] == [
        (3, msg.COLLEAGUE_KIND, "system", incident.id), (2, msg.COLLEAGUE_KIND, "system", incident.id)]
    assert [round(m.distance_m) for m in w.sent] == [0, 1112]
    assert w.steps == [(incident.id, msg.STEP_COLLEAGUES_TOLD, "system", "Officer 13 (0 m), Officer 12 (1112 m)")]


def test_an_officer_wearing_two_devices_is_told_once_on_the_nearer():
    w = World(records=[_device(1, 11), _device(2, 12), _device(3, 12)])
    w.heard(1, "gw-a")
    w.heard(2, "gw-b")
    w.heard(3, "gw-a")
    w.events.emit(ev.RAISED, _incident(1, 11))
    assert [(m.officer_id, m.device_id) for m in w.sent] == [(12, 3)]


def test_never_the_officer_in_distress_nor_off_shift_unassigned_retired_or_silent_devices():
    w = World(records=[_device(1, 11), _device(5, 11),  # the officer in distress wears a second device
                       _device(2, None),  # unassigned (no shift now)
                       _device(3, 13, status="retired"),
                       _device(4, 14),  # not heard for a minute
                       _device(6, 16, agency="other")])
    for d in (1, 5, 2, 3):
        w.heard(d, "gw-a")
    w.heard(4, "gw-a", ago_s=60.0)
    w.status.seen(6, "other", 16, "Officer 16", "gw-a", NOW, False)
    w.events.emit(ev.RAISED, _incident(1, 11))
    assert w.sent == []
    assert w.steps[0][3] == "no colleague on shift within 2000 m"


def test_only_sos_and_man_down_tell_colleagues_once_per_incident_and_radius_zero_turns_it_off():
    w = World(records=[_device(1, 11), _device(2, 12)])
    w.heard(1, "gw-a")
    w.heard(2, "gw-a")
    for kind in ("fall", "extreme_heart_rate", "physiological_strain"):
        w.events.emit(ev.RAISED, _incident(1, 11, kind))
    w.events.emit(ev.ACKNOWLEDGED, _incident(1, 11, "sos"))
    assert w.sent == []
    for kind in ("sos", "device_alarm", "man_down"):
        w.events.emit(ev.RAISED, _incident(1, 11, kind))
    assert [m.device_id for m in w.sent] == [2, 2, 2]
    # a fall tells no one; once upgraded to a man-down alarm it does, and a later SOS not again
    fall = _incident(1, 11, "fall")
    w.events.emit(ev.RAISED, fall)
    assert len(w.sent) == 3
    fall.kind = "device_alarm"
    w.events.emit(ev.UPGRADED, fall)
    fall.kind = "sos"
    w.events.emit(ev.UPGRADED, fall)
    w.events.emit(ev.RAISED, fall)
    assert [m.alert_id for m in w.sent[3:]] == [fall.id]
    off = World(radius_m=0, records=[_device(1, 11), _device(2, 12)])
    off.heard(1, "gw-a")
    off.heard(2, "gw-a")
    off.events.emit(ev.RAISED, _incident(1, 11))
    assert off.sent == [] and off.steps == []


def test_the_step_says_who_could_not_be_placed():
    w = World(records=[_device(1, 11), _device(2, 12), _device(3, 13)])
    w.heard(1, "gw-a")
    w.heard(2, "gw-a")
    w.heard(3, "gw-unplaced")  # a gateway configured without a position
    w.events.emit(ev.RAISED, _incident(1, 11))
    assert [m.device_id for m in w.sent] == [2]
    assert w.steps[0][3] == "Officer 12 (0 m); 1 colleague(s) on shift not told: their gateway states no position"


def test_the_incidents_own_location_wins_and_an_unknown_one_tells_nobody():
    w = World(records=[_device(1, 11), _device(2, 12)])
    w.heard(2, "gw-c")
    w.events.emit(ev.RAISED, _incident(1, 11, location={"lat": 40.10, "lon": -74.0, "source": "gateway"}))
    assert [(m.device_id, round(m.distance_m)) for m in w.sent] == [(2, 0)]
    w2 = World(records=[_device(1, 11), _device(2, 12)])
    w2.heard(2, "gw-a")  # device 1 never heard and its incident carries no location
    w2.events.emit(ev.RAISED, _incident(1, 11))
    assert w2.sent == [] and "position is unknown" in w2.steps[0][3]


def test_gateway_state_messages_give_positions_and_bad_ones_are_ignored():
    p = GatewayPositions()
    fix = p.state_message(AGENCY, "gw-a", json.dumps({"state": "online", "at": NOW - 5, "lat": 40.5, "lon": -73.9}).encode(), NOW)
    assert (fix.lat, fix.lon, fix.at, fix.source) == (40.5, -73.9, NOW - 5, "gateway")
    for bad in (b"offline", b"[]", json.dumps({"state": "online"}).encode(), json.dumps({"lat": 91, "lon": 0}).encode(),
                json.dumps({"lat": True, "lon": 0}).encode(), json.dumps({"lat": "40", "lon": "-73"}).encode()):
        assert p.state_message(AGENCY, "gw-b", bad, NOW) is None
    assert p.get(AGENCY, "gw-b") is None and p.get("other", "gw-a") is None
    assert [f.gateway_id for f in p.of_agency(AGENCY)] == ["gw-a"]


def test_officer_positions_are_their_last_gateways_with_the_time_heard():
    w = World(records=[_device(1, 11), _device(2, 12), _device(3, None)])
    w.heard(1, "gw-b", ago_s=12.0)
    w.heard(3, "gw-a")  # unassigned: not an officer on the map
    out = [p.public(NOW) for p in officer_positions(w.registry, w.status, w.positions, AGENCY)]
    assert out == [{"officer_id": 11, "officer_name": "Officer 11", "unit": "U1", "device_id": 1, "lat": 40.01,
                    "lon": -74.0, "source": "gateway", "gateway_id": "gw-b",
                    "heard_at": dt.datetime.fromtimestamp(NOW - 12, dt.timezone.utc).isoformat(), "age_s": 12.0}]
