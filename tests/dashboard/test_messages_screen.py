"""The supervisor's messages panel and the officers on the map (issue 21), in a real Chromium
against the real backend, Mosquitto and PostgreSQL. An SOS tells the colleague near the officer
on their wearable; the panel in the incident detail shows who was told and, when the colleague's
wearable says so (a sealed EVENT_MESSAGE_CONFIRMED through the broker), that they confirmed; the
supervisor sends "check in" to the officer; the map draws both officers at their gateway with the
age of the fix. (The wearables themselves are tests/test_nearby_end_to_end.py.)"""
from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import pytest

from backend.app.server import serve
from backend.db import engine as db
from backend.identity import auth, fleet
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, PASSWORD, chromium, shot
from tests.gateway.conftest import device_key, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")

OKAFOR_DEVICE, LINDQVIST_DEVICE = 0x00C0FFE1, 0x00C0FFE2
GATEWAY = "gw1"
WHERE = {"lat": 40.7128, "lon": -74.006, "source": "gateway"}


async def _seed(settings, agency) -> dict:
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        out = {}
        for device, badge, name in ((OKAFOR_DEVICE, "B-7", "Officer Okafor"), (LINDQVIST_DEVICE, "B-9", "Officer Lindqvist")):
            officer = await fleet.create_officer(engine, agency, badge, name, "Patrol 3")
            await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device, key=device_key(device))
            await fleet.assign_device(engine, device, officer)
            out[device] = officer
        await auth.create_user(engine, f"{agency}-sup1", PASSWORD, "supervisor", agency, None)
    finally:
        await engine.dispose()
    return out


def _frame(device: int, seq: int, frame_type: int, payload: bytes) -> bytes:
    return F.seal(F.DeviceKeys(device_key(device)), frame_type, device, seq, int(time.time() * 1000), payload)


async def test_colleagues_told_confirmed_and_a_check_in_sent_from_the_incident(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    officers = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser, aiomqtt.Client(*mqtt_broker) as mqtt:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        await asyncio.wait_for(rt.downlink.connected.wait(), 10)
        state_topic = topics.gateway_state(agency, GATEWAY)
        try:
            # the gateway states where it is; both wearables are heard through it
            await mqtt.publish(state_topic, json.dumps({"state": "online", "at": time.time(), "lat": WHERE["lat"],
                                                        "lon": WHERE["lon"]}), qos=1, retain=True)
            worn = F.encode_status(80, 3900, (1, 0, 0), F.STATUS_WORN | F.STATUS_SKIN_CONTACT)
            for device in officers:
                await mqtt.publish(topics.uplink(agency, GATEWAY, device, "status"), _frame(device, 1, F.TYPE_STATUS, worn), qos=1)
            await wait_until(lambda: all(rt.status.last_gateway(d) for d in officers) and rt.downlink.positions.get(agency, GATEWAY),
                             10, what="both devices heard, the gateway's position known")

            # Okafor's SOS: Lindqvist, at the same gateway, is told on her wearable
            alert = await rt.alerts.raise_alert(
                agency_id=agency, device_id=OKAFOR_DEVICE, seq=7, kind="sos", officer_id=officers[OKAFOR_DEVICE],
                officer_name="Officer Okafor", location=WHERE, explanation={"detector": "device", "event": "sos", "gateway": GATEWAY})
            book = rt.downlink.messages
            await wait_until(lambda: any(m.state == "sent" for m in book.in_memory(agency)), 10, what="the colleague message sent")
            [told] = book.in_memory(agency)
            assert told.device_id == LINDQVIST_DEVICE

            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(backend.url + "/login")
            await page.get_by_label("Username").fill(f"{agency}-sup1")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(backend.url + "/supervisor")
            await page.goto(f"{backend.url}/supervisor#incident={alert.id}")
            await page.reload()  # the incident detail opens from the address
            box = page.locator("#messages-box")
            await box.wait_for(state="visible", timeout=10_000)
            colleague = box.locator(f'#messages-colleagues li[data-kind="colleague_needs_help"]')
            await colleague.wait_for(timeout=10_000)
            assert "Officer Lindqvist" in await colleague.inner_text()
            assert await colleague.get_attribute("data-state") == "sent"

            # her gateway wrote it to the wearable; she pressed: her wearable's sealed confirmation
            await mqtt.publish(topics.downlink_result(agency, GATEWAY, LINDQVIST_DEVICE),
                               json.dumps({"device_id": LINDQVIST_DEVICE, "command_seq": told.command_seq, "ok": True}), qos=1)
            confirm = F.encode_event(F.EVENT_MESSAGE_CONFIRMED, told.word, 3)
            await mqtt.publish(topics.uplink(agency, GATEWAY, LINDQVIST_DEVICE, "event"),
                               _frame(LINDQVIST_DEVICE, 2, F.TYPE_EVENT, confirm), qos=1)
            await box.locator('#messages-colleagues li[data-state="confirmed"]').wait_for(timeout=10_000)
            text = await colleague.inner_text()
            assert "Confirmed by the officer" in text and "sent " in text and "delivered " in text and "confirmed " in text, text

            # the supervisor asks Okafor to check in, from the incident
            await box.get_by_label("Message to the officer's wearable").select_option("check_in")
            await box.get_by_role("button", name="Send to wearable").click()
            mine = box.locator('#messages-sent li[data-kind="check_in"]')
            await mine.wait_for(timeout=10_000)
            assert "Check in: press if OK → Officer Okafor" in await mine.inner_text()
            await wait_until(lambda: any(m.kind == "check_in" and m.state == "sent" for m in book.in_memory(agency)), 10,
                             what="the check-in sent to the gateway")

            # and tells the colleague it is over
            await box.get_by_role("button", name="Send “all clear” to the colleagues told").click()
            clear = box.locator('#messages-sent li[data-kind="all_clear"]')
            await clear.wait_for(timeout=10_000)
            assert "All clear → Officer Lindqvist" in await clear.inner_text()
            assert [(m.device_id, m.alert_id) for m in book.in_memory(agency) if m.kind == "all_clear"] == [
                (LINDQVIST_DEVICE, alert.id)]

            # the map: both officers at their gateway, with the age of the fix and where it comes from
            # (one square at the gateway; each officer's line under it, with the fix's age and source)
            officer_marks = page.locator("#map .map-officer-fix[data-officer-id]")
            await officer_marks.nth(1).wait_for(timeout=15_000)
            labels = [await officer_marks.nth(i).get_attribute("title") for i in range(await officer_marks.count())]
            assert sorted(label.split(" — ")[0] for label in labels) == ["Officer Lindqvist", "Officer Okafor"], labels
            assert all(f"near gateway {GATEWAY} (gateway position), heard" in label and "ago" in label for label in labels), labels
            assert await page.locator("#map .leaflet-marker-icon.map-officer").count() == 1
            assert await page.locator("#map .leaflet-marker-icon.map-alert").count() == 1  # the open alert, apart from the officers
            await shot(page, "supervisor-messages-and-officers-on-map")
        finally:
            await mqtt.publish(state_topic, b"", qos=1, retain=True)
    assert not errors, errors
