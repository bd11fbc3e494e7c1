"""What a supervisor on a night shift tripped over (issue 21), in a real Chromium against the real
backend, Mosquitto and PostgreSQL: warning states survive a reload; a battery at 0 % stands out;
open alerts are drawn on a map without any map server; an upgraded alert reads as what it is now;
"ESCALATED" goes once someone acknowledged; the heart-rate plot has axes and times."""
from __future__ import annotations

import asyncio
import re
import time

import aiomqtt
import pytest

from backend.app.server import serve
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, IDLE_DEVICE, PASSWORD, _card, _seed, chromium, shot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")

WHERE = {"lat": 40.7128, "lon": -74.006, "source": "gateway"}


async def _supervisor(browser, base: str, agency: str, errors: list[str]):
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(f"{agency}-sup1")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/supervisor")
    await page.locator("#feed-state.live").wait_for(timeout=10_000)
    return page


async def test_warning_states_survive_a_reload(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        page = await _supervisor(browser, backend.url, agency, errors)
        # Okafor's wearable says: battery empty, not worn, no skin contact (a real sealed status frame)
        frame = F.seal(F.DeviceKeys(seeded["key"]), F.TYPE_STATUS, DEVICE, 1, int(time.time() * 1000),
                       F.encode_status(0, 3300, (1, 0, 0), 0, 0))
        async with aiomqtt.Client(*mqtt_broker) as client:
            await client.publish(topics.uplink(agency, "gw1", DEVICE, "status"), frame, qos=1)
        row = page.locator(f'#board tr[data-officer-id="{seeded["okafor"]}"]')
        await row.get_by_text("device removed").wait_for(timeout=15_000)
        await page.reload()
        await page.locator("#feed-state.live").wait_for(timeout=10_000)
        text = await row.inner_text()
        # the old page showed "✓ OK" here: the states came only from the live feed
        assert "Check" in text and "device removed" in text and "battery low" in text, text
        assert "OK" not in text.split("Check")[0].split("\t")[-1]
        warn = row.locator(".battery-warn")
        assert "0 %" in await warn.inner_text()
        await shot(page, "supervisor-warnings-after-reload")
    assert not errors, errors


async def test_map_upgrade_and_escalation(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, escalate_after_s=2.0)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        page = await _supervisor(browser, backend.url, agency, errors)
        assert await page.locator("#map-empty").is_visible()
        alerts = backend.runtime.alerts
        await alerts.raise_alert(
            agency_id=agency, device_id=IDLE_DEVICE, seq=1, kind="fall", officer_id=seeded["lindqvist"],
            officer_name="Officer Lindqvist", location=WHERE,
            explanation={"detector": "device", "event": "fall_suspected", "device_priority": 2})
        await alerts.raise_alert(
            agency_id=agency, device_id=IDLE_DEVICE, seq=2, kind="device_alarm", officer_id=seeded["lindqvist"],
            officer_name="Officer Lindqvist", location=WHERE,
            explanation={"detector": "device", "event": "mandown_alarm", "device_priority": 1})
        card = _card(page, "device_alarm")
        await card.wait_for(timeout=10_000)
        await card.get_by_text("man-down alarm went off").wait_for(timeout=10_000)
        expl = await card.locator("p.expl").inner_text()
        # the old card still read "the wearable suspects a fall" as why it fired
        assert "man-down alarm" in expl and "suspects a fall" not in expl, expl
        assert "earlier: the wearable suspects a fall" in await card.inner_text()

        # drawn on the map by Leaflet, on the offline grid (no tile server configured)
        marker = page.locator("#map.leaflet-container .leaflet-marker-icon.map-alert")
        await marker.first.wait_for()
        assert await marker.count() == 1  # the fall and the man-down alarm are one incident
        assert await page.locator("#map").get_attribute("data-base") == "grid"
        label = await marker.first.get_attribute("aria-label")
        assert "Officer Lindqvist" in label and "40.71280, -74.00600" in label and "gateway fix" in label, label
        assert "p1" in await marker.first.get_attribute("class")  # coloured as priority 1 (the man-down alarm)
        await marker.first.click()
        assert "picked" in await card.get_attribute("class")
        # the click opened the incident's detail, and the popup says where the position comes from
        await page.locator("#incident").wait_for(state="visible")
        assert "Officer Lindqvist" in await page.locator("#incident-h").inner_text()
        popup = await page.locator("#map .leaflet-popup-content").inner_text()
        assert "Position from the gateway" in popup and "not the wearable's" in popup and "Open incident" in popup, popup

        escalated = page.locator('#feed li.alert.escalated[data-kind="device_alarm"]')
        await escalated.wait_for(timeout=20_000)
        await shot(page, "supervisor-map-escalated")
        await card.get_by_role("button", name="Acknowledge").click()
        await page.locator('#feed li.alert[data-kind="device_alarm"][data-state="acknowledged"]').wait_for(timeout=10_000)
        # the old card kept "⚠ ESCALATED — not acknowledged in time" after the acknowledgement
        assert "ESCALATED" not in await card.inner_text()
        assert "escalated earlier, since acknowledged" in await card.inner_text()
        assert await page.locator("#feed li.alert.escalated").count() == 0
        # the incident's timeline: every step, who took it and when
        await card.locator("details.timeline summary").click()
        steps = await card.locator("details.timeline").inner_text()
        for said in ("New", "upgraded", "escalated", "Acknowledged", f"{agency}-sup1", "fall -> device_alarm"):
            assert said in steps, steps
        await shot(page, "supervisor-timeline")

        await alerts.resolve((await alerts_id(page)), "user:colleague", agency, "false_alarm")
        await page.locator("#map-empty").wait_for(timeout=10_000)
    assert not errors, errors


async def alerts_id(page):
    import uuid
    return uuid.UUID(await page.locator('#feed li.alert[data-kind="device_alarm"]').get_attribute("data-alert-id"))


async def test_heart_rate_plot_has_axes_and_times(database_url, mqtt_broker, agency, tmp_path):
    """The plot itself (uPlot, served by the backend), drawn in the page from rows as GET
    /officers/{id}/vitals answers them: a time axis in local 24-hour time, a bpm axis with its
    unit, the alert's instant marked, and a gap where no value was reported."""
    settings = backend_settings(database_url, *mqtt_broker, agency)
    await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        page = await _supervisor(browser, backend.url, agency, errors)
        drawn = await page.evaluate("""async () => {
          const { hrPlot } = await import("/static/hrplot.js");
          const t0 = Date.parse("2026-12-04T03:10:00Z");
          // a value every 2 s for 10 min, none reported from 4 min to 5 min (null), and no rows at all from 7 to 8 min
          const rows = Array.from({ length: 300 }, (_, i) => ({ time: new Date(t0 + i * 2000).toISOString(),
            heart_rate: i >= 120 && i < 150 ? null : 70 + Math.floor(i / 5) })).filter((_, i) => i < 210 || i >= 240);
          const box = document.createElement("div");
          box.style.width = "500px";
          document.getElementById("main").prepend(box);
          const h = await hrPlot(box, rows, { markAt: new Date(t0 + 300000).toISOString() });
          const u = h.plot;
          // the axes' strips are painted: count dark pixels left of and below the plotting area
          const ctx = u.ctx, b = u.bbox;
          const dark = (x, y, w, hgt) => { const d = ctx.getImageData(x, y, w, hgt).data; let n = 0;
            for (let k = 3; k < d.length; k += 4) if (d[k] > 128) n++; return n; };
          const gaps = [];  // [from, to] times between which nothing is drawn
          for (let i = 0; i < u.data[1].length; i++) if (u.data[1][i] == null) gaps.push(u.data[0][i]);
          return { x: h.ticks.x, y: h.ticks.y, xLabel: u.axes[0].label, yLabel: u.axes[1].label,
                   yAxisInk: dark(0, b.top, b.left, b.height), xAxisInk: dark(b.left, b.top + b.height, b.width, u.ctx.canvas.height - b.top - b.height),
                   legend: box.querySelector(".u-legend").textContent, label: h.figure.getAttribute("aria-label"),
                   markPx: u.valToPos((t0 + 300000) / 1000, "x"), width: u.bbox.width / devicePixelRatio,
                   gaps, spanGaps: !!u.series[1].spanGaps, n: u.data[0].length };
        }""")
        assert drawn["yLabel"] == "Heart rate (bpm)" and drawn["xLabel"] == "Local time (24 h)", drawn
        assert drawn["yAxisInk"] > 100 and drawn["xAxisInk"] > 100, drawn  # drawn, not just configured
        assert len(drawn["x"]) >= 3 and all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t) for t in drawn["x"]), drawn["x"]
        assert all(t.isdigit() for t in drawn["y"]) and int(drawn["y"][0]) <= 70 and int(drawn["y"][-1]) >= 129, drawn["y"]
        assert "bpm" in drawn["legend"] and "alert at" in drawn["label"] and "70 to 129 bpm" in drawn["label"], drawn
        assert 0 < drawn["markPx"] < drawn["width"]
        # not interpolated: 30 null values (4-5 min) and one inserted null in the silence of 7-8 min
        assert not drawn["spanGaps"] and len(drawn["gaps"]) == 31, drawn["gaps"]
        assert drawn["n"] == 271, drawn["n"]
        await shot(page, "supervisor-heart-rate-plot")
        # a time axis in 24-hour time even where the browser's locale says 12-hour
        ticks = await page.evaluate("""async () => {
          const { timeTicks } = await import("/static/hrplot.js");
          const t = Date.UTC(2026, 11, 4, 12, 0, 0) / 1000 + new Date().getTimezoneOffset() * 60;  // local 12:00
          return timeTicks([t + 3600 * 3, t + 3600 * 3 + 30]);
        }""")
        assert ticks == ["15:00:00", "15:00:30"], ticks
    assert not errors, errors
