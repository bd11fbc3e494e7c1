"""The fleet admin's page in a real Chromium (issue 21): a gateway that carries frames is listed
(the page said "No gateways yet" while the demo's gateway forwarded every frame), a low battery
stands out, and retiring a worn device names the officer it leaves without one."""
from __future__ import annotations

import asyncio
import time

import aiomqtt
import pytest

from backend.app.server import serve
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
