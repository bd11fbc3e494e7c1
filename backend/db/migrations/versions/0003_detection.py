"""Ingest and detection: raw waveform store, holds around alerts, device status.

The tables are documented in backend/db/schema.py; this is explicit DDL, a snapshot of this revision. ``raw_windows`` is time-partitioned
the way 0001 chose for ``features`` (vigil_meta.storage_mode): a TimescaleDB hypertable, or
native daily range partitions kept ready by 0001's ``vigil_ensure_partitions`` (it covers
every range-partitioned table).

Revision ID: 0003_detection
Revises: 0002_api
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_detection"
down_revision = "0002_api"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    mode = bind.execute(sa.text("select value from vigil_meta where key = 'storage_mode'")).scalar_one()
    partition = {} if mode == "timescaledb" else {"postgresql_partition_by": "RANGE (time)"}
    op.create_table('raw_windows',
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('officer_id', sa.Integer(), nullable=True),
        sa.Column('rate_hz', sa.SmallInteger(), nullable=False),
        sa.Column('samples', sa.SmallInteger(), nullable=False),
        sa.Column('ppg', postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column('accel_mg', postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column('backfill', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('held_by_alert', sa.UUID(), nullable=True),
        **partition,
    )
    op.create_index('raw_windows_device_time', 'raw_windows', ['device_id', 'time'], unique=False)
    if mode == "timescaledb":
        op.execute("select create_hypertable('raw_windows', 'time', chunk_time_interval => interval '1 day', create_default_indexes => false)")
    op.create_table('raw_holds',
        sa.Column('alert_id', sa.UUID(), nullable=False),
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('until', sa.DateTime(timezone=True), nullable=False),
        sa.Column('kind', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('alert_id')
    )
    op.create_index('raw_holds_device_span', 'raw_holds', ['device_id', 'start', 'until'], unique=False)
    op.create_table('device_status',
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
        sa.Column('gateway', sa.Text(), nullable=True),
        sa.Column('connected', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('battery_pct', sa.SmallInteger(), nullable=True),
        sa.Column('battery_mv', sa.Integer(), nullable=True),
        sa.Column('charging', sa.Boolean(), nullable=True),
        sa.Column('worn', sa.Boolean(), nullable=True),
        sa.Column('skin_contact', sa.Boolean(), nullable=True),
        sa.Column('firmware', sa.Text(), nullable=True),
        sa.Column('dropped_samples', sa.BigInteger(), nullable=True),
        sa.Column('link_gaps', sa.Integer(), server_default='0', nullable=False),
        sa.Column('late_frames', sa.Integer(), server_default='0', nullable=False),
        sa.Column('backfill_frames', sa.Integer(), server_default='0', nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
        sa.PrimaryKeyConstraint('device_id')
    )
    op.execute("select vigil_ensure_partitions(2, 3)")  # 0001's function covers every partitioned table


def downgrade() -> None:
    for table in ("device_status", "raw_holds", "raw_windows"):
        op.drop_table(table)
