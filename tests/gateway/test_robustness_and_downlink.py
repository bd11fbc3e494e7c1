"""Bad input never crashes the gateway; commands reach the wearable and their outcome is reported."""
from __future__ import annotations

import json
import logging

import aiomqtt

from firmware import frame, profile
from gateway import topics
from gateway.sim.fleet import SimulatedFleet

from tests.gateway.conftest import UplinkRecorder, fleet_keys, running_gateway, wait_until

LIVE, QUIET, STRANGER = 0x00F00001, 0x00F00002, 0x00F0BEEF


async def test_malformed_notifications_and_unknown_devices_are_logged_counted_survived(
        mqtt_broker, agency, gateway_settings, caplog):
    caplog.set_level(logging.INFO, logger="vigil")
    keys = fleet_keys([LIVE, QUIET])
    async with UplinkRecorder(*mqtt_broker, agency) as recorder, \
            SimulatedFleet(keys, device="firmware", scenarios="patrol", speed=5, start=False) as fleet, \
            running_gateway(gateway_settings([LIVE, QUIET])) as gateway:
        fleet.start_wearable(LIVE)  # QUIET stays silent: the test speaks through its radio
        fleet.add_stranger(STRANGER)  # advertises the Vigil service, not provisioned here
        fleet.add_stranger(0x0BAD0001, name="NotAVigilName")
        quiet = fleet.radios[QUIET]
        await wait_until(lambda: gateway.links[QUIET].connected and quiet.is_notifying(profile.TELEMETRY_CHAR_UUID),
                         20, what="QUIET connected")
        other_keys = frame.DeviceKeys(keys[LIVE])
        bad = [b"\x00" * 5,  # truncated
               b"\x09" + bytes(40),  # bad version
               frame.seal(other_keys, frame.TYPE_TELEMETRY, LIVE, 7, 1, b"x" * 10),  # another device's frame
               frame.seal(other_keys, frame.TYPE_COMMAND, QUIET, 1, 1, frame.encode_command(2)),  # command uplink
               bytes(300)]  # oversize
        for data in bad:
            assert await quiet.notify(profile.TELEMETRY_CHAR_UUID, data)
        good = frame.seal(frame.DeviceKeys(keys[QUIET]), frame.TYPE_STATUS, QUIET, 0, 1,
                          frame.encode_status(90, 4100, (1, 0, 0)))
        assert await quiet.notify(profile.STATUS_CHAR_UUID, good)
        await wait_until(lambda: recorder.seqs(QUIET, "status") == [0], 10, what="the valid frame after bad ones")
        await wait_until(lambda: gateway.metrics.total("vigil_gateway_unknown_device_adverts_total") >= 4, 10,
                         what="unknown adverts counted")
        live_before = len(recorder.seqs(LIVE))
        await wait_until(lambda: len(recorder.seqs(LIVE)) > live_before + 5, 10, what="LIVE still flowing")
        m = gateway.metrics
        reasons = {r: m.value("vigil_gateway_malformed_notifications_total", device=str(QUIET), reason=r)
                   for r in ("truncated", "bad_version", "foreign_device", "bad_type", "oversize")}
        assert all(v == 1 for v in reasons.values()), reasons
        assert gateway.links[QUIET].malformed == 5 and gateway.links[QUIET].connected

    text = caplog.text
    # one line per change of state, not one per bad notification or per advertisement
    assert text.count("VG-00F00002: malformed notification dropped") == 1
    assert text.count("VG-00F00002: valid frames again after 5 malformed") == 1
    assert text.count("VG-00F0BEEF (") == 1 and text.count("NotAVigilName (") == 1
    assert not recorder.seqs(STRANGER)


def _event_codes(recorder, device_id: int, keys: frame.DeviceKeys) -> list[int]:
    return [frame.decode_event(frame.open_frame(p, keys)[1])[0]
            for d, kind, _, p, _ in recorder.frames if d == device_id and kind == "event"]


def _command(keys: frame.DeviceKeys, device_id: int, seq: int, code: int, arg: int = 0) -> bytes:
    return frame.seal(keys, frame.TYPE_COMMAND, device_id, seq, 1_790_000_000_000, frame.encode_command(code, arg))


async def test_help_is_coming_reaches_the_wearable_and_is_reported(mqtt_broker, agency, gateway_settings):
    device = 0x00F10001
    keys = fleet_keys([device])
    dkeys = frame.DeviceKeys(keys[device])
    async with UplinkRecorder(*mqtt_broker, agency) as recorder, \
            SimulatedFleet(keys, device="firmware", scenarios="sos", speed=2) as fleet, \
            running_gateway(gateway_settings([device])) as gateway, \
            aiomqtt.Client(*mqtt_broker, protocol=aiomqtt.ProtocolVersion.V5) as backend:
        wearable = fleet.wearables[device]
        await wait_until(lambda: gateway.links[device].connected, 20, what="connected")
        down = topics.downlink(agency, "gw1", device)
        await backend.publish(down, _command(dkeys, device, 1, frame.COMMAND_HELP_COMING, arg=2), qos=1)
        await wait_until(wearable.help_coming.is_set, 10, what="help is coming on the device")
        # a forged command (wrong key): written over the air, refused by the firmware itself (the
        # low-level bluetooth module cannot answer a write with an ATT error), so nothing happens
        forged = _command(frame.DeviceKeys(bytes(32)), device, 2, frame.COMMAND_HELP_COMING)
        await backend.publish(down, forged, qos=1)
        # a command for a device this gateway does not serve
        await backend.publish(topics.downlink(agency, "gw1", 0x00F1FFFF), _command(dkeys, 0x00F1FFFF, 1, 2), qos=1)
        result_topic = topics.downlink_result(agency, "gw1", device)

        def results(topic):
            return [json.loads(p) for t, p in recorder.other if t == topic]
        await wait_until(lambda: len(results(result_topic)) >= 2, 10, what="two downlink results")
        await wait_until(lambda: results(topics.downlink_result(agency, "gw1", 0x00F1FFFF)), 10, what="refusal")
        await wait_until(lambda: frame.EVENT_HELP_CONFIRMED in _event_codes(recorder, device, dkeys), 10,
                         what="the officer's help-confirmed event")

    assert wearable.help_coming_count == 1 and wearable.commands[0][1:3] == (frame.COMMAND_HELP_COMING, 2)
    assert wearable.rejected_commands == 1  # the forged one, by the firmware
    by_seq = {r["command_seq"]: r for r in results(result_topic)}
    assert by_seq[1]["ok"] is True and by_seq[2]["ok"] is True  # both written to the device
    unknown = results(topics.downlink_result(agency, "gw1", 0x00F1FFFF))[0]
    assert unknown == {**unknown, "ok": False, "error": "not_provisioned"}
    assert gateway.metrics.value("vigil_gateway_downlink_total", result="ok") == 2


async def test_command_waits_for_a_disconnected_device(mqtt_broker, agency, gateway_settings):
    device = 0x00F20001
    keys = fleet_keys([device])
    async with SimulatedFleet(keys, device="firmware", scenarios="patrol", speed=2) as fleet, \
            running_gateway(gateway_settings([device])) as gateway, \
            aiomqtt.Client(*mqtt_broker, protocol=aiomqtt.ProtocolVersion.V5) as backend:
        wearable, radio = fleet.wearables[device], fleet.radios[device]
        await wait_until(lambda: gateway.links[device].connected, 20, what="connected")
        radio.in_range = False
        await radio.link_loss()
        await wait_until(lambda: not gateway.links[device].connected, 5, what="link down")
        await backend.publish(topics.downlink(agency, "gw1", device),
                              _command(frame.DeviceKeys(keys[device]), device, 1, frame.COMMAND_HELP_COMING), qos=1)
        await wait_until(lambda: gateway.links[device].pending_commands == 1, 5, what="command held by the link")
        assert not wearable.help_coming.is_set()
        radio.in_range = True
        await wait_until(wearable.help_coming.is_set, 15, what="help delivered after reconnect")


async def test_a_second_gateway_with_the_same_id_is_refused_and_the_first_keeps_running(
        mqtt_broker, agency, gateway_settings, tmp_path, caplog):
    import asyncio

    from gateway.bridge import Gateway
    from gateway.exceptions import GatewayIdInUse

    async with running_gateway(gateway_settings([])) as first:
        await wait_until(lambda: first.mqtt is not None and first.mqtt.connected.is_set(), 10, what="the first gateway online")
        second = Gateway(gateway_settings([], queue_path=tmp_path / "second.sqlite3"))
        try:
            await asyncio.wait_for(second.run(asyncio.Event()), 10)
            raise AssertionError("the second gateway started")
        except GatewayIdInUse as exc:
            message = str(exc)
        assert f"gateway id 'gw1' of agency '{agency}' is already online" in message
        assert "knock each other off" in message and "--gateway-id" in message
        await asyncio.sleep(1.0)
        assert first.mqtt.connected.is_set()  # never knocked off
        assert first.metrics.value("vigil_gateway_broker_connected") == 1
    # once the first is gone (a clean stop, or a crash: nobody answers) the id is free again
    again = Gateway(gateway_settings([], queue_path=tmp_path / "third.sqlite3"))
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop))
    await wait_until(lambda: again.mqtt is not None and again.mqtt.connected.is_set(), 10, what="the id reused")
    stop.set()
    await asyncio.wait_for(task, 20)
