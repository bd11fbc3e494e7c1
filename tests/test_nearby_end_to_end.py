"""Issue 21: "an end-to-end test shows a nearby officer's wearable told of a colleague's SOS".

Real at every hop: four wearables running the firmware (gateway/sim/device.py) behind a virtual
BlueZ, two real gateways (bleak) at configured positions 36 km apart, Mosquitto, the backend with
PostgreSQL. One officer holds SOS; the officer at the same gateway feels "colleague needs help"
(their firmware drives the motor in that pattern, recorded at the PWM), presses, and the
supervisor's API shows the message sent, delivered and confirmed. The officer 36 km away, the
officer in distress and an officer at the same gateway whose shift is over feel nothing of it."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from backend.app.server import serve
from backend.db import engine as db
from backend.identity import fleet
from firmware import frame as F
from firmware import safety as S
from gateway.sim.fleet import SimulatedFleet
from tests.backend.conftest import backend_settings, supervisor_token
from tests.gateway.conftest import device_key, gateway_settings, running_gateway, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

DISTRESSED, NEARBY, FAR = 0x00A10001, 0x00A10002, 0x00A10003
OFF_SHIFT = 0x00A10004  # at the same gateway, worn by an officer whose shift is over
HERE = (40.7128, -74.0060)   # gateway "gw-here": the officer in distress and a colleague
THERE = (40.9500, -74.3000)  # gateway "gw-there", 36 km away
OFFICERS = {DISTRESSED: ("B-1", "Officer Adeyemi"), NEARBY: ("B-2", "Officer Brandt"), FAR: ("B-3", "Officer Costa"),
            OFF_SHIFT: ("B-4", "Officer Dahl")}


async def _seed(settings, agency) -> dict[int, int]:
    db.upgrade(settings)
    engine = db.create_engine(settings)
    officers = {}
    try:
        await fleet.ensure_agency(engine, agency)
        for device_id, (badge, name) in OFFICERS.items():
            officer = await fleet.create_officer(engine, agency, badge, name, "Patrol 3")
            await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device_id,
                                         key=device_key(device_id))
            await fleet.assign_device(engine, device_id, officer)
            officers[device_id] = officer
        await fleet.unassign_device(engine, OFF_SHIFT)  # the shift is over
    finally:
        await engine.dispose()
    return officers


def _record_motor(wearable) -> list[tuple[int, bool]]:
    """Every change of the wearable's haptic motor as the firmware commands it at its PWM:
    (device ms, on)."""
    motor = wearable.board.motor
    changes: list[tuple[int, bool]] = []
    command = motor.duty_u16

    def duty_u16(value=None):
        if value is not None:
            changes.append((wearable.loop.now, value > 0))
        return command(value)

    motor.duty_u16 = duty_u16
    return changes


def _spans(changes: list[tuple[int, bool]], since_ms: int) -> list[int]:
    """On and off durations (ms) of the first pattern played after ``since_ms``."""
    after = [c for c in changes if c[0] >= since_ms]
    start = next(i for i, c in enumerate(after) if c[1])
    times = [t for t, _ in after[start:]]
    return [b - a for a, b in zip(times, times[1:])]


def _felt_as(spans: list[int], pattern: tuple) -> bool:
    # the firmware's safety task drives the motor every 20 ms
    return len(spans) == len(pattern) and all(abs(a - b) <= 40 for a, b in zip(spans, pattern))


async def test_a_colleagues_sos_is_felt_on_the_nearby_officers_wearable_only(
        database_url, mqtt_broker, agency, gateway_settings, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency, nearby_radius_m=2000)
    officers = await _seed(settings, agency)
    keys = {d: device_key(d) for d in OFFICERS}
    async with SimulatedFleet(keys, device="firmware", scenarios="patrol") as sim, serve(settings) as backend:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        here = gateway_settings([DISTRESSED, NEARBY, OFF_SHIFT], gateway_id="gw-here", latitude=HERE[0], longitude=HERE[1],
                                queue_path=tmp_path / "here.sqlite3")
        there = gateway_settings([FAR], gateway_id="gw-there", latitude=THERE[0], longitude=THERE[1],
                                 queue_path=tmp_path / "there.sqlite3")
        async with running_gateway(here), running_gateway(there):
            status = backend.runtime.status
            positions = backend.runtime.downlink.positions
            on_shift = (DISTRESSED, NEARBY, FAR)
            await wait_until(lambda: all(status.last_gateway(d) for d in on_shift)
                             and backend.runtime.metrics.rejected_count("unassigned_device") > 0
                             and positions.get(agency, "gw-here") and positions.get(agency, "gw-there"), 30,
                             what="every device on shift heard, the off-shift one refused, both gateways' positions known")
            motors = {d: _record_motor(sim.wearables[d]) for d in OFFICERS}
            marks = {d: sim.wearables[d].loop.now for d in OFFICERS}

            sim.wearables[DISTRESSED].press_sos()
            book = backend.runtime.downlink.messages
            await wait_until(lambda: any(m.state in ("delivered", "confirmed") for m in book.in_memory(agency)), 20,
                             what="the colleague message written to a wearable")
            told = book.in_memory(agency)
            assert [(m.device_id, m.kind, m.sent_by) for m in told] == [(NEARBY, "colleague_needs_help", "system")]
            alert_id = told[0].alert_id

            nearby = sim.wearables[NEARBY]
            await wait_until(lambda: any(c[1] == F.COMMAND_MESSAGE for c in nearby.commands), 10,
                             what="the command at the nearby wearable")
            pattern = S.MESSAGE_PATTERNS[F.MESSAGE_COLLEAGUE_NEEDS_HELP]
            # the whole pattern played (in the device's time): one change per on and off span, and the last off
            await wait_until(lambda: len([c for c in motors[NEARBY] if c[0] >= marks[NEARBY]]) >= len(pattern) + 1, 15,
                             what="the colleague pattern played on the nearby wearable")
            await asyncio.sleep(0.5)  # anything more it would play
            spans = _spans(motors[NEARBY], marks[NEARBY])
            assert _felt_as(spans, pattern), f"the nearby wearable's motor went {spans}, not {pattern}"
            assert not motors[FAR], f"the far wearable's motor moved: {motors[FAR]}"
            assert not any(c[1] == F.COMMAND_MESSAGE for c in sim.wearables[FAR].commands)
            assert not any(c[1] == F.COMMAND_MESSAGE for c in sim.wearables[DISTRESSED].commands)
            assert not motors[OFF_SHIFT] and not any(c[1] == F.COMMAND_MESSAGE for c in sim.wearables[OFF_SHIFT].commands)
            # the officer in distress felt their own SOS accepted, nothing else
            assert _felt_as(_spans(motors[DISTRESSED], marks[DISTRESSED]), S.PATTERN_SOS_ACCEPTED)

            # the nearby officer presses once: their wearable confirms, the supervisor sees it
            nearby.board.press(True)
            await asyncio.sleep(0.3)
            nearby.board.press(False)
            await wait_until(lambda: told[0].state == "confirmed", 20, what="the officer's confirmation at the backend")

            token = supervisor_token(settings, agency)
            async with httpx.AsyncClient(base_url=backend.url, headers={"Authorization": f"Bearer {token}"}) as http:
                response = await http.get(f"/api/v1/alerts/{alert_id}/messages")
                assert response.status_code == 200, response.text
                listed = response.json()
                assert [(m["officer_id"], m["kind"], m["state"]) for m in listed] == [
                    (officers[NEARBY], "colleague_needs_help", "confirmed")]
                m = listed[0]
                assert m["sent_at"] <= m["delivered_at"] <= m["confirmed_at"]
                assert m["gateway_id"] == "gw-here" and m["distance_m"] == 0

                async def timeline_says() -> bool:
                    alert = (await http.get(f"/api/v1/alerts/{alert_id}")).json()
                    steps = {s["state"]: s["note"] for s in alert.get("transitions", [])}
                    return "Officer Brandt" in steps.get("colleagues_told", "") and "colleague_confirmed" in steps

                for _ in range(100):
                    if await timeline_says():
                        break
                    await asyncio.sleep(0.1)
                assert await timeline_says(), "the incident's timeline names who was told and who confirmed"
