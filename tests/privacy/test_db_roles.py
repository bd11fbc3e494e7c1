"""The reporting/HR database role cannot read any biometric table or view, even with raw SQL,
even after someone grants it access by hand; it can read the non-biometric aggregates."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.privacy.conftest import migrate

pytestmark = pytest.mark.integration


def _sync(url: str) -> str:
    return url.replace("+asyncpg", "+psycopg2")


def test_reporting_role_is_refused_on_every_biometric_relation(world):
    admin = sa.create_engine(_sync(world.settings.database_url), isolation_level="AUTOCOMMIT")
    login = "hr_" + uuid.uuid4().hex[:10]
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"create role {login} login in role vigil_reporting"))
            # a vitals view made later, and an administrator's mistaken grants: the DDL hook revokes
            conn.execute(sa.text("create view vitals_recent as select officer_id, time, heart_rate from features"))
            try:
                conn.execute(sa.text("grant select on features, vitals_recent to vigil_reporting"))
                conn.execute(sa.text("grant select on all tables in schema public to vigil_reporting"))
            finally:
                conn.execute(sa.text("select vigil_apply_privacy_grants()"))  # what start-up does anyway
            biometric = conn.execute(sa.text("select unnest(vigil_biometric_relations())::text")).scalars().all()
        assert "features" in biometric and "vitals_recent" in biometric
        assert any(name.startswith("features_") for name in biometric)  # partitions too
        if world.has_raw:
            assert "raw_windows" in biometric
        assert "officer_cohorts" not in biometric  # sensitive but not biometric: checked below too

        as_hr = sa.create_engine(_sync(world.settings.database_url), poolclass=sa.pool.NullPool)
        with as_hr.connect() as conn:
            conn.execute(sa.text(f"set role {login}"))
            assert conn.execute(sa.text("select current_user")).scalar() == login
            for name in [*biometric, "officer_cohorts"]:
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                    with conn.begin_nested():
                        conn.execute(sa.text(f"select * from {name} limit 1"))
            # what reporting may read: aggregates without a body in them
            conn.execute(sa.text("select * from reporting_alert_summary")).all()
            assert conn.execute(sa.text("select sum(devices) from reporting_device_summary")).scalar() == 3
        as_hr.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"drop owned by {login}"))
            conn.execute(sa.text(f"drop role if exists {login}"))
        admin.dispose()


def test_audit_log_is_append_only_even_for_its_owner(world):
    admin = sa.create_engine(_sync(world.settings.database_url))
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("insert into audit_log (seq, at, actor, action, outcome, details, prev_hash, hash) "
                                 "values (999, now(), 'x', 'x', 'done', '{}', '', '')"))
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(sa.text("update audit_log set actor = 'y'"))
            conn.rollback()
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(sa.text("delete from audit_log"))
            conn.rollback()
    finally:
        admin.dispose()
    migrate(world.settings)  # idempotent: a second upgrade changes nothing
