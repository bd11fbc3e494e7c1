"""The auditor's log in a real Chromium (issue 21): who and what in words (it showed
`alert:9f4a…`, `devices:13828104`, actor `db:postgres`) and pages of 50 newest first (it was one
5,800 px table), on entries the real backend wrote: provisioning through the database, an alert's
transitions and supervisors' reads."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from backend.app.server import serve
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, PASSWORD, _seed, chromium, shot
from tests.gateway.conftest import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")


async def test_a_readable_paged_audit_log(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, audit_drain_interval_s=0.2)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        alert = await backend.runtime.alerts.raise_alert(
            agency_id=agency, device_id=DEVICE, seq=1, kind="sos", officer_id=seeded["okafor"], officer_name="Officer Okafor",
            explanation={"detector": "device", "event": "sos"})
        async with httpx.AsyncClient(base_url=backend.url) as http:
            token = (await http.post("/api/v1/auth/token", data={"username": f"{agency}-sup1", "password": PASSWORD})).json()["access_token"]
            sup = {"Authorization": f"Bearer {token}"}
            await wait_until(lambda: backend.runtime.alerts.pending == 0, 10, what="the alert stored")
            await asyncio.sleep(0.5)
            assert (await http.post(f"/api/v1/alerts/{alert.id}/acknowledge", headers=sup)).status_code == 200
            for _ in range(60):  # 60 reads, each audited: more than a page
                assert (await http.get("/api/v1/alerts", headers=sup, params={"purpose": "safety_response"})).status_code == 200
        await asyncio.sleep(1.0)  # trigger-written entries enter the chain from the outbox

        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(backend.url + "/login")
        await page.get_by_label("Username").fill(f"{agency}-auditor")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(backend.url + "/audit")
        rows = page.locator("#log tr")
        await rows.first.wait_for()
        assert await rows.count() == 50
        first = await page.locator("#log tr").first.get_attribute("data-seq")
        page1 = await page.locator("#log").inner_text()
        assert f"{agency}-sup1 (supervisor)" in page1  # a person with their role, not user:…
        await shot(page, "auditor-log-page1")

        seen = page1
        for _ in range(10):  # back through the pages to the alert and the provisioning
            if await page.locator("#log-older").is_disabled():
                break
            await page.locator("#log-older").click()
            await page.locator(f'#log tr[data-seq="{first}"]').wait_for(state="detached")
            seen += await page.locator("#log").inner_text()
            first = await page.locator("#log tr").first.get_attribute("data-seq")
        assert "sos alert of Officer Okafor, raised" in seen  # not alert:9f4a…
        assert "device 0x00C0FFEE" in seen                      # not devices:12648430, as the other pages write it
        assert "database role" in seen and "(a direct change, not through the API)" in seen  # not db:postgres
        assert "devices:" not in seen and "alert:" not in seen and "\tdb:" not in seen
        await page.locator("#log-newer").click()
        await page.locator(f'#log tr[data-seq="{first}"]').wait_for(state="detached")
    assert not errors, errors
