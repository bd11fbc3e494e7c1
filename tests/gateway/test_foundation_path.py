"""The foundation path, real at every hop: a simulated wearable (the firmware's code) behind the
virtual BlueZ; its officer holds SOS; the gateway (bleak's real BlueZ backend) forwards its frames
unchanged to real Mosquitto."""
from __future__ import annotations

from firmware import frame
from gateway.sim.fleet import SimulatedFleet

from tests.gateway.conftest import UplinkRecorder, fleet_keys, running_gateway, wait_until

DEVICE = 0x00A1B2C3


async def test_sos_reaches_mosquitto_unchanged(mqtt_broker, agency, gateway_settings):
    keys = fleet_keys([DEVICE])
    settings = gateway_settings([DEVICE], latitude=52.520008, longitude=13.404954)
    async with UplinkRecorder(*mqtt_broker, agency) as recorder, \
            SimulatedFleet(keys, device="firmware", scenarios="patrol") as fleet, \
            running_gateway(settings) as gateway:
        wearable = fleet.wearables[DEVICE]
        await wait_until(lambda: recorder.seqs(DEVICE, "telemetry"), 20, what="first telemetry frame")
        wearable.press_sos()  # held 2.5 s: the firmware raises the SOS after 2 s
        await wait_until(lambda: recorder.seqs(DEVICE, "event"), 10, what="the SOS event on MQTT")
        sos_seq = recorder.seqs(DEVICE, "event")[0]

    device_id, kind, seq, payload, user = next(f for f in recorder.frames if f[2] == sos_seq)
    header, body = frame.open_frame(payload, frame.DeviceKeys(keys[DEVICE]))  # bytes unchanged: tag verifies
    assert (header.device_id, header.frame_type) == (DEVICE, frame.TYPE_EVENT)
    assert frame.decode_event(body)[0] == frame.EVENT_SOS
    assert user == {"lat": "52.520008", "lon": "13.404954"}  # location on events only
    telemetry = [f for f in recorder.frames if f[1] == "telemetry"]
    assert telemetry and all(not f[4] for f in telemetry)
    h, body = frame.open_frame(telemetry[0][3], frame.DeviceKeys(keys[DEVICE]))
    rate, _, ppg, accel = frame.decode_telemetry(body)
    assert (rate, len(ppg), len(accel)) == (50, 20, 20)
    assert gateway.metrics.total("vigil_gateway_frames_in_total") >= 2
