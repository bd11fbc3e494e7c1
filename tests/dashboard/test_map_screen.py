"""The supervisor's map (issue 21) in a real Chromium against the real backend, Mosquitto and
PostgreSQL: Leaflet, served by the backend itself, draws one marker per place of an open alert,
coloured by priority, on an offline grid, also after a reload, and the page asks no other host
for anything; officers at their last gateways, the one heard 5 min ago faded (that answer of
GET /live/positions is given to the page, as a real fix would take minutes to age); with a tile server configured (VIGIL_MAP_TILE_URL; here a local one on another
origin) the tiles come from it and the page's Content-Security-Policy lets them in; without the
installed libraries the alerts still show and the page says to run scripts/setup.sh."""
from __future__ import annotations

import datetime as dt
import http.server
import logging
import threading
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from backend.app.config import BackendSettings
from backend.app.server import serve
from backend.dashboard import pages
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, IDLE_DEVICE, PASSWORD, _card, _seed, chromium, shot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")

GATEWAY_FIX = {"lat": 40.7128, "lon": -74.006, "source": "gateway"}
DEVICE_FIX = {"lat": 40.7180, "lon": -74.0010, "source": "device"}   # about 700 m away
ALERTS = 'css=#map.leaflet-container .leaflet-marker-icon.map-alert'


async def _supervisor(browser, base: str, agency: str, errors: list[str], requests: list[str]):
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # (a Content-Security-Policy refusal is reported only here; the browser's own favicon request is not the page's)
    page.on("console", lambda msg: errors.append(f"{msg.text} {msg.location.get('url')}")
            if msg.type == "error" and not str(msg.location.get("url")).endswith("/favicon.ico") else None)
    page.on("request", lambda req: requests.append(req.url))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(f"{agency}-sup1")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/supervisor")
    await page.locator("#feed-state.live").wait_for(timeout=10_000)
    return page


async def _two_alerts(backend, agency: str, seeded: dict) -> None:
    alerts = backend.runtime.alerts
    await alerts.raise_alert(agency_id=agency, device_id=DEVICE, seq=1, kind="sos", officer_id=seeded["okafor"],
                             officer_name="Officer Okafor", location=GATEWAY_FIX,
                             explanation={"detector": "device", "event": "sos", "gateway": "gw1"})
    await alerts.raise_alert(agency_id=agency, device_id=IDLE_DEVICE, seq=1, kind="fall", officer_id=seeded["lindqvist"],
                             officer_name="Officer Lindqvist", location=DEVICE_FIX,
                             explanation={"detector": "device", "event": "fall_suspected", "device_priority": 2})


def _hosts(urls: list[str]) -> set[str]:
    return {urlsplit(u).netloc for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")}


async def test_offline_map_marks_each_open_alert_and_asks_no_other_host(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    assert settings.map_tile_url is None  # the default: no tile server
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    requests: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        page = await _supervisor(browser, backend.url, agency, errors, requests)
        response = await page.request.get(backend.url + "/supervisor")
        csp = response.headers["content-security-policy"]
        assert "img-src 'self' data:;" in csp, csp
        await _two_alerts(backend, agency, seeded)
        for attempt in ("first load", "after a reload"):
            markers = page.locator(ALERTS)
            await markers.nth(1).wait_for(timeout=10_000)
            assert await markers.count() == 2, attempt
            assert await page.locator("#map").get_attribute("data-base") == "grid"
            labels = {await markers.nth(i).get_attribute("aria-label"): await markers.nth(i).get_attribute("class")
                      for i in range(2)}
            by_officer = {label.split(" (")[0]: cls for label, cls in labels.items()}
            assert "p1" in by_officer["Officer Okafor"] and "p2" in by_officer["Officer Lindqvist"], labels
            # both fit in the view
            box = await page.locator("#map").bounding_box()
            for i in range(2):
                m = await markers.nth(i).bounding_box()
                assert box["x"] <= m["x"] and m["x"] + m["width"] <= box["x"] + box["width"], (attempt, m, box)
                assert box["y"] <= m["y"] and m["y"] + m["height"] <= box["y"] + box["height"], (attempt, m, box)
            assert await page.locator("#map .leaflet-control-scale-line").count() == 1
            assert "No map server configured" in await page.locator("#map .leaflet-control-attribution").inner_text()
            if attempt == "first load":
                await shot(page, "supervisor-map-offline")
                await page.reload()
                await page.locator("#feed-state.live").wait_for(timeout=10_000)

        # officers at their last gateways: the answer of GET /live/positions as the backend gives it, one
        # officer heard 5 min ago (a real one would take minutes to age); that one is faded
        now = dt.datetime.now(dt.timezone.utc)
        heard = {"Officer Okafor": now, "Officer Lindqvist": now - dt.timedelta(minutes=5)}
        officers = [{"officer_id": i + 1, "officer_name": name, "lat": 40.7150 + i / 100, "lon": -74.0080, "source": "gateway",
                     "gateway_id": f"gw{i + 1}", "heard_at": at.isoformat(), "age_s": (now - at).total_seconds()}
                    for i, (name, at) in enumerate(heard.items())]
        crowd = [{"officer_id": 10 + k, "officer_name": f"Officer Crowd{k}", **GATEWAY_FIX, "gateway_id": "gw1",
                  "heard_at": now.isoformat(), "age_s": 0} for k in range(4)]  # four heard at the SOS's gateway
        officers += crowd
        await page.route("**/api/v1/live/positions", lambda route: route.fulfill(
            json={"officers": officers}, headers={"Content-Type": "application/json"}))
        squares = page.locator("#map .leaflet-marker-icon.map-officer")
        await squares.nth(2).wait_for(timeout=10_000)  # messages.js asks every 5 s
        assert await squares.count() == 3  # one per place
        assert await page.locator("#map .leaflet-marker-icon.map-officer.stale").count() == 1
        # a crowd at one gateway: three named under its square, the rest counted
        assert await page.locator("#map .map-officer-fix", has_text="Officer Crowd").count() == 3
        assert await page.locator("#map .leaflet-tooltip", has_text="+1 more officers here").count() == 1
        stale = page.locator("#map .map-officer-fix.stale")
        assert await stale.count() == 1 and "Officer Lindqvist · 5 min" in await stale.inner_text()
        fresh = await page.locator('#map .map-officer-fix[data-officer-id="1"]:not(.stale)').get_attribute("title")
        assert fresh.startswith("Officer Okafor — near gateway gw1 (gateway position), heard ") and fresh.endswith("s ago"), fresh
        for i in range(3):  # the view grew to take them in
            m, box = await squares.nth(i).bounding_box(), await page.locator("#map").bounding_box()
            assert box["y"] <= m["y"] and m["y"] + m["height"] <= box["y"] + box["height"], (m, box)
        await shot(page, "supervisor-map-officers")

        # the fall's popup: where its position comes from (the wearable), and a way to its incident
        lindqvist = page.locator(ALERTS + '[aria-label^="Officer Lindqvist"]')
        await lindqvist.focus()
        await lindqvist.press("Enter")  # keyboard: Leaflet opens the popup
        popup = page.locator("#map .leaflet-popup-content")
        await popup.wait_for()
        text = await popup.inner_text()
        assert "Position from the wearable's own fix" in text and "Officer Lindqvist" in text and "Reported" in text, text
        await popup.get_by_role("button", name="Open incident").click()
        # the SOS's popup names the officers heard at its place (their square lies under its marker)
        okafor = page.locator(ALERTS + '[aria-label^="Officer Okafor"]')
        await okafor.focus()
        await okafor.press("Enter")
        here = page.locator("#map .leaflet-popup-content", has_text="Officers last heard here")  # (the fall's fades out)
        await here.wait_for()
        said = await here.inner_text()
        assert all(f"Officer Crowd{k} (" in said for k in range(4)), said
        await page.locator("#incident").wait_for(state="visible")
        assert "Officer Lindqvist" in await page.locator("#incident-h").inner_text()
        assert "picked" in await _card(page, "fall").get_attribute("class")

        # the libraries came from the backend itself, and nothing from anywhere else
        assert any(u.endswith("/static/vendor/leaflet/leaflet-src.esm.js") for u in requests)
        assert any(u.endswith("/static/vendor/leaflet/leaflet.css") for u in requests)
        assert _hosts(requests) == {urlsplit(backend.url).netloc}, sorted(_hosts(requests))
    assert not errors, errors


class _Tiles(http.server.BaseHTTPRequestHandler):
    """A tile server on another origin: any path answers Leaflet's marker image as a PNG."""
    png = b""
    paths: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def log_message(self, *args):
        pass


async def test_tiles_come_from_the_configured_server(database_url, mqtt_broker, agency, tmp_path):
    tiles = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Tiles)
    threading.Thread(target=tiles.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{tiles.server_port}"
    _Tiles.paths = []
    _Tiles.png = (pages.VENDOR["leaflet"] / "images" / "marker-icon.png").read_bytes()
    try:
        settings = backend_settings(database_url, *mqtt_broker, agency, map_tile_url=origin + "/tiles/{z}/{x}/{y}.png",
                                    map_tile_attribution="Test tiles <b>©</b>", map_tile_max_zoom=18)
        seeded = await _seed(settings, agency)
        errors: list[str] = []
        requests: list[str] = []
        async with serve(settings) as backend, chromium(tmp_path) as browser:
            page = await _supervisor(browser, backend.url, agency, errors, requests)
            await _two_alerts(backend, agency, seeded)
            await page.locator(ALERTS).nth(1).wait_for(timeout=10_000)
            assert await page.locator("#map").get_attribute("data-base") == "tiles"
            await page.locator("#map img.leaflet-tile-loaded").first.wait_for(timeout=10_000)
            assert _Tiles.paths and all(p.startswith("/tiles/") and p.endswith(".png") for p in _Tiles.paths), _Tiles.paths
            z = {int(p.split("/")[2]) for p in _Tiles.paths}
            assert all(10 <= level <= 17 for level in z), z  # fitted to the alerts (17 at most), not the world
            # the attribution is shown as text, never as markup
            assert "Test tiles <b>©</b>" in await page.locator("#map .leaflet-control-attribution").inner_text()
            csp = (await page.request.get(backend.url + "/supervisor")).headers["content-security-policy"]
            assert f"img-src 'self' data: {origin};" in csp, csp
            assert _hosts(requests) == {urlsplit(backend.url).netloc, urlsplit(origin).netloc}, sorted(_hosts(requests))
            await shot(page, "supervisor-map-tiles")
        assert not errors, errors
    finally:
        tiles.shutdown()
        tiles.server_close()


async def test_without_the_libraries_the_alerts_show_and_the_page_says_what_to_do(
        database_url, mqtt_broker, agency, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pages, "VENDOR", {name: tmp_path / "absent" / name for name in pages.VENDOR})
    settings = backend_settings(database_url, *mqtt_broker, agency)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    requests: list[str] = []
    with caplog.at_level(logging.ERROR, logger="vigil.dashboard"):
        async with serve(settings) as backend, chromium(tmp_path) as browser:
            assert "run scripts/setup.sh" in caplog.text and "leaflet, uplot" in caplog.text, caplog.text
            async with httpx.AsyncClient() as http:
                answer = await http.get(backend.url + "/static/vendor/leaflet/leaflet-src.esm.js")
            assert answer.status_code == 503 and "run scripts/setup.sh" in answer.text, answer.text
            page = await _supervisor(browser, backend.url, agency, errors, requests)
            await _two_alerts(backend, agency, seeded)
            await _card(page, "sos").wait_for(timeout=10_000)  # the feed does not need the map
            status = page.locator("#map-status")
            await status.wait_for(state="visible", timeout=10_000)
            assert "The map library (Leaflet) is not available from this server: run scripts/setup.sh" in await status.inner_text()
    # the browser logs the refused vendor files; nothing else went wrong on the page
    assert errors and not [e for e in errors if "/static/vendor/" not in e], errors


def test_a_tile_url_that_is_no_template_is_refused():
    with pytest.raises(ValidationError, match=r"must contain \{x\}, \{y\}"):
        BackendSettings(map_tile_url="https://tiles.example/{z}.png")
    with pytest.raises(ValidationError, match="must be an http"):
        BackendSettings(map_tile_url="file:///srv/tiles/{z}/{x}/{y}.png")
    ok = BackendSettings(map_tile_url="https://{s}.tile.example/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://*.tile.example;" in pages.content_security_policy(ok.map_tile_url)
    assert BackendSettings(map_tile_url="").map_tile_url is None


async def test_vendor_files_are_served_from_the_installed_packages():
    app = FastAPI()
    pages.install(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vigil") as http:
        for path, kind in (("/static/vendor/leaflet/leaflet-src.esm.js", "javascript"), ("/static/vendor/leaflet/leaflet.css", "css"),
                           ("/static/vendor/leaflet/images/marker-icon.png", "image/png"),
                           ("/static/vendor/uplot/uPlot.esm.js", "javascript"), ("/static/vendor/uplot/uPlot.min.css", "css"),
                           ("/static/map.js", "javascript")):
            answer = await http.get(path)
            assert answer.status_code == 200 and kind in answer.headers["content-type"], (path, answer.status_code)
