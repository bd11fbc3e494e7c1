"""The broker files generated from the gateway registry, against a real private Mosquitto:
a gateway publishes only under its own topics and reads only its own downlink; the backend
reads uplinks and writes downlinks; anonymous clients and wrong passwords are refused."""
from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest

from backend.identity import auth, broker, fleet
from backend.local import infra
from backend.db import engine as db
from gateway import topics
from tests.backend.conftest import backend_settings

pytestmark = pytest.mark.integration


async def _register(settings, agency):
    db.upgrade(settings)
    engine = db.create_engine(settings)
    await fleet.ensure_agency(engine, agency)
    for device in (1, 2):
        await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device)
    a = await auth.register_gateway(engine, agency, f"{agency}-car1", [1])
    b = await auth.register_gateway(engine, agency, f"{agency}-car2", [2])
    return engine, a, b


class Listener:
    """A client that records everything it is allowed to receive on one filter."""

    def __init__(self, broker_, username, password, topic_filter):
        self.args = (broker_.host, broker_.port)
        self.kw = dict(username=username, password=password, identifier=f"listen-{username}")
        self.filter = topic_filter
        self.received: list[str] = []

    async def run(self, ready: asyncio.Event):
        async with aiomqtt.Client(*self.args, **self.kw) as client:
            await client.subscribe(self.filter, qos=1)
            ready.set()
            async for msg in client.messages:
                self.received.append(str(msg.topic))


@contextlib.asynccontextmanager
async def listening(listener):
    ready = asyncio.Event()
    task = asyncio.create_task(listener.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait_for(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_gateway_publishes_only_under_its_own_topics(database_url, mqtt_broker, agency, tmp_path):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    engine, gw_a, gw_b = await _register(settings, agency)
    try:
        passwd, acl = await broker.write_broker_files(engine, tmp_path / "broker", "vigil-backend", "backend-secret-pw")
    finally:
        await engine.dispose()
    assert f"user {gw_a.mqtt_username}\ntopic write vigil/{agency}/gw/{gw_a.gateway_id}/up/#" in acl.read_text()
    assert gw_a.mqtt_password not in passwd.read_text()  # only the broker's hash is written

    with infra.PrivateMosquitto(workdir=tmp_path / "mosquitto", password_file=passwd, acl_file=acl) as mosq:
        backend = Listener(mosq, "vigil-backend", "backend-secret-pw", f"vigil/{agency}/gw/+/up/#")
        async with listening(backend):
            async with aiomqtt.Client(mosq.host, mosq.port, username=gw_a.mqtt_username, password=gw_a.mqtt_password,
                                      identifier="gw-a", protocol=aiomqtt.ProtocolVersion.V311) as gw:
                # forged: gateway A claims to be gateway B, then writes a downlink it has no right to
                await gw.publish(topics.uplink(agency, gw_b.gateway_id, 2, "event"), b"forged", qos=1)
                await gw.publish(topics.downlink(agency, gw_b.gateway_id, 2), b"forged", qos=1)
                await gw.publish(topics.uplink(agency, gw_a.gateway_id, 1, "event"), b"own", qos=1)
            # same publisher, same session: once its own frame arrived, the forged one would have too
            await _wait_for(lambda: backend.received)
        assert backend.received == [topics.uplink(agency, gw_a.gateway_id, 1, "event")]

        # downlink: gateway A subscribed to every downlink of the agency still gets only its own
        gw_a_down = Listener(mosq, gw_a.mqtt_username, gw_a.mqtt_password, f"vigil/{agency}/gw/+/down/+")
        async with listening(gw_a_down):
            async with aiomqtt.Client(mosq.host, mosq.port, username="vigil-backend", password="backend-secret-pw",
                                      identifier="backend-pub") as be:
                await be.publish(topics.downlink(agency, gw_b.gateway_id, 2), b"for b", qos=1)
                await be.publish(topics.downlink(agency, gw_a.gateway_id, 1), b"for a", qos=1)
            await _wait_for(lambda: gw_a_down.received)
        assert gw_a_down.received == [topics.downlink(agency, gw_a.gateway_id, 1)]

        for creds in ({}, {"username": gw_a.mqtt_username, "password": "wrong-password"},
                      {"username": gw_b.mqtt_username, "password": gw_a.mqtt_password}):
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client(mosq.host, mosq.port, identifier="intruder", **creds):
                    pass
