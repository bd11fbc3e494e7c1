"""The whole wearable on a host: the app's steps over emulated chips (register level), a fake
radio with a scripted central, a real config file. Simulated time, nothing sleeps."""
import pytest

from firmware.tools import fakes

fakes.install()

from firmware import app, config, core  # noqa: E402
from firmware import frame as F  # noqa: E402
from firmware import profile  # noqa: E402
from firmware import safety as S  # noqa: E402
from firmware.ble import (  # noqa: E402
    ADV_FAST_US, ADV_SLOW_US, FAST_ADV_MS, MAX_CONNECTIONS, advertising_payload, hr_measurement, uuid_le_bytes)
from firmware.tools.emulators import wearable_bus  # noqa: E402
from firmware.tools.fakes import FakeBLE, FakePin, FakePWM  # noqa: E402
from firmware.tools.waveforms import MotionScript, PpgWaveform  # noqa: E402

DEVICE = 0x00C0FFEE
KEY = bytes(range(100, 132))
KEYS = F.DeviceKeys(KEY)
GATEWAY = 1


class Rig:
    """A provisioned wearable and its surroundings, stepped in 20 ms ticks."""

    def __init__(self, tmp_path, segments, store=None):
        self.store = store or config.ConfigStore(str(tmp_path / "vigil.json"))
        if store is None:
            self.store.save(config.new_record(DEVICE, KEY.hex()))
        self.motion = MotionScript(segments)
        self.ppg_wave = PpgWaveform(hr_bpm=84)
        self.bus = wearable_bus(self.motion, self.ppg_wave)
        self.ble = FakeBLE()
        self.button = FakePin(value=1)
        self.motor = FakePWM()
        self.led = FakePin()
        self.t = 0
        self.w = app.Wearable(self.bus, self.ble, self.store, self.button, self.motor, self.led)
        self.h_tele = self.ble.handle_of(profile.TELEMETRY_CHAR_UUID)
        self.h_event = self.ble.handle_of(profile.EVENT_CHAR_UUID)
        self.h_control = self.ble.handle_of(profile.CONTROL_CHAR_UUID)
        self.cmd_seq = 100

    def run(self, ms, pressed=False):
        end = self.t + ms
        while self.t < end:
            self.bus.now = self.t / 1000
            self.button.value(0 if pressed else 1)
            if self.t % 200 == 0:
                self.w.sample_step(self.t)
            self.w.safety_step(self.t)
            self.w.radio_step(self.t)
            self.t += 20
        return self

    def connect(self, conn=GATEWAY, mtu=247):
        self.ble.central_connect(conn)
        if mtu:
            self.ble.exchange_mtu(conn, mtu)

    def command(self, code, arg=0, word=0, conn=GATEWAY, time_ms=0):
        self.cmd_seq += 1
        frame = F.seal(KEYS, F.TYPE_COMMAND, DEVICE, self.cmd_seq, time_ms, F.encode_command(code, arg, word))
        self.ble.central_write(conn, self.h_control, frame)

    def frames(self, conn=GATEWAY):
        out = []
        for c, h, data in self.ble.notifications:
            if c == conn and h in (self.h_tele, self.h_event):
                header, payload = F.open_frame(data, KEYS)
                out.append((h, header, payload))
        return out


def test_streams_verified_telemetry_at_50hz_once_connected(tmp_path):
    r = Rig(tmp_path, [("walk", 60)])
    r.run(1000)
    assert r.ble.advertising and r.ble.advertising[-1][0] == ADV_FAST_US
    r.connect()
    r.run(20000)
    frames = r.frames()
    tele = [(h, p) for _, h, p in frames if h.frame_type == F.TYPE_TELEMETRY]
    status = [p for _, h, p in frames if h.frame_type == F.TYPE_STATUS]
    assert status and F.decode_status(status[0])[2] == core.FIRMWARE_VERSION
    assert 48 <= len(tele) <= 52  # 20 s at 2.5 frames/s
    samples = sum(F.decode_telemetry(p)[0] and len(F.decode_telemetry(p)[2]) for _, p in tele)
    assert abs(samples - 1000) <= 30
    rate, led, ppg, accel = F.decode_telemetry(tele[10][1])
    assert rate == 50 and led == 32  # 6.4 mA in 0.2 mA steps
    assert all(60000 < v < 200000 for v in ppg)
    assert max(abs(a[1] - 1000) for a in accel) > 150  # walking moves the arm
    seqs = [h.seq for _, h, _ in frames]
    assert len(seqs) == len(set(seqs))
    times = [h.time_ms for h, _ in tele]
    assert all(380 <= b - a <= 420 for a, b in zip(times[1:], times[2:]))
    assert r.w.sampler.slips <= 2


def test_no_frames_until_the_mtu_carries_a_whole_frame(tmp_path):
    r = Rig(tmp_path, [("walk", 60)])
    r.connect(mtu=0)  # default ATT MTU of 23: 20-byte notifications
    r.run(3000)
    assert r.frames() == []
    r.ble.exchange_mtu(GATEWAY, 247)
    r.run(1000)
    assert r.frames()


def test_man_down_while_out_of_range_is_delivered_first_after_reconnect(tmp_path):
    r = Rig(tmp_path, [("walk", 10), ("fall", 1.5), ("lie", 120)])
    r.connect()
    r.run(5000)
    r.ble.central_disconnect(GATEWAY)  # the officer runs out of range of the car
    before = len(r.ble.notifications)
    r.run(50000)  # the fall, 20 s still -> pre-alert, 30 s -> alarm; all with no link
    assert len(r.ble.notifications) == before
    assert r.motor.history and max(r.motor.history) > 0  # the officer felt the pre-alert
    assert r.ble.advertising[-1][0] in (ADV_FAST_US, ADV_SLOW_US)
    r.connect()
    r.run(2000)
    old = r.frames()[:len([1 for c, h, d in r.ble.notifications[:before] if h in (r.h_tele, r.h_event)])]
    new = r.frames()[len(old):]
    # the telemetry the radio took just before the link went comes again, unchanged (core.RESEND_RECENT_MS)
    sent_before = {h.seq for _, h, _ in old}
    resent = [h for _, h, _ in new if h.seq in sent_before]
    assert resent and all(h.frame_type == F.TYPE_TELEMETRY for h in resent)
    new = [f for f in new if f[1].seq not in sent_before]
    kinds = [h.frame_type for _, h, _ in new]
    n_events = kinds.index(F.TYPE_STATUS) if kinds[0] == F.TYPE_EVENT else 0
    events = [F.decode_event(p)[0] for _, h, p in new[:n_events]]
    assert sorted(events) == sorted([F.EVENT_FALL_SUSPECTED, F.EVENT_PREALERT_STARTED, F.EVENT_MANDOWN_ALARM])
    assert new[0][1].frame_type == F.TYPE_EVENT  # events ahead of everything
    assert F.decode_event(new[0][2])[0] == F.EVENT_MANDOWN_ALARM  # the most urgent first
    backfill = [h for _, h, _ in new if h.frame_type == F.TYPE_TELEMETRY]
    assert backfill and all(h.flags & F.FLAG_BACKFILL for h in backfill[:5])
    assert [h.time_ms for h in backfill] == sorted(h.time_ms for h in backfill)  # oldest first


def test_telemetry_taken_by_the_radio_just_before_a_link_went_is_sent_again_unchanged(tmp_path):
    """The radio taking a notification is no proof the gateway stored it: the frames of the last
    RESEND_RECENT_MS before the link went go out again on the next link, same bytes and seq,
    before the ring's backlog; older ones do not."""
    from firmware import core
    r = Rig(tmp_path, [("walk", 60)])
    r.connect()
    r.run(6000)
    before = list(r.ble.notifications)
    tele = [(h, d) for c, h, d in before if h == r.h_tele and F.open_frame(d, KEYS)[0].frame_type == F.TYPE_TELEMETRY]
    last_ms = F.open_frame(tele[-1][1], KEYS)[0].time_ms
    r.ble.central_disconnect(GATEWAY)
    r.run(3000)
    r.connect()
    r.run(2000)
    after = [d for c, h, d in r.ble.notifications[len(before):] if h == r.h_tele]
    old_bytes = {d for _, d in tele}
    again = [d for d in after if d in old_bytes]
    assert again, "nothing sent again after the new link"
    times = [F.open_frame(d, KEYS)[0].time_ms for d in again]
    block_ms = 400
    assert min(times) >= last_ms - core.RESEND_RECENT_MS - block_ms  # only the recent ones
    assert len(again) >= core.RESEND_RECENT_MS // block_ms - 1
    assert after[:len(again)] == again  # ahead of the ring's backlog
    assert len(set(again)) == len(again)  # each once


def test_events_repeat_until_acknowledged(tmp_path):
    r = Rig(tmp_path, [("stand", 60)])
    r.connect()
    r.run(1000)
    r.run(2200, pressed=True)  # SOS
    sos = [h for _, h, p in r.frames() if h.frame_type == F.TYPE_EVENT]
    assert len(sos) == 1
    r.run(8000)
    sends = [h for _, h, p in r.frames() if h.frame_type == F.TYPE_EVENT]
    assert len(sends) >= 3 and {h.seq for h in sends} == {sos[0].seq}
    r.command(F.COMMAND_EVENT_ACK, 0, sos[0].seq & 0xFFFF)
    r.run(100)
    count = len([1 for _, h, _ in r.frames() if h.frame_type == F.TYPE_EVENT])
    r.run(20000)
    assert len([1 for _, h, _ in r.frames() if h.frame_type == F.TYPE_EVENT]) == count


def test_sos_buzzes_in_the_same_tick_even_with_no_link(tmp_path):
    r = Rig(tmp_path, [("stand", 60)])
    r.run(1000)
    r.run(1980, pressed=True)
    assert not any(r.motor.history)
    r.run(100, pressed=True)
    assert r.motor.history[-1] > 0
    assert len(r.w.core.outbox) == 1


def test_help_coming_command_vibrates_and_a_press_confirms(tmp_path):
    r = Rig(tmp_path, [("stand", 60)])
    r.connect()
    r.run(500)
    r.command(F.COMMAND_HELP_COMING, 0)
    r.run(100)
    assert r.motor.history and r.motor.history[-1] > 0
    r.run(2000).run(100, pressed=True).run(500)
    assert any(F.decode_event(p)[0] == F.EVENT_HELP_CONFIRMED for _, h, p in r.frames() if h.frame_type == F.TYPE_EVENT)


def test_forged_and_replayed_commands_do_nothing(tmp_path):
    r = Rig(tmp_path, [("stand", 60)])
    r.connect()
    r.run(500)
    forged = F.seal(F.DeviceKeys(bytes(32)), F.TYPE_COMMAND, DEVICE, 500, 0, F.encode_command(F.COMMAND_HELP_COMING))
    r.ble.central_write(GATEWAY, r.h_control, forged)
    r.ble.central_write(GATEWAY, r.h_control, b"\x01\x02garbage")
    r.run(200)
    assert r.w.rejected_commands == 2 and not any(r.motor.history)
    r.command(F.COMMAND_HELP_COMING)
    replay = r.ble.values[r.h_control]
    r.run(5000)
    r.ble.central_write(GATEWAY, r.h_control, replay)
    r.run(200)
    assert r.w.rejected_commands == 3


def test_set_config_changes_timings_and_survives_reboot(tmp_path):
    r = Rig(tmp_path, [("stand", 60)])
    r.connect()
    r.run(200)
    r.command(F.COMMAND_SET_CONFIG, 1, 10)  # pre-alert after 10 s
    r.command(F.COMMAND_SET_CONFIG, 2, 5)  # alarm at 5 s: before the pre-alert, refused
    r.run(200)
    assert r.w.safety.settings.prealert_ms == 10000
    assert r.w.safety.settings.alarm_ms == 30000
    again = Rig(tmp_path, [("stand", 60)], store=r.store)
    assert again.w.safety.settings.prealert_ms == 10000


def test_sequence_numbers_continue_above_everything_used_after_a_reboot(tmp_path):
    r = Rig(tmp_path, [("walk", 60)])
    r.connect()
    r.run(5000)
    used = {h.seq for _, h, _ in r.frames()}
    r2 = Rig(tmp_path, [("walk", 60)], store=r.store)  # power cut, reboot
    r2.connect()
    r2.run(3000)
    used2 = {h.seq for _, h, _ in r2.frames()}
    assert used2 and min(used2) > max(used)


def test_the_device_key_never_goes_over_the_air(tmp_path):
    r = Rig(tmp_path, [("walk", 10), ("fall", 1), ("lie", 60)])
    r.connect()
    r.ble.encrypt(GATEWAY)
    r.run(45000)
    key_hex = KEY.hex().encode()
    blobs = [d for _, _, d in r.ble.notifications] + list(r.ble.values.values())
    blobs += [a[1] or b"" for a in r.ble.advertising] + [a[2] or b"" for a in r.ble.advertising]
    for blob in blobs:
        assert KEY not in blob and key_hex not in blob
        assert KEYS.mac_key not in blob and KEYS.enc_key not in blob
    # and no characteristic is readable that holds anything but public or sealed data
    readable = [h for h, (_, _, flags) in r.ble.chars.items() if flags & 0x0002]
    for h in readable:
        value = r.ble.values[h]
        if h == r.ble.handle_of(profile.STATUS_CHAR_UUID):
            header, _ = F.open_frame(value, KEYS)  # a sealed status frame
            assert header.flags & F.FLAG_ENCRYPTED


def test_heart_rate_service_only_to_encrypted_links(tmp_path):
    r = Rig(tmp_path, [("stand", 60)])
    r.connect(GATEWAY)
    r.connect(2)  # a phone app
    r.run(12000)
    h_hr = r.ble.handle_of(0x2A37)
    assert r.ble.received(2, h_hr) == []
    r.ble.encrypt(2)
    r.run(4000)
    values = r.ble.received(2, h_hr)
    assert values and values[-1][0] == 0x06  # sensor contact detected
    assert 70 <= values[-1][1] <= 100  # the waveform beats at 84 bpm
    assert r.ble.received(GATEWAY, h_hr) == []


def test_reconnect_advertising_fast_then_slow_and_room_for_the_gateway(tmp_path):
    r = Rig(tmp_path, [("stand", 200)])
    r.connect()
    r.run(1000)
    r.ble.central_disconnect(GATEWAY)
    r.run(1000)
    assert r.ble.advertising[-1][0] == ADV_FAST_US
    r.run(FAST_ADV_MS)
    assert r.ble.advertising[-1][0] == ADV_SLOW_US
    for conn in range(10, 10 + MAX_CONNECTIONS):  # bystanders fill every slot
        r.connect(conn)
        r.run(100)
    assert r.ble.disconnect_requests == [10]  # the oldest unproven link makes room


def test_advertisement_fits_and_names_the_device(tmp_path):
    r = Rig(tmp_path, [("stand", 10)])
    r.run(100)
    _, adv, resp = r.ble.advertising[-1]
    assert len(adv) <= 31 and len(resp) <= 31
    assert uuid_le_bytes(profile.VIGIL_SERVICE_UUID) in adv
    assert profile.device_name(DEVICE).encode() in resp
    assert r.ble.config_values["gap_name"] == "VG-00C0FFEE"
    assert r.ble.config_values["mtu"] == 247
    with pytest.raises(ValueError):
        advertising_payload(name="x" * 20, uuid128=profile.VIGIL_SERVICE_UUID)
    assert hr_measurement(72, False) == b"\x04\x48"


def test_watchdog_is_fed_only_while_tasks_progress(tmp_path):
    r = Rig(tmp_path, [("stand", 30)])
    r.run(3000)
    assert not r.w.stalled(r.t)
    assert r.w.stalled(r.t + 6000)


def test_unprovisioned_device_refuses_to_start(tmp_path):
    store = config.ConfigStore(str(tmp_path / "none.json"))
    with pytest.raises(config.ConfigError):
        app.Wearable(wearable_bus(), FakeBLE(), store, FakePin(), FakePWM(), FakePin())


def test_uptime_clock_survives_ticks_wraparound():
    ticks = [0x3FFFFF00]

    def diff(a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    clock = app.UptimeClock(lambda: ticks[0], diff)
    ticks[0] = (ticks[0] + 0x200) & 0x3FFFFFFF
    assert clock.now() == 0x200


def test_safety_settings_from_config_defaults():
    s = app.safety_settings(config.settings_of({}))
    assert (s.sos_hold_ms, s.prealert_ms, s.alarm_ms) == (2000, 20000, 30000)
    assert isinstance(s, S.SafetySettings)


def test_status_goes_out_at_once_when_taken_off_or_a_battery_warning_is_crossed(tmp_path):
    from firmware import board

    r = Rig(tmp_path, [("stand", 120)])
    r.connect()
    r.run(3000)

    def statuses():
        return [(h.time_ms, F.decode_status(p)) for _, h, p in r.frames() if h.frame_type == F.TYPE_STATUS]
    before = len(statuses())
    assert statuses()[-1][1][3] & F.STATUS_WORN
    r.ppg_wave.on_skin = False  # taken off, well before the 30 s status period
    r.run(1500)
    assert len(statuses()) == before + 1 and not statuses()[-1][1][3] & F.STATUS_WORN
    gauge = r.bus.devices[board.FUEL_GAUGE_ADDR]
    gauge.soc = 19.5  # below the 20 % warning
    r.run(10500)
    assert len(statuses()) == before + 2 and statuses()[-1][1][0] == 19
    r.run(10500)
    assert len(statuses()) == before + 2  # nothing new to say until the period
