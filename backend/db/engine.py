"""Database access: the async engine, migrations and the time-series storage mode."""
from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.app.config import BackendSettings

log = logging.getLogger("vigil.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Partitions kept ready around "now" when TimescaleDB is absent (it creates chunks itself).
PARTITION_DAYS_BACK = 2
PARTITION_DAYS_AHEAD = 3


def create_engine(settings: BackendSettings) -> AsyncEngine:
    # Short timeouts: while the database is away, callers must learn it fast and keep their
    # data for a retry rather than hang the ingest loop.
    return create_async_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        connect_args={"timeout": 3, "command_timeout": 10},
    )


def alembic_config(settings: BackendSettings):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", settings.sync_database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: BackendSettings, revision: str = "heads") -> None:
    """Create the database if it is missing, then run the migrations up to ``revision``.
    Migrations of independent areas branch from 0001 (each area its own chain); "heads"
    applies them all."""
    from alembic import command

    ensure_database_exists(settings.sync_database_url)
    command.upgrade(alembic_config(settings), revision)


def ensure_database_exists(sync_url: str) -> None:
    url = sa.engine.make_url(sync_url)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("select 1 from pg_database where datname = :n"), {"n": url.database}).scalar()
            if not exists:
                conn.execute(sa.text(f'create database "{url.database}"'))
                log.info("created database %s", url.database)
    finally:
        admin.dispose()


async def storage_mode(engine: AsyncEngine) -> str:
    """'timescaledb' or 'native_partitioning': which time-series path the migrations took."""
    async with engine.connect() as conn:
        return (await conn.execute(sa.text("select value from vigil_meta where key = 'storage_mode'"))).scalar_one()


async def ensure_partitions(engine: AsyncEngine) -> None:
    """Create the daily partitions around now (no-op under TimescaleDB)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("select vigil_ensure_partitions(:back, :ahead)"),
            {"back": PARTITION_DAYS_BACK, "ahead": PARTITION_DAYS_AHEAD},
        )
