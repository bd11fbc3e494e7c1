"""Refusals by the route table (a role that may not call a route, a record that is not the
caller's own) enter the audit chain like the purpose gate's, under the caller's agency."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.db import schema as t
from tests.backend.api_helpers import two_agencies

pytestmark = pytest.mark.integration


async def test_route_table_refusals_are_audited(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, b):
        officer = {"Authorization": f"Bearer {a.tokens['officer']}"}
        auditor = {"Authorization": f"Bearer {a.tokens['auditor']}"}
        assert (await http.get("/api/v1/devices", headers=officer)).status_code == 403       # role
        other = a.officer_id + 1000
        assert (await http.get(f"/api/v1/officers/{other}", headers=officer)).status_code == 403  # not their own
        assert (await http.post("/api/v1/users", headers=auditor,
                                json={"username": "x-" + agency, "password": "p" * 12, "role": "supervisor"})).status_code == 403
        async with backend.runtime.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.audit_log).where(
                t.audit_log.c.outcome == "refused", t.audit_log.c.agency_id == a.name,
                t.audit_log.c.details["rule"].astext.like("route_table.%")).order_by(t.audit_log.c.seq))).mappings().all()
        got = [(r["details"]["rule"], r["subject"]) for r in rows]
        assert ("route_table.role", "/api/v1/devices") in got, got
        assert ("route_table.ownership", f"/api/v1/officers/{other}") in got, got
        assert ("route_table.role", "/api/v1/users") in got, got
        assert all(r["actor"].startswith("user:") for r in rows)
