"""The database schema as SQLAlchemy Core tables: one definition used by queries and by the
migrations (backend/db/migrations). Time-series tables (features) are TimescaleDB hypertables when
the extension is present, natively range-partitioned tables otherwise (see backend/db/engine.py)."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = sa.MetaData()

agencies = sa.Table(
    "agencies", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
)

officers = sa.Table(
    "officers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("badge", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("unit", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.UniqueConstraint("agency_id", "badge"),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),  # the frame's device_id
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("key_wrapped", sa.LargeBinary, nullable=False),  # AES-GCM under the backend secret
    sa.Column("placement", sa.Text, nullable=False, server_default="upper_arm"),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),  # active | retired
    sa.Column("firmware", sa.Text),
    sa.Column("battery_pct", sa.SmallInteger),
    sa.Column("last_seen", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("status in ('active', 'retired')", name="device_status"),
    sa.CheckConstraint("id >= 0 and id <= 4294967295", name="device_id_uint32"),
)

gateways = sa.Table(
    "gateways", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("token_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
)

assignments = sa.Table(
    "device_assignments", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), nullable=False, index=True),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id"), nullable=False, index=True),
    sa.Column("starts_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("ends_at", sa.DateTime(timezone=True)),
)

alerts = sa.Table(
    "alerts", metadata,
    # uuid5 of (device_id, event seq): a frame delivered twice can never page twice
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id")),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("device_time", sa.DateTime(timezone=True)),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("explanation", JSONB, nullable=False),
    sa.Column("location", JSONB),
    sa.Column("outcome", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("priority between 1 and 3", name="alert_priority"),
)

alert_transitions = sa.Table(
    "alert_transitions", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey("alerts.id"), nullable=False, index=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("alert_id", "state", "at", name="alert_transition_once"),
)

# Derived physiological and motion features, 1 Hz per device. Time-partitioned: a hypertable
# under TimescaleDB, a PARTITION BY RANGE (time) table otherwise. No primary key on purpose
# (partitioned tables would need the partition key in it); rows are append-only.
features = sa.Table(
    "features", metadata,
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("device_id", sa.BigInteger, nullable=False),
    sa.Column("officer_id", sa.Integer),
    sa.Column("heart_rate", sa.REAL),
    sa.Column("hr_quality", sa.REAL),
    sa.Column("activity", sa.Text),
    sa.Column("posture", sa.Text),
    sa.Column("cadence", sa.REAL),
    sa.Column("motion_energy", sa.REAL),
    sa.Index("features_device_time", "device_id", "time"),
    timescaledb_hypertable={"time_column_name": "time", "chunk_time_interval": "1 day"},
)

TIME_SERIES_TABLES = ("features",)
