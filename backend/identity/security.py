"""Secrets: device keys wrapped at rest (under ``secret_key``), and signed access tokens (under ``token_key``)."""
from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid

import jwt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.exceptions import AuthError


def _subkey(secret: str, label: bytes) -> bytes:
    return hmac.digest(secret.encode(), label, "sha256")


def new_device_key() -> bytes:
    return os.urandom(32)


def wrap_device_key(secret: str, device_id: int, key: bytes) -> bytes:
    """AES-GCM under a key derived from ``secret_key`` (never the token key); the device id is bound as AAD so
    a wrapped key copied to another device's row does not decrypt."""
    nonce = os.urandom(12)
    aad = str(device_id).encode()
    return nonce + AESGCM(_subkey(secret, b"vigil/device-key-wrap/v1")).encrypt(nonce, key, aad)


def unwrap_device_key(secret: str, device_id: int, blob: bytes) -> bytes:
    nonce, ciphertext = bytes(blob[:12]), bytes(blob[12:])
    aad = str(device_id).encode()
    return AESGCM(_subkey(secret, b"vigil/device-key-wrap/v1")).decrypt(nonce, ciphertext, aad)


def wrap_gateway_password(secret: str, mqtt_username: str, password: str) -> bytes:
    """A gateway's MQTT password at rest, as device keys are (its own derived key; the username is the AAD)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_subkey(secret, b"vigil/gateway-mqtt-wrap/v1")).encrypt(nonce, password.encode(), mqtt_username.encode())


def unwrap_gateway_password(secret: str, mqtt_username: str, blob: bytes) -> str:
    nonce, ciphertext = bytes(blob[:12]), bytes(blob[12:])
    return AESGCM(_subkey(secret, b"vigil/gateway-mqtt-wrap/v1")).decrypt(nonce, ciphertext, mqtt_username.encode()).decode()


# People's access tokens are JWTs (RFC 7519) signed with HMAC-SHA256 under the token key, which
# is never the device-key wrapping secret. Every token names its account (``uid``) and has an id
# (``jti``) so it can be revoked; the caller's check (backend/api/deps.py) also requires the
# account to exist and be enabled.
TOKEN_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "jti", "sub", "uid", "role", "agency")


def issue_token(key: str, claims: dict, ttl_s: int, now: float | None = None) -> str:
    """A signed token carrying ``claims`` plus ``iat``, ``exp`` and, unless given, a fresh ``jti``."""
    now = time.time() if now is None else now
    body = {"jti": uuid.uuid4().hex, **claims, "iat": int(now), "exp": int(now + ttl_s)}
    return jwt.encode(body, key, algorithm=TOKEN_ALGORITHM)


def read_token(key: str, token: str) -> dict:
    """The claims of a token signed under ``key`` that has not expired and carries every required claim."""
    try:
        return jwt.decode(token, key, algorithms=[TOKEN_ALGORITHM], options={"require": list(REQUIRED_CLAIMS)})
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token has expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("token signature is invalid") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError("token is malformed") from exc


def hash_secret(value: str) -> str:
    """For gateway tokens: stored as SHA-256 (they are long random strings, not passwords)."""
    return hashlib.sha256(value.encode()).hexdigest()
