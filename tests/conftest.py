"""Shared fixtures: real Mosquitto and real PostgreSQL.

The machine's services (127.0.0.1:1883 and :5432) are used when they answer; otherwise the
project starts private ones (backend/local/infra.py), so the suite runs on a fresh machine too.
Tests isolate themselves by a unique agency (MQTT topic prefix) and a database per session.
"""
from __future__ import annotations

import os
import shutil
import uuid

import pytest
import sqlalchemy as sa

from backend.local import infra


@pytest.fixture(scope="session")
def mqtt_broker():
    """(host, port) of a running Mosquitto shared by the session."""
    url = os.environ.get("VIGIL_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
    if infra.mqtt_url_reachable(url):
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        yield parts.hostname, parts.port or 1883
        return
    with infra.PrivateMosquitto() as broker:
        yield broker.host, broker.port


@pytest.fixture
def private_mosquitto(tmp_path):
    """A Mosquitto owned by this test, which it may stop and start again (same port, same data)."""
    broker = infra.PrivateMosquitto(workdir=tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def pg_server():
    """Base URL (no database name) of a running PostgreSQL for the session."""
    url = os.environ.get("VIGIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if infra.pg_url_reachable(url):
        yield url.rsplit("/", 1)[0]
        return
    with infra.PrivatePostgres() as pg:
        yield pg.url.rsplit("/", 1)[0]


@pytest.fixture
def private_postgres():
    """A PostgreSQL cluster owned by this test, which it may stop and start again.
    (Not under tmp_path: as root the cluster runs as 'postgres', who cannot enter pytest's dirs.)"""
    pg = infra.PrivatePostgres().start()
    yield pg
    try:
        pg.stop("immediate")
    except Exception:  # already stopped by the test
        pass
    shutil.rmtree(pg.workdir, ignore_errors=True)


@pytest.fixture
def agency():
    """A unique agency (tenant) name, so tests sharing a broker never see each other's frames."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def database_url(pg_server):
    """A fresh database on the session's PostgreSQL (async URL), dropped afterwards; not yet migrated."""
    url = pg_server.replace("postgresql://", "postgresql+asyncpg://") + "/vigil_test_" + uuid.uuid4().hex[:12]
    yield url
    admin = sa.create_engine(pg_server.replace("postgresql://", "postgresql+psycopg2://") + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"drop database if exists {url.rsplit('/', 1)[1]} with (force)"))
    admin.dispose()
