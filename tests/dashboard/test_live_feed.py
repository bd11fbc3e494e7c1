"""The supervisor's live feed in a real Chromium (issue 15 finding 9): the Live badge follows the
server's heartbeat, not the open socket; a feed that stops is shown as stopped and resumed from
the last event id; a connection that fell behind is told why and resumes; a burst of
officer-status changes leaves the feed live with each officer's latest status on the board."""
from __future__ import annotations

import asyncio

import pytest

from backend.app.server import serve
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, IDLE_DEVICE, PASSWORD, _card, _seed, chromium, shot
from tests.gateway.conftest import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")

HEARTBEAT_S = 0.5
# The badge's history, recorded in the page: a state that lasts less than a poll is still seen.
RECORD_BADGE = """() => {
  window.__badge = [];
  const badge = document.getElementById("feed-state");
  new MutationObserver(() => window.__badge.push(badge.className + " " + badge.textContent))
    .observe(badge, { childList: true, characterData: true, subtree: true, attributes: true });
}"""


async def _supervisor(browser, base: str, agency: str, errors: list[str], route=None):
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if route is not None:
        await page.route_web_socket("**/api/v1/ws*", route)
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(f"{agency}-sup1")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/supervisor")
    await page.locator("#feed-state.live").wait_for(timeout=10_000)
    await page.evaluate(RECORD_BADGE)
    return page


async def test_a_feed_that_stops_sending_is_shown_stopped_and_resumed(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, live_heartbeat_s=HEARTBEAT_S)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        sockets: list = []
        stalled, release = asyncio.Event(), asyncio.Event()

        async def feed(ws) -> None:
            sockets.append(ws)
            if len(sockets) > 1:
                await release.wait()  # the reconnect reaches the backend once the test saw the page say so
            server = ws.connect_to_server()
            if len(sockets) == 1:  # the first connection stays open but stops carrying anything
                server.on_message(lambda message: None if stalled.is_set() else ws.send(message))

        page = await _supervisor(browser, backend.url, agency, errors, route=feed)
        stalled.set()
        await backend.runtime.alerts.raise_alert(
            agency_id=agency, device_id=DEVICE, seq=1, kind="sos", officer_id=seeded["okafor"], officer_name="Officer Okafor",
            explanation={"detector": "device", "event": "sos", "device_priority": 1})
        # the old page said "● Live" here for as long as the socket stayed open
        await page.locator("#feed-state.down", has_text="No heartbeat").wait_for(timeout=10_000)
        assert "reconnecting" in await page.locator("#feed-state").inner_text()
        await shot(page, "supervisor-feed-stalled")
        await wait_until(lambda: len(sockets) > 1, 20, what="the page reconnecting")
        release.set()
        assert "last_event_id=" in sockets[1].url
        await _card(page, "sos").wait_for(timeout=10_000)  # raised while the feed was stuck
        await page.locator("#feed-state.live").wait_for(timeout=10_000)
    assert not errors, errors


async def test_a_page_that_fell_behind_is_told_why_and_resumes(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, live_heartbeat_s=HEARTBEAT_S)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        page = await _supervisor(browser, backend.url, agency, errors)
        hub = backend.runtime.hub
        for i in range(1500):  # more than a connection may have waiting: it cannot keep up
            hub.publish(agency, "probe", {"n": i})
        await wait_until(lambda: hub.dropped == 1, 10, what="the hub closing the page's connection")
        await page.wait_for_function("window.__badge.some((t) => t.includes('fell behind') && t.includes('reconnecting'))",
                                     timeout=10_000)
        await page.locator("#feed-state.live").wait_for(timeout=10_000)
        await backend.runtime.alerts.raise_alert(
            agency_id=agency, device_id=IDLE_DEVICE, seq=1, kind="device_alarm", officer_id=seeded["lindqvist"],
            officer_name="Officer Lindqvist", explanation={"detector": "device", "event": "mandown_alarm", "device_priority": 1})
        await _card(page, "device_alarm").wait_for(timeout=10_000)
    assert not errors, errors


async def test_a_burst_of_status_changes_leaves_the_feed_live(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, live_heartbeat_s=HEARTBEAT_S)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        page = await _supervisor(browser, backend.url, agency, errors)
        row = page.locator(f'#board tr[data-officer-id="{seeded["lindqvist"]}"]')
        await row.wait_for()
        hub = backend.runtime.hub
        status = {"officer_id": seeded["lindqvist"], "officer_name": "Officer Lindqvist", "unit": "Patrol 5",
                  "device_id": IDLE_DEVICE, "device": "connected", "worn": True, "charging": False, "firmware": "1.0.0",
                  "incident": None, "gateway": "gw", "last_seen": None}
        for i in range(3000):  # > 1,000 changes of one officer; the last says the battery is nearly flat
            last = i == 2999
            hub.publish(agency, "officer_status", {**status, "battery_pct": 3 if last else 50 + i % 40,
                                                   "state": "check" if last else "ok",
                                                   "reasons": ["battery_low"] if last else []})
        await row.get_by_text("battery low").wait_for(timeout=10_000)
        assert "3 %" in await row.inner_text()
        assert hub.dropped == 0
        await page.wait_for_timeout(3 * HEARTBEAT_S * 1000)
        assert "live" in await page.locator("#feed-state").get_attribute("class")
        assert not await page.evaluate("window.__badge.some((t) => t.includes('reconnecting'))")
    assert not errors, errors
