"""A supervisor works an incident in a real Chromium against the real backend, Mosquitto and
PostgreSQL (issue 21): opens the alert's detail, escalates it by hand with a reason, adds a note,
assigns a responder, reads the heart rate around the alert, and sees all of it in the incident's
timeline (with their own read of the heart rate and its purpose); a reload keeps it; the auditor
opens the same incident's timeline from the audit log."""
from __future__ import annotations

import datetime as dt

import pytest

from backend.app.server import serve
from backend.db import engine as db
from tests.backend.conftest import backend_settings
from tests.dashboard.test_dashboard_e2e import CHROMIUM, DEVICE, PASSWORD, _card, _seed, chromium, shot
from tests.gateway.conftest import wait_until
from tests.privacy.conftest import insert_features

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")

REASON = "no answer on the radio for 2 min"
NOTE = "Called the officer's phone: no answer"


async def _signed_in(browser, base: str, username: str, landing: str, errors: list[str]):
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{username}: {exc}"))
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + landing)
    return page


async def test_supervisor_escalates_notes_assigns_and_sees_the_timeline(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, escalate_after_s=600, audit_drain_interval_s=0.2)
    seeded = await _seed(settings, agency)
    errors: list[str] = []
    async with serve(settings) as backend, chromium(tmp_path) as browser:
        page = await _signed_in(browser, backend.url, f"{agency}-sup1", "/supervisor", errors)
        await page.locator("#feed-state.live").wait_for(timeout=10_000)
        colleague = await _signed_in(browser, backend.url, f"{agency}-sup2", "/supervisor", errors)  # another tab, another person
        await colleague.locator("#feed-state.live").wait_for(timeout=10_000)
        alert = await backend.runtime.alerts.raise_alert(
            agency_id=agency, device_id=DEVICE, seq=1, kind="sos", officer_id=seeded["okafor"], officer_name="Officer Okafor",
            explanation={"detector": "device", "event": "sos"})
        # heart rate at 1 Hz from 10 min before the alert (what the policy would open) until it
        raised = alert.raised_at
        engine = db.create_engine(settings)
        try:
            await insert_features(engine, DEVICE, seeded["okafor"],
                                  [raised + dt.timedelta(seconds=s) for s in range(-600, 1)])
        finally:
            await engine.dispose()

        card = _card(page, "sos")
        await card.wait_for(timeout=10_000)
        await card.get_by_role("button", name="Details").click()
        detail = page.locator("#incident")
        await detail.wait_for()
        assert "SOS pressed — Officer Okafor" in await page.locator("#incident-h").inner_text()

        # escalate by hand, with the reason: the card stands out with who and why, for every supervisor
        await page.get_by_label("Reason to escalate").fill(REASON)
        await detail.get_by_role("button", name="Escalate").click()
        tag = card.locator(".tag.escalated")
        await tag.wait_for(timeout=10_000)
        assert f"ESCALATED by {agency}-sup1: {REASON}" in await tag.inner_text()
        assert await page.locator("#esc-form").is_hidden()  # standing: no second escalation offered

        await page.get_by_label("Note (kept with the incident").fill(NOTE)
        await detail.get_by_role("button", name="Add note").click()
        await page.locator("#incident-timeline li.note").get_by_text(NOTE).wait_for(timeout=10_000)

        await page.get_by_label("Responder (person or unit)").fill("Unit 7")
        await detail.get_by_role("button", name="Assign responder").click()
        await page.locator("#incident-responder").get_by_text("Unit 7").wait_for(timeout=10_000)
        assert "Responder: Unit 7" in await card.inner_text()
        # the colleague's queue heard all of it on the live feed, without reloading
        theirs = _card(colleague, "sos")
        await theirs.get_by_text("Responder: Unit 7").wait_for(timeout=10_000)
        said = await theirs.inner_text()
        assert f"ESCALATED by {agency}-sup1: {REASON}" in said and "1 note" in said, said

        # the heart rate around the alert: from 2 min before it, the alert's instant marked
        await detail.get_by_role("button", name="Heart rate around the alert").click()
        chart = page.locator("#vitals figure.hr-plot")
        await chart.locator(".uplot canvas").wait_for(timeout=10_000)
        drawn = await chart.evaluate("""(f) => { const u = f.vigilPlot.plot;
          return { values: u.data[1].filter((v) => v != null).length, yLabel: u.axes[1].label, xLabel: u.axes[0].label,
                   ticks: f.vigilPlot.ticks.x, first: u.data[0][0], last: u.data[0][u.data[0].length - 1],
                   min: u.scales.x.min, max: u.scales.x.max, label: f.getAttribute("aria-label") }; }""")
        # 120 s before until the alert, a value a second; it drew 601 (from 10 min before)
        assert 118 <= drawn["values"] <= 124, drawn
        assert drawn["yLabel"] == "Heart rate (bpm)" and len(drawn["ticks"]) >= 3, drawn
        assert "; alert at " in drawn["label"], drawn  # the alert's instant is marked
        await shot(page, "supervisor-incident-detail")
        # the alert's instant stays on the axis when the measurements begin only after it
        marked = await page.evaluate("""async () => {
          const { hrPlot } = await import("/static/hrplot.js");
          const t0 = Date.parse("2026-12-04T03:10:00Z");
          const rows = [1, 2, 3].map((k) => ({ time: new Date(t0 + k * 1000).toISOString(), heart_rate: 90 + k }));
          const h = await hrPlot(document.getElementById("main"), rows, { markAt: new Date(t0).toISOString() });
          const inside = h.plot.scales.x.min <= t0 / 1000 && h.plot.valToPos(t0 / 1000, "x") >= 0;
          h.destroy();
          return inside;
        }""")
        assert marked

        # acknowledging ends the escalation's banner; the escalation stays in the history
        await card.get_by_role("button", name="Acknowledge").click()
        await page.locator('#feed li.alert[data-kind="sos"][data-state="acknowledged"]').wait_for(timeout=10_000)
        assert await card.locator(".tag.escalated").count() == 0
        assert "escalated earlier, since acknowledged" in await card.inner_text()
        assert await page.locator("#esc-form").is_visible()  # may be escalated again (backup needed)

        # a reload reopens the same incident with everything in its timeline, the read of the heart rate too
        await wait_until(lambda: backend.runtime.alerts.pending == 0, 10, what="every change stored")
        await page.reload()
        await page.locator("#feed-state.live").wait_for(timeout=10_000)
        await page.locator("#incident-timeline li.read").first.wait_for(timeout=10_000)
        steps = await page.locator("#incident-timeline").inner_text()
        for said in ("Raised", "Escalated", REASON, NOTE, "Responder assigned", "Unit 7", "Acknowledged",
                     f"{agency}-sup1 (supervisor) read heart rate and activity for safety_response"):
            assert said in steps, (said, steps)
        kinds = await page.locator("#incident-timeline li").evaluate_all("els => els.map((e) => e.dataset.kind)")
        assert kinds.index("escalated") < kinds.index("note") < kinds.index("responder_assigned") < kinds.index("acknowledged")
        assert "Unit 7" in await page.locator("#incident-responder").inner_text()
        await shot(page, "supervisor-incident-timeline")

        # the auditor: the audit log's entry about the alert opens its per-incident timeline
        auditor = await _signed_in(browser, backend.url, f"{agency}-auditor", "/audit", errors)
        await auditor.get_by_label("Incident id").fill(str(alert.id))
        await auditor.get_by_role("button", name="Show incident timeline").click()
        box = auditor.locator("#incident-box")
        await box.get_by_text(NOTE).wait_for(timeout=10_000)
        text = await box.inner_text()
        assert "sos alert of Officer Okafor" in text
        for said in (f"{agency}-sup1 (supervisor)", "heart rate and activity", "safety_response", "Escalated", REASON,
                     "Responder assigned", "Unit 7"):
            assert said in text, (said, text)
        assert "alert:" not in text and "user:" not in text
        await shot(auditor, "auditor-incident-timeline")
        # from the log itself: an entry about the incident links to the same timeline
        await box.get_by_role("button", name="Close incident timeline").click()
        await auditor.locator("#log button.incident-link").first.click()
        await box.get_by_text(NOTE).wait_for(timeout=10_000)
    assert not errors, errors
