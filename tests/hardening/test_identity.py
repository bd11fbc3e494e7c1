"""Issue 17 against a running backend, with real accounts: who may create whose account, an
officer bound to a login only by their own enrolment, tokens bound to an active account and
signed with a key of their own, no published secret, sign-in throttling that X-Forwarded-For
cannot dodge, failed sign-ins audited, and a live feed whose URL carries no token."""
from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import json
import logging
import os
import stat

import httpx
import jwt
import pytest
import sqlalchemy as sa
import websockets
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.app.config import DEVELOPMENT_SECRET, BackendSettings
from backend.app.server import serve
from backend.api.middleware import LoginThrottle
from backend.db import engine as db
from backend.db import schema as t
from backend.exceptions import ConfigurationError
from backend.identity import auth, fleet
from backend.identity.keys import with_keys
from backend.identity.security import issue_token
from backend.privacy import audit
from firmware import frame as F
from tests.backend.conftest import TEST_SECRET_KEY, backend_settings, live_url

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
DEVICE = 0x0D0D0001


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def running(database_url, mqtt_broker, agency, **overrides):
    """A backend with one officer (wearing DEVICE), a fleet admin and a supervisor."""
    settings = backend_settings(database_url, *mqtt_broker, agency, **overrides)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        officer = await fleet.create_officer(engine, agency, "E-1", "Officer Enrol", "Unit 1")
        device = await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, DEVICE)
        await fleet.assign_device(engine, DEVICE, officer)
        await auth.create_user(engine, f"{agency}-admin", PASSWORD, "fleet_admin", agency)
        await auth.create_user(engine, f"{agency}-sup", PASSWORD, "supervisor", agency)
    finally:
        await engine.dispose()
    async with serve(settings) as backend:
        async with httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
            yield backend, http, settings, officer, device.key


async def _token(http, username, password=PASSWORD) -> str:
    r = await http.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def _audit(engine, **where) -> list[dict]:
    await audit.drain_outbox(engine)
    query = sa.select(t.audit_log).order_by(t.audit_log.c.seq)
    for column, value in where.items():
        query = query.where(getattr(t.audit_log.c, column) == value)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


# ---- finding 1: separation of duties for accounts --------------------------------------------------

async def test_fleet_admin_cannot_make_an_officer_login_or_an_auditor(database_url, mqtt_broker, agency):
    async with running(database_url, mqtt_broker, agency) as (backend, http, settings, officer, _):
        admin = _bearer(await _token(http, f"{agency}-admin"))
        # the attack of the issue: an account bound to an officer, made by an admin alone
        r = await http.post("/api/v1/users", headers=admin, json={"username": "spy", "password": PASSWORD,
                                                                 "role": "officer", "officer_id": officer})
        assert r.status_code == 422  # officer_id is no field of an account made here
        r = await http.post("/api/v1/users", headers=admin, json={"username": "spy", "password": PASSWORD, "role": "officer"})
        assert r.status_code == 403 and "enrol" in r.json()["detail"]
        r = await http.post("/api/v1/users", headers=admin, json={"username": "spy", "password": PASSWORD, "role": "auditor"})
        assert r.status_code == 403 and "vigil user create" in r.json()["detail"]
        assert (await http.post("/api/v1/auth/token", data={"username": "spy", "password": PASSWORD})).status_code == 401
        # what a fleet admin may create, audited under the admin (not the database role)
        r = await http.post("/api/v1/users", headers=admin, json={"username": f"{agency}-sup2", "password": PASSWORD,
                                                                 "role": "supervisor"})
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        entries = [e for e in await _audit(backend.runtime.engine) if e["subject"] in (f"user:{uid}", f"users:{uid}")]
        assert {(e["actor"], e["action"]) for e in entries} == {
            (f"user:{agency}-admin", "account.create"), (f"user:{agency}-admin", "provisioning.users.insert")}
        assert not any("password" in json.dumps(e["details"]) for e in entries)
        assert all(e["actor"] != "db:postgres" for e in entries)


async def test_an_officer_binds_a_login_only_by_their_own_enrolment(database_url, mqtt_broker, agency):
    async with running(database_url, mqtt_broker, agency) as (backend, http, settings, officer, _):
        engine = backend.runtime.engine
        admin = _bearer(await _token(http, f"{agency}-admin"))
        r = await http.post("/api/v1/users/enrolments", headers=admin, json={"officer_id": officer})
        assert r.status_code == 201, r.text
        code = r.json()["code"]
        async with engine.connect() as conn:  # only the code's hash is stored
            stored = (await conn.execute(sa.select(t.enrolment_codes).where(t.enrolment_codes.c.officer_id == officer))).mappings().one()
        assert code not in json.dumps(dict(stored), default=str) and stored["issued_by"] == f"user:{agency}-admin"
        assert stored["expires_at"] - stored["issued_at"] == dt.timedelta(seconds=settings.enrolment_code_ttl_s)

        assert (await http.post("/api/v1/auth/enrol", json={"code": "AAAA-BBBB-CCCC", "username": "x1",
                                                            "password": PASSWORD})).status_code == 400
        r = await http.post("/api/v1/auth/enrol", json={"code": code.lower(), "username": f"{agency}-me", "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert r.json()["officer_id"] == officer and r.json()["role"] == "officer"
        # single use
        r = await http.post("/api/v1/auth/enrol", json={"code": code, "username": f"{agency}-me2", "password": PASSWORD})
        assert r.status_code == 400 and "used" in r.json()["detail"]
        me = _bearer(await _token(http, f"{agency}-me"))
        assert (await http.get("/api/v1/auth/me", headers=me)).json()["officer_id"] == officer
        # an officer with an account gets no second one by a new code
        assert (await http.post("/api/v1/users/enrolments", headers=admin, json={"officer_id": officer})).status_code == 409
        enrolled = await _audit(engine, action="account.enrol")
        assert [(e["actor"], e["details"]["code_issued_by"]) for e in enrolled] == [(f"officer:{officer}", f"user:{agency}-admin")]
        assert [e["actor"] for e in await _audit(engine, action="enrolment.issue")] == [f"user:{agency}-admin"]

        # short-lived: a code past its time opens nothing
        uid = (await http.get("/api/v1/users", headers=admin)).json()
        mine = next(u["id"] for u in uid if u["username"] == f"{agency}-me")
        assert (await http.post(f"/api/v1/users/{mine}/disable", headers=admin)).status_code == 204
        code = (await http.post("/api/v1/users/enrolments", headers=admin, json={"officer_id": officer})).json()["code"]
        async with engine.begin() as conn:
            await conn.execute(sa.update(t.enrolment_codes).where(t.enrolment_codes.c.redeemed_at.is_(None))
                               .values(expires_at=sa.func.now() - dt.timedelta(seconds=1)))
        r = await http.post("/api/v1/auth/enrol", json={"code": code, "username": f"{agency}-me3", "password": PASSWORD})
        assert r.status_code == 400 and "expired" in r.json()["detail"]


# ---- finding 6: tokens and keys ---------------------------------------------------------------------

async def test_tokens_are_bound_to_an_active_account(database_url, mqtt_broker, agency):
    async with running(database_url, mqtt_broker, agency) as (backend, http, settings, officer, _):
        key = settings.token_key.get_secret_value()
        token = await _token(http, f"{agency}-sup")
        claims = jwt.decode(token, key, algorithms=["HS256"])
        assert claims["jti"] and claims["uid"] and claims["role"] == "supervisor"
        assert (await http.get("/api/v1/auth/me", headers=_bearer(token))).status_code == 200

        without_jti = jwt.encode({k: v for k, v in claims.items() if k != "jti"}, key, algorithm="HS256")
        r = await http.get("/api/v1/auth/me", headers=_bearer(without_jti))
        assert r.status_code == 401 and "jti" in r.json()["detail"]
        nobody = issue_token(key, {**claims, "uid": 2**30, "sub": "nobody"}, 3600)
        assert (await http.get("/api/v1/auth/me", headers=_bearer(nobody))).status_code == 401
        promoted = issue_token(key, {**claims, "role": "fleet_admin"}, 3600)  # a role the account does not have
        assert (await http.get("/api/v1/auth/me", headers=_bearer(promoted))).status_code == 401
        # the device-key wrapping secret signs nothing, and the published secret of old neither
        for wrong in (TEST_SECRET_KEY, DEVELOPMENT_SECRET):
            forged = issue_token(wrong, claims, 3600)
            assert (await http.get("/api/v1/auth/me", headers=_bearer(forged))).status_code == 401

        # disabled through the API: refused at once
        admin = _bearer(await _token(http, f"{agency}-admin"))
        assert (await http.post(f"/api/v1/users/{claims['uid']}/disable", headers=admin)).status_code == 204
        r = await http.get("/api/v1/auth/me", headers=_bearer(token))
        assert r.status_code == 401 and "disabled" in r.json()["detail"]
        assert (await http.post("/api/v1/auth/token", data={"username": f"{agency}-sup", "password": PASSWORD})).status_code == 401
        # deleted behind the API's back: refused once the cached answer is older than its lifetime
        clock = FakeClock()
        backend.app.state.accounts = accounts = auth.ActiveAccounts(10.0, clock)
        admin_claims = jwt.decode(admin["Authorization"][7:], key, algorithms=["HS256"])
        assert (await http.get("/api/v1/auth/me", headers=admin)).status_code == 200
        async with backend.runtime.engine.begin() as conn:
            await conn.execute(sa.update(t.users).where(t.users.c.id == admin_claims["uid"]).values(disabled=True))
        assert (await http.get("/api/v1/auth/me", headers=admin)).status_code == 200  # cached
        clock.now += 10
        assert (await http.get("/api/v1/auth/me", headers=admin)).status_code == 401
        assert accounts.ttl_s == 10.0


async def test_a_device_provisioned_before_the_key_split_still_verifies(database_url, mqtt_broker, agency):
    """Device keys wrapped under the former single secret (VIGIL_SECRET_KEY) open unchanged:
    that secret now only wraps device keys, and tokens have their own key."""
    legacy_secret = "the-one-secret-of-before-" + "s" * 20
    device_key = bytes(range(32))
    nonce = bytes(12)
    # the wrapping as the backend did it before the split, written out here as a golden value
    wrapped = nonce + AESGCM(hmac.digest(legacy_secret.encode(), b"vigil/device-key-wrap/v1", "sha256")).encrypt(
        nonce, device_key, str(DEVICE + 1).encode())
    settings = backend_settings(database_url, *mqtt_broker, agency, secret_key=legacy_secret)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        async with engine.begin() as conn:
            await conn.execute(sa.insert(t.devices).values(id=DEVICE + 1, agency_id=agency, key_wrapped=wrapped, placement="chest"))
    finally:
        await engine.dispose()
    async with serve(settings) as backend:
        registry = backend.runtime.registry
        await registry.refresh()
        frame = F.seal(F.DeviceKeys(device_key), F.TYPE_STATUS, DEVICE + 1, 7, 1_700_000_000_000, F.encode_status(80, 3900, (1, 0, 0)))
        header, _ = F.open_frame(frame, registry.get(DEVICE + 1).keys)
        assert header.seq == 7
        assert settings.token_key.get_secret_value() != legacy_secret


def test_no_published_secret_development_generates_its_own(tmp_path, caplog):
    path = tmp_path / "state" / "keys.json"
    bare = BackendSettings(keys_file=path)
    assert bare.secret_key is None and bare.token_key is None  # no default anybody could read in the source
    with caplog.at_level(logging.WARNING, logger="vigil.keys"):
        first = with_keys(bare)
    assert "GENERATED" in caplog.text and str(path) in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.token_key.get_secret_value() != first.secret_key.get_secret_value()
    assert len(first.token_key.get_secret_value()) >= 32
    again = with_keys(BackendSettings(keys_file=path))  # the same keys next start
    assert again.token_key == first.token_key and again.secret_key == first.secret_key
    configured = with_keys(BackendSettings(keys_file=tmp_path / "other.json", secret_key="c" * 40, token_key="d" * 40))
    assert configured.secret_key.get_secret_value() == "c" * 40 and not (tmp_path / "other.json").exists()
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError):
        with_keys(BackendSettings(keys_file=path))  # keys others can read are not used
    with pytest.raises(ConfigurationError):
        BackendSettings(environment="production", keys_file=path)  # production never generates
    with pytest.raises(ConfigurationError):
        BackendSettings(secret_key="e" * 40, token_key="e" * 40)  # one key for both jobs
    with pytest.raises(ConfigurationError):
        BackendSettings(token_key=DEVELOPMENT_SECRET)


def _start_with_keys(path: str) -> tuple[str, str]:
    settings = with_keys(BackendSettings(keys_file=path))
    return settings.secret_key.get_secret_value(), settings.token_key.get_secret_value()


def test_processes_starting_at_once_share_one_complete_keys_file(tmp_path):
    """Two shards started together: one wrote the file while the other read it empty and failed
    to start (JSONDecodeError). Now each finds no file or the whole one: all get the same keys."""
    import concurrent.futures
    import multiprocessing
    for attempt in range(5):
        path = str(tmp_path / f"race{attempt}" / "keys.json")
        with concurrent.futures.ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("fork")) as pool:
            got = list(pool.map(_start_with_keys, [path] * 12))
        assert len(set(got)) == 1, f"attempt {attempt}: {len(set(got))} different key sets"
        assert sorted(p.name for p in (tmp_path / f"race{attempt}").iterdir()) == ["keys.json"]  # no temporary left
    (tmp_path / "broken.json").write_text("")
    os.chmod(tmp_path / "broken.json", 0o600)
    with pytest.raises(ConfigurationError, match="delete it"):
        with_keys(BackendSettings(keys_file=tmp_path / "broken.json"))  # a typed error, not a JSON traceback


# ---- finding 7: throttling and auditing sign-ins -----------------------------------------------------

async def test_forwarded_for_does_not_dodge_the_throttle(database_url, mqtt_broker, agency):
    async with running(database_url, mqtt_broker, agency) as (backend, http, settings, officer, _):
        clock = FakeClock()
        backend.app.state.login_throttle = LoginThrottle(5, 8, 60.0, clock)
        username = f"{agency}-sup"
        for i in range(5):  # a new "client" each time, as the issue's attacker did
            r = await http.post("/api/v1/auth/token", data={"username": username, "password": "wrong password"},
                                headers={"X-Forwarded-For": f"198.51.100.{i}"})
            assert r.status_code == 401
        r = await http.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD},
                            headers={"X-Forwarded-For": "198.51.100.200"})
        assert r.status_code == 429
        # spraying one password over many usernames from one address
        for i in range(3):
            assert (await http.post("/api/v1/auth/token", data={"username": f"victim-{i}", "password": "Summer2024!"})).status_code == 401
        r = await http.post("/api/v1/auth/token", data={"username": "victim-9", "password": "Summer2024!"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0

        refused = await _audit(backend.runtime.engine, action="auth.login")
        assert len(refused) == 8 and {e["outcome"] for e in refused} == {"refused"}
        assert {e["actor"] for e in refused} == {"address:127.0.0.1"}  # the peer, not what the header claimed
        assert refused[0]["subject"] == f"username:{username}" and refused[0]["agency_id"] == agency
        assert not any(p in json.dumps(e["details"]) for e in refused for p in ("wrong password", "Summer2024!"))


async def test_forwarded_for_believed_only_from_a_configured_proxy(database_url, mqtt_broker, agency):
    async with running(database_url, mqtt_broker, agency, trusted_proxies=["127.0.0.0/8"]) as (backend, http, *_):
        clock = FakeClock()
        backend.app.state.login_throttle = LoginThrottle(100, 2, 60.0, clock)
        for _ in range(2):
            await http.post("/api/v1/auth/token", data={"username": "u", "password": "wrong password"},
                            headers={"X-Forwarded-For": "203.0.113.5"})
        blocked = await http.post("/api/v1/auth/token", data={"username": "v", "password": "wrong password"},
                                  headers={"X-Forwarded-For": "203.0.113.5"})
        other = await http.post("/api/v1/auth/token", data={"username": "v", "password": "wrong password"},
                                headers={"X-Forwarded-For": "203.0.113.6"})
        assert (blocked.status_code, other.status_code) == (429, 401)  # the proxy's client is the address


# ---- finding 8: the live feed's URL carries no token -----------------------------------------------

async def test_live_feed_opens_with_a_one_time_ticket(database_url, mqtt_broker, agency, caplog):
    async with running(database_url, mqtt_broker, agency) as (backend, http, settings, officer, _):
        token = await _token(http, f"{agency}-sup")
        ws_base = backend.url.replace("http", "ws") + "/api/v1/ws"
        async with websockets.connect(f"{ws_base}?token={token}") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 4401 and "ticket" in closed.value.rcvd.reason

        with caplog.at_level(logging.INFO):
            url = await live_url(backend.url, token)
            assert token not in url
            async with websockets.connect(url):
                pass
            async with websockets.connect(url) as ws:  # the same ticket twice
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
        assert closed.value.rcvd.code == 4401 and "used" in closed.value.rcvd.reason
        assert token not in caplog.text

        clock = FakeClock()
        backend.app.state.live_tickets = tickets = auth.LiveTickets(30.0, clock)
        url = await live_url(backend.url, token)
        clock.now += 30
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 4401 and "expired" in closed.value.rcvd.reason
        assert tickets.ttl_s == 30.0
