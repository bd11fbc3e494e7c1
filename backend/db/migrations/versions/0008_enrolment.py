"""Officers' enrolment codes, and the audit chain names the person behind a row change.

- ``enrolment_codes``: a one-time code a fleet admin issues for an officer; the officer redeems
  it to create their own account (backend/identity/auth.py). Only the code's hash is stored; a
  code is short-lived and used once (``redeemed_at``, ``redeemed_by_user``).
- ``vigil_audit_row_change()``: a provisioning row change is attributed to the ``vigil.actor``
  the application set for its transaction (``user:<name>``, ``officer:<id>``), falling back to
  the database role as before; the database role is kept in the entry's details either way, so
  a direct SQL session that sets ``vigil.actor`` still shows who it really was.

Revision ID: 0008_enrolment
Revises: 0007_runtime_role
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_enrolment"
down_revision = "0007_runtime_role"
branch_labels = None
depends_on = None

_ROW_CHANGE_SQL = """
create or replace function vigil_audit_row_change() returns trigger language plpgsql
security definer set search_path = public, pg_temp as $$
declare
    row_data jsonb := to_jsonb(new);
    k text;
    agency text;
    actor text := coalesce(nullif(current_setting('vigil.actor', true), ''), 'db:' || session_user);
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
        values (actor, 'provisioning.' || tg_table_name || '.' || lower(tg_op),
                tg_table_name || ':' || coalesce(row_data->>'id', row_data->>'device_id', ''), 'done', agency,
                row_data || jsonb_build_object('db_role', session_user));
    end if;
    return null;
end $$;
"""

_ROW_CHANGE_BEFORE_SQL = """
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
"""


def upgrade() -> None:
    op.create_table('enrolment_codes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('code_hash', sa.Text(), nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=False),
        sa.Column('officer_id', sa.Integer(), nullable=False),
        sa.Column('issued_by', sa.Text(), nullable=False),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('redeemed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('redeemed_by_user', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['agency_id'], ['agencies.id']),
        sa.ForeignKeyConstraint(['officer_id'], ['officers.id']),
        sa.ForeignKeyConstraint(['redeemed_by_user'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code_hash'),
    )
    op.create_index('enrolment_codes_officer', 'enrolment_codes', ['officer_id'], unique=False)
    op.execute(_ROW_CHANGE_SQL)


def downgrade() -> None:
    op.execute(_ROW_CHANGE_BEFORE_SQL)
    op.drop_index('enrolment_codes_officer', table_name='enrolment_codes')
    op.drop_table('enrolment_codes')
