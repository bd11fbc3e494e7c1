"""When the backend sends EVENT_ACK and TIME_SYNC (backend/incidents/downlink.py), decided from
frame headers with the clocks passed in. The commands reaching the firmware and what they do
there are tested end to end in tests/test_end_to_end.py."""
from __future__ import annotations

from types import SimpleNamespace

from backend.incidents import downlink as D
from firmware import frame as F

AGENCY, DEVICE, GW = "a1", 0x00C0FFEE, "gw1"
NOW_S = 1_800_000_000.0


class _Status:
    def last_gateway(self, device_id):
        return GW


class _Events:
    def subscribe(self, fn):
        pass


def _service(clock):
    return D.DownlinkService(SimpleNamespace(), None, None, _Status(), _Events(), None,
                             wall_clock=lambda: clock[0], monotonic=lambda: clock[0])


def _header(kind=F.TYPE_STATUS, time_ms=int(NOW_S * 1000), flags=F.FLAG_ENCRYPTED):
    return F.parse_header(F.seal(F.DeviceKeys(bytes(32)), kind, DEVICE, 7, time_ms, b"\x00" * 4, flags))


def _queued(svc):
    return [(c.code, c.word, c.gateway, c.alert_id) for c in svc._queue]


def test_unsynced_clock_is_synced_once_per_interval():
    clock = [NOW_S]
    svc = _service(clock)
    unsynced = _header(time_ms=1234, flags=F.FLAG_ENCRYPTED | F.FLAG_CLOCK_UNSYNCED)
    assert svc.observe_clock(AGENCY, DEVICE, GW, unsynced)
    assert not svc.observe_clock(AGENCY, DEVICE, GW, unsynced)  # rate-limited per device
    assert _queued(svc) == [(F.COMMAND_TIME_SYNC, 0, GW, None)]
    clock[0] += D.TIME_SYNC_INTERVAL_S + 1
    assert svc.observe_clock(AGENCY, DEVICE, GW, unsynced)  # still unsynced: asked again later
    assert svc.observe_clock(AGENCY, DEVICE + 1, GW, unsynced)  # another device has its own limit


def test_drift_beyond_a_second_is_synced_and_old_frames_say_nothing():
    clock = [NOW_S]
    svc = _service(clock)
    now_ms = int(NOW_S * 1000)
    assert not svc.observe_clock(AGENCY, DEVICE, GW, _header(time_ms=now_ms - 900))
    assert not svc.observe_clock(AGENCY, DEVICE, GW, _header(time_ms=now_ms + 900))
    # sealed when they happened, not when sent: an event resent late, a backfilled block
    assert not svc.observe_clock(AGENCY, DEVICE, GW, _header(F.TYPE_EVENT, now_ms - 60_000))
    assert not svc.observe_clock(AGENCY, DEVICE, GW, _header(F.TYPE_TELEMETRY, now_ms - 60_000,
                                                             F.FLAG_ENCRYPTED | F.FLAG_BACKFILL))
    # a live telemetry block says nothing either: it waits in the broker while ingest is behind
    assert not svc.observe_clock(AGENCY, DEVICE, GW, _header(F.TYPE_TELEMETRY, now_ms - 3000))
    assert svc.observe_clock(AGENCY, DEVICE, GW, _header(time_ms=now_ms + 1500))  # a status: clock ahead
    assert svc.observe_clock(AGENCY, DEVICE + 1, GW, _header(time_ms=now_ms - 1500))  # behind
    assert [c[0] for c in _queued(svc)] == [F.COMMAND_TIME_SYNC] * 2


def test_event_ack_carries_the_low_16_bits_of_the_event_seq():
    svc = _service([NOW_S])
    svc.ack_event(AGENCY, DEVICE, 0x12345, "gw9")
    svc.ack_event(AGENCY, DEVICE, 7)
    assert _queued(svc) == [(F.COMMAND_EVENT_ACK, 0x2345, "gw9", None), (F.COMMAND_EVENT_ACK, 7, GW, None)]
