"""/docs works on a machine without internet (issue 21: it was blank, Swagger UI came from a CDN):
in a real Chromium that may reach nothing but the backend, the API's operations are listed."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from backend.app.server import serve
from backend.db import engine as db
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, chromium

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")


async def test_docs_render_with_no_internet(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    db.upgrade(settings)
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        here = urlsplit(backend.url).netloc
        outside: list[str] = []

        async def only_here(route):
            if urlsplit(route.request.url).netloc == here:
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.route("**/*", only_here)
        await page.goto(backend.url + "/docs")
        await page.locator(".swagger-ui .opblock").first.wait_for(timeout=20_000)
        assert await page.locator(".swagger-ui .opblock").count() > 20
        assert "/api/v1/alerts" in await page.locator(".swagger-ui").inner_text()
        assert not outside, outside  # nothing asked of the internet
    assert not errors, errors


async def test_the_openapi_document_declares_bearer_and_refusals(database_url, mqtt_broker, agency):
    import httpx
    settings = backend_settings(database_url, *mqtt_broker, agency)
    db.upgrade(settings)
    async with serve(settings) as backend, httpx.AsyncClient(base_url=backend.url) as http:
        doc = (await http.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    retire = doc["paths"]["/api/v1/devices/{device_id}/retire"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(retire)  # was only 200 and 422
    acknowledge = doc["paths"]["/api/v1/alerts/{alert_id}/acknowledge"]["post"]["responses"]
    assert {"401", "403", "404", "409"} <= set(acknowledge)
    assert "503" in doc["paths"]["/api/v1/alerts"]["get"]["responses"]
