"""Alembic environment: the migrations run on a synchronous connection; ``target_metadata`` is
the one schema (backend/db/schema.py), which ``alembic check`` compares with the database."""
import re

from alembic import context
from sqlalchemy import engine_from_config, pool

from backend.db.schema import TIME_SERIES_TABLES, metadata

config = context.config

# Daily partitions of the time-series tables (vigil_ensure_partitions) are not in the schema.
_PARTITION = re.compile(rf"^({'|'.join(TIME_SERIES_TABLES)})_\d{{8}}$")


def include_name(name, type_, parent_names) -> bool:
    return not (type_ == "table" and name and _PARTITION.match(name))


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
