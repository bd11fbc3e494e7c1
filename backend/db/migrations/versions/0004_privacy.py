"""Privacy: the audit chain, policy versions, consented cohorts, database roles and grants,
audit triggers for database-level events, aggregate views for reporting.

Roles are cluster-wide (shared by every database of the cluster) and created idempotently;
grants live in each database and are (re)applied by vigil_apply_privacy_grants(), which this
migration calls, an event trigger calls after DDL (when the migration runs as a superuser),
and the backend calls at start-up. Tables are explicit DDL (a snapshot of this revision).

Revision ID: 0004_privacy
Revises: 0003_detection
"""
import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_privacy"
down_revision = "0003_detection"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.vigil")

ROLES = ("vigil_ingest", "vigil_api", "vigil_reporting", "vigil_auditor")

_ROLES_SQL = """
do $$
declare r text;
begin
    foreach r in array array['vigil_ingest', 'vigil_api', 'vigil_reporting', 'vigil_auditor'] loop
        if not exists (select 1 from pg_roles where rolname = r) then
            begin
                execute format('create role %I nologin', r);
            exception when duplicate_object or unique_violation then
                null;  -- another database's migration created it at the same moment
            end;
        end if;
    end loop;
end $$;
"""

_APPEND_ONLY_SQL = """
create or replace function vigil_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'table % is append-only (% refused)', tg_table_name, tg_op using errcode = 'insufficient_privilege';
end $$;
drop trigger if exists audit_log_append_only on audit_log;
create trigger audit_log_append_only before update or delete or truncate on audit_log
    for each statement execute function vigil_append_only();
drop trigger if exists policy_versions_append_only on policy_versions;
create trigger policy_versions_append_only before update or delete or truncate on policy_versions
    for each statement execute function vigil_append_only();
"""

# Relations that hold biometric data. Partitions, TimescaleDB chunks and views built on these
# are found from the catalogue, so a new partition or view is covered without editing this.
_BIOMETRIC_SQL = """
insert into privacy_biometric_tables (name) values ('features'), ('raw_windows') on conflict do nothing;

create or replace function vigil_biometric_relations() returns regclass[] language plpgsql stable as $$
declare
    found regclass[];
    grown regclass[];
begin
    select coalesce(array_agg(c.oid::regclass), '{}') into found
    from privacy_biometric_tables b
    join pg_class c on c.relname = b.name and c.relnamespace = 'public'::regnamespace;
    loop
        select coalesce(array_agg(distinct x), '{}') into grown from (
            select unnest(found) as x
            union select i.inhrelid::regclass from pg_inherits i where i.inhparent = any(found)
            union select rw.ev_class::regclass
                from pg_depend d join pg_rewrite rw on rw.oid = d.objid
                where d.classid = 'pg_rewrite'::regclass and d.refobjid = any(found) and rw.ev_class <> d.refobjid
        ) s;
        exit when cardinality(grown) = cardinality(found);
        found := grown;
    end loop;
    return found;
end $$;
"""

_GRANTS_SQL = """
create or replace function vigil_apply_privacy_grants() returns void language plpgsql as $$
declare
    rel regclass;
    bio regclass[] := vigil_biometric_relations();
begin
    grant usage on schema public to vigil_ingest, vigil_api, vigil_reporting, vigil_auditor;
    revoke all on all tables in schema public from vigil_ingest, vigil_api, vigil_reporting, vigil_auditor;

    -- API: reads and writes the operational tables; the audit chain and the policy
    -- history only grow (append-only triggers refuse UPDATE/DELETE even to their owner).
    grant select, insert, update, delete on all tables in schema public to vigil_api;
    revoke update, delete, truncate on audit_log, policy_versions from vigil_api;
    grant usage, select on all sequences in schema public to vigil_api, vigil_ingest;
    -- Ingest: writes frames' features, raw windows and alerts; reads the fleet; appends audit.
    grant select, insert, update on all tables in schema public to vigil_ingest;
    revoke update on audit_log, policy_versions from vigil_ingest;
    revoke select on officer_cohorts from vigil_ingest;

    -- Auditor: the audit chain, the policy history and non-biometric aggregates.
    grant select on audit_log, policy_versions, reporting_alert_summary, reporting_device_summary to vigil_auditor;
    -- Reporting / HR systems: aggregates only, never a table.
    grant select on reporting_alert_summary, reporting_device_summary to vigil_reporting;

    -- Biometric relations: nobody but the API and ingest, whatever was granted above or by hand.
    foreach rel in array bio loop
        execute format('revoke all on %s from public, vigil_reporting, vigil_auditor', rel);
    end loop;
    revoke all on officer_cohorts from public, vigil_reporting, vigil_auditor;
end $$;
"""

# Provisioning and alert-lifecycle tables whose changes enter the audit chain via the outbox.
_AUDIT_TRIGGERS_SQL = """
create or replace function vigil_audit_row_change() returns trigger language plpgsql
security definer set search_path = public, pg_temp as $$
declare
    row_data jsonb := to_jsonb(new);
    k text;
    agency text;
begin
    -- never copy secrets (wrapped keys, token hashes, passwords) into the audit log
    for k in select jsonb_object_keys(row_data) loop
        if k ~* '(key|hash|secret|password|token)' then
            row_data := row_data - k;
        end if;
    end loop;
    agency := row_data->>'agency_id';
    if tg_table_name = 'alert_transitions' then
        select a.agency_id into agency from alerts a where a.id = new.alert_id;
        insert into audit_outbox (actor, action, subject, outcome, agency_id, details)
        values (coalesce(new.actor, 'unknown'), 'alert.transition', 'alert:' || new.alert_id, 'done', agency,
                jsonb_build_object('state', new.state, 'at', new.at, 'note', new.note));
    else
        insert into audit_outbox (actor, action, subject, outcome, agency_id, details)
        values ('db:' || session_user, 'provisioning.' || tg_table_name || '.' || lower(tg_op),
                tg_table_name || ':' || coalesce(row_data->>'id', row_data->>'device_id', ''), 'done', agency, row_data);
    end if;
    return null;
end $$;

create or replace function vigil_install_audit_triggers() returns void language plpgsql as $$
declare
    tbl text;
begin
    foreach tbl in array array['alert_transitions', 'agencies', 'officers', 'devices', 'device_assignments', 'gateways',
                               'users', 'api_tokens', 'user_tokens', 'tokens', 'role_assignments'] loop
        if to_regclass('public.' || tbl) is not null
           and not exists (select 1 from pg_trigger where tgname = 'vigil_audit_' || tbl and tgrelid = ('public.' || tbl)::regclass) then
            execute format('create trigger %I after insert or update on %I for each row execute function vigil_audit_row_change()',
                           'vigil_audit_' || tbl, tbl);
        end if;
    end loop;
end $$;
"""

# Non-biometric aggregates for reporting and auditors; groups of fewer than 10 officers are
# suppressed (counts shown as NULL) so no single officer can be picked out.
_VIEWS_SQL = """
create or replace view reporting_alert_summary with (security_barrier) as
select agency_id, date_trunc('month', raised_at) as month, kind, coalesce(outcome, 'open') as outcome,
       case when count(distinct officer_id) >= 10 then count(*) end as alerts,
       case when count(distinct officer_id) >= 10 then count(distinct officer_id) end as officers,
       count(distinct officer_id) < 10 as suppressed
from alerts group by 1, 2, 3, 4;

create or replace view reporting_device_summary with (security_barrier) as
select agency_id, status, count(*) as devices from devices group by 1, 2;
"""

_EVENT_TRIGGER_SQL = """
-- After DDL: a new partition, chunk or view of a biometric table, or any GRANT, gets the
-- biometric revocations at once (cheap: only those relations). Full grants: start-up.
create or replace function vigil_privacy_ddl_hook() returns event_trigger language plpgsql as $$
declare
    bio regclass[];
    cmd record;
    rel regclass;
    touched regclass[] := '{}';
    any_grant boolean := false;
begin
    if coalesce(current_setting('vigil.privacy_hook', true), '') = 'on' then
        return;  -- our own REVOKE statements
    end if;
    perform set_config('vigil.privacy_hook', 'on', true);
    begin
        bio := vigil_biometric_relations();
        for cmd in select * from pg_event_trigger_ddl_commands() loop
            if cmd.command_tag = 'GRANT' then
                any_grant := true;
            elsif cmd.classid = 'pg_class'::regclass and cmd.objid::regclass = any(bio) then
                touched := touched || cmd.objid::regclass;
            end if;
        end loop;
        if any_grant then
            touched := bio;
        end if;
        foreach rel in array touched loop
            execute format('revoke all on %s from public, vigil_reporting, vigil_auditor', rel);
        end loop;
        if tg_tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') then
            perform vigil_install_audit_triggers();
        end if;
    exception when others then
        raise warning 'vigil privacy revocations not applied after DDL: %', sqlerrm;
    end;
    perform set_config('vigil.privacy_hook', 'off', true);
end $$;
drop event trigger if exists vigil_privacy_ddl;
create event trigger vigil_privacy_ddl on ddl_command_end
    when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'CREATE VIEW', 'CREATE MATERIALIZED VIEW', 'ALTER TABLE', 'GRANT', 'SELECT INTO')
    execute function vigil_privacy_ddl_hook();
"""


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table('audit_log',
        sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.Text(), nullable=False),
        sa.Column('action', sa.Text(), nullable=False),
        sa.Column('subject', sa.Text(), server_default='', nullable=False),
        sa.Column('purpose', sa.Text(), server_default='', nullable=False),
        sa.Column('outcome', sa.Text(), nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=True),
        sa.Column('details', postgresql.JSONB(), nullable=False),
        sa.Column('prev_hash', sa.Text(), nullable=False),
        sa.Column('hash', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('audit_outbox',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('actor', sa.Text(), nullable=False),
        sa.Column('action', sa.Text(), nullable=False),
        sa.Column('subject', sa.Text(), server_default='', nullable=False),
        sa.Column('purpose', sa.Text(), server_default='', nullable=False),
        sa.Column('outcome', sa.Text(), server_default='done', nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=True),
        sa.Column('details', postgresql.JSONB(), server_default='{}', nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_table('policy_versions',
        sa.Column('sha256', sa.Text(), nullable=False),
        sa.Column('version', sa.Text(), nullable=False),
        sa.Column('document', sa.Text(), nullable=False),
        sa.Column('proposed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('proposed_by', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('officer_cohorts',
        sa.Column('officer_id', sa.Integer(), nullable=False),
        sa.Column('attribute', sa.Text(), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('consented_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], name='officer_cohorts_officer_fk', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('officer_id', 'attribute')
    )
    op.create_table('privacy_biometric_tables',
        sa.Column('name', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('name')
    )
    bind.execute(sa.text(_APPEND_ONLY_SQL))
    bind.execute(sa.text(_ROLES_SQL))
    bind.execute(sa.text(_BIOMETRIC_SQL))
    bind.execute(sa.text(_VIEWS_SQL))
    bind.execute(sa.text(_GRANTS_SQL))
    bind.execute(sa.text(_AUDIT_TRIGGERS_SQL))
    bind.execute(sa.text("select vigil_apply_privacy_grants(); select vigil_install_audit_triggers();"))
    # Event triggers need a superuser; without one the start-up call keeps grants current.
    try:
        with bind.begin_nested():
            bind.execute(sa.text(_EVENT_TRIGGER_SQL))
    except sa.exc.DBAPIError as exc:
        log.info("privacy DDL event trigger not installed (%s); grants are re-applied at start-up",
                 str(exc.orig).strip().splitlines()[0])


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text("drop event trigger if exists vigil_privacy_ddl"))
    bind.execute(sa.text("drop function if exists vigil_privacy_ddl_hook()"))
    for tbl in ('alert_transitions', 'agencies', 'officers', 'devices', 'device_assignments', 'gateways',
                'users', 'api_tokens', 'user_tokens', 'tokens', 'role_assignments'):
        bind.execute(sa.text(f"do $$ begin if to_regclass('public.{tbl}') is not null then "
                             f"drop trigger if exists vigil_audit_{tbl} on {tbl}; end if; end $$"))
    bind.execute(sa.text("drop view if exists reporting_alert_summary, reporting_device_summary"))
    for fn in ("vigil_install_audit_triggers()", "vigil_audit_row_change()", "vigil_apply_privacy_grants()",
               "vigil_biometric_relations()"):
        bind.execute(sa.text(f"drop function if exists {fn}"))
    bind.execute(sa.text("drop table if exists privacy_biometric_tables, officer_cohorts, policy_versions, audit_outbox, audit_log"))
    bind.execute(sa.text("drop function if exists vigil_append_only()"))
