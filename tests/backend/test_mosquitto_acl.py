"""The broker's rights, held by a real Mosquitto's dynamic security plugin and administered by
the backend (backend/identity/broker.py): a gateway registered through the API can connect and
publish on its own topics at once (no SIGHUP, no restart) and on no other gateway's; a retired one
is disconnected and refused; the backend's own clients keep working; a broker restarted from a
stale file is reconciled when the backend starts; a control topic that cannot be reached is loud
(/health, /metrics) and retried until it answers."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys

import aiomqtt
import httpx
import pytest

from backend.app.server import serve
from backend.db import engine as db
from backend.identity import auth, broker, fleet
from backend.local import infra
from gateway import topics
from tests.backend.api_helpers import PASSWORD, login
from tests.backend.conftest import backend_settings

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(infra.dynsec_plugin() is None, reason="needs Mosquitto's dynamic security plugin")]

ADMIN = ("vigil-admin", "admin-secret-pw")
BACKEND = ("vigil-backend", "backend-secret-pw")


async def _seed(settings, agency):
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        for device in (1, 2):
            await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, device)
        await auth.create_user(engine, f"{agency}-fleet", PASSWORD, "fleet_admin", agency)
    finally:
        await engine.dispose()


def _dynsec_broker(tmp_path, clients):
    path = broker.write_dynsec_config(tmp_path / "dynamic-security.json", broker.dynsec_config(*ADMIN, clients))
    return infra.PrivateMosquitto(workdir=tmp_path / "mosquitto", dynsec_file=path)


def _settings(database_url, mosq, agency, **overrides):
    settings = backend_settings(database_url, mosq.host, mosq.port, agency, broker_admin_username=ADMIN[0],
                                broker_admin_password=ADMIN[1], broker_admin_retry_s=0.2, **overrides)
    return settings.model_copy(update={"mqtt_url": f"mqtt://{BACKEND[0]}:{BACKEND[1]}@{mosq.host}:{mosq.port}"})


class Listener:
    """A client that records what it is allowed to receive on one filter, and how it ended."""

    def __init__(self, mosq, username, password, topic_filter, identifier):
        self.args = (mosq.host, mosq.port)
        self.kw = dict(username=username, password=password, identifier=identifier)
        self.filter = topic_filter
        self.received: list[str] = []
        self.granted: list[int] = []
        self.ended: BaseException | None = None

    async def run(self, ready: asyncio.Event):
        try:
            async with aiomqtt.Client(*self.args, **self.kw) as client:
                result = await client.subscribe(self.filter, qos=1)
                self.granted = [getattr(r, "value", r) for r in result]
                ready.set()
                async for msg in client.messages:
                    self.received.append(str(msg.topic))
        except aiomqtt.MqttError as exc:
            self.ended = exc
            ready.set()


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


def _gateway(mosq, creds, identifier):
    return aiomqtt.Client(mosq.host, mosq.port, username=creds["mqtt_username"], password=creds["mqtt_password"],
                          identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5)


async def test_registered_gateway_is_admitted_at_once_and_a_retired_one_kicked(database_url, agency, tmp_path):
    with _dynsec_broker(tmp_path, [broker.backend_client(*BACKEND)]) as mosq:
        settings = _settings(database_url, mosq, agency)
        await _seed(settings, agency)
        async with serve(settings) as backend, httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
            runtime = backend.runtime
            await asyncio.wait_for(runtime.ingest.connected.wait(), 10)
            http.headers["Authorization"] = f"Bearer {await login(http, f'{agency}-fleet')}"
            made = {}
            for name, served in (("car1", [1]), ("car2", [2])):
                r = await http.post("/api/v1/gateways", json={"gateway_id": f"{agency}-{name}", "devices": served})
                assert r.status_code == 201, r.text
                assert r.json()["broker"] == "applied", r.json()
                made[name] = r.json()
            a, b = made["car1"], made["car2"]

            # at once: gateway A connects and publishes on its own topics; its forgeries go nowhere
            backend_ear = Listener(mosq, *BACKEND, f"vigil/{agency}/gw/+/up/#", "backend-ear")
            async with listening(backend_ear), _gateway(mosq, a, "gw-a") as gw:
                await gw.publish(topics.uplink(agency, b["gateway_id"], 2, "event"), b"forged", qos=1)
                await gw.publish(topics.downlink(agency, b["gateway_id"], 2), b"forged", qos=1)
                await gw.publish(topics.uplink(agency, a["gateway_id"], 1, "event"), b"own", qos=1)
                await _wait_for(lambda: backend_ear.received)  # same session: a forged one would be here first
                # its state, as gateway/publisher.py says it, reaches the backend's reader of gateway states
                await gw.publish(topics.gateway_state(agency, a["gateway_id"]),
                                 json.dumps({"state": "online", "queue_depth": 7, "at": 1.0}).encode(), qos=1, retain=True)
                await _wait_for(lambda: runtime.gateway_states.get(agency, a["gateway_id"]) is not None)
            assert backend_ear.received == [topics.uplink(agency, a["gateway_id"], 1, "event")]
            assert runtime.gateway_states.get(agency, a["gateway_id"]).queue_depth == 7

            # a gateway may not read another's downlink: the subscription to all of them is refused
            nosy = Listener(mosq, a["mqtt_username"], a["mqtt_password"], f"vigil/{agency}/gw/+/down/+", "gw-a-nosy")
            own = Listener(mosq, a["mqtt_username"], a["mqtt_password"], topics.downlink_filter(agency, a["gateway_id"]), "gw-a-own")
            async with listening(nosy), listening(own):
                assert nosy.granted and nosy.granted[0] >= 0x80, nosy.granted  # SUBACK: not authorized
                async with aiomqtt.Client(mosq.host, mosq.port, username=BACKEND[0], password=BACKEND[1],
                                          identifier="backend-pub") as be:
                    await be.publish(topics.downlink(agency, b["gateway_id"], 2), b"for b", qos=1)
                    await be.publish(topics.downlink(agency, a["gateway_id"], 1), b"for a", qos=1)
                await _wait_for(lambda: own.received)
            assert own.received == [topics.downlink(agency, a["gateway_id"], 1)] and nosy.received == []

            # retire A while it is connected: the broker drops it at once and refuses it afterwards
            live = Listener(mosq, a["mqtt_username"], a["mqtt_password"], topics.downlink_filter(agency, a["gateway_id"]), "gw-a-live")
            async with listening(live):
                assert live.ended is None
                r = await http.post(f"/api/v1/gateways/{a['gateway_id']}/retire")
                assert r.status_code == 200 and r.json()["broker"] == "applied", r.text
                await _wait_for(lambda: live.ended is not None)
            with pytest.raises(aiomqtt.MqttError):
                async with _gateway(mosq, a, "gw-a-again"):
                    pass
            again = await http.post(f"/api/v1/gateways/{a['gateway_id']}/retire")
            assert again.status_code == 409, again.text
            async with _gateway(mosq, b, "gw-b"):  # the other gateway is untouched
                pass

            # the backend's own clients kept working throughout, and health says the broker holds the registry
            assert runtime.ingest.connected.is_set()
            health = (await http.get("/api/v1/health")).json()
            assert health["broker_admin"]["state"] == "ok" and not [p for p in health["problems"] if "broker" in p], health
            for creds in ({}, {"username": b["mqtt_username"], "password": "wrong-password"},
                          {"username": b["mqtt_username"], "password": a["mqtt_password"]}):
                with pytest.raises(aiomqtt.MqttError):
                    async with aiomqtt.Client(mosq.host, mosq.port, identifier="intruder", **creds):
                        pass


async def test_a_broker_restarted_from_a_stale_file_is_reconciled_at_start(database_url, agency, tmp_path):
    probe = backend_settings(database_url, "127.0.0.1", 1, agency)
    await _seed(probe, agency)
    engine = db.create_engine(probe)
    secret = probe.secret_key.get_secret_value()
    try:
        kept = await fleet.register_gateway(engine, secret, agency, f"{agency}-kept", [1])
        gone = await fleet.register_gateway(engine, secret, agency, f"{agency}-gone", [2])
        stale = await broker.registry_clients(engine, secret, [agency])  # the file is written now: both gateways...
        await fleet.retire_gateway(engine, agency, gone.gateway_id)      # ...then one is retired,
        new = await fleet.register_gateway(engine, secret, agency, f"{agency}-new", [2])  # another registered
    finally:
        await engine.dispose()
    # the stale file also lacks the backend's own client, and one gateway's role lost its downlink right
    stale = [c if c.username != kept.mqtt_username else
             broker.BrokerClient(c.username, c.role, c.rights[:-1], c.textname, c.agency, c.password) for c in stale]
    # beside them, what the backend must leave alone: an operator's own client, another agency's gateway
    elsewhere = broker.BrokerClient("gw-elsewhere-car9", broker.gateway_role("gw-elsewhere-car9"),
                                    broker.gateway_rights("elsewhere", "car9"), "gateway car9 of elsewhere", "elsewhere", "pw-9")
    config = broker.dynsec_config(*ADMIN, stale + [elsewhere])
    config["clients"].append({"username": "ops-monitor", **broker.password_fields("ops-pw"), "roles": []})
    path = broker.write_dynsec_config(tmp_path / "dynamic-security.json", config)
    with infra.PrivateMosquitto(workdir=tmp_path / "mosquitto", dynsec_file=path) as mosq:
        with pytest.raises(aiomqtt.MqttError):  # as the stale file says
            async with aiomqtt.Client(mosq.host, mosq.port, username=BACKEND[0], password=BACKEND[1], identifier="early"):
                pass
        async with _gateway(mosq, {"mqtt_username": gone.mqtt_username, "mqtt_password": gone.mqtt_password}, "gone-early"):
            pass
        settings = _settings(database_url, mosq, agency)
        async with serve(settings) as backend:
            runtime = backend.runtime
            await asyncio.wait_for(runtime.ingest.connected.wait(), 15)  # its client was created by the reconciliation
            await _wait_for(lambda: runtime.broker_admin.state()["state"] == "ok")  # the reconciliation's end
            for creds in (new, kept):
                async with _gateway(mosq, {"mqtt_username": creds.mqtt_username, "mqtt_password": creds.mqtt_password},
                                    f"{creds.gateway_id}-now") as gw:
                    await gw.subscribe(topics.downlink_filter(agency, creds.gateway_id), qos=1)  # the repaired right
            with pytest.raises(aiomqtt.MqttError):
                async with _gateway(mosq, {"mqtt_username": gone.mqtt_username, "mqtt_password": gone.mqtt_password}, "gone-now"):
                    pass
            kept_role = await runtime.broker_admin.control([{"command": "getRole", "rolename": broker.gateway_role(kept.mqtt_username)}])
            assert {(a["acltype"], a["topic"]) for a in kept_role[0]["data"]["role"]["acls"]} == {
                (a["acltype"], a["topic"]) for a in broker.dynsec_acls(broker.gateway_rights(agency, kept.gateway_id))}
        # the plugin kept the converged state in its file: a restart of the broker alone keeps it
        saved = json.loads(mosq.dynsec_file.read_text())
        names = {c["username"] for c in saved["clients"]}
        assert {BACKEND[0], kept.mqtt_username, new.mqtt_username} <= names and gone.mqtt_username not in names
        assert {"ops-monitor", "gw-elsewhere-car9", ADMIN[0]} <= names  # not this backend's to delete


async def test_an_unreachable_control_topic_is_loud_and_retried(database_url, agency, tmp_path):
    mosq = _dynsec_broker(tmp_path, [broker.backend_client(*BACKEND)])  # not started yet
    settings = _settings(database_url, mosq, agency)
    await _seed(settings, agency)
    try:
        async with serve(settings) as backend, httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
            admin = backend.runtime.broker_admin
            await _wait_for(lambda: admin.failures >= 3)  # retried, every broker_admin_retry_s
            health = (await http.get("/api/v1/health")).json()
            assert health["broker_admin"]["state"] == "failing" and "cannot reach the broker" in health["broker_admin"]["last_error"]
            assert admin.problems() and "broker admin failing" in admin.problems()[0]
            metrics = (await http.get("/metrics")).text
            assert "vigil_broker_admin_failures_total" in metrics and "vigil_broker_admin_failures_total 0.0" not in metrics

            http.headers["Authorization"] = f"Bearer {await login(http, f'{agency}-fleet')}"
            r = await http.post("/api/v1/gateways", json={"gateway_id": f"{agency}-late", "devices": [1]})
            assert r.status_code == 201 and r.json()["broker"].startswith("pending: cannot reach the broker"), r.text
            late = r.json()

            mosq.start()  # the broker comes: the retry admits the gateway registered meanwhile
            await _wait_for(lambda: admin.state()["state"] == "ok", 15)
            assert admin.problems() == []
            async with _gateway(mosq, late, "late"):
                pass
    finally:
        mosq.stop()


async def test_vigil_broker_init_writes_the_first_file_from_the_registry(database_url, agency, tmp_path):
    """`vigil broker init`: a gateway registered before passwords were kept is admitted from its
    stored mosquitto_passwd hash; the backend's client and the admin from the environment."""
    settings = backend_settings(database_url, "127.0.0.1", 1, agency)
    await _seed(settings, agency)
    engine = db.create_engine(settings)
    try:
        old = await auth.register_gateway(engine, agency, f"{agency}-old", [1])  # only its hash is stored
    finally:
        await engine.dispose()
    out = tmp_path / "broker" / "dynamic-security.json"
    env = {"VIGIL_DATABASE_URL": database_url, "VIGIL_MQTT_URL": f"mqtt://{BACKEND[0]}:{BACKEND[1]}@127.0.0.1:1883",
           "VIGIL_SECRET_KEY": settings.secret_key.get_secret_value(), "VIGIL_TOKEN_KEY": settings.token_key.get_secret_value(),
           "VIGIL_AGENCIES": json.dumps([agency]), "VIGIL_BROKER_ADMIN_USERNAME": ADMIN[0], "VIGIL_BROKER_ADMIN_PASSWORD": ADMIN[1]}
    cmd = [sys.executable, "-m", "backend.cli", "broker", "init", "--out", str(out)]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0 and "1 gateway(s)" in done.stdout, done.stderr
    assert out.stat().st_mode & 0o077 == 0 and old.mqtt_password not in out.read_text()
    again = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr, again.stderr

    with infra.PrivateMosquitto(workdir=tmp_path / "mosquitto", dynsec_file=out) as mosq:
        async with _gateway(mosq, {"mqtt_username": old.mqtt_username, "mqtt_password": old.mqtt_password}, "old") as gw:
            await gw.publish(topics.gateway_state(agency, old.gateway_id), b"{}", qos=1)
        async with aiomqtt.Client(mosq.host, mosq.port, username=BACKEND[0], password=BACKEND[1], identifier="be"):
            pass
        admin = broker.BrokerAdmin(f"mqtt://{mosq.host}:{mosq.port}", *ADMIN, engine=None, secret="")
        listed = await admin.control([{"command": "listClients"}])
        assert set(listed[0]["data"]["clients"]) == {ADMIN[0], BACKEND[0], old.mqtt_username}
