"""``vigil dashboard screenshots``: one PNG of each page and state of the dashboard, taken in a
real Chromium on the demo's own system and data.

It starts exactly what ``vigil demo`` starts (``backend.local.demo.running_demo``: configured or
private Mosquitto and PostgreSQL, the demo's officers, wearables, accounts and gateway, the
simulated shift), has the first officer press SOS on their wearable, then signs in as each of
the four demo accounts in Debian's Chromium driven by Playwright (no ``playwright install``) and
walks each role's work, waiting for what each state must show before it is captured. The walk
(``walk_roles``) is what the Chromium tests of tests/dashboard/test_roles_on_demo_data.py check."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a container: no sandbox (no user namespaces), no GPU, and no background traffic.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
# an open alert's mark on the supervisor's map (Leaflet's marker, or the former SVG drawing)
ALERT_ON_MAP = "#map .map-alert, #map svg .marker"
# the heart-rate plot around an alert (uPlot's, or the former SVG drawing)
HR_PLOT = "#vitals figure.hr-plot .uplot, #vitals svg.hr-chart"
# generous: on a busy 2-core machine a scenario's moment can come late
WAIT_MS = 60_000

# (file stem, what it shows), in the order they are taken
SHOTS = (
    ("supervisor-queue", "supervisor: the alert queue beside the officer board"),
    ("supervisor-map", "supervisor: the map with the open alerts and officers' positions"),
    ("supervisor-incident", "supervisor: incident detail, timeline and the heart-rate plot around the alert"),
    ("supervisor-messages", "supervisor: messages to the wearable and colleagues told"),
    ("supervisor-acknowledged", "supervisor: the incident acknowledged, its timeline"),
    ("supervisor-warnings-after-reload", "supervisor: device removed and empty battery still flagged after a reload"),
    ("fleet-devices", "fleet admin: devices with battery and firmware"),
    ("fleet-gateways", "fleet admin: gateways as they are"),
    ("fleet-firmware", "fleet admin: firmware overview"),
    ("auditor-log", "auditor: the audit log"),
    ("auditor-incident-timeline", "auditor: one incident's timeline of who read what and why"),
    ("officer-own-page", "officer: their own alerts and who read their data"),
)


class ScreenshotError(RuntimeError):
    """The walk could not be done (no Chromium, no Playwright, a page never showed its state)."""


@dataclass
class Shot:
    name: str
    path: Path
    text: str  # what the captured part of the page says (the tests read it)


@contextlib.asynccontextmanager
async def launch_chromium(profile_dir: Path) -> AsyncIterator[object]:
    """A browser context of Debian's Chromium, driven by Playwright."""
    if not CHROMIUM.exists():
        raise ScreenshotError(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh)")
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        raise ScreenshotError("Playwright is not installed: pip install -e '.[test]'") from exc
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT)
        try:
            yield context
        finally:
            await context.close()


async def sign_in(context, base: str, username: str, password: str, landing: str, errors: list[str]):
    """A new tab (sessionStorage is per tab: each tab is its own person) signed in through the form."""
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{username}: {exc}"))
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + landing)
    return page


class _Camera:
    def __init__(self, out: Path, on_shot: Callable[[Shot], None]):
        self.out, self.on_shot, self.shots = out, on_shot, {}

    async def __call__(self, name: str, page, part=None) -> None:
        """Capture ``part`` (a locator) or the whole page."""
        path = self.out / f"{name}.png"
        if part is None:
            await page.screenshot(path=str(path), full_page=True)
            text = await page.locator("main, body").first.inner_text()
        else:
            await part.scroll_into_view_if_needed()
            await part.screenshot(path=str(path))
            text = await part.inner_text()
        shot = Shot(name, path, text)
        self.shots[name] = shot
        self.on_shot(shot)


async def walk_roles(context, base: str, out: Path, alert_id: str,
                     on_shot: Callable[[Shot], None] = lambda shot: None) -> tuple[dict[str, Shot], list[str]]:
    """Each demo account's work, one screenshot per page and state (``SHOTS``), on the demo's
    data once ``alert_id`` (an open SOS of the demo's officer account) is raised. Returns the
    shots by name and the pages' script errors."""
    from backend.local.demo import DEMO_ADMIN, DEMO_AUDITOR, DEMO_OFFICER, DEMO_PASSWORD, DEMO_SUPERVISOR

    from playwright.async_api import TimeoutError as PlaywrightTimeout

    out.mkdir(parents=True, exist_ok=True)
    shoot, errors = _Camera(out, on_shot), []

    # supervisor: the queue, the map, the incident, its messages, a reload
    sup = await sign_in(context, base, DEMO_SUPERVISOR, DEMO_PASSWORD, "/supervisor", errors)
    await sup.locator("#feed-state.live").wait_for(timeout=WAIT_MS)
    card = sup.locator(f'#feed li.alert[data-alert-id="{alert_id}"]')
    await card.wait_for(timeout=WAIT_MS)
    removed = sup.locator("#board tr[data-officer-id]", has_text="device removed")
    await removed.first.wait_for(timeout=WAIT_MS)  # the demo's device_off scenario
    await sup.locator("#board .battery-warn").first.wait_for(timeout=WAIT_MS)  # battery_low
    await shoot("supervisor-queue", sup)
    await sup.locator(ALERT_ON_MAP).first.wait_for(timeout=WAIT_MS)
    await shoot("supervisor-map", sup, sup.locator("#map-box"))

    await card.get_by_role("button", name="Details").click()
    await sup.locator("#incident").wait_for()
    await sup.locator("#incident-timeline li").first.wait_for(timeout=WAIT_MS)
    await sup.locator("#incident").get_by_role("button", name="Heart rate around the alert").click()
    await sup.locator(HR_PLOT).first.wait_for(timeout=WAIT_MS)
    with contextlib.suppress(PlaywrightTimeout):  # a first reading, when the windows have filled by now
        await sup.locator("#vitals-body .big", has_text="bpm").filter(has_not_text="—").first.wait_for(timeout=20_000)
    await shoot("supervisor-incident", sup)
    messages = sup.locator("#messages-box")
    await messages.wait_for(timeout=WAIT_MS)
    await shoot("supervisor-messages", sup, messages)
    await card.get_by_role("button", name="Acknowledge").click()
    await sup.locator(f'#feed li.alert[data-alert-id="{alert_id}"][data-state="acknowledged"]').wait_for(timeout=WAIT_MS)
    await sup.locator('#incident-timeline li[data-kind="acknowledged"]').wait_for(timeout=WAIT_MS)
    await shoot("supervisor-acknowledged", sup)
    await sup.reload()
    await sup.locator("#feed-state.live").wait_for(timeout=WAIT_MS)
    await removed.first.wait_for(timeout=WAIT_MS)
    await sup.locator("#board .battery-warn").first.wait_for(timeout=WAIT_MS)
    await shoot("supervisor-warnings-after-reload", sup, sup.locator("table.board"))

    # fleet admin: devices, gateways, firmware
    admin = await sign_in(context, base, DEMO_ADMIN, DEMO_PASSWORD, "/fleet", errors)
    await admin.locator("#devices tr[data-device-id]").first.wait_for(timeout=WAIT_MS)
    await admin.locator("#devices .battery-warn").first.wait_for(timeout=WAIT_MS)
    await shoot("fleet-devices", admin)
    gateways = admin.locator('section[aria-labelledby="gw-h"]')
    await gateways.locator("#gateways tr").first.wait_for(timeout=WAIT_MS)
    await shoot("fleet-gateways", admin, gateways)
    firmware = admin.locator('section[aria-labelledby="fw-h"]')
    await firmware.locator("#firmware-current:not(:text('Loading…'))").wait_for(timeout=WAIT_MS)
    await shoot("fleet-firmware", admin, firmware)

    # auditor: the log, and the incident's timeline (the supervisor's read of the heart rate in it)
    auditor = await sign_in(context, base, DEMO_AUDITOR, DEMO_PASSWORD, "/audit", errors)
    await auditor.locator("#log tr").first.wait_for(timeout=WAIT_MS)
    await shoot("auditor-log", auditor)
    await auditor.get_by_label("Incident id").fill(alert_id)
    await auditor.get_by_role("button", name="Show incident timeline").click()
    box = auditor.locator("#incident-box")
    await box.locator("#incident-entries li", has_text="heart rate").first.wait_for(timeout=WAIT_MS)
    await shoot("auditor-incident-timeline", auditor, box)

    # the officer: their own page, their SOS on it
    officer = await sign_in(context, base, DEMO_OFFICER, DEMO_PASSWORD, "/me", errors)
    await officer.locator("#my-alerts tr").first.wait_for(timeout=WAIT_MS)
    await officer.locator("#accesses tr").first.wait_for(timeout=WAIT_MS)
    await shoot("officer-own-page", officer)
    return shoot.shots, errors


async def capture(out: Path, *, officers: int = 8, port: int | None = None, workdir: Path | None = None) -> dict[str, Shot]:
    """Start the demo's system, make an SOS happen, walk the four roles; the shots by name."""
    from backend.cli.progress import Bar
    from backend.local import infra
    from backend.local.demo import FIRST_DEVICE_ID, running_demo

    workdir = (workdir or Path(".vigil/screenshots")).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bar = Bar("screenshots")
    steps = len(SHOTS) + 2  # the system up, the SOS on the page, then each shot

    def taken(shot: Shot) -> None:
        print(shot.path, flush=True)
        bar(steps - len(SHOTS) + len(shots_so_far) + 1, steps, shot.name)
        shots_so_far.append(shot.name)

    shots_so_far: list[str] = []
    bar(0, steps, "starting the demo's system")
    async with running_demo(officers, port or infra.free_port(), workdir, stop, database="vigil_screenshots") as demo:
        runtime = demo.backend.runtime
        await _wait(lambda: runtime.metrics.accepted_count("telemetry") > 0, 60, "telemetry from the simulated wearables")
        bar(1, steps, "an SOS on the first officer's wearable")
        wearable = demo.fleet.wearables[FIRST_DEVICE_ID]
        await asyncio.wait_for(wearable.press_sos().raised.wait(), 30)  # the firmware raises it after a 2 s hold
        alert_id = await open_sos_of(runtime, FIRST_DEVICE_ID)
        bar(2, steps, "walking the four roles")
        async with launch_chromium(workdir / "chromium-profile") as browser:
            shots, errors = await walk_roles(browser, demo.backend.url, Path(out).resolve(), alert_id, taken)
    bar.close()
    if errors:
        raise ScreenshotError("the pages raised script errors: " + "; ".join(errors))
    return shots


async def open_sos_of(runtime, device_id: int) -> str:
    """The id of the open SOS of ``device_id`` once the backend raised it."""
    def found():
        return next((a for a in runtime.alerts.open_incidents() if a.device_id == device_id and a.kind == "sos"), None)
    await _wait(lambda: found() is not None, 30, f"SOS of device 0x{device_id:08X} at the backend")
    return str(found().id)


async def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise ScreenshotError(f"no {what} within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


def run_screenshots(out: Path, officers: int = 8) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"Starting the demo's system and walking the dashboard as each role; PNGs into {out}", file=sys.stderr)
    shots = asyncio.run(capture(out, officers=officers))
    print(f"{len(shots)} screenshots in {Path(out).resolve()}", file=sys.stderr)
    return 0
