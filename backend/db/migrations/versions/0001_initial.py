"""Initial schema: agencies, officers, devices, gateways, assignments, alerts, features.

Explicit DDL, a snapshot of the schema at this revision: later changes to backend/db/schema.py
never change what this migration creates (``alembic check`` in the tests compares the two).

Revision ID: 0001
Revises:
"""
import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

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
    """Whether ``features`` and ``raw_windows`` can be hypertables on this server.

    Asked of the catalogue first: once TimescaleDB's files are installed, a server that does not
    preload the library answers CREATE EXTENSION with FATAL and closes the connection, which no
    savepoint survives. So the extension is created only when it is both installed and preloaded,
    and then inside a savepoint (a role without the privilege gets an ordinary error)."""
    installed, preload = bind.execute(sa.text(
        "select exists (select 1 from pg_available_extensions where name = 'timescaledb'), "
        "current_setting('shared_preload_libraries')")).one()
    if not installed:
        log.info("TimescaleDB is not installed on this server; using native partitioning")
        return False
    if "timescaledb" not in [lib.strip() for lib in preload.split(",")]:
        log.warning("TimescaleDB is installed but not in shared_preload_libraries (set it and restart PostgreSQL "
                    "to use it); using native partitioning")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("create extension if not exists timescaledb"))
        return True
    except sa.exc.DBAPIError as exc:
        log.warning("TimescaleDB not available (%s); using native partitioning", str(exc.orig).strip().splitlines()[0])
        return False


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table('vigil_meta',
        sa.Column('key', sa.Text(), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('key')
    )
    op.create_table('agencies',
        sa.Column('id', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_table('officers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=False),
        sa.Column('badge', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('unit', sa.Text(), server_default='', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['agency_id'], ['agencies.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('agency_id', 'badge')
    )
    op.create_index(op.f('ix_officers_agency_id'), 'officers', ['agency_id'], unique=False)
    op.create_table('devices',
        sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=False),
        sa.Column('key_wrapped', sa.LargeBinary(), nullable=False),
        sa.Column('placement', sa.Text(), server_default='upper_arm', nullable=False),
        sa.Column('status', sa.Text(), server_default='active', nullable=False),
        sa.Column('firmware', sa.Text(), nullable=True),
        sa.Column('battery_pct', sa.SmallInteger(), nullable=True),
        sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status in ('active', 'retired')", name='device_status'),
        sa.CheckConstraint('id >= 0 and id <= 4294967295', name='device_id_uint32'),
        sa.ForeignKeyConstraint(['agency_id'], ['agencies.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_devices_agency_id'), 'devices', ['agency_id'], unique=False)
    op.create_table('gateways',
        sa.Column('id', sa.Text(), nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=False),
        sa.Column('token_hash', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['agency_id'], ['agencies.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_gateways_agency_id'), 'gateways', ['agency_id'], unique=False)
    op.create_table('device_assignments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('officer_id', sa.Integer(), nullable=False),
        sa.Column('starts_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
        sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_device_assignments_officer_id'), 'device_assignments', ['officer_id'], unique=False)
    op.create_index(op.f('ix_device_assignments_device_id'), 'device_assignments', ['device_id'], unique=False)
    op.create_table('alerts',
        sa.Column('id', sa.UUID(), nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=False),
        sa.Column('officer_id', sa.Integer(), nullable=True),
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.Text(), nullable=False),
        sa.Column('priority', sa.SmallInteger(), nullable=False),
        sa.Column('state', sa.Text(), nullable=False),
        sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('device_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('explanation', postgresql.JSONB(), nullable=False),
        sa.Column('location', postgresql.JSONB(), nullable=True),
        sa.Column('outcome', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('priority between 1 and 3', name='alert_priority'),
        sa.ForeignKeyConstraint(['agency_id'], ['agencies.id'], ),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
        sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_alerts_raised_at'), 'alerts', ['raised_at'], unique=False)
    op.create_index(op.f('ix_alerts_agency_id'), 'alerts', ['agency_id'], unique=False)
    op.create_table('alert_transitions',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('alert_id', sa.UUID(), nullable=False),
        sa.Column('state', sa.Text(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.Text(), nullable=False),
        sa.Column('note', sa.Text(), server_default='', nullable=False),
        sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('alert_id', 'state', 'at', name='alert_transition_once')
    )
    op.create_index(op.f('ix_alert_transitions_alert_id'), 'alert_transitions', ['alert_id'], unique=False)

    mode = "timescaledb" if _timescaledb_available(bind) else "native_partitioning"
    partition = {} if mode == "timescaledb" else {"postgresql_partition_by": "RANGE (time)"}
    op.create_table('features',
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('officer_id', sa.Integer(), nullable=True),
        sa.Column('heart_rate', sa.REAL(), nullable=True),
        sa.Column('hr_quality', sa.REAL(), nullable=True),
        sa.Column('activity', sa.Text(), nullable=True),
        sa.Column('posture', sa.Text(), nullable=True),
        sa.Column('cadence', sa.REAL(), nullable=True),
        sa.Column('motion_energy', sa.REAL(), nullable=True),
        **partition,
    )
    op.create_index('features_device_time', 'features', ['device_id', 'time'], unique=False)
    if mode == "timescaledb":
        op.execute("select create_hypertable('features', 'time', chunk_time_interval => interval '1 day', create_default_indexes => false)")
    op.execute(sa.text("insert into vigil_meta (key, value) values ('storage_mode', :m)").bindparams(m=mode))
    op.execute(_PARTITION_FUNCTION)
    op.execute("select vigil_ensure_partitions(2, 3)")


def downgrade() -> None:
    op.execute("drop function if exists vigil_ensure_partitions(int, int)")
    for table in ("features", "alert_transitions", "alerts", "device_assignments", "gateways", "devices", "officers",
                  "agencies", "vigil_meta"):
        op.drop_table(table)
