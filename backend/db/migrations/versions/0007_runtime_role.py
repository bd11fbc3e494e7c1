"""Least privilege at runtime: the backend connects as a login member of ``vigil_api`` that owns
nothing; what only an owner may do runs inside SECURITY DEFINER functions made here, each doing
one narrow thing. And one rule of small-group suppression in the database.

- ``vigil_apply_privacy_grants()``, ``vigil_install_audit_triggers()`` and
  ``vigil_ensure_partitions(int, int)`` (0001/0004) run as their owner; only ``vigil_api`` may
  call them (they only re-apply what the migrations decided).
- ``vigil_drop_expired_partition(regclass, timestamptz)``: retention drops a whole expired
  partition of a biometric table, and nothing else (``vigil_api`` may already DELETE those rows).
- ``vigil_drop_biometric_chunks(regclass, timestamptz, timestamptz)``: the same for TimescaleDB.
- ``vigil_group_suppressed(bigint)``: true for a group of fewer officers than the policy in force
  allows (``vigil_meta.min_group_officers``, written by the backend from the policy; never < 10).
  The reporting view uses it; the Python reports apply the same threshold from the same policy.

Revision ID: 0007_runtime_role
Revises: 0006_dead_letters
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_runtime_role"
down_revision = "0006_dead_letters"
branch_labels = None
depends_on = None

# Owner-only work the runtime needs, already defined by earlier migrations.
OWNER_FUNCTIONS = ("vigil_apply_privacy_grants()", "vigil_install_audit_triggers()", "vigil_ensure_partitions(int, int)")
NEW_FUNCTIONS = ("vigil_drop_expired_partition(regclass, timestamptz)",
                 "vigil_drop_biometric_chunks(regclass, timestamptz, timestamptz)")

_FUNCTIONS_SQL = r"""
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

create or replace function vigil_drop_biometric_chunks(tbl regclass, older_than timestamptz, newer_than timestamptz)
returns void language plpgsql security definer set search_path = public, pg_temp as $$
begin
    if not exists (select 1 from privacy_biometric_tables b where b.name = tbl::text) then
        raise exception '% is not a biometric table', tbl using errcode = 'insufficient_privilege';
    end if;
    execute 'select drop_chunks($1, older_than => $2, newer_than => $3)' using tbl, older_than, newer_than;
end $$;

create or replace function vigil_group_suppressed(officers bigint) returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
    select coalesce(officers, 0) < greatest(10, coalesce((select value::integer from vigil_meta where key = 'min_group_officers'), 10))
$$;

create or replace view reporting_alert_summary with (security_barrier) as
select agency_id, date_trunc('month', raised_at) as month, kind, coalesce(outcome, 'open') as outcome,
       case when not vigil_group_suppressed(count(distinct officer_id)) then count(*) end as alerts,
       case when not vigil_group_suppressed(count(distinct officer_id)) then count(distinct officer_id) end as officers,
       vigil_group_suppressed(count(distinct officer_id)) as suppressed
from alerts group by 1, 2, 3, 4;
"""

_VIEW_0004_SQL = """
create or replace view reporting_alert_summary with (security_barrier) as
select agency_id, date_trunc('month', raised_at) as month, kind, coalesce(outcome, 'open') as outcome,
       case when count(distinct officer_id) >= 10 then count(*) end as alerts,
       case when count(distinct officer_id) >= 10 then count(distinct officer_id) end as officers,
       count(distinct officer_id) < 10 as suppressed
from alerts group by 1, 2, 3, 4;
"""


def upgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text(_FUNCTIONS_SQL))
    for fn in OWNER_FUNCTIONS:
        bind.execute(sa.text(f"alter function {fn} security definer set search_path = public, pg_temp"))
    for fn in (*OWNER_FUNCTIONS, *NEW_FUNCTIONS):
        bind.execute(sa.text(f"revoke all on function {fn} from public"))
        bind.execute(sa.text(f"grant execute on function {fn} to vigil_api"))
    bind.execute(sa.text("grant execute on function vigil_group_suppressed(bigint) to vigil_api, vigil_reporting, vigil_auditor"))
    bind.execute(sa.text("select vigil_apply_privacy_grants()"))


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text(_VIEW_0004_SQL))
    bind.execute(sa.text("drop function if exists vigil_group_suppressed(bigint)"))
    for fn in NEW_FUNCTIONS:
        bind.execute(sa.text(f"drop function if exists {fn}"))
    for fn in OWNER_FUNCTIONS:
        bind.execute(sa.text(f"alter function {fn} security invoker reset search_path"))
        bind.execute(sa.text(f"grant execute on function {fn} to public"))
