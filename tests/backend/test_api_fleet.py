"""Fleet administration over the API and the `vigil` CLI (which calls the API over HTTP):
provision (key shown once), assign, list, unassign, retire; and the frames that must be refused
afterwards (forged, replayed, unassigned device, retired device), each counted."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time

import aiomqtt
import pytest

from backend import cli
from firmware import frame as F
from gateway import topics
from tests.backend.api_helpers import two_agencies
from tests.gateway.conftest import wait_until

pytestmark = pytest.mark.integration


async def _vigil(*argv) -> tuple[int, str]:
    out = io.StringIO()

    def run():
        with contextlib.redirect_stdout(out):
            return cli.main(list(argv))
    code = await asyncio.to_thread(run)  # the CLI is synchronous; the backend runs in this loop
    return code, out.getvalue()


def _sos(key: bytes, device: int, seq: int) -> bytes:
    return F.seal(F.DeviceKeys(key), F.TYPE_EVENT, device, seq, int(time.time() * 1000), F.encode_event(F.EVENT_SOS, 0, 1))


async def test_cli_fleet_admin_and_refused_frames(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, _):
        rt = backend.runtime
        api = ["--api", backend.url, "--token", a.tokens["fleet_admin"], "--json"]
        code, out = await _vigil("officer", "create", "--badge", "B-77", "--name", "Officer Haddad", "--unit", "K9", *api)
        assert code == 0
        officer_id = json.loads(out)["id"]
        code, out = await _vigil("device", "provision", "0x0A0000F1", "--placement", "chest", *api)
        provisioned = json.loads(out)
        key = bytes.fromhex(provisioned["key_hex"])
        assert code == 0 and len(key) == 32
        listed = (await http.get("/api/v1/devices", headers={"Authorization": f"Bearer {a.tokens['fleet_admin']}"})).json()
        assert all("key" not in k for d in listed for k in d)  # never again
        assert (await _vigil("device", "assign", "0x0A0000F1", "--officer", str(officer_id), *api))[0] == 0
        code, out = await _vigil("device", "list", *api)
        row = next(d for d in json.loads(out) if d["device_id"] == 0x0A0000F1)
        assert (row["officer_id"], row["officer_name"], row["status"], row["placement"]) == (officer_id, "Officer Haddad", "active", "chest")
        # no placement given: the product's own (worn at the waist, hardware/README.md), from the CLI and the API
        assert (await _vigil("device", "provision", "0x0A0000F2", *api))[0] == 0
        admin = {"Authorization": f"Bearer {a.tokens['fleet_admin']}"}
        assert (await http.post("/api/v1/devices", json={"device_id": 0x0A0000F3}, headers=admin)).status_code in (200, 201)
        listed = {d["device_id"]: d["placement"] for d in (await http.get("/api/v1/devices", headers=admin)).json()}
        assert listed[0x0A0000F2] == listed[0x0A0000F3] == "waist"
        code, _ = await _vigil("device", "list", "--api", backend.url, "--token", a.tokens["supervisor"])
        assert code == 0
        code, _ = await _vigil("officer", "create", "--badge", "X", "--name", "Y", "--api", backend.url, "--token", a.tokens["supervisor"])
        assert code == 1  # 403: supervisors do not provision

        device = 0x0A0000F1
        topic = topics.uplink(a.name, "gw1", device, "event")
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        async with aiomqtt.Client(*mqtt_broker) as mqtt:
            await mqtt.publish(topic, _sos(bytes(32), device, 1), qos=1)      # forged: not the device's key
            await mqtt.publish(topic, _sos(key, device, 2), qos=1)            # good
            await mqtt.publish(topic, _sos(key, device, 2), qos=1)            # replayed
            await wait_until(lambda: rt.metrics.rejected_count("replayed") == 1, 10, what="the replay refused")
            assert (await _vigil("device", "unassign", "0x0A0000F1", *api))[0] == 0
            await mqtt.publish(topic, _sos(key, device, 3), qos=1)            # shift over: unassigned
            await wait_until(lambda: rt.metrics.rejected_count("unassigned_device") == 1, 10, what="the unassigned device refused")
            assert (await _vigil("device", "retire", "0x0A0000F1", *api))[0] == 0
            await mqtt.publish(topic, _sos(key, device, 4), qos=1)            # retired
            await wait_until(lambda: rt.metrics.rejected_count("retired_device") == 1, 10, what="the retired device refused")
        assert rt.metrics.rejected_count("bad_tag") == 1
        assert rt.metrics.alerts_raised.labels("sos")._value.get() == 1
        metrics = (await http.get("/metrics")).text
        for reason in ("bad_tag", "replayed", "unassigned_device", "retired_device"):
            assert f'vigil_frames_rejected_total{{reason="{reason}"}} 1.0' in metrics
        code, out = await _vigil("device", "list", *api)
        row = next(d for d in json.loads(out) if d["device_id"] == device)
        assert row["status"] == "retired" and row["officer_id"] is None
        assert (await _vigil("device", "assign", "0x0A0000F1", "--officer", str(officer_id), *api))[0] == 1  # retired stays retired
