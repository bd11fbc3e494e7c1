"""The live feed is behind the purpose gate too: an alert reaches the supervisor at once, without
its evidence; the evidence follows as its own event once the gate granted it for safety_response
(during the officer's open incident) and the grant was audited."""
from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest
import sqlalchemy as sa
import websockets

from backend.app.server import serve
from backend.db import schema as t
from gateway import topics
from tests.backend.conftest import backend_settings, live_url, supervisor_token
from tests.backend.test_ingest import DEVICE, _seed, _sos

pytestmark = pytest.mark.integration


async def test_live_alert_first_then_its_evidence_once_granted_and_audited(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        await asyncio.wait_for(rt.privacy.ready.wait(), 10)
        token = supervisor_token(settings, agency)
        async with websockets.connect(await live_url(backend.url, token)) as ws:
            async with aiomqtt.Client(*mqtt_broker) as client:
                await client.publish(topics.uplink(agency, "gw1", DEVICE, "event"), _sos(key, 1), qos=1)
            alert = evidence = None
            async with asyncio.timeout(10):
                while evidence is None:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "alert" and alert is None:
                        alert = msg["data"]
                    elif msg["type"] == "alert_evidence":
                        evidence = msg["data"]
        assert "explanation" not in alert and alert["evidence_withheld"]["rule"] == "live.evidence_pending"
        assert evidence["id"] == alert["id"] and evidence["explanation"]["event"] == "sos"
        async with rt.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.audit_log).where(
                t.audit_log.c.action == "access", t.audit_log.c.purpose == "safety_response",
                t.audit_log.c.details["path"].astext == "/api/v1/ws"))).mappings().all()
        assert [(r["outcome"], r["details"]["data_class"], r["details"]["alert"]) for r in rows] == \
            [("granted", "alert_evidence", alert["id"])]
