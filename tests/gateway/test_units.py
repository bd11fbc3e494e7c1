"""Pure parts of the gateway and the simulator: backoff, queue policy, settings, provisioning,
signals, scenarios, and the simulated wearable (the firmware's code over fake silicon)."""
from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from firmware import frame
from gateway.config import GatewaySettings
from gateway.backoff import retry_delay
from gateway.exceptions import ConfigError, ProvisioningError
from gateway.link import RETRY_CAP_S, reconnect_delay
from gateway.provisioning import ProvisionedDevices, parse_device_list
from gateway.publisher import BROKER_RETRY_BASE_S, BROKER_RETRY_CAP_S
from gateway.sim import scenarios
from gateway.sim.signals import ACTIVITIES, SensorModel
from gateway.sim.clock import SimClock
from gateway.store import FrameQueue, IncomingFrame


class TestReconnectDelay:
    def test_first_attempt_is_immediate(self):
        assert reconnect_delay(0, None, 0.9) == 0.0

    def test_relink_after_working_link_is_short(self):
        assert reconnect_delay(1, None, 0.999) < 0.06

    def test_grows_and_caps_with_full_jitter(self):
        ceilings = [reconnect_delay(a, RuntimeError(), 0.999999) for a in range(1, 12)]
        assert ceilings == sorted(ceilings) and max(ceilings) <= RETRY_CAP_S
        assert reconnect_delay(5, RuntimeError(), 0.0) == 0.0  # full jitter reaches zero

    def test_timeouts_back_off_from_a_higher_base(self):
        assert reconnect_delay(1, TimeoutError(), 0.5) > reconnect_delay(1, RuntimeError(), 0.5)

    def test_raises_on_bad_jitter(self):
        with pytest.raises(ValueError):
            reconnect_delay(1, None, 1.0)

    def test_broker_backoff_caps(self):
        def broker_delay(attempt, jitter):
            return retry_delay(attempt, BROKER_RETRY_BASE_S, BROKER_RETRY_CAP_S, jitter)

        assert broker_delay(0, 0.5) == 0 and broker_delay(50, 0.999) <= BROKER_RETRY_CAP_S
        assert BROKER_RETRY_CAP_S <= 0.5  # back within half a second of the broker: an SOS waits in the gateway


def _frames(kind, n, device=1, start=0):
    return [IncomingFrame(kind, device, start + i, bytes([i % 256]) * 30, 0.0) for i in range(n)]


class TestFrameQueue:
    def test_events_first_then_arrival_order(self, tmp_path):
        with FrameQueue(tmp_path / "q.sqlite3", 1000) as q:
            q.put_many(_frames("telemetry", 3))
            q.put_many(_frames("event", 2, start=10))
            q.put_many(_frames("status", 1, start=20))
            assert [(f.kind, f.seq) for f in q.peek(10)] == [
                ("event", 10), ("event", 11), ("status", 20), ("telemetry", 0), ("telemetry", 1), ("telemetry", 2)]

    def test_full_queue_drops_oldest_telemetry_never_events(self, tmp_path):
        with FrameQueue(tmp_path / "q.sqlite3", 100) as q:
            q.put_many(_frames("event", 10, start=1000))
            q.put_many(_frames("telemetry", 80))
            q.put_many(_frames("status", 5, start=500))
            dropped = q.put_many(_frames("telemetry", 20, start=80))
            assert dropped == {"telemetry": 15} and q.depth == 100
            left = q.peek(200)
            assert [f.seq for f in left if f.kind == "telemetry"][0] == 15
            assert sum(f.kind == "event" for f in left) == 10
            dropped = q.put_many(_frames("event", 200, start=2000))  # more events than room: keep them all
            assert dropped == {"telemetry": 85, "status": 5} and q.depth == 210
            assert all(f.kind == "event" for f in q.peek(1000))

    def test_survives_reopen_and_ack(self, tmp_path):
        path = tmp_path / "q.sqlite3"
        with FrameQueue(path, 1000) as q:
            q.put_many(_frames("telemetry", 5))
            q.ack([f.id for f in q.peek(2)])
        with FrameQueue(path, 1000) as q:
            assert q.depth == 3 and [f.seq for f in q.peek(10)] == [2, 3, 4]
            q.put_many(_frames("telemetry", 1, start=5))
            assert [f.seq for f in q.peek(10)] == [2, 3, 4, 5]  # ids keep growing across restarts


class TestGatewaySettings:
    def test_from_environment(self, monkeypatch, tmp_path):
        monkeypatch.setenv("VIGIL_GATEWAY_AGENCY", "metro")
        monkeypatch.setenv("VIGIL_GATEWAY_GATEWAY_ID", "car-17")
        monkeypatch.setenv("VIGIL_GATEWAY_DEVICES", "1, 0x10,3")
        monkeypatch.setenv("VIGIL_GATEWAY_LATITUDE", "48.1")
        monkeypatch.setenv("VIGIL_GATEWAY_LONGITUDE", "11.5")
        s = GatewaySettings.load()
        assert s.devices == [1, 16, 3] and s.location == (48.1, 11.5) and s.mqtt_port == 1883

    def test_config_file_and_environment_precedence(self, monkeypatch, tmp_path):
        conf = tmp_path / "gateway.env"
        conf.write_text("VIGIL_GATEWAY_AGENCY=metro\nVIGIL_GATEWAY_GATEWAY_ID=file\nVIGIL_GATEWAY_DEVICES=[5]\n")
        monkeypatch.setenv("VIGIL_GATEWAY_GATEWAY_ID", "env")
        s = GatewaySettings.load(conf)
        assert (s.agency, s.gateway_id, s.devices) == ("metro", "env", [5])

    @pytest.mark.parametrize("bad", [
        {"agency": "a/b"}, {"mqtt_url": "ws://x:8883"}, {"latitude": 1.0},
        {"backend_url": "http://x"}, {"queue_max_frames": 5}])
    def test_rejects(self, bad):
        with pytest.raises(ConfigError):
            GatewaySettings.load(**{"agency": "a", "gateway_id": "g", **bad})


class TestProvisioning:
    def test_parse(self):
        assert parse_device_list({"devices": [{"device_id": 3}, {"device_id": 9}]}) == {3, 9}
        for bad in ({}, {"devices": [{"id": 1}]}, {"devices": [{"device_id": -1}]}, []):
            with pytest.raises(ProvisioningError):
                parse_device_list(bad)

    async def test_fetch_with_bearer_token_and_keep_last_list(self, tmp_path):
        calls = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            if len(calls) > 1:
                return httpx.Response(503)
            return httpx.Response(200, json={"devices": [{"device_id": 7}, {"device_id": 8}]})
        s = GatewaySettings(agency="a", gateway_id="g1", backend_url="http://backend", backend_token="tok",
                            device_refresh_s=0.01)
        changes = []
        with FrameQueue(tmp_path / "q.sqlite3", 1000) as store:
            p = ProvisionedDevices(s, store, changes.append, transport=httpx.MockTransport(handler))
            stop = asyncio.Event()
            task = asyncio.create_task(p.run(stop))
            while len(calls) < 2:
                await asyncio.sleep(0.01)
            stop.set()
            await task
            assert p.ids == {7, 8} and changes[-1] == {7, 8}
            assert calls[0].url == "http://backend/api/v1/gateways/g1/devices"
            assert calls[0].headers["authorization"] == "Bearer tok"
            again = ProvisionedDevices(s, store, changes.append)  # restart without the backend
            assert again.ids == {7, 8}


class TestSensorModel:
    def test_every_activity(self):
        model = SensorModel(np.random.default_rng(0), sampling_rate=50)
        for activity in ACTIVITIES:
            ppg, accel = model.block(20, activity)
            assert ppg.shape == (20,) and accel.shape == (20, 3)
            assert ppg.min() >= 0 and ppg.max() < 2 ** 24

    def test_heart_rate_follows_activity(self):
        model = SensorModel(np.random.default_rng(0), sampling_rate=50)
        for _ in range(300):
            model.block(20, "running")
        running = model.hr
        for _ in range(600):
            model.block(20, "sitting_car")
        assert running > 140 and model.hr < 90

    def test_fall_has_free_fall_and_impact(self):
        model = SensorModel(np.random.default_rng(0), sampling_rate=50)
        accel = np.vstack([model.block(20, "fall")[1] for _ in range(5)])
        g = np.linalg.norm(accel, axis=1)
        assert g.min() < 400 and g.max() > 3000 and g[-20:].std() < 20

    def test_seeded_replay_and_bad_input(self):
        a = SensorModel(np.random.default_rng(4), 50).block(20, "walking")
        b = SensorModel(np.random.default_rng(4), 50).block(20, "walking")
        assert (a[0] == b[0]).all()
        with pytest.raises(ValueError, match="valid"):
            SensorModel(np.random.default_rng(0), 50).block(20, "dancing")
        with pytest.raises(ValueError):
            SensorModel(np.random.default_rng(0), 0)


KEY = bytes(range(32))


class TestScenarios:
    def test_every_scenario_happens_within_a_minute(self):
        assert all(s.duration_s <= 60 for s in scenarios.SCENARIOS.values())
        assert set(scenarios.shift_assignment(8)) == set(scenarios.SCENARIOS)
        with pytest.raises(ValueError, match="valid"):
            scenarios.get("nope")


class TestFirmwareWearable:
    """The simulated wearable that runs firmware/app.py: scenarios move the officer, the
    firmware's own safety logic raises the events (no radio here: they wait in its outbox)."""

    @pytest.mark.parametrize("name,expected,at_s", [
        ("man_down", [frame.EVENT_FALL_SUSPECTED, frame.EVENT_PREALERT_STARTED, frame.EVENT_MANDOWN_ALARM], (13, 33, 43)),
        ("sos", [frame.EVENT_SOS], (12,)),
        ("car_report", [], ()),  # sitting in a car for a long time never pages
    ])
    def test_the_firmware_raises_the_scenario_events_from_the_sensors(self, name, expected, at_s, tmp_path):
        from gateway.sim.device import FirmwareWearable

        w = FirmwareWearable(1, KEY, scenario=name, state_dir=tmp_path)
        w.boot()
        w.loop.advance(60_000)  # a minute on the device's clock, as fast as the CPU goes
        events = [(frame.decode_event(frame.open_frame(e[1], w.keys)[1])[0], frame.parse_header(e[1]).time_ms)
                  for e in sorted(w.firmware.core.outbox.entries, key=lambda e: e[0])]
        assert [code for code, _ in events] == expected
        for (_, t_ms), want_s in zip(events, at_s):  # uptime: the clock was never synced
            assert abs(t_ms / 1000 - want_s) < 1.5
        assert w.firmware.sampler.samples >= 2900  # 50 Hz from the emulated FIFOs
        assert len(w.firmware.core.ring) >= 145 and w.sent == []  # held for a link that never came

    def test_sequence_numbers_survive_a_restart_of_the_simulator(self, tmp_path):
        from gateway.sim.device import FirmwareWearable

        first = FirmwareWearable(1, KEY, scenario="sos", clock=SimClock(speed=100), state_dir=tmp_path)
        first.boot()
        first.advance()
        used = first.firmware.core.raise_event(frame.EVENT_SOS, 1, 0, 0)  # one sealed frame
        again = FirmwareWearable(1, KEY, scenario="sos", clock=SimClock(speed=100), state_dir=tmp_path)
        again.boot()
        assert again.next_seq > used and again.next_seq >= first.firmware.seq.limit  # above the flash reservation
        other = FirmwareWearable(1, bytes(32), scenario="sos", clock=SimClock(speed=100), state_dir=tmp_path)
        other.boot()
        assert other.next_seq < 4096  # a new key starts its own numbering

    def _linked(self, tmp_path, scenario="patrol"):
        from gateway.sim.cost import NullRadio
        from gateway.sim.device import FirmwareWearable

        w = FirmwareWearable(1, KEY, scenario=scenario, state_dir=tmp_path)
        w.attach(NullRadio())
        w.boot()
        w._on_radio_state()  # the central connected and subscribed
        return w

    def _run(self, w, seconds):
        """The device's clock moves on; the radio takes what the firmware notified."""
        for _ in range(int(seconds * 10)):
            w.loop.advance(w.loop.now + 100)
            w.ble.queue.clear()

    def test_an_sos_press_learns_its_seq_from_what_the_device_put_on_air(self, tmp_path):
        w = self._linked(tmp_path)
        self._run(w, 3)
        first = w.press_sos()
        assert first.seq is None  # held 2 s before the firmware raises it
        self._run(w, 1.5)
        assert first.seq is None and not first.raised.is_set()
        self._run(w, 1.5)
        assert first.raised.is_set() and first.notified >= first.pressed
        sos = [e for e in w.firmware.core.outbox.entries
               if frame.decode_event(frame.open_frame(e[1], w.keys)[1])[0] == frame.EVENT_SOS]
        assert [e[0] for e in sos] == [first.seq]  # the seq the firmware sealed it with
        self._run(w, 10)  # resent (no ack): the same seq, no new press answered
        second = w.press_sos()
        self._run(w, 3)
        assert second.seq is not None and second.seq > first.seq and w.sos_presses == [first, second]

    def test_the_wall_clock_goes_wrong_as_a_time_sync_or_a_restart_leaves_it(self, tmp_path):
        w = self._linked(tmp_path)
        self._run(w, 2)
        assert not w.clock_synced and w.wall_clock_ms() == w.loop.now  # counts from boot
        w.set_wall_clock(1_700_000_000_000)
        self._run(w, 1)
        assert w.clock_synced and abs(w.wall_clock_ms() - 1_700_000_001_000) <= 100
        w.set_wall_clock(None)
        assert not w.clock_synced and w.wall_clock_ms() == w.loop.now
