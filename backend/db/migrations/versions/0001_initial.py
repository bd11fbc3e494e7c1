"""Initial schema: agencies, officers, devices, gateways, assignments, alerts, features.

Revision ID: 0001
Revises:
"""
import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from backend.db import schema as t

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.vigil")

# Daily partitions for every range-partitioned table of the schema (features here; raw_windows
# of 0003 too): one function, whichever migrations made the tables.
_PARTITION_FUNCTION = """
create or replace function vigil_ensure_partitions(days_back int, days_ahead int) returns void
language plpgsql as $$
declare
    tbl text;
    d date;
begin
    if (select value from vigil_meta where key = 'storage_mode') <> 'native_partitioning' then
        return;
    end if;
    for tbl in select c.relname from pg_partitioned_table p join pg_class c on c.oid = p.partrelid
               join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = current_schema() and p.partstrat = 'r' order by c.relname loop
        for d in select generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date loop
            execute format(
                'create table if not exists %I partition of %I for values from (%L) to (%L)',
                tbl || '_' || to_char(d, 'YYYYMMDD'), tbl, d::timestamptz, (d + 1)::timestamptz);
        end loop;
    end loop;
end $$;
"""


def _timescaledb_available(bind) -> bool:
    # The extension needs shared_preload_libraries; try it inside a savepoint so a refusal
    # leaves the migration's transaction usable.
    try:
        with bind.begin_nested():
            bind.execute(sa.text("create extension if not exists timescaledb"))
        return True
    except sa.exc.DBAPIError as exc:
        log.info("TimescaleDB not available (%s); using native partitioning", str(exc.orig).strip().splitlines()[0])
        return False


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table("vigil_meta", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
    plain = [tbl for name, tbl in t.metadata.tables.items() if name not in t.TIME_SERIES_TABLES]
    t.metadata.create_all(bind, tables=plain)

    ddl = str(CreateTable(t.features).compile(dialect=postgresql.dialect())).strip()
    if _timescaledb_available(bind):
        mode = "timescaledb"
        bind.execute(sa.text(ddl))
        bind.execute(sa.text("select create_hypertable('features', 'time', chunk_time_interval => interval '1 day')"))
    else:
        mode = "native_partitioning"
        bind.execute(sa.text(ddl + " PARTITION BY RANGE (time)"))
    for index in t.features.indexes:
        index.create(bind)
    bind.execute(sa.text("insert into vigil_meta (key, value) values ('storage_mode', :m)"), {"m": mode})
    bind.execute(sa.text(_PARTITION_FUNCTION))
    bind.execute(sa.text("select vigil_ensure_partitions(2, 3)"))


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text("drop function if exists vigil_ensure_partitions(int, int)"))
    t.metadata.drop_all(bind)
    op.drop_table("vigil_meta")
