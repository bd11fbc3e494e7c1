"""Issue 17, findings 3-5 against a running backend and a real PostgreSQL: alert evidence behind
the purpose gate; one declared purpose; every refusal audited (404s too, under both agencies);
no "granted" entry for a request refused by validation; ids in ASCII digits only."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import httpx
import pytest
import sqlalchemy as sa

from backend.db import engine as db
from backend.identity import auth
from tests.privacy.conftest import NOW, open_incident

pytestmark = pytest.mark.integration

EVIDENCE = {"detector": "fall", "impact_g": 5.2, "tilt_deg": 80, "still_s": 31, "heart_rate": 171}


async def _access(world, **where) -> list[dict]:
    engine = db.create_engine(world.settings)
    try:
        async with engine.connect() as conn:
            q = sa.text("select * from audit_log where action = 'access'"
                        + "".join(f" and {k} = :{k}" for k in where) + " order by seq")
            return [dict(r) for r in (await conn.execute(q, where)).mappings().all()]
    finally:
        await engine.dispose()


async def _alerts(world) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Alice: an open incident; Bob: a resolved one; Carol (other agency): an open one. Each with evidence."""
    engine = db.create_engine(world.settings)
    open_a = await open_incident(engine, world.agency, world.alice, world.alice_device, NOW - dt.timedelta(minutes=10))
    closed_b = await open_incident(engine, world.agency, world.bob, world.alice_device + 1, NOW - dt.timedelta(hours=2), "resolved")
    open_c = await open_incident(engine, world.other_agency, world.carol, world.alice_device + 2, NOW - dt.timedelta(minutes=5))
    async with engine.begin() as conn:
        await conn.execute(sa.text("update alerts set explanation = cast(:e as jsonb)"), {"e": json.dumps(EVIDENCE)})
    await engine.dispose()
    return open_a, closed_b, open_c


async def test_alert_evidence_is_behind_the_purpose_gate_and_audited(backend, world):
    open_a, closed_b, _ = await _alerts(world)
    sup, aud = world.auth("supervisor"), world.auth("auditor")
    async with httpx.AsyncClient(base_url=backend.url + "/api/v1") as http:
        # the requests: discipline, as an auditor or a supervisor
        for who in (sup, aud):
            r = await http.get(f"/alerts/{open_a}", params={"purpose": "discipline"}, headers=who)
            assert r.status_code == 403 and r.json()["detail"]["rule"] == "always_refused.discipline", r.text
            assert "Officer Alice" not in r.text and "impact_g" not in r.text
        # auditors: aggregates only, whatever the purpose
        for purpose in (None, "oversight_audit", "aggregate_model_evaluation", "safety_response"):
            assert (await http.get(f"/alerts/{open_a}", params={"purpose": purpose} if purpose else {}, headers=aud)).status_code == 403
            assert (await http.get("/alerts", params={"purpose": purpose} if purpose else {}, headers=aud)).status_code == 403

        # a supervisor without a purpose: the record (kind, time, state, officer) for safety response, no evidence
        plain = (await http.get(f"/alerts/{open_a}", headers=sup)).json()
        assert (plain["kind"], plain["state"], plain["officer_name"]) == ("man_down", "raised", "Officer Alice")
        assert plain.get("explanation") is None and plain["evidence_withheld"]["rule"] == "purpose.required"
        # with the safety purpose: the open incident's evidence, not the resolved one's
        r = (await http.get(f"/alerts/{open_a}", params={"purpose": "safety_response"}, headers=sup)).json()
        assert r.get("explanation") == EVIDENCE
        r = (await http.get(f"/alerts/{closed_b}", params={"purpose": "safety_response"}, headers=sup)).json()
        assert r.get("explanation") is None and r["evidence_withheld"]["rule"] == "supervisor.safety.evidence"
        listed = {a["id"]: a for a in (await http.get("/alerts", params={"purpose": "safety_response"}, headers=sup)).json()}
        assert listed[str(open_a)].get("explanation") == EVIDENCE and listed[str(closed_b)].get("explanation") is None
        assert all(a.get("explanation") is None for a in (await http.get("/alerts", headers=sup)).json())
        # the officer: their own evidence, for their own purpose
        mine = world.auth("officer", world.alice)
        assert (await http.get(f"/alerts/{open_a}", params={"purpose": "officer_self_access"}, headers=mine)).json().get("explanation") == EVIDENCE
        assert (await http.get(f"/alerts/{closed_b}", params={"purpose": "officer_self_access"}, headers=mine)).status_code == 403

    evidence = await _access(world, subject=f"officer:{world.alice}")
    reads = [(e["details"]["data_class"], e["purpose"], e["outcome"]) for e in evidence]
    assert ("alert_evidence", "safety_response", "granted") in reads and ("alert_evidence", "officer_self_access", "granted") in reads
    assert ("alerts_incidents", "discipline", "refused") in reads
    bob = [(e["details"]["data_class"], e["outcome"]) for e in await _access(world, subject=f"officer:{world.bob}")]
    assert ("alert_evidence", "refused") in bob
    # every evidence grant names the alert it served
    assert all(str(open_a) in (e["details"].get("alert"), *(e["details"].get("alerts") or ()))
               for e in evidence if e["details"]["data_class"] == "alert_evidence" and e["outcome"] == "granted")


async def test_more_than_one_purpose_is_refused_and_audited(backend, world):
    open_a, _, _ = await _alerts(world)
    sup = world.auth("supervisor")
    vitals = f"/api/v1/officers/{world.alice}/vitals"
    asks = [
        (vitals, [("purpose", "safety_response")], [("X-Vigil-Purpose", "discipline")]),
        (vitals, [("purpose", "discipline"), ("purpose", "safety_response")], []),
        (vitals, [("purpose", "safety_response"), ("purpose", "safety_response")], []),
        (vitals, [], [("X-Vigil-Purpose", "safety_response"), ("X-Vigil-Purpose", "discipline")]),
        (vitals, [], [("X-Vigil-Purpose", "safety_response, discipline")]),
        (f"/api/v1/alerts/{open_a}", [("purpose", "safety_response")], [("X-Vigil-Purpose", "discipline")]),
        ("/api/v1/alerts", [("purpose", "discipline"), ("purpose", "safety_response")], []),
    ]
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for path, query, extra in asks:
            headers = httpx.Headers(list(sup.items()) + extra)
            r = await http.get(path, params=query, headers=headers)
            assert r.status_code == 400, (path, query, extra, r.text)
            assert r.json()["detail"]["rule"] == "purpose.ambiguous" and "declared 2" in r.json()["detail"]["reason"]
    refused = [e for e in await _access(world, outcome="refused") if e["details"]["rule"] == "purpose.ambiguous"]
    assert len(refused) == len(asks)
    assert not [e for e in await _access(world, outcome="granted")]


async def test_every_refusal_is_audited_404s_under_both_agencies(backend, world):
    _, _, open_c = await _alerts(world)
    engine = db.create_engine(world.settings)
    await auth.register_gateway(engine, world.other_agency, f"{world.other_agency}-gw", [])
    await engine.dispose()
    other_device = world.alice_device + 2
    asks = [
        ("GET", f"/api/v1/alerts/{open_c}", "supervisor", f"alert:{open_c}"),
        ("POST", f"/api/v1/alerts/{open_c}/acknowledge", "supervisor", f"alert:{open_c}"),
        ("GET", f"/api/v1/officers/{world.carol}", "supervisor", f"officer:{world.carol}"),
        ("GET", f"/api/v1/devices/{other_device}", "fleet_admin", f"device:{other_device}"),
        ("POST", f"/api/v1/devices/{other_device}/retire", "fleet_admin", f"device:{other_device}"),
        ("GET", f"/api/v1/gateways/{world.other_agency}-gw/devices", "fleet_admin", f"gateway:{world.other_agency}-gw"),
    ]
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for method, path, role, subject in asks:
            r = await http.request(method, path, headers=world.auth(role))
            assert r.status_code == 404, (path, r.text)
            here = [e for e in await _access(world, subject=subject, agency_id=world.agency) if e["details"]["path"] == path]
            there = [e for e in await _access(world, subject=subject, agency_id=world.other_agency) if e["details"]["path"] == path]
            assert [e["outcome"] for e in here] == ["refused"] and [e["outcome"] for e in there] == ["refused"], path
            assert here[0]["details"]["rule"] == "not_found" and here[0]["actor"] == there[0]["actor"]
        # what exists nowhere: one entry, the caller's agency
        nobody = uuid.uuid4()
        assert (await http.get(f"/api/v1/alerts/{nobody}", headers=world.auth("supervisor"))).status_code == 404
        assert [e["agency_id"] for e in await _access(world, subject=f"alert:{nobody}")] == [world.agency]


async def test_a_request_refused_by_validation_leaves_no_granted_entry(backend, world):
    mine = world.auth("officer", world.alice)
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for path, params in (("/api/v1/me/vitals", {"limit": 0}), (f"/api/v1/officers/{world.alice}/vitals", {"limit": "many"}),
                             ("/api/v1/me/raw-windows", {"limit": 10**9})):
            r = await http.get(path, params={"purpose": "officer_self_access", **params}, headers=mine)
            assert r.status_code == 422, r.text
        assert await _access(world, outcome="granted") == []
        r = await http.get("/api/v1/me/vitals", params={"purpose": "officer_self_access", "limit": 5}, headers=mine)
        assert r.status_code == 200 and len(await _access(world, outcome="granted")) == 1


@pytest.mark.parametrize("raw", ["²", "١", "+1", " 1", "1_0", "１"])
async def test_ids_are_ascii_digits_only(backend, world, raw):
    sup, admin = world.auth("supervisor"), world.auth("fleet_admin")
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for path, who in ((f"/api/v1/officers/{raw}/vitals", sup), (f"/api/v1/officers/{raw}/raw-windows", sup),
                          (f"/api/v1/officers/{raw}", sup), (f"/api/v1/devices/{raw}", admin)):
            r = await http.get(path, params={"purpose": "safety_response"}, headers=who)
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert "ASCII digits" in r.text
    assert await _access(world) == []  # nothing was read, nothing decided about officer 1
