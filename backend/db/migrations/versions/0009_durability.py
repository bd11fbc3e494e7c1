"""Durability: the replay window outlives a restart; retention drops partitions without deadlocking.

- ``device_replay``: per device, the replay window (highest sequence number and the bitmap of
  the numbers below it) of the frames that were durable -- in PostgreSQL or in the backend's
  local journal -- when it was saved. A restarted backend seeds its windows from it, so a frame
  accepted before the restart is refused after it, while a frame the broker hands back because
  it was never acknowledged (so never durable) is still taken (backend/ingest/replay_state.py).
- ``vigil_drop_expired_partition``: locks the parent table before the partition. DROP TABLE of
  a partition needs both; taking the partition first deadlocked against a reader that holds
  the parent and waits for the partition (seen as "deadlock detected" during retention while
  the backend was writing and reading features).

Revision ID: 0009_durability
Revises: 0008_enrolment
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_durability"
down_revision = "0008_enrolment"
branch_labels = None
depends_on = None

_DROP_SQL = r"""
create or replace function vigil_drop_expired_partition(part regclass, cutoff timestamptz) returns void
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    parent text;
    bound text;
    upper_bound timestamptz;
begin
    select i.inhparent::regclass::text, pg_get_expr(c.relpartbound, c.oid) into parent, bound
    from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhrelid = part;
    if parent is null or not exists (select 1 from privacy_biometric_tables b where b.name = parent) then
        raise exception '% is not a partition of a biometric table', part using errcode = 'insufficient_privilege';
    end if;
    upper_bound := substring(bound from 'TO \(''([^'']+)''\)')::timestamptz;
    if upper_bound is null or upper_bound > cutoff then
        raise exception 'partition % ends after the retention cutoff %', part, cutoff using errcode = 'invalid_parameter_value';
    end if;
    -- parent first, then the partition: the order every reader and writer takes them in
    execute format('lock table %s in access exclusive mode', parent);
    execute format('drop table %s', part);
end $$;
"""

_DROP_0007_SQL = r"""
create or replace function vigil_drop_expired_partition(part regclass, cutoff timestamptz) returns void
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    parent text;
    bound text;
    upper_bound timestamptz;
begin
    select i.inhparent::regclass::text, pg_get_expr(c.relpartbound, c.oid) into parent, bound
    from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhrelid = part;
    if parent is null or not exists (select 1 from privacy_biometric_tables b where b.name = parent) then
        raise exception '% is not a partition of a biometric table', part using errcode = 'insufficient_privilege';
    end if;
    upper_bound := substring(bound from 'TO \(''([^'']+)''\)')::timestamptz;
    if upper_bound is null or upper_bound > cutoff then
        raise exception 'partition % ends after the retention cutoff %', part, cutoff using errcode = 'invalid_parameter_value';
    end if;
    execute format('drop table %s', part);
end $$;
"""


def upgrade() -> None:
    op.create_table(
        "device_replay",
        sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("highest", sa.BigInteger, nullable=False),
        sa.Column("seen", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    bind = op.get_bind()
    bind.execute(sa.text(_DROP_SQL))
    bind.execute(sa.text("select vigil_apply_privacy_grants()"))


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text(_DROP_0007_SQL))
    op.drop_table("device_replay")
