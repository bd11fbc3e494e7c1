"""The officer's own page in a real Chromium (issue 21): alert states in words (it showed raw
"delivered"), the page's own reads already in the officer's access report (they were missing
until a reload), and their heart rate plotted with a time axis, a bpm axis and a gap where the
wearable reported nothing."""
from __future__ import annotations

import datetime as dt

import pytest

from backend.app.server import serve
from backend.db import engine as db
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, PASSWORD, _seed, chromium, shot
from tests.gateway.conftest import wait_until
from tests.privacy.conftest import insert_features

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
        # a value a second for the last 10 minutes, but none from 6 to 3 minutes ago (device off)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        engine = db.create_engine(settings)
        try:
            await insert_features(engine, DEVICE, seeded["okafor"],
                                  [now - dt.timedelta(seconds=s) for s in range(600, 0, -1) if not 180 <= s < 360])
        finally:
            await engine.dispose()
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
        plot = page.locator("#my-hr figure.hr-plot")
        await plot.locator(".uplot canvas").wait_for(timeout=10_000)
        drawn = await plot.evaluate("""(f) => { const h = f.vigilPlot, u = h.plot;
          return { y: u.axes[1].label, x: u.axes[0].label, ticks: h.ticks.x, values: u.data[1].filter((v) => v != null).length,
                   gaps: u.data[1].filter((v) => v == null).length }; }""")
        assert drawn["y"] == "Heart rate (bpm)" and drawn["x"] == "Local time (24 h)" and len(drawn["ticks"]) >= 3, drawn
        assert drawn["values"] == 420 and drawn["gaps"] == 1, drawn  # the 3 silent minutes are a gap, not a line
        await shot(page, "officer-own-page")
    assert not errors, errors
