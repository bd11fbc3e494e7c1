"""The fleet admin's page in a real Chromium (issue 21): a gateway that carries frames is listed
(the page said "No gateways yet" while the demo's gateway forwarded every frame), a low battery
stands out, and retiring a worn device names the officer it leaves without one; the firmware
overview (versions with counts, the current release, the devices behind it and who wears them);
a gateway's queue depth as it states it; retiring a gateway names the officers whose wearables it carries,
and giving a worn device to another officer names whom it is taken from."""
from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import pytest

from backend.app.server import serve
from backend.db import engine as db
from backend.identity import fleet
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, PASSWORD, _seed, chromium, shot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")


async def test_gateways_as_they_are_battery_and_a_named_retirement(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        # a real sealed status frame from Okafor's wearable, battery at 5 %, through gateway car-7
        frame = F.seal(F.DeviceKeys(seeded["key"]), F.TYPE_STATUS, DEVICE, 1, int(time.time() * 1000),
                       F.encode_status(5, 3400, (1, 0, 0), F.STATUS_WORN | F.STATUS_SKIN_CONTACT, 0))
        async with aiomqtt.Client(*mqtt_broker) as client:
            await client.publish(topics.uplink(agency, "car-7", DEVICE, "status"), frame, qos=1)

        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(backend.url + "/login")
        await page.get_by_label("Username").fill(f"{agency}-fleet")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(backend.url + "/fleet")

        row = page.locator(f'#devices tr[data-device-id="{DEVICE}"]')
        deadline = time.monotonic() + 20
        while await row.locator(".battery-warn").count() == 0:  # the battery is stored by the status writer
            assert time.monotonic() < deadline, await row.inner_text()
            await asyncio.sleep(0.5)
            await page.reload()
            await row.wait_for()
        assert "5 %" in await row.locator(".battery-warn").inner_text()

        gateway = page.locator('#gateways tr[data-gateway-id="car-7"]')
        await gateway.wait_for()
        text = await gateway.inner_text()
        assert "NOT registered" in text and "0x00C0FFEE" in text, text
        assert await page.locator("#gateways-empty").is_hidden()
        await shot(page, "fleet-gateway-heard")

        asked: list[str] = []

        async def answer(dialog):
            asked.append(dialog.message)
            await dialog.accept()
        page.on("dialog", answer)
        await row.get_by_role("button", name="Retire").click()
        await page.locator("#notice", has_text="now has no device").wait_for(timeout=10_000)
        # the old confirmation said only "Retire device 0x00C0FFEE?"
        assert asked and "Officer Okafor" in asked[0], asked
        assert "Officer Okafor" in await page.locator("#notice").inner_text()
        await page.locator(f'#devices tr[data-device-id="{DEVICE}"]', has_text="retired").wait_for()
    assert not errors, errors


FIRMWARE = {DEVICE: (1, 2, 0), 0x00F1A001: (1, 4, 0), 0x00F1A002: (1, 10, 0)}  # 1.10 is newer than 1.4: by number
# (ingest refuses a frame from a device no officer wears: each is assigned)


async def test_firmware_overview_and_a_gateway_retired_with_its_officers_named(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    seeded = await _seed(settings, agency)
    keys = {DEVICE: seeded["key"]}
    engine = db.create_engine(settings)
    try:
        for device_id in (0x00F1A001, 0x00F1A002):
            keys[device_id] = (await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device_id)).key
        await fleet.assign_device(engine, 0x00F1A001, await fleet.create_officer(engine, agency, "B-11", "Officer Reyes"))
        await fleet.assign_device(engine, 0x00F1A002, seeded["lindqvist"])  # her second wearable
        await fleet.register_gateway(engine, settings.secret_key.get_secret_value(), agency, f"{agency}-van", [DEVICE])
    finally:
        await engine.dispose()
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        async with aiomqtt.Client(*mqtt_broker) as client:  # each wearable's real sealed status frame, its own version
            for device_id, version in FIRMWARE.items():
                frame = F.seal(F.DeviceKeys(keys[device_id]), F.TYPE_STATUS, device_id, 1, int(time.time() * 1000),
                               F.encode_status(80, 3900, version, F.STATUS_WORN | F.STATUS_SKIN_CONTACT, 0))
                await client.publish(topics.uplink(agency, f"{agency}-van", device_id, "status"), frame, qos=1)
            # the van's own word on itself, as gateway/publisher.py states it (retained): 42 frames in its queue
            await client.publish(topics.gateway_state(agency, f"{agency}-van"), json.dumps(
                {"state": "online", "agency": agency, "gateway": f"{agency}-van", "at": time.time(), "queue_depth": 42}),
                qos=1, retain=True)

        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(backend.url + "/login")
        await page.get_by_label("Username").fill(f"{agency}-fleet")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(backend.url + "/fleet")

        current = page.locator("#firmware-current")
        deadline = time.monotonic() + 20
        while "1.10.0" not in await current.inner_text():  # the versions are stored by the status writer
            assert time.monotonic() < deadline, await current.inner_text()
            await asyncio.sleep(0.5)
            await page.reload()
            await page.locator("#firmware-current", has_text="release").or_(page.locator("#firmware-current", has_text="No device")).wait_for()
        text = await current.inner_text()
        assert "Current release 1.10.0" in text and "newest any device reports" in text and "2 devices" in text, text
        versions = {await r.get_attribute("data-version"): await r.inner_text() for r in await page.locator("#firmware-versions tr").all()}
        assert list(versions) == ["1.10.0", "1.4.0", "1.2.0", "unknown"], versions  # newest first, by number
        assert "current" in versions["1.10.0"] and "outdated" in versions["1.4.0"] and "outdated" in versions["1.2.0"]
        assert "not reported" in versions["unknown"]  # Lindqvist's first device never sent a status frame
        okafor = await page.locator(f'#firmware-outdated tr[data-device-id="{DEVICE}"]').inner_text()
        assert "0x00C0FFEE" in okafor and "1.2.0" in okafor and "Officer Okafor" in okafor, okafor
        spare = await page.locator(f'#firmware-outdated tr[data-device-id="{0x00F1A001}"]').inner_text()
        assert "0x00F1A001" in spare and "1.4.0" in spare and "Officer Reyes" in spare, spare
        assert await page.locator("#firmware-outdated tr").count() == 2
        await shot(page, "fleet-firmware")

        # the release set by the operator: 1.10.0 is then ahead of it, and only Okafor's device is behind
        backend.runtime.settings = backend.runtime.settings.model_copy(update={"firmware_current": "1.4.0"})
        await page.reload()
        await page.locator("#firmware-current", has_text="VIGIL_FIRMWARE_CURRENT").wait_for()
        assert "Current release 1.4.0" in await current.inner_text()
        assert "newer than the release" in await page.locator('#firmware-versions tr[data-version="1.10.0"]').inner_text()
        assert [await r.get_attribute("data-device-id") for r in await page.locator("#firmware-outdated tr").all()] == [str(DEVICE)]

        van = page.locator(f'#gateways tr[data-gateway-id="{agency}-van"]')
        assert await van.locator(".gw-queue").inner_text() == "42 frames waiting"

        # retiring the gateway that serves Okafor's wearable names her; the broker part is reported
        asked: list[str] = []

        async def answer(dialog):
            asked.append(dialog.message)
            await dialog.accept()
        page.on("dialog", answer)
        row = page.locator(f'#gateways tr[data-gateway-id="{agency}-van"]')
        await row.get_by_role("button", name="Retire").click()
        await page.locator("#notice", has_text=f"Gateway {agency}-van retired").wait_for(timeout=10_000)
        assert asked and "Officer Okafor (0x00C0FFEE)" in asked[0], asked
        assert "not administered by this backend" in await page.locator("#notice").inner_text()
        await row.filter(has_text="retired").wait_for()
        assert await row.get_by_role("button", name="Retire").count() == 0

        # giving Okafor's wearable to Reyes takes it from Okafor: the confirmation names both
        await page.locator("#assign-device").select_option(str(DEVICE))
        await page.locator("#assign-officer").select_option(label="Officer Reyes · B-11")
        await page.get_by_role("button", name="Assign", exact=True).click()
        await page.locator(f'#devices tr[data-device-id="{DEVICE}"]', has_text="Officer Reyes").wait_for(timeout=10_000)
        assert "Assign device 0x00C0FFEE to Officer Reyes? Officer Okafor wears it" in asked[-1], asked
    async with aiomqtt.Client(*mqtt_broker) as client:  # the shared broker keeps no state of this test
        await client.publish(topics.gateway_state(agency, f"{agency}-van"), b"", qos=1, retain=True)
    assert not errors, errors
