"""Every purpose-checked route (biometric reads, reports, audit log, alerts and their evidence) x
every person role x every kind of declared purpose, against a running backend on a real
PostgreSQL: exactly the combinations the shipped policy grants get 200, every other answer is a
refusal, and every answer of the purpose gate leaves its audit entry."""
from __future__ import annotations

import datetime as dt

import httpx
import pytest
import sqlalchemy as sa

from backend.api.access import ACCESS, API
from backend.db import engine as db
from backend.privacy.loader import load_policy_file
from tests.privacy.conftest import NOW, open_incident

pytestmark = pytest.mark.integration

POLICY = load_policy_file()
ROLES = ("officer", "supervisor", "fleet_admin", "auditor")
CONFLICT = "safety_response+discipline"  # one in the query, one in the header
PURPOSES = (None, *sorted(POLICY.purposes), *sorted(POLICY.refused_purposes), "curiosity", CONFLICT)
S, O, AGG, OVR = "safety_response", "officer_self_access", "aggregate_model_evaluation", "oversight_audit"
# What the shipped policy grants, with Alice in an open incident; route templates as in the access table.
GRANTED = {
    "supervisor": {
        "/officers/{officer_id}/vitals": {S}, "/officers/{officer_id}/raw-windows": {S},
        "/reports/transparency": {None, S}, "/alerts": {None, S}, "/alerts/{alert_id}": {None, S},
    },
    "officer": {
        "/officers/{officer_id}/vitals": {O}, "/officers/{officer_id}/raw-windows": {O}, "/me/vitals": {O},
        "/me/raw-windows": {O}, "/me/export": {O}, "/me/access-report": {O}, "/alerts": {None, O}, "/alerts/{alert_id}": {None, O},
    },
    "auditor": {
        "/reports/transparency": {AGG, OVR}, "/aggregates/vitals": {AGG, OVR}, "/audit": {OVR}, "/audit/verify": {OVR},
        "/audit/incidents/{alert_id}": {OVR},
    },
    "fleet_admin": {},
}


def gated_routes() -> list[str]:
    return sorted(path.removeprefix(API) for (method, path), rule in ACCESS.items() if method == "GET" and rule.purpose_checked)


async def test_route_role_purpose_matrix(backend, world):
    engine = db.create_engine(world.settings)
    alert = await open_incident(engine, world.agency, world.alice, world.alice_device, NOW - dt.timedelta(minutes=10))
    routes = gated_routes()
    assert {"/alerts", "/alerts/{alert_id}"} <= set(routes) and set(routes) >= {p for g in GRANTED.values() for p in g}
    checked, seen_granted = 0, set()
    try:
        async with httpx.AsyncClient(base_url=backend.url + API) as http, engine.connect() as conn:
            async def head() -> int:
                return (await conn.execute(sa.text("select coalesce(max(seq), 0) from audit_log"))).scalar_one()

            for template in routes:
                path = template.format(officer_id=world.alice, alert_id=alert)
                for role in ROLES:
                    headers = world.auth(role, world.alice if role == "officer" else None)
                    for purpose in PURPOSES:
                        params, h = {}, dict(headers)
                        if purpose == CONFLICT:
                            params["purpose"], h["X-Vigil-Purpose"] = "safety_response", "discipline"
                        elif purpose is not None:
                            params["purpose"] = purpose
                        before = await head()
                        r = await http.get(path, params=params, headers=h)
                        await conn.commit()
                        entries = (await conn.execute(sa.text(
                            "select outcome, details->>'data_class' as dc, details->>'rule' as rule from audit_log where seq > :s and action = 'access'"),
                            {"s": before})).mappings().all()
                        where = f"GET {template} as {role} for {purpose}: {r.status_code} {r.text[:200]}"
                        expected = purpose in GRANTED[role].get(template, set())
                        allowed_by_table = role in ACCESS[("GET", API + template)].roles
                        if expected:
                            assert r.status_code == 200, where
                            assert any(e["outcome"] == "granted" for e in entries), where
                            seen_granted.add((template, role, purpose))
                        elif not allowed_by_table:
                            assert r.status_code == 403 and "may not call this" in r.text, where  # the route table
                        elif purpose == CONFLICT:
                            assert r.status_code == 400 and r.json()["detail"]["rule"] == "purpose.ambiguous", where
                            assert [e["outcome"] for e in entries] == ["refused"], where
                        else:
                            assert r.status_code == 403, where
                            assert entries and all(e["outcome"] == "refused" for e in entries), where
                            if purpose in POLICY.refused_purposes and r.json()["detail"]["rule"].startswith("always_refused"):
                                assert r.json()["detail"]["rule"] == f"always_refused.{purpose}", where
                        if r.status_code == 200 and template.startswith("/alerts"):
                            rows = r.json() if isinstance(r.json(), list) else [r.json()]
                            # the evidence only with a declared purpose that the policy grants it for
                            assert all(("explanation" in row) == (purpose is not None) for row in rows), where
                            assert any(e["dc"] == "alert_evidence" for e in entries) == (purpose is not None), where
                        checked += 1
    finally:
        await engine.dispose()
    assert seen_granted == {(t, role, p) for role, g in GRANTED.items() for t, ps in g.items() for p in ps}
    assert checked == len(routes) * len(ROLES) * len(PURPOSES)
    print(f"\nmatrix: {len(routes)} routes x {len(ROLES)} roles x {len(PURPOSES)} purposes = {checked} requests")
