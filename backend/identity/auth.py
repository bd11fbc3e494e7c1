"""Who may call the backend: people (password, signed token with expiry and a revocable id)
and gateways (a long random token, stored hashed, and their own MQTT user).

Passwords are hashed with argon2id. A person's token carries a ``jti``; revoking it stores the
id until the token would have expired anyway. The revoked ids are cached in memory (refreshed
with the device registry) so a token is checked without a database round trip, and so the
supervisors' live feed keeps working while the database is away."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.identity.security import hash_secret, issue_token
from backend.exceptions import AuthError, Conflict, NotFound

log = logging.getLogger("vigil.auth")

PEOPLE_ROLES = ("officer", "supervisor", "fleet_admin", "auditor")
GATEWAY_TOKEN_PREFIX = "vgw_"
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("vigil-no-such-user")


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password has at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    agency_id: str
    officer_id: int | None


async def create_user(engine: AsyncEngine, username: str, password: str, role: str, agency_id: str,
                      officer_id: int | None = None) -> User:
    if role not in PEOPLE_ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(PEOPLE_ROLES)}")
    if role == "officer" and officer_id is None:
        raise ValueError("an officer's account names the officer (officer_id)")
    pw_hash = await asyncio.to_thread(hash_password, password)
    async with engine.begin() as conn:
        if officer_id is not None:
            agency = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).scalar()
            if agency != agency_id:
                raise ValueError(f"officer {officer_id} is not an officer of {agency_id}")
        try:
            uid = (await conn.execute(sa.insert(t.users).values(
                username=username, password_hash=pw_hash, role=role, agency_id=agency_id, officer_id=officer_id,
            ).returning(t.users.c.id))).scalar_one()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"user {username!r} exists (or agency {agency_id!r} does not)") from exc
    return User(uid, username, role, agency_id, officer_id)


async def list_users(engine: AsyncEngine, agency_id: str) -> list[User]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(t.users).where(t.users.c.agency_id == agency_id).order_by(t.users.c.id))).mappings()
        return [User(r["id"], r["username"], r["role"], r["agency_id"], r["officer_id"]) for r in rows]


async def login(engine: AsyncEngine, secret: str, ttl_s: int, username: str, password: str) -> tuple[str, User]:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t.users).where(t.users.c.username == username))).mappings().first()
    ok = await asyncio.to_thread(verify_password, row["password_hash"] if row else _DUMMY_HASH, password)
    if row is None or not ok or row["disabled"]:
        raise AuthError("wrong username or password")
    user = User(row["id"], row["username"], row["role"], row["agency_id"], row["officer_id"])
    claims = {"sub": user.username, "uid": user.id, "role": user.role, "agency": user.agency_id,
              "officer_id": user.officer_id, "jti": uuid.uuid4().hex}
    return issue_token(secret, claims, ttl_s), user


class RevokedTokens:
    """The revoked token ids, cached; ``refresh`` reloads them, ``revoke`` adds one at once."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._ids: set[str] = set()

    def __contains__(self, jti: str) -> bool:
        return jti in self._ids

    async def refresh(self) -> None:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(t.revoked_tokens.c.jti).where(t.revoked_tokens.c.expires_at > sa.func.now()))
            self._ids = {r.jti for r in rows}

    async def revoke(self, jti: str, expires_at: dt.datetime, by: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(pg_insert(t.revoked_tokens).values(jti=jti, expires_at=expires_at, revoked_by=by).on_conflict_do_nothing())
        self._ids.add(jti)


# ---- gateways ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GatewayCredentials:
    gateway_id: str
    agency_id: str
    api_token: str       # Bearer token for GET /api/v1/gateways/{id}/devices; shown once
    mqtt_username: str
    mqtt_password: str   # shown once; the broker keeps only its hash


def mosquitto_hash(username: str, password: str) -> str:
    """The broker's own password hash (PBKDF2-SHA512), made by mosquitto_passwd."""
    binary = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError("mosquitto_passwd is not installed (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "passwd"
        path.touch()
        subprocess.run([binary, "-b", str(path), username, password], check=True, capture_output=True)
        line = path.read_text().strip()
    user, _, hashed = line.partition(":")
    if user != username or not hashed:
        raise RuntimeError("mosquitto_passwd wrote an unexpected line")
    return hashed


async def register_gateway(engine: AsyncEngine, agency_id: str, gateway_id: str, devices: list[int]) -> GatewayCredentials:
    from gateway import topics
    topics.gateway_state(agency_id, gateway_id)  # raises TopicError for a name the topics cannot carry
    token = GATEWAY_TOKEN_PREFIX + secrets.token_urlsafe(32)
    mqtt_password = secrets.token_urlsafe(24)
    mqtt_username = f"gw-{agency_id}-{gateway_id}"
    mqtt_hash = await asyncio.to_thread(mosquitto_hash, mqtt_username, mqtt_password)
    async with engine.begin() as conn:
        try:
            await conn.execute(sa.insert(t.gateways).values(id=gateway_id, agency_id=agency_id, token_hash=hash_secret(token)))
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"gateway {gateway_id!r} is already registered") from exc
        await conn.execute(sa.insert(t.gateway_mqtt).values(gateway_id=gateway_id, mqtt_username=mqtt_username,
                                                              mqtt_password_hash=mqtt_hash))
        await _set_served(conn, agency_id, gateway_id, devices)
    return GatewayCredentials(gateway_id, agency_id, token, mqtt_username, mqtt_password)


async def set_gateway_devices(engine: AsyncEngine, agency_id: str, gateway_id: str, devices: list[int]) -> None:
    async with engine.begin() as conn:
        owner = (await conn.execute(sa.select(t.gateways.c.agency_id).where(t.gateways.c.id == gateway_id))).scalar()
        if owner != agency_id:
            raise NotFound(f"gateway {gateway_id}")
        await _set_served(conn, agency_id, gateway_id, devices)


async def _set_served(conn, agency_id: str, gateway_id: str, devices: list[int]) -> None:
    if devices:
        found = set((await conn.execute(
            sa.select(t.devices.c.id).where(t.devices.c.id.in_(devices), t.devices.c.agency_id == agency_id)
        )).scalars())
        missing = sorted(set(devices) - found)
        if missing:
            raise NotFound(f"devices not in {agency_id}: {missing}")
    await conn.execute(sa.delete(t.gateway_devices).where(t.gateway_devices.c.gateway_id == gateway_id))
    if devices:
        await conn.execute(sa.insert(t.gateway_devices).values([{"gateway_id": gateway_id, "device_id": d} for d in sorted(set(devices))]))


async def gateway_for_token(engine: AsyncEngine, token: str) -> tuple[str, str]:
    """(gateway id, agency) of an active gateway's API token; AuthError otherwise."""
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t.gateways.c.id, t.gateways.c.agency_id).where(
            t.gateways.c.token_hash == hash_secret(token), t.gateways.c.retired_at.is_(None)))).first()
    if row is None:
        raise AuthError("unknown or retired gateway token")
    return row.id, row.agency_id
