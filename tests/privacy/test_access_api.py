"""The policy enforced at the API, against a running backend and a real PostgreSQL: purposes,
roles, ownership and incident spans; every grant and refusal audited."""
from __future__ import annotations

import datetime as dt

import httpx
import pytest
import sqlalchemy as sa

from backend.db import schema as t
from backend.privacy import audit
from backend.db import engine as db
from tests.privacy.conftest import NOW, open_incident

pytestmark = pytest.mark.integration

REFUSED = ("discipline", "performance_evaluation", "investigation_of_officer", "fitness_for_duty", "promotion")


def biometric_endpoints(w) -> list[tuple[str, str, int | None]]:
    """(path, role, officer_id of the caller) for every biometric read route."""
    return [
        (f"/api/v1/officers/{w.alice}/vitals", "supervisor", None),
        (f"/api/v1/officers/{w.alice}/raw-windows", "supervisor", None),
        ("/api/v1/me/vitals", "officer", w.alice),
        ("/api/v1/me/raw-windows", "officer", w.alice),
        ("/api/v1/me/export", "officer", w.alice),
        ("/api/v1/aggregates/vitals", "auditor", None),
    ]


async def _audit_rows(w, **where) -> list[dict]:
    engine = db.create_engine(w.settings)
    try:
        async with engine.connect() as conn:
            q = sa.select(t.audit_log).where(t.audit_log.c.action == "access")
            for k, v in where.items():
                q = q.where(t.audit_log.c[k] == v)
            return [dict(r) for r in (await conn.execute(q.order_by(t.audit_log.c.seq))).mappings().all()]
    finally:
        await engine.dispose()


async def test_policy_is_public_with_version_and_hash(backend, world):
    async with httpx.AsyncClient(base_url=backend.url) as http:
        body = (await http.get("/api/v1/policy")).json()
    policy = backend.runtime.privacy.policies
    current = await policy.current(NOW)
    assert body["version"] == current.policy.version and len(body["sha256"]) == 64
    assert set(REFUSED) <= set(body["always_refused"])


async def test_discipline_purpose_refused_on_every_biometric_endpoint_and_audited(backend, world):
    engine = db.create_engine(world.settings)
    await open_incident(engine, world.agency, world.alice, world.alice_device, NOW - dt.timedelta(minutes=10))
    await engine.dispose()
    endpoints = biometric_endpoints(world)
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for purpose in REFUSED:
            for path, role, officer in endpoints:
                # both ways of declaring a purpose
                r = await http.get(path, params={"purpose": purpose}, headers=world.auth(role, officer))
                assert r.status_code == 403, (path, purpose, r.text)
                assert isinstance(r.json()["detail"], dict), (path, r.text)
                assert r.json()["detail"]["rule"] == f"always_refused.{purpose}", r.text
                r = await http.get(path, headers={**world.auth(role, officer), "X-Vigil-Purpose": purpose})
                assert r.status_code == 403 and r.json()["detail"]["rule"] == f"always_refused.{purpose}"
        refused = await _audit_rows(world, outcome="refused")
        # /me/export checks four data classes; the first refusal ends the request
        assert len([r for r in refused if r["purpose"] in REFUSED]) == 2 * len(REFUSED) * len(endpoints)
        assert {r["details"]["path"] for r in refused} == {p for p, _, _ in endpoints}

        # the same requests with the safety purpose by an eligible supervisor during the incident
        for path in (f"/api/v1/officers/{world.alice}/vitals", f"/api/v1/officers/{world.alice}/raw-windows"):
            r = await http.get(path, params={"purpose": "safety_response"}, headers=world.auth("supervisor"))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["rule"] == "supervisor.safety.vitals"
            start = dt.datetime.fromisoformat(body["start"])
            assert start == NOW - dt.timedelta(minutes=20)  # raised_at - 10 min lead
            assert all(dt.datetime.fromisoformat(row["time"]) >= start for row in body["rows"])
        vitals = (await http.get(f"/api/v1/officers/{world.alice}/vitals", params={"purpose": "safety_response"},
                                 headers=world.auth("supervisor"))).json()
        assert len(vitals["rows"]) == 5  # features every 5 min: now-20 .. now
        granted = await _audit_rows(world, outcome="granted", purpose="safety_response")
        assert len(granted) == 3 and all(g["subject"] == f"officer:{world.alice}" for g in granted)

        # asking for data before the incident's span is refused, naming the rule
        r = await http.get(f"/api/v1/officers/{world.alice}/vitals", headers=world.auth("supervisor"),
                           params={"purpose": "safety_response", "start": (NOW - dt.timedelta(hours=2)).isoformat()})
        assert r.status_code == 403 and r.json()["detail"]["rule"] == "supervisor.safety.vitals"
        assert "outside the open incident" in r.json()["detail"]["reason"]


async def test_supervisor_cannot_read_vitals_outside_an_open_incident(backend, world):
    engine = db.create_engine(world.settings)
    # Bob's only incident is resolved: no open incident
    await open_incident(engine, world.agency, world.bob, world.alice_device + 1, NOW - dt.timedelta(hours=1), state="resolved")
    await engine.dispose()
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for who in (world.alice, world.bob):
            r = await http.get(f"/api/v1/officers/{who}/vitals", params={"purpose": "safety_response"}, headers=world.auth("supervisor"))
            assert r.status_code == 403
            assert r.json()["detail"] == {**r.json()["detail"], "rule": "supervisor.safety.vitals"}
            assert "no open incident" in r.json()["detail"]["reason"]
        # another agency's officer, even with an incident
        r = await http.get(f"/api/v1/officers/{world.carol}/vitals", params={"purpose": "safety_response"}, headers=world.auth("supervisor"))
        assert r.status_code == 403 and "agency" in r.json()["detail"]["reason"]
        # no purpose declared
        r = await http.get(f"/api/v1/officers/{world.alice}/vitals", headers=world.auth("supervisor"))
        assert r.status_code == 403 and r.json()["detail"]["rule"] == "purpose.required"
    assert len(await _audit_rows(world, outcome="refused", agency_id=world.agency)) == 4
    # the attempt on Carol is in her agency's log too
    assert [r["subject"] for r in await _audit_rows(world, outcome="refused", agency_id=world.other_agency)] == [f"officer:{world.carol}"]


async def test_officer_reads_own_data_only(backend, world):
    async with httpx.AsyncClient(base_url=backend.url) as http:
        mine = world.auth("officer", world.alice)
        own = await http.get("/api/v1/me/vitals", params={"purpose": "officer_self_access"}, headers=mine)
        assert own.status_code == 200 and len(own.json()["rows"]) == 24
        via_path = await http.get(f"/api/v1/officers/{world.alice}/vitals", params={"purpose": "officer_self_access"}, headers=mine)
        assert via_path.status_code == 200
        for other in (world.bob, world.carol):
            for path in (f"/api/v1/officers/{other}/vitals", f"/api/v1/officers/{other}/raw-windows"):
                for purpose in ("officer_self_access", "safety_response"):
                    r = await http.get(path, params={"purpose": purpose}, headers=mine)
                    assert r.status_code == 403, (path, purpose, r.text)
        export = await http.get("/api/v1/me/export", params={"purpose": "officer_self_access"}, headers=mine)
        assert export.status_code == 200
        data = export.json()
        assert data["officer"]["id"] == world.alice and len(data["features"]) == 24
        assert {f["officer_id"] for f in data["features"]} == {world.alice}
        if world.has_raw:
            assert len(data["raw_windows"]) == 6
        report = (await http.get("/api/v1/me/access-report", params={"purpose": "officer_self_access"}, headers=mine)).json()
        whos = {(a["who"], a["purpose"], a["outcome"]) for a in report["accesses"]}
        assert (f"user:officer-{world.alice}-{world.agency}", "officer_self_access", "granted") in whos
        # an account that is not an officer's has no "me"
        r = await http.get("/api/v1/me/vitals", params={"purpose": "officer_self_access"}, headers=world.auth("supervisor"))
        assert r.status_code == 403 and r.json()["detail"]["rule"] == "ownership.no_officer"


async def test_auditor_sees_audit_and_aggregates_but_no_vitals(backend, world):
    engine = db.create_engine(world.settings)
    await open_incident(engine, world.agency, world.alice, world.alice_device, NOW - dt.timedelta(minutes=10))
    await engine.dispose()
    aud = world.auth("auditor")
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for purpose in ("oversight_audit", "aggregate_model_evaluation", "safety_response"):
            for path in (f"/api/v1/officers/{world.alice}/vitals", f"/api/v1/officers/{world.alice}/raw-windows"):
                r = await http.get(path, params={"purpose": purpose}, headers=aud)
                assert r.status_code == 403, (path, purpose)
        log = await http.get("/api/v1/audit", params={"purpose": "oversight_audit"}, headers=aud)
        assert log.status_code == 200 and any(e["outcome"] == "refused" for e in log.json())
        verify = (await http.get("/api/v1/audit/verify", params={"purpose": "oversight_audit"}, headers=aud)).json()
        assert verify["ok"], verify
        agg = await http.get("/api/v1/aggregates/vitals", params={"purpose": "aggregate_model_evaluation"}, headers=aud)
        assert agg.status_code == 200
        # three officers have features: a group below 10 is suppressed, never shown
        assert agg.json()["groups"] and all(g["suppressed"] and g["hr_mean"] is None for g in agg.json()["groups"])
        report = await http.get("/api/v1/reports/transparency", params={"purpose": "oversight_audit"}, headers=aud)
        assert report.status_code == 200
        body = report.json()
        assert body["policy"]["version"] and any(r["rule"] == "no_rule" for r in body["refusals"])
        # a supervisor may not read the audit log or the report
        r = await http.get("/api/v1/audit", params={"purpose": "oversight_audit"}, headers=world.auth("supervisor"))
        assert r.status_code == 403
