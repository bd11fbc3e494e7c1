"""Ingest and detection: raw waveform store, holds around alerts, device status.

The tables are documented in backend/detection/schema.py. ``raw_windows`` is time-partitioned
the way 0001 chose for ``features`` (vigil_meta.storage_mode): a TimescaleDB hypertable, or
native daily range partitions kept ready by ``vigil_ensure_detection_partitions`` (a function
of its own, so this branch never rewrites 0001's ``vigil_ensure_partitions``).

Revision ID: 0003_detection
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from backend.detection import schema as s

revision = "0003_detection"
down_revision = "0001"
branch_labels = None
depends_on = None

_PARTITION_FUNCTION = """
create or replace function vigil_ensure_detection_partitions(days_back int, days_ahead int) returns void
language plpgsql as $$
declare
    tbl text;
    d date;
begin
    if (select value from vigil_meta where key = 'storage_mode') <> 'native_partitioning' then
        return;
    end if;
    foreach tbl in array array['raw_windows'] loop
        for d in select generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date loop
            execute format(
                'create table if not exists %I partition of %I for values from (%L) to (%L)',
                tbl || '_' || to_char(d, 'YYYYMMDD'), tbl, d::timestamptz, (d + 1)::timestamptz);
        end loop;
    end loop;
end $$;
"""


def upgrade() -> None:
    bind = op.get_bind()
    mode = bind.execute(sa.text("select value from vigil_meta where key = 'storage_mode'")).scalar_one()
    s.metadata.create_all(bind, tables=[s.raw_holds, s.device_status])
    ddl = str(CreateTable(s.raw_windows).compile(dialect=postgresql.dialect())).strip()
    if mode == "timescaledb":
        bind.execute(sa.text(ddl))
        bind.execute(sa.text("select create_hypertable('raw_windows', 'time', chunk_time_interval => interval '1 day')"))
    else:
        bind.execute(sa.text(ddl + " PARTITION BY RANGE (time)"))
    for index in s.raw_windows.indexes:
        index.create(bind)
    bind.execute(sa.text(_PARTITION_FUNCTION))
    bind.execute(sa.text("select vigil_ensure_detection_partitions(2, 3)"))


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text("drop function if exists vigil_ensure_detection_partitions(int, int)"))
    s.metadata.drop_all(bind)
