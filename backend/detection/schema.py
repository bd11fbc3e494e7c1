"""Tables of ingest and detection (migration ``0003_detection``).

Kept in their own MetaData: ``backend/db/schema.py`` is the schema of revision 0001, and
that migration creates whatever its MetaData holds.

raw_windows
    The short rolling store of raw waveforms, one row per device per hop (2 s) of samples,
    exactly as the device sent them. Time-partitioned like ``features`` (a TimescaleDB
    hypertable, or native daily range partitions kept ready by
    ``vigil_ensure_partitions``). No primary key (partitioned, append-only).

    ======================  =============================================================
    time                    wall time of the first sample
    device_id, officer_id   the device and the officer it was assigned to
    rate_hz                 samples per second
    samples                 number of samples (n)
    ppg                     int[n]: raw PPG counts (uint24)
    accel_mg                smallint[3n]: x, y, z interleaved, milli-g, device axes
    backfill                the samples came from the device's buffer after a link outage
    held_by_alert           uuid of an alert the row is kept for, or NULL
    ======================  =============================================================

raw_holds
    Which raw samples are kept around alerts: ``[start, until)`` of one device, per alert.
    A hold is written when the alert is raised and reaches into the future (``until``), so it
    covers rows not yet written; rows inside a hold also carry ``held_by_alert``. The retention
    job deletes raw rows only when ``held_by_alert is null`` and no hold covers them::

        delete from raw_windows r where r.time < :cutoff and r.held_by_alert is null
          and not exists (select 1 from raw_holds h where h.device_id = r.device_id
                          and r.time >= h.start and r.time < h.until)

device_status
    The latest status of each device, one row per device (upserted): battery, charging,
    worn and skin contact from status frames, the gateway that carried the last frame and the
    link counters; ``devices.last_seen``, ``battery_pct`` and ``firmware`` are updated too.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from backend.db import schema as t

metadata = sa.MetaData()

raw_windows = sa.Table(
    "raw_windows", metadata,
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("device_id", sa.BigInteger, nullable=False),
    sa.Column("officer_id", sa.Integer),
    sa.Column("rate_hz", sa.SmallInteger, nullable=False),
    sa.Column("samples", sa.SmallInteger, nullable=False),
    sa.Column("ppg", ARRAY(sa.Integer), nullable=False),
    sa.Column("accel_mg", ARRAY(sa.SmallInteger), nullable=False),
    sa.Column("backfill", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("held_by_alert", UUID(as_uuid=True)),
    sa.Index("raw_windows_device_time", "device_id", "time"),
)

raw_holds = sa.Table(
    "raw_holds", metadata,
    sa.Column("alert_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("device_id", sa.BigInteger, nullable=False),
    sa.Column("start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Index("raw_holds_device_span", "device_id", "start", "until"),
)

device_status = sa.Table(
    "device_status", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey(t.devices.c.id), primary_key=True),
    sa.Column("last_seen", sa.DateTime(timezone=True)),
    sa.Column("gateway", sa.Text),
    sa.Column("connected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("battery_pct", sa.SmallInteger),
    sa.Column("battery_mv", sa.Integer),
    sa.Column("charging", sa.Boolean),
    sa.Column("worn", sa.Boolean),
    sa.Column("skin_contact", sa.Boolean),
    sa.Column("firmware", sa.Text),
    sa.Column("dropped_samples", sa.BigInteger),      # the device's own count (ring overwrites)
    sa.Column("link_gaps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("late_frames", sa.Integer, nullable=False, server_default="0"),
    sa.Column("backfill_frames", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

TIME_SERIES_TABLES = ("raw_windows",)
