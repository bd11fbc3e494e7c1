"""Authentication hardening against the real app and PostgreSQL: sign-in throttling (time
injected), token expiry and revocation, no default secrets outside development, secure headers."""
from __future__ import annotations

import time

import httpx
import pytest

from backend.identity import auth
from backend.api.middleware import LoginThrottle
from backend.db import engine as db
from backend.app.config import DEVELOPMENT_SECRET, BackendSettings
from backend.identity.security import issue_token
from backend.exceptions import ConfigurationError
from backend.app.server import serve
from gateway.config import GatewaySettings
from tests.backend.conftest import backend_settings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def app_with_user(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        from backend.identity import fleet
        await fleet.ensure_agency(engine, agency)
        await auth.create_user(engine, f"{agency}-sup", PASSWORD, "supervisor", agency)
    finally:
        await engine.dispose()
    async with serve(settings) as backend:
        async with httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
            yield backend, http, settings, f"{agency}-sup"


async def _uid(backend, username):
    import sqlalchemy as sa
    from backend.db import schema as t
    async with backend.runtime.engine.connect() as conn:
        return (await conn.execute(sa.select(t.users.c.id).where(t.users.c.username == username))).scalar_one()


async def _login(http, username, password):
    return await http.post("/api/v1/auth/token", data={"username": username, "password": password})


async def test_login_throttled_per_username_and_client(app_with_user):
    backend, http, settings, username = app_with_user
    clock = FakeClock()
    backend.app.state.login_throttle = throttle = LoginThrottle(5, 20, 60.0, clock)
    for _ in range(5):
        assert (await _login(http, username, "wrong password")).status_code == 401
    refused = await _login(http, username, PASSWORD)  # even the right password waits now
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 60
    clock.now += 30
    refused = await _login(http, username, PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 30
    # another username from the same client is not punished for it
    assert (await _login(http, "someone-else", "wrong password")).status_code == 401
    clock.now += 30.5
    ok = await _login(http, username, PASSWORD)
    assert ok.status_code == 200, ok.text
    assert throttle.retry_after(username, "127.0.0.1") is None  # success clears the username's count
    print(f"\nlogin throttle: 5 failures/60 s -> 429 with Retry-After; refused {throttle.refused} attempts")


def test_login_throttle_forgets_and_is_bounded():
    clock = FakeClock()
    throttle = LoginThrottle(2, 100, 10.0, clock)
    throttle.MAX_KEYS = 3
    for name in "abcd":
        throttle.failed(name, name)  # two keys each: username and address
    assert len(throttle._failures) == 3  # the oldest keys were forgotten
    throttle.failed("d", "d")
    assert throttle.retry_after("d", "e") == 10
    clock.now += 10
    assert throttle.retry_after("d", "e") is None
    with pytest.raises(ValueError):
        LoginThrottle(0, 1, 10.0)


async def test_token_expiry_and_revocation(app_with_user):
    backend, http, settings, username = app_with_user
    secret = settings.token_key.get_secret_value()
    claims = {"sub": username, "uid": await _uid(backend, username), "role": "supervisor", "agency": settings.agencies[0],
              "jti": "expired-1"}
    expired = issue_token(secret, claims, 60, now=time.time() - 120)
    r = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    forged = issue_token("x" * 40, {**claims, "jti": "forged"}, 3600)
    assert (await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})).status_code == 401

    token = (await _login(http, username, PASSWORD)).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await http.get("/api/v1/auth/me", headers=bearer)).status_code == 200
    assert (await http.post("/api/v1/auth/logout", headers=bearer)).status_code == 204
    r = await http.get("/api/v1/auth/me", headers=bearer)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    await backend.runtime.revoked.refresh()  # still revoked after the cache reloads from the database
    assert (await http.get("/api/v1/alerts", headers=bearer)).status_code == 401


def test_no_default_secrets_outside_development():
    token_key = "t" * 40
    with pytest.raises(ConfigurationError):
        BackendSettings(environment="production")
    with pytest.raises(ConfigurationError):
        BackendSettings(environment="production", secret_key=DEVELOPMENT_SECRET, token_key=token_key)
    with pytest.raises(ConfigurationError):
        BackendSettings(environment="production", secret_key="short", token_key=token_key)
    with pytest.raises(ConfigurationError):
        BackendSettings(environment="production", secret_key="p" * 40)  # no token key
    assert BackendSettings(environment="production", secret_key="p" * 40, token_key=token_key).environment == "production"
    with pytest.raises(ConfigurationError):
        BackendSettings(ssl_certfile="/x.pem")  # a certificate without its key
    # the gateway ships no credentials at all: each comes from its registration
    gw = GatewaySettings(agency="a", gateway_id="g")
    assert gw.mqtt_password is None and gw.backend_token is None and gw.mqtt_username is None


async def test_secure_headers(app_with_user):
    backend, http, settings, username = app_with_user
    api = await http.get("/api/v1/health")
    for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                        ("referrer-policy", "no-referrer")):
        assert api.headers[name] == value
    assert "default-src 'none'" in api.headers["content-security-policy"]
    assert "strict-transport-security" not in api.headers  # plain HTTP: HSTS only over TLS
    page = await http.get("/supervisor")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp  # the dashboard's own policy is kept
    assert page.headers["x-frame-options"] == "DENY"
    docs = await http.get("/docs")
    assert "script-src 'self' 'unsafe-inline'" in docs.headers["content-security-policy"]
    assert "https:" not in docs.headers["content-security-policy"]  # Swagger UI is served here, nothing from a CDN
    assert (await http.post("/api/v1/auth/token", data={"username": "x", "password": "y"})).headers["x-content-type-options"] == "nosniff"
