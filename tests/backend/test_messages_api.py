"""A supervisor's message to an officer's wearable over the API, through the real broker and
database: the command frame on the gateway's downlink topic (sealed with the device's key: kind
and id), the gateway's result (delivered), the device's EVENT_MESSAGE_CONFIRMED (confirmed),
each with its time; the officer's position at their gateway; and every refusal typed."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiomqtt
import pytest

from firmware import frame as F
from gateway import topics
from tests.backend.api_helpers import two_agencies
from tests.gateway.conftest import wait_until

pytestmark = pytest.mark.integration


def _frame(key: bytes, device: int, seq: int, frame_type: int, payload: bytes) -> bytes:
    return F.seal(F.DeviceKeys(key), frame_type, device, seq, int(time.time() * 1000), payload)


async def _next_message_command(mqtt, key: bytes) -> tuple[F.Header, tuple]:
    """The next COMMAND_MESSAGE on the gateway's downlink topic (event acks and syncs skipped)."""
    async with asyncio.timeout(10):
        async for command in mqtt.messages:
            header, payload = F.open_frame(bytes(command.payload), F.DeviceKeys(key))
            decoded = F.decode_command(payload)
            if decoded[0] == F.COMMAND_MESSAGE:
                return header, decoded
    raise AssertionError("the subscription ended")


async def _state_of(http, headers, officer_id: int) -> dict:
    response = await http.get(f"/api/v1/officers/{officer_id}/messages", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()[0]


async def _until_state(http, headers, officer_id: int, state: str) -> dict:
    for _ in range(200):
        message = await _state_of(http, headers, officer_id)
        if message["state"] == state:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"the message never became {state}: {message}")


async def test_a_supervisors_message_is_sent_delivered_and_confirmed(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, _):
        rt = backend.runtime
        sup = {"Authorization": f"Bearer {a.tokens['supervisor']}"}
        gw, device = a.gateway.gateway_id, a.device_id
        await asyncio.wait_for(rt.downlink.connected.wait(), 10)
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        async with aiomqtt.Client(*mqtt_broker) as mqtt:
            await mqtt.subscribe(topics.downlink_filter(a.name, gw), qos=1)
            state_topic = topics.gateway_state(a.name, gw)
            try:
                # the gateway states its position; the device is heard through it
                await mqtt.publish(state_topic, json.dumps({"state": "online", "at": time.time(), "lat": 51.5074,
                                                            "lon": -0.1278}), qos=1, retain=True)
                status = F.encode_status(80, 3900, (1, 0, 0), F.STATUS_WORN | F.STATUS_SKIN_CONTACT)
                await mqtt.publish(topics.uplink(a.name, gw, device, "status"), _frame(a.device_key, device, 1, F.TYPE_STATUS, status), qos=1)
                await wait_until(lambda: rt.status.last_gateway(device) == gw and rt.downlink.positions.get(a.name, gw), 10,
                                 what="the device heard and the gateway's position known")
                positions = (await http.get("/api/v1/live/positions", headers=sup)).json()
                [officer] = positions["officers"]
                assert (officer["officer_id"], officer["lat"], officer["lon"], officer["source"], officer["gateway_id"]) == (
                    a.officer_id, 51.5074, -0.1278, "gateway", gw)
                assert 0 <= officer["age_s"] < 10 and positions["nearby_radius_m"] == settings.nearby_radius_m

                response = await http.post(f"/api/v1/officers/{a.officer_id}/messages", json={"kind": "stay_put"}, headers=sup)
                assert response.status_code == 202, response.text
                assert (response.json()["kind"], response.json()["state"], response.json()["sent_by"]) == (
                    "stay_put", "queued", f"user:{a.name}-supervisor")
                header, decoded = await _next_message_command(mqtt, a.device_key)
                assert (header.frame_type, header.device_id) == (F.TYPE_COMMAND, device)
                assert decoded == (F.COMMAND_MESSAGE, F.MESSAGE_STAY_PUT, header.seq & 0xFFFF)
                sent = await _until_state(http, sup, a.officer_id, "sent")
                assert sent["gateway_id"] == gw and sent["delivered_at"] is None

                # the gateway could not reach the device in time: sealed again, sent again
                await mqtt.publish(topics.downlink_result(a.name, gw, device), json.dumps(
                    {"device_id": device, "command_seq": header.seq, "ok": False, "error": "device_unreachable"}), qos=1)
                first_seq = header.seq
                header, decoded = await _next_message_command(mqtt, a.device_key)
                assert header.seq > first_seq
                assert decoded == (F.COMMAND_MESSAGE, F.MESSAGE_STAY_PUT, header.seq & 0xFFFF)
                retried = await _state_of(http, sup, a.officer_id)
                assert retried["state"] == "sent" and "device_unreachable" in retried["error"], retried
                # the gateway wrote it to the device; the officer pressed
                await mqtt.publish(topics.downlink_result(a.name, gw, device),
                                   json.dumps({"device_id": device, "command_seq": header.seq, "ok": True}), qos=1)
                await _until_state(http, sup, a.officer_id, "delivered")
                confirm = F.encode_event(F.EVENT_MESSAGE_CONFIRMED, header.seq & 0xFFFF, 3)
                await mqtt.publish(topics.uplink(a.name, gw, device, "event"), _frame(a.device_key, device, 2, F.TYPE_EVENT, confirm), qos=1)
                done = await _until_state(http, sup, a.officer_id, "confirmed")
                assert done["sent_at"] <= done["delivered_at"] <= done["confirmed_at"] and done["error"] is None
                # written behind to the database: what a restarted backend answers from
                import sqlalchemy as sa
                from backend.db import schema as t

                async def stored():
                    async with rt.engine.connect() as conn:
                        return (await conn.execute(sa.select(t.officer_messages).where(
                            t.officer_messages.c.id == uuid.UUID(done["id"])))).first()
                for _ in range(100):
                    row = await stored()
                    if row is not None and row.confirmed_at is not None:
                        break
                    await asyncio.sleep(0.05)
                assert (row.kind, row.officer_id, row.device_id, row.command_seq, row.gateway_id) == (
                    "stay_put", a.officer_id, device, header.seq, gw)
                assert row.confirmed_at.isoformat() == done["confirmed_at"]


                # a confirmation after a restart: the message is found in the database
                response = await http.post(f"/api/v1/officers/{a.officer_id}/messages", json={"kind": "check_in"}, headers=sup)
                header, decoded = await _next_message_command(mqtt, a.device_key)
                assert decoded[1] == F.MESSAGE_CHECK_IN
                check_in = uuid.UUID(response.json()["id"])
                for _ in range(100):
                    async with rt.engine.connect() as conn:
                        if (await conn.execute(sa.select(t.officer_messages.c.sent_at).where(
                                t.officer_messages.c.id == check_in))).scalar_one_or_none():
                            break
                    await asyncio.sleep(0.05)
                from backend.incidents.messages import MessageBook
                rt.downlink.messages = MessageBook(rt.engine)  # what a restarted backend starts with
                confirm = F.encode_event(F.EVENT_MESSAGE_CONFIRMED, header.seq & 0xFFFF, 3)
                await mqtt.publish(topics.uplink(a.name, gw, device, "event"), _frame(a.device_key, device, 3, F.TYPE_EVENT, confirm), qos=1)
                again = await _until_state(http, sup, a.officer_id, "confirmed")
                assert again["id"] == str(check_in) and again["kind"] == "check_in"
                assert rt.metrics.rejected_count("bad_payload") == 0
            finally:
                await mqtt.publish(state_topic, b"", qos=1, retain=True)  # no retained state left on the broker


async def test_message_refusals_are_typed(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, b):
        sup = {"Authorization": f"Bearer {a.tokens['supervisor']}"}
        path = f"/api/v1/officers/{a.officer_id}/messages"
        for role in ("officer", "fleet_admin", "auditor"):
            response = await http.post(path, json={"kind": "check_in"}, headers={"Authorization": f"Bearer {a.tokens[role]}"})
            assert response.status_code == 403, (role, response.text)
        assert (await http.post(path, json={"kind": "check_in"})).status_code == 401
        for body in ({"kind": "self_destruct"}, {"kind": "colleague_needs_help"}, {}, {"kind": "check_in", "alert_id": "x"}):
            response = await http.post(path, json=body, headers=sup)
            assert response.status_code == 422, (body, response.text)
        response = await http.post(f"/api/v1/officers/{a.other_officer_id}/messages", json={"kind": "check_in"}, headers=sup)
        assert response.status_code == 409 and "no device on shift" in response.json()["detail"]
        for officer in (b.officer_id, 99_999_999, 2**40):  # another agency's officer, nobody, beyond any id
            response = await http.post(f"/api/v1/officers/{officer}/messages", json={"kind": "check_in"}, headers=sup)
            assert response.status_code == 404, (officer, response.text)
            assert (await http.get(f"/api/v1/officers/{officer}/messages", headers=sup)).status_code == 404
        assert (await http.post("/api/v1/officers/1x/messages", json={"kind": "check_in"}, headers=sup)).status_code == 422
        nobody = uuid.uuid4()
        response = await http.post(path, json={"kind": "check_in", "alert_id": str(nobody)}, headers=sup)
        assert response.status_code == 404
        assert (await http.post(f"/api/v1/alerts/{nobody}/messages", json={"kind": "all_clear"}, headers=sup)).status_code == 404
        assert (await http.get(f"/api/v1/alerts/{nobody}/messages", headers=sup)).status_code == 404
        assert (await http.get(f"/api/v1/officers/{a.officer_id}/messages", headers=sup)).json() == []  # nothing was sent

        kinds = (await http.get("/api/v1/messages/kinds", headers=sup)).json()
        assert [k["kind"] for k in kinds if k["supervisor"]] == ["help_coming", "stay_put", "fall_back", "check_in", "all_clear"]
        spec = (await http.get("/openapi.json")).json()["paths"]
        for route, method in (("/api/v1/officers/{officer_id}/messages", "post"), ("/api/v1/alerts/{alert_id}/messages", "post")):
            assert {"202", "401", "403", "404", "409", "422"} <= set(spec[route][method]["responses"]), route


async def test_a_fall_upgraded_to_a_man_down_alarm_tells_the_colleague_nearby(database_url, mqtt_broker, agency):
    """Through the real lifecycle (AlertService): a fall tells no one; the man-down alarm that
    joins it (the incident upgraded) tells the officer on shift at the same gateway, once."""
    from backend.db import engine as db
    from backend.identity import fleet
    from tests.gateway.conftest import device_key

    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, _):
        rt = backend.runtime
        colleague_device = 0x0A0000C2
        engine = db.create_engine(settings)
        try:
            await fleet.provision_device(engine, settings.secret_key.get_secret_value(), a.name, colleague_device,
                                         key=device_key(colleague_device))
            await fleet.assign_device(engine, colleague_device, a.other_officer_id)
        finally:
            await engine.dispose()
        await rt.registry.refresh()
        gw = a.gateway.gateway_id
        await asyncio.wait_for(rt.downlink.connected.wait(), 10)
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        async with aiomqtt.Client(*mqtt_broker) as mqtt:
            state_topic = topics.gateway_state(a.name, gw)
            try:
                await mqtt.publish(state_topic, json.dumps({"state": "online", "at": time.time(), "lat": 48.8566,
                                                            "lon": 2.3522}), qos=1, retain=True)
                status = F.encode_status(80, 3900, (1, 0, 0), F.STATUS_WORN | F.STATUS_SKIN_CONTACT)
                for device, key in ((a.device_id, a.device_key), (colleague_device, device_key(colleague_device))):
                    await mqtt.publish(topics.uplink(a.name, gw, device, "status"), _frame(key, device, 1, F.TYPE_STATUS, status), qos=1)
                await wait_until(lambda: rt.status.last_gateway(colleague_device) == gw and rt.status.last_gateway(a.device_id) == gw
                                 and rt.downlink.positions.get(a.name, gw), 10, what="both devices heard at a known gateway")
                where = {"lat": 48.8566, "lon": 2.3522, "source": "gateway"}
                common = dict(agency_id=a.name, device_id=a.device_id, officer_id=a.officer_id, officer_name="Officer One",
                              location=where)
                fall = await rt.alerts.raise_alert(seq=10, kind="fall", explanation={"detector": "device"}, **common)
                await asyncio.sleep(0.3)
                assert rt.downlink.messages.in_memory(a.name) == []  # a fall alone tells no one
                await rt.alerts.raise_alert(seq=11, kind="device_alarm", explanation={"detector": "device"}, **common)
                await rt.alerts.raise_alert(seq=12, kind="sos", explanation={"detector": "device"}, **common)
                told = rt.downlink.messages.in_memory(a.name)
                assert [(m.officer_id, m.kind, m.alert_id) for m in told] == [(a.other_officer_id, "colleague_needs_help", fall.id)]
            finally:
                await mqtt.publish(state_topic, b"", qos=1, retain=True)
