"""Who may call the backend: people (password, signed token bound to their account) and
gateways (a long random token, stored hashed, and their own MQTT user).

Passwords are hashed with argon2id. A person's token names its account (``uid``) and carries a
``jti``; it is accepted only while that account exists, is enabled and still has the token's
role, agency and officer (``ActiveAccounts``, cached so the supervisors' live feed keeps working
while the database is away). Revoking a token stores its id until it would have expired anyway.

Separation of duties for accounts (``MAY_CREATE``): an account is made either by the bootstrap
CLI (``vigil user create``, which needs the database owner's credentials) or through the API by
a fleet admin, who may create fleet admins and supervisors only. An account is bound to an
officer only by that officer's own enrolment: a fleet admin issues a one-time code for the
officer (short-lived, single-use, stored hashed, handed over in person) and the officer redeems
it, choosing their username and password. Every account change enters the audit chain under
the person who made it."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.db import schema as t
from backend.identity.security import hash_secret, issue_token
from backend.exceptions import AuthError, Conflict, NotFound
from backend.privacy import audit

log = logging.getLogger("vigil.auth")

PEOPLE_ROLES = ("officer", "supervisor", "fleet_admin", "auditor")
GATEWAY_TOKEN_PREFIX = "vgw_"
# Who may create whose account through the API. Missing roles create nobody. Why:
# - officer: never created by someone else. The account opens the officer's own biometric data
#   (/me/...), so only the officer binds it, by redeeming an enrolment code (issue_enrolment).
# - auditor: the oversight board watches the admins; the watched do not appoint the watchers.
#   Auditors come from the bootstrap CLI, run by whoever holds the database owner's credentials.
# - supervisor and fleet_admin: the agency's operations staff, added as people join. A
#   supervisor reads no biometrics without a purpose the policy grants, and every such read and
#   every account change is audited under the person who made it.
MAY_CREATE: dict[str, frozenset[str]] = {"fleet_admin": frozenset({"fleet_admin", "supervisor"})}
# Roles a fleet admin may disable (an auditor is disabled from the bootstrap CLI, like created).
MAY_DISABLE: dict[str, frozenset[str]] = {"fleet_admin": frozenset({"fleet_admin", "supervisor", "officer"})}
# Enrolment codes: read aloud or typed from paper, so no look-alike characters; 12 of 31 ~ 59 bits,
# against at most a few guesses a minute (sign-in throttling) during a quarter of an hour.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_CODE_LENGTH = 12
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


def _user(row) -> User:
    return User(row["id"], row["username"], row["role"], row["agency_id"], row["officer_id"])


async def _acting_as(conn: AsyncConnection, actor: str) -> None:
    """Database triggers that audit this transaction's row changes name ``actor``, not the database role."""
    await conn.execute(sa.select(sa.func.set_config("vigil.actor", actor, True)))


async def create_user(engine: AsyncEngine, username: str, password: str, role: str, agency_id: str,
                      officer_id: int | None = None, *, actor: str = "system:setup") -> User:
    """Store an account. The API lets a caller reach this only as ``MAY_CREATE`` allows, and an
    officer's account only through ``redeem_enrolment``; ``actor`` is who made it, for the audit."""
    if role not in PEOPLE_ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(PEOPLE_ROLES)}")
    if (role == "officer") != (officer_id is not None):
        raise ValueError("an officer's account names the officer (officer_id), and only an officer's does")
    pw_hash = await asyncio.to_thread(hash_password, password)
    async with engine.begin() as conn:
        return await _insert_user(conn, username, pw_hash, role, agency_id, officer_id, actor, "account.create")


async def _insert_user(conn: AsyncConnection, username: str, pw_hash: str, role: str, agency_id: str,
                       officer_id: int | None, actor: str, action: str, details: dict | None = None) -> User:
    if officer_id is not None:
        agency = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).scalar()
        if agency != agency_id:
            raise ValueError(f"officer {officer_id} is not an officer of {agency_id}")
        if await _active_account_of(conn, officer_id) is not None:
            raise Conflict(f"officer {officer_id} already has an account; disable it first")
    await _acting_as(conn, actor)
    try:
        uid = (await conn.execute(sa.insert(t.users).values(
            username=username, password_hash=pw_hash, role=role, agency_id=agency_id, officer_id=officer_id,
        ).returning(t.users.c.id))).scalar_one()
    except sa.exc.IntegrityError as exc:
        raise Conflict(f"user {username!r} exists (or agency {agency_id!r} does not)") from exc
    await audit.record(conn, actor, action, f"user:{uid}", agency_id=agency_id,
                       details={"username": username, "role": role, "officer_id": officer_id, **(details or {})})
    return User(uid, username, role, agency_id, officer_id)


async def _active_account_of(conn: AsyncConnection, officer_id: int) -> int | None:
    return (await conn.execute(sa.select(t.users.c.id).where(
        t.users.c.officer_id == officer_id, t.users.c.disabled.is_(False)))).scalar()


async def list_users(engine: AsyncEngine, agency_id: str) -> list[dict]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(t.users).where(t.users.c.agency_id == agency_id).order_by(t.users.c.id))).mappings()
        return [{"id": r["id"], "username": r["username"], "role": r["role"], "officer_id": r["officer_id"],
                 "disabled": r["disabled"]} for r in rows]


async def disable_user(engine: AsyncEngine, agency_id: str, user_id: int, roles: frozenset[str], actor: str) -> User:
    """Disable an account of ``agency_id`` whose role is in ``roles``; its tokens stop working."""
    async with engine.begin() as conn:
        row = (await conn.execute(sa.select(t.users).where(t.users.c.id == user_id, t.users.c.agency_id == agency_id))).mappings().first()
        if row is None:
            raise NotFound(f"user {user_id}")
        if row["role"] not in roles:
            raise PermissionError(f"a {row['role']} account is not disabled here")
        await _acting_as(conn, actor)
        await conn.execute(sa.update(t.users).where(t.users.c.id == user_id).values(disabled=True))
        await audit.record(conn, actor, "account.disable", f"user:{user_id}", agency_id=agency_id,
                           details={"username": row["username"], "role": row["role"], "officer_id": row["officer_id"]})
    return _user(row)


# ---- an officer's enrolment ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Enrolment:
    code: str            # shown once, to be handed to the officer in person
    officer_id: int
    expires_at: dt.datetime


def _normalised(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _code_hash(code: str) -> str:
    # a long random code, not a password: a plain hash suffices (as for gateway tokens)
    return hashlib.sha256(b"vigil/enrolment/v1:" + _normalised(code).encode()).hexdigest()


def new_enrolment_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, _CODE_LENGTH, 4))


async def issue_enrolment(engine: AsyncEngine, agency_id: str, officer_id: int, actor: str, ttl_s: float,
                          now: dt.datetime) -> Enrolment:
    """A one-time code with which this officer creates their own account; earlier unused codes
    for the officer stop working. Refused while the officer has an enabled account."""
    code = new_enrolment_code()
    expires_at = now + dt.timedelta(seconds=ttl_s)
    async with engine.begin() as conn:
        agency = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).scalar()
        if agency != agency_id:
            raise NotFound(f"officer {officer_id}")
        if await _active_account_of(conn, officer_id) is not None:
            raise Conflict(f"officer {officer_id} already has an account; disable it first")
        await conn.execute(sa.update(t.enrolment_codes).where(
            t.enrolment_codes.c.officer_id == officer_id, t.enrolment_codes.c.redeemed_at.is_(None),
            t.enrolment_codes.c.expires_at > now).values(expires_at=now))
        await conn.execute(sa.insert(t.enrolment_codes).values(
            code_hash=_code_hash(code), agency_id=agency_id, officer_id=officer_id, issued_by=actor,
            issued_at=now, expires_at=expires_at))
        await audit.record(conn, actor, "enrolment.issue", f"officer:{officer_id}", agency_id=agency_id,
                           details={"expires_at": expires_at.isoformat()})
    return Enrolment(code, officer_id, expires_at)


async def redeem_enrolment(engine: AsyncEngine, code: str, username: str, password: str, now: dt.datetime) -> User:
    """The officer's own step: the code names the officer; the officer chooses username and password."""
    pw_hash = await asyncio.to_thread(hash_password, password)
    async with engine.begin() as conn:
        row = (await conn.execute(sa.select(t.enrolment_codes).where(
            t.enrolment_codes.c.code_hash == _code_hash(code), t.enrolment_codes.c.redeemed_at.is_(None),
            t.enrolment_codes.c.expires_at > now).with_for_update())).mappings().first()
        if row is None:
            raise AuthError("unknown, used or expired enrolment code")
        user = await _insert_user(conn, username, pw_hash, "officer", row["agency_id"], row["officer_id"],
                                  f"officer:{row['officer_id']}", "account.enrol",
                                  {"code_issued_by": row["issued_by"], "code_issued_at": row["issued_at"].isoformat()})
        await conn.execute(sa.update(t.enrolment_codes).where(t.enrolment_codes.c.id == row["id"])
                           .values(redeemed_at=now, redeemed_by_user=user.id))
    return user


# ---- sign-in and tokens ---------------------------------------------------------------------------

async def login(engine: AsyncEngine, token_key: str, ttl_s: int, username: str, password: str) -> tuple[str, User]:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t.users).where(t.users.c.username == username))).mappings().first()
    ok = await asyncio.to_thread(verify_password, row["password_hash"] if row else _DUMMY_HASH, password)
    if row is None or not ok or row["disabled"]:
        raise AuthError("wrong username or password")
    user = _user(row)
    return issue_token(token_key, claims_of(user), ttl_s), user


def claims_of(user: User) -> dict:
    """What a person's token says: the account it is bound to, and a fresh id to revoke it by."""
    return {"sub": user.username, "uid": user.id, "role": user.role, "agency": user.agency_id,
            "officer_id": user.officer_id, "jti": uuid.uuid4().hex}


async def record_failed_login(engine: AsyncEngine, username: str, address: str | None, reason: str) -> None:
    """A refused sign-in enters the audit chain: who was tried, from where, and why (never the password)."""
    async with engine.begin() as conn:
        agency = (await conn.execute(sa.select(t.users.c.agency_id).where(t.users.c.username == username))).scalar()
        await audit.record(conn, f"address:{address or 'unknown'}", "auth.login", f"username:{username[:64]}",
                           outcome="refused", agency_id=agency, details={"reason": reason})


class ActiveAccounts:
    """The enabled accounts, by id, as the token check needs them: loaded whole and reloaded
    when older than ``ttl_s``, so a token is checked without a database round trip and, while
    the database is away, against the last list (the supervisors' live feed keeps working).
    An id not in the list is looked up once (an account made since); disabling through the
    API forgets at once."""

    _DB_DOWN = (OSError, asyncio.TimeoutError, sa.exc.DBAPIError)

    def __init__(self, ttl_s: float, now: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._now = now
        self._users: dict[int, User] = {}
        self._loaded_at: float | None = None

    async def reload(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.users).where(t.users.c.disabled.is_(False)))).mappings().all()
        self._users = {r["id"]: _user(r) for r in rows}
        self._loaded_at = self._now()

    async def get(self, engine: AsyncEngine, uid: int) -> User | None:
        if self._loaded_at is None or self._now() - self._loaded_at >= self.ttl_s:
            try:
                await self.reload(engine)
            except self._DB_DOWN:
                if self._loaded_at is None:
                    raise
                log.warning("accounts not reloaded (database unavailable); checking tokens against the last list")
        user = self._users.get(uid)
        if user is None:
            try:
                async with engine.connect() as conn:
                    row = (await conn.execute(sa.select(t.users).where(
                        t.users.c.id == uid, t.users.c.disabled.is_(False)))).mappings().first()
            except self._DB_DOWN:
                return None  # cannot tell: refuse
            if row is not None:
                user = self._users[uid] = _user(row)
        return user

    def forget(self, uid: int) -> None:
        self._users.pop(uid, None)


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


class LiveTickets:
    """One-time tickets for the supervisors' WebSocket, so a token never travels in a URL (and
    never lands in an access log). A ticket is fetched with the bearer token, is valid for
    ``ttl_s`` and opens one connection; only its hash is kept, in this process's memory."""

    MAX_OPEN = 10_000  # tickets outstanding at most (oldest dropped first)

    def __init__(self, ttl_s: float, now: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._now = now
        self._open: dict[str, tuple[float, object]] = {}

    def issue(self, caller: object) -> str:
        now = self._now()
        self._open = {h: v for h, v in self._open.items() if v[0] > now}
        while len(self._open) >= self.MAX_OPEN:
            self._open.pop(next(iter(self._open)))
        ticket = secrets.token_urlsafe(32)
        self._open[hash_secret(ticket)] = (now + self.ttl_s, caller)
        return ticket

    def redeem(self, ticket: str) -> object:
        entry = self._open.pop(hash_secret(ticket), None)
        if entry is None or entry[0] <= self._now():
            raise AuthError("unknown, used or expired live ticket")
        return entry[1]


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
