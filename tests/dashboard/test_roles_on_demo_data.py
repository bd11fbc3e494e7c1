"""Each of the four demo accounts at work in a real Chromium on the DEMO's own system and data
(issue 21): ``running_demo`` (what `vigil demo` starts: private PostgreSQL and Mosquitto, the
demo's officers, wearables running the firmware, the gateway over the virtual BlueZ and the
scenarios of a shift), the first officer presses SOS on their wearable, and ``walk_roles`` (what
`vigil dashboard screenshots` does) signs in as supervisor, fleet admin, auditor and officer.

Checked here: the SOS in the queue and on the map, the incident's timeline and heart-rate plot,
the demo's device taken off and low battery still flagged after a reload, the demo's gateway as
it is, the auditor's timeline of the incident with the supervisor's read in it, the officer's own
alert in words; and the command itself writes one real PNG per page and state."""
from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from backend.cli import main
from backend.dashboard.screenshots import CHROMIUM, SHOTS, launch_chromium, open_sos_of, walk_roles
from backend.local import infra
from backend.local.demo import DEMO_GATEWAY, FIRST_DEVICE_ID, running_demo
from tests.gateway.conftest import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh installs it)"),
]
pytest.importorskip("playwright.async_api", reason="needs playwright (pip install -e '.[test]')")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def row_of(board: str, officer: str, names: dict) -> str:
    """The officer's row in the board's text: from their name to the next officer's."""
    start = board.index(officer)
    ends = [board.find(other, start + 1) for other in names.values() if other != officer]
    return board[start:min([e for e in ends if e > start] or [len(board)])]


def test_the_command_writes_a_png_of_each_page(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # its keys, services and browser profile under ./.vigil
    monkeypatch.setenv("VIGIL_QUIET", "0")  # restored afterwards: --quiet sets it for this process
    out = tmp_path / "artifacts" / "screenshots"
    assert main(["--quiet", "dashboard", "screenshots", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    for name, _ in SHOTS:
        path = out / f"{name}.png"
        assert str(path) in printed, printed  # each path printed as it is written
        width, height = png_size(path)
        assert width >= 300 and height >= 150, (name, width, height)
        assert path.stat().st_size > 8_000, (name, path.stat().st_size)  # a drawn page, not a blank
    assert len({(out / f"{n}.png").read_bytes() for n, _ in SHOTS}) == len(SHOTS)  # each a different picture


async def test_each_role_walks_its_work_on_the_demo_data(tmp_path):
    stop = asyncio.Event()
    async with running_demo(8, infra.free_port(), tmp_path / "demo", stop, database="vigil_roles_test") as demo:
        runtime = demo.backend.runtime
        await wait_until(lambda: runtime.metrics.accepted_count("telemetry") > 0, 60, what="telemetry from the demo")
        await asyncio.wait_for(demo.fleet.wearables[FIRST_DEVICE_ID].press_sos().raised.wait(), 30)
        alert_id = await open_sos_of(runtime, FIRST_DEVICE_ID)
        names = {d: name for d, (_, name) in demo.devices.items()}
        by_scenario = {scenario: names[d] for d, scenario in zip(demo.devices, demo.plan)}
        async with launch_chromium(tmp_path / "profile") as browser:
            shots, errors = await walk_roles(browser, demo.backend.url, tmp_path / "shots", alert_id)
    assert not errors, errors
    said = {name: shot.text for name, shot in shots.items()}
    me = names[FIRST_DEVICE_ID]

    # supervisor: the SOS in the queue with its priority in words; on the map by name
    assert me in said["supervisor-queue"] and "Priority 1" in said["supervisor-queue"], said["supervisor-queue"]
    assert f"{me} (SOS pressed)" in said["supervisor-map"], said["supervisor-map"]  # the alert's label on the map
    incident = said["supervisor-incident"]
    assert f"SOS pressed — {me}" in incident and "Timeline" in incident and "Raised" in incident, incident
    assert "safety_response" in incident and "Heart rate" in incident, incident  # the plot, its purpose shown
    assert "Acknowledged" in said["supervisor-acknowledged"], said["supervisor-acknowledged"]
    # the reload keeps the demo's warning states (they came only from the live feed before)
    board = said["supervisor-warnings-after-reload"]
    removed, empty = row_of(board, by_scenario["device_off"], names), row_of(board, by_scenario["battery_low"], names)
    assert "device removed" in removed and "OK" not in removed, removed
    assert "battery low" in empty and "OK" not in empty, empty
    assert "OK" in row_of(board, by_scenario["car_report"], names)  # a quiet officer is not flagged

    # fleet admin: the demo's wearables in the one id format, its gateway as it is, firmware
    assert f"0x{FIRST_DEVICE_ID:08X}" in said["fleet-devices"], said["fleet-devices"]
    assert DEMO_GATEWAY in said["fleet-gateways"] and "No gateways yet" not in said["fleet-gateways"], said["fleet-gateways"]
    assert "Loading" not in said["fleet-firmware"], said["fleet-firmware"]

    # auditor: the incident's timeline names the supervisor's read of the heart rate and why
    timeline = said["auditor-incident-timeline"]
    assert "supervisor (supervisor)" in timeline and "heart rate" in timeline and "safety_response" in timeline, timeline
    assert "alert:" not in timeline and "user:" not in timeline, timeline
    assert "supervisor (supervisor)" in said["auditor-log"], said["auditor-log"]

    # the officer: their own SOS, its state in words, and who read their data
    own = said["officer-own-page"]
    assert "SOS" in own and "Acknowledged" in own, own
    assert "safety_response" in own, own
