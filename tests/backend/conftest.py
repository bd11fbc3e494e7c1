from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa

from backend.local import infra
from backend.app.config import BackendSettings
from backend.db import schema as t
from backend.identity.keys import with_keys
from backend.identity.security import issue_token

# The tests' own keys (never the backend's defaults: there are none).
TEST_SECRET_KEY = "test-device-key-wrapping-secret-" + "w" * 16
TEST_TOKEN_KEY = "test-token-signing-key-" + "t" * 24


def backend_settings(database_url: str, mqtt_host: str, mqtt_port: int, agency: str, **overrides) -> BackendSettings:
    overrides.setdefault("secret_key", TEST_SECRET_KEY)
    overrides.setdefault("token_key", TEST_TOKEN_KEY)
    return BackendSettings(
        database_url=database_url, mqtt_url=f"mqtt://{mqtt_host}:{mqtt_port}",
        mqtt_client_id="vigil-backend-" + uuid.uuid4().hex[:8], agencies=[agency],
        http_port=infra.free_port(), db_retry_interval_s=0.2, registry_refresh_s=0.5,
        journal_dir=Path(tempfile.gettempdir()) / "vigil-test-journals", **overrides,
    )


def person_token(settings: BackendSettings, role: str, agency: str, officer_id: int | None = None,
                 username: str | None = None) -> str:
    """A token as the backend issues one, for an account that exists (made here, without a usable
    password, if it does not): tokens of accounts that do not exist are refused."""
    settings = with_keys(settings)
    username = username or f"{role}-{agency}-{officer_id if officer_id is not None else 'x'}"
    engine = sa.create_engine(settings.sync_migration_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("insert into agencies (id, name) values (:a, :a) on conflict do nothing"), {"a": agency})
            uid = conn.execute(sa.select(t.users.c.id).where(t.users.c.username == username)).scalar()
            if uid is None:
                uid = conn.execute(sa.insert(t.users).values(
                    username=username, password_hash="!", role=role, agency_id=agency, officer_id=officer_id,
                ).returning(t.users.c.id)).scalar_one()
    finally:
        engine.dispose()
    claims = {"sub": username, "uid": uid, "role": role, "agency": agency, "officer_id": officer_id}
    return issue_token(settings.token_key.get_secret_value(), claims, 3600)


def supervisor_token(settings: BackendSettings, agency: str) -> str:
    return person_token(settings, "supervisor", agency, username=f"sup-1-{agency}")


async def live_url(base_url: str, token: str, **query) -> str:
    """The supervisors' WebSocket URL, opened by a one-time ticket fetched with ``token``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    params = urlencode({"ticket": response.json()["ticket"], **query})
    return base_url.replace("http", "ws", 1) + f"/api/v1/ws?{params}"
