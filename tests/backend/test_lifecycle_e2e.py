"""The man-down scenario through every real hop: a simulated wearable behind a virtual BlueZ ->
the gateway (its device list fetched from the backend with its own token) -> Mosquitto ->
backend. One incident, fall upgraded to the device's man-down alarm; a supervisor acknowledges
it over the API; "help is coming" goes back through the gateway to the wearable, whose
confirmation is recorded; the supervisor resolves it with an outcome."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import sqlalchemy as sa
import websockets

from backend.db import schema as t
from gateway.sim.fleet import SimulatedFleet
from tests.backend.api_helpers import two_agencies
from tests.backend.conftest import live_url
from tests.gateway.conftest import gateway_settings, running_gateway, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

SPEED = 3.0  # simulated seconds per second: the 45 s scenario in 15 s


async def test_man_down_incident_acknowledged_help_reaches_device(database_url, mqtt_broker, agency, gateway_settings):
    async with two_agencies(database_url, mqtt_broker, agency, escalate_after_s=600) as (backend, http, settings, a, _):
        rt = backend.runtime
        sup = {"Authorization": f"Bearer {a.tokens['supervisor']}"}
        events: list[dict] = []

        async def watch(ws):
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "alert":
                    events.append(msg["data"])

        async with SimulatedFleet({a.device_id: a.device_key}, device="firmware", scenarios="man_down", speed=SPEED) as sim, \
                websockets.connect(await live_url(backend.url, a.tokens["supervisor"])) as ws:
            watcher = asyncio.create_task(watch(ws))
            gw = gateway_settings([], gateway_id=a.gateway.gateway_id, backend_url=backend.url,
                                  backend_token=a.gateway.api_token, agency=a.name)
            async with running_gateway(gw) as gateway:
                await wait_until(lambda: a.device_id in gateway.links, 20, what="the gateway's device list from the backend")
                await wait_until(lambda: any(e["kind"] == "device_alarm" for e in events), 60, what="the man-down alarm")
                incident_ids = {e["id"] for e in events}
                assert len(incident_ids) == 1, f"one incident, not {len(incident_ids)} pages"
                incident_id = incident_ids.pop()
                changes = [e["change"] for e in events]
                assert changes[0] == "raised" and events[0]["kind"] == "fall" and "upgraded" in changes
                assert events[-1]["priority"] == 1

                acked = time.perf_counter()
                response = await http.post(f"/api/v1/alerts/{incident_id}/acknowledge", headers=sup, json={"note": "on my way"})
                assert response.status_code == 200, response.text
                wearable = sim.wearables[a.device_id]
                await asyncio.wait_for(wearable.help_coming.wait(), 20)
                print(f"\nacknowledge -> haptic 'help is coming' on the wearable: {(time.perf_counter() - acked) * 1000:.0f} ms")
                incident = rt.alerts.find(__import__("uuid").UUID(incident_id))
                await wait_until(lambda: {"help_result", "help_confirmed"} <= {s["state"] for s in incident.transitions}, 20,
                                 what="the gateway's result and the officer's confirmation")
                result = next(s for s in incident.transitions if s["state"] == "help_result")
                assert result["note"] == "written to the device" and result["actor"] == f"gateway:{a.gateway.gateway_id}"

                response = await http.post(f"/api/v1/alerts/{incident_id}/resolve", headers=sup,
                                            json={"outcome": "real_emergency", "note": "officer transported"})
                assert response.status_code == 200 and response.json()["state"] == "resolved"
            watcher.cancel()

        await wait_until(lambda: rt.alerts.pending == 0, 10, what="every change stored")
        stored = (await http.get(f"/api/v1/alerts/{incident_id}", headers=sup)).json()
        assert (stored["kind"], stored["state"], stored["outcome"]) == ("device_alarm", "resolved", "real_emergency")
        steps = [s["state"] for s in stored["transitions"]]
        for expected in ("raised", "delivered", "upgraded", "acknowledged", "help_sent", "help_result", "help_confirmed", "resolved"):
            assert expected in steps, (expected, steps)
        assert steps.index("acknowledged") < steps.index("help_sent") < steps.index("help_result") < steps.index("resolved")
        assert [x["id"] for x in (await http.get("/api/v1/alerts", headers=sup)).json()] == [incident_id]
        async with rt.engine.connect() as conn:
            sent = (await conn.execute(sa.select(t.downlink_commands))).mappings().all()
        sent = [c for c in sent if c["command"] == "help_coming"]  # event acks and time syncs go too
        assert len(sent) == 1 and sent[0]["result_ok"] is True and sent[0]["gateway_id"] == a.gateway.gateway_id
        help_commands = [c for c in wearable.commands if c[1] == 2]  # firmware.frame.COMMAND_HELP_COMING
        assert help_commands[0][0] == sent[0]["seq"] and wearable.rejected_commands == 0
