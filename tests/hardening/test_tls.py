"""MQTT and HTTP over TLS with a test CA made here: the gateway publishes over mqtts:// and the
backend's MQTT client receives over mqtts://, the API answers over HTTPS (with HSTS); a client
that trusts another CA is refused on each."""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import aiomqtt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backend.local import infra
from backend.ingest.mqtt import client_for
from backend.app.server import serve
from gateway import topics
from gateway.config import GatewaySettings
from gateway.metrics import GatewayMetrics
from gateway.publisher import MqttBridge
from gateway.store import FrameQueue
from tests.backend.conftest import backend_settings
from tests.hardening.conftest import SealingDevice

pytestmark = pytest.mark.integration


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(directory: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o644)  # the broker may run as another user
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path):
    """(trusted CA file, server cert, server key, a CA file of another authority)."""
    directory = tmp_path / "pki"
    directory.mkdir()
    directory.chmod(0o755)
    ca_path, ca_key, ca_cert = make_ca(directory, "vigil-test-ca")
    cert, key = make_server_cert(directory, ca_key, ca_cert)
    other_ca, _, _ = make_ca(directory, "someone-else")
    return ca_path, cert, key, other_ca


async def test_mqtt_over_tls_gateway_to_backend(tmp_path, pki, agency):
    ca, cert, key, other_ca = pki
    broker = infra.PrivateMosquitto(tmp_path / "mosquitto", tls_certfile=cert, tls_keyfile=key).start()
    try:
        url = broker.tls_url
        gw = GatewaySettings(agency=agency, gateway_id="gw-tls", mqtt_url=url, mqtt_ca_file=ca,
                             queue_path=tmp_path / "q.sqlite3")
        bridge = MqttBridge(gw, FrameQueue(gw.queue_path, 1000), GatewayMetrics(), lambda: {})
        device = SealingDevice(0x00715001, b"k" * 32)
        data = device.telemetry()
        async with client_for(url, "backend-tls-" + agency, persistent=False, ca_file=str(ca)) as backend_side:
            await backend_side.subscribe(topics.uplink_filter(agency), qos=1)
            async with bridge._client() as gateway_side:  # the gateway's own client, as configured
                await gateway_side.publish(topics.uplink(agency, "gw-tls", device.device_id, "telemetry"), data, qos=1)
            async with __import__("asyncio").timeout(10):
                message = await anext(aiter(backend_side.messages))
        assert bytes(message.payload) == data

        # a client that trusts another CA does not connect, on either side
        wrong = gw.model_copy(update={"mqtt_ca_file": other_ca})
        with pytest.raises(aiomqtt.MqttError):
            async with MqttBridge(wrong, FrameQueue(tmp_path / "q2.sqlite3", 1000), GatewayMetrics(), lambda: {})._client():
                pass
        with pytest.raises(aiomqtt.MqttError):
            async with client_for(url, "backend-wrong-" + agency, persistent=False, ca_file=str(other_ca)):
                pass
        with pytest.raises(aiomqtt.MqttError):  # the system CAs do not know the test CA either
            async with client_for(url, "backend-system-" + agency, persistent=False):
                pass
    finally:
        broker.stop()


async def test_https_api_with_hsts(database_url, mqtt_broker, agency, pki):
    ca, cert, key, other_ca = pki
    settings = backend_settings(database_url, *mqtt_broker, agency, ssl_certfile=str(cert), ssl_keyfile=str(key))
    from backend.db import engine as db
    db.upgrade(settings)
    async with serve(settings) as backend:
        assert backend.url.startswith("https://")
        async with httpx.AsyncClient(base_url=backend.url, verify=ssl.create_default_context(cafile=str(ca))) as http:
            r = await http.get("/api/v1/health")
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        async with httpx.AsyncClient(base_url=backend.url, verify=ssl.create_default_context(cafile=str(other_ca))) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/api/v1/health")
        async with httpx.AsyncClient(base_url=backend.url.replace("https", "http")) as http:
            with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is not served
                await http.get("/api/v1/health")


async def test_the_backends_own_uplink_subscriber_over_tls(tmp_path, pki, agency):
    """Ingest's subscriber (backend/ingest/mqtt.py), not aiomqtt: over mqtts:// it verifies the
    broker against the configured CA, receives and acknowledges; a wrong CA is refused."""
    import asyncio

    from backend.ingest.mqtt import UplinkError, UplinkSubscriber

    ca, cert, key, other_ca = pki
    broker = infra.PrivateMosquitto(tmp_path / "mosquitto", tls_certfile=cert, tls_keyfile=key).start()
    try:
        url, topic = broker.tls_url, topics.uplink(agency, "gw-tls", 0x00715002, "telemetry")
        async with UplinkSubscriber(url, "uplink-tls-" + agency, persistent=False, ca_file=str(ca)) as uplink:
            await uplink.subscribe([topics.uplink_filter(agency)])
            await asyncio.sleep(0.2)
            async with client_for(url, "pub-tls-" + agency, persistent=False, ca_file=str(ca)) as pub:
                await pub.publish(topic, b"over tls", qos=1)
            async with asyncio.timeout(10):
                batch = await anext(aiter(uplink.batches()))
            uplink.ack(batch)
        assert [(m[0], m[1]) for m in batch] == [(topic, b"over tls")]
        with pytest.raises(UplinkError):
            async with UplinkSubscriber(url, "uplink-wrong-" + agency, persistent=False, ca_file=str(other_ca)):
                pass
    finally:
        broker.stop()
