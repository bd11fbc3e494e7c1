from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from backend import fleet, infra
from backend.core import db
from backend.core.config import BackendSettings
from backend.core.security import issue_token
from backend.server import serve


def new_database(pg_server: str) -> str:
    """A fresh, migrated database on the session's PostgreSQL; returns its async URL."""
    name = "vigil_test_" + uuid.uuid4().hex[:12]
    url = pg_server.replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    return url


def backend_settings(database_url: str, mqtt_host: str, mqtt_port: int, agency: str, **overrides) -> BackendSettings:
    return BackendSettings(
        database_url=database_url, mqtt_url=f"mqtt://{mqtt_host}:{mqtt_port}",
        mqtt_client_id="vigil-backend-" + uuid.uuid4().hex[:8], agencies=[agency],
        http_port=infra.free_port(), db_retry_interval_s=0.2, registry_refresh_s=0.5, **overrides,
    )


def supervisor_token(settings: BackendSettings, agency: str) -> str:
    return issue_token(settings.secret_key.get_secret_value(), {"sub": "sup-1", "role": "supervisor", "agency": agency}, 3600)


@pytest.fixture
def database_url(pg_server):
    url = new_database(pg_server)
    yield url
    admin = sa.create_engine(pg_server.replace("postgresql://", "postgresql+psycopg2://") + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"drop database if exists {url.rsplit('/', 1)[1]} with (force)"))
    admin.dispose()
