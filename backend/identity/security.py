"""Secrets: device keys wrapped at rest, and signed access tokens."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.exceptions import AuthError


def _subkey(secret: str, label: bytes) -> bytes:
    return hmac.digest(secret.encode(), label, "sha256")


def new_device_key() -> bytes:
    return os.urandom(32)


def wrap_device_key(secret: str, device_id: int, key: bytes) -> bytes:
    """AES-GCM under a key derived from the backend secret; the device id is bound as AAD so
    a wrapped key copied to another device's row does not decrypt."""
    nonce = os.urandom(12)
    aad = str(device_id).encode()
    return nonce + AESGCM(_subkey(secret, b"vigil/device-key-wrap/v1")).encrypt(nonce, key, aad)


def unwrap_device_key(secret: str, device_id: int, blob: bytes) -> bytes:
    nonce, ciphertext = bytes(blob[:12]), bytes(blob[12:])
    aad = str(device_id).encode()
    return AESGCM(_subkey(secret, b"vigil/device-key-wrap/v1")).decrypt(nonce, ciphertext, aad)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(secret: str, claims: dict, ttl_s: int, now: float | None = None) -> str:
    """A compact signed token: base64(json claims with exp) . base64(HMAC-SHA256)."""
    now = time.time() if now is None else now
    body = _b64(json.dumps({**claims, "exp": int(now + ttl_s)}, separators=(",", ":")).encode())
    sig = _b64(hmac.digest(_subkey(secret, b"vigil/token/v1"), body.encode(), "sha256"))
    return f"{body}.{sig}"


def read_token(secret: str, token: str, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    try:
        body, sig = token.split(".", 1)
        expected = _b64(hmac.digest(_subkey(secret, b"vigil/token/v1"), body.encode(), "sha256"))
        if not hmac.compare_digest(sig, expected):
            raise AuthError("token signature is invalid")
        claims = json.loads(_unb64(body))
    except AuthError:
        raise
    except (ValueError, json.JSONDecodeError) as exc:
        raise AuthError("token is malformed") from exc
    if not isinstance(claims, dict) or claims.get("exp", 0) < now:
        raise AuthError("token has expired")
    return claims


def hash_secret(value: str) -> str:
    """For gateway tokens: stored as SHA-256 (they are long random strings, not passwords)."""
    return hashlib.sha256(value.encode()).hexdigest()
