"""Ingest and detection: raw waveform store, holds around alerts, device status.

The tables are documented in backend/detection/schema.py. ``raw_windows`` is time-partitioned
the way 0001 chose for ``features`` (vigil_meta.storage_mode): a TimescaleDB hypertable, or
native daily range partitions kept ready by 0001's ``vigil_ensure_partitions`` (it covers
every range-partitioned table).

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
    bind.execute(sa.text("select vigil_ensure_partitions(2, 3)"))  # 0001's function covers every partitioned table


def downgrade() -> None:
    bind = op.get_bind()
    s.metadata.drop_all(bind)
