"""The officer's own page in a real Chromium (issue 21): alert states in words (it showed raw
"delivered"), and the page's own reads already in the officer's access report (they were
missing until a reload)."""
from __future__ import annotations

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


async def test_states_in_words_and_own_reads_reported(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        await backend.runtime.alerts.raise_alert(
            agency_id=agency, device_id=DEVICE, seq=1, kind="sos", officer_id=seeded["okafor"], officer_name="Officer Okafor",
            explanation={"detector": "device", "event": "sos"})
        await wait_until(lambda: backend.runtime.alerts.pending == 0, 10, what="the alert stored")
        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(backend.url + "/login")
        await page.get_by_label("Username").fill(f"{agency}-okafor")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(backend.url + "/me")
        await page.locator("#my-alerts tr").first.wait_for()
        row = await page.locator("#my-alerts tr").first.inner_text()
        assert "New" in row and "raised" not in row, row
        await page.locator("#accesses tr").first.wait_for(timeout=10_000)
        report = await page.locator("#accesses").inner_text()
        assert "officer_self_access" in report and "alerts_incidents" in report, report  # this page's read of the alerts
        await shot(page, "officer-own-page")
    assert not errors, errors
