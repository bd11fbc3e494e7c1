"""MQTT connection settings shared by the backend's ingest and downlink."""
from __future__ import annotations

import random
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# The broker keeps our subscriptions and undelivered QoS 1 frames this long while we are away.
SESSION_EXPIRY_S = 3600
# Reconnect delays: capped exponential with full jitter, so many backends don't stampede.
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 15.0


def reconnect_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter backoff as a pure function of the attempt number (0-based)."""
    ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * (2 ** attempt))
    return (rng or random).uniform(0, ceiling)


def client_for(url: str, identifier: str, persistent: bool = True, **kwargs) -> aiomqtt.Client:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
    tls = None
    if parts.scheme == "mqtts":
        import ssl
        tls = ssl.create_default_context()
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883),
        username=parts.username, password=parts.password, identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5, clean_start=not persistent, properties=props,
        tls_context=tls, **kwargs,
    )


def user_properties(message: aiomqtt.Message) -> dict[str, str]:
    props = getattr(message, "properties", None)
    pairs = getattr(props, "UserProperty", None) or []
    return {k: v for k, v in pairs}
