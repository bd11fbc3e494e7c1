"""A supervisor's incident workflow (issue 21) against the real backend, PostgreSQL and Mosquitto:
manual escalation with a reason, notes, a responder, each a transition with who and when, pushed
on the live feed, stored through the alert journal; the per-incident audit timeline of who read
the officer's evidence and why; who may do what; a restart keeps it all."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import httpx
import pytest
import sqlalchemy as sa
import websockets
from sqlalchemy.ext.asyncio import create_async_engine

from backend.app.metrics import BackendMetrics
from backend.app.server import serve
from backend.db import engine as db
from backend.db import schema as t
from backend.detection.status import StatusBoard
from backend.incidents.alerts import AlertService
from backend.incidents.dispatch import dispatch_payload
from backend.incidents.events import ESCALATED, IncidentEvents
from backend.incidents.hub import LiveHub
from backend.incidents.journal import AlertJournal
from backend.incidents.store import AlertStore
from tests.backend.api_helpers import login, seed, two_agencies
from tests.backend.conftest import backend_settings, live_url
from tests.gateway.conftest import wait_until

pytestmark = pytest.mark.integration

EVIDENCE = {"detector": "device", "event": "sos"}


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def _alert_events(ws, into: list[dict]) -> None:
    async for raw in ws:
        msg = json.loads(raw)
        if msg["type"] == "alert":
            into.append(msg["data"])


async def test_escalate_note_and_assign_a_responder(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency, escalate_after_s=600, audit_drain_interval_s=0.2) as \
            (backend, http, settings, a, b):
        rt = backend.runtime
        sup = _auth(a.tokens["supervisor"])
        pushed: list[dict] = []
        async with websockets.connect(await live_url(backend.url, a.tokens["supervisor"])) as ws:
            watcher = asyncio.create_task(_alert_events(ws, pushed))
            alert = await rt.alerts.raise_alert(agency_id=a.name, device_id=a.device_id, seq=1, kind="sos",
                                                officer_id=a.officer_id, officer_name="Officer One", explanation=EVIDENCE)
            url = f"/api/v1/alerts/{alert.id}"

            r = await http.post(f"{url}/escalate", headers=sup, json={"reason": "no answer on the radio"})
            assert r.status_code == 200, r.text
            esc = r.json()["escalation"]
            assert esc["manual"] and esc["standing"] and esc["reason"] == "no answer on the radio"
            assert esc["by"] == f"user:{a.name}-supervisor" and r.json()["escalated"] is True
            assert r.json()["state"] in ("raised", "delivered")  # escalating is not acknowledging
            again = await http.post(f"{url}/escalate", headers=sup, json={"reason": "still nothing"})
            assert again.status_code == 409 and "already escalated" in again.json()["detail"]

            assert (await http.post(f"{url}/acknowledge", headers=sup)).status_code == 200
            after_ack = (await http.get(url, headers=sup)).json()
            assert after_ack["escalation"]["standing"] is False  # the banner's rule: gone once acknowledged
            # escalating an acknowledged incident (backup needed) stands again
            r = await http.post(f"{url}/escalate", headers=sup, json={"reason": "needs backup"})
            assert r.status_code == 200 and r.json()["escalation"]["standing"] is True

            for text in ("Called the officer's phone: no answer", "Unit 7 sees the car"):
                r = await http.post(f"{url}/notes", headers=sup, json={"text": text})
                assert r.status_code == 200, r.text
            notes = r.json()["notes"]
            assert [n["text"] for n in notes] == ["Called the officer's phone: no answer", "Unit 7 sees the car"]
            assert all(n["author"] == f"user:{a.name}-supervisor" and n["at"] for n in notes)

            r = await http.put(f"{url}/responder", headers=sup, json={"responder": "Unit 7"})
            assert r.status_code == 200 and r.json()["responder"]["name"] == "Unit 7"
            assert (await http.put(f"{url}/responder", headers=sup, json={"responder": "Unit 7"})).status_code == 409
            r = await http.put(f"{url}/responder", headers=sup, json={"responder": "Sgt. Diaz (Unit 9)"})
            assert r.json()["responder"] == {"name": "Sgt. Diaz (Unit 9)", "at": r.json()["responder"]["at"],
                                             "by": f"user:{a.name}-supervisor"}

            await wait_until(lambda: {"note", "responder_assigned"} <= {e["change"] for e in pushed}, 10,
                             what="the notes and the responder on the live feed")
            watcher.cancel()
        changes = [e["change"] for e in pushed]
        assert changes.count("escalated") == 2 and changes.count("note") == 2 and changes.count("responder_assigned") == 2
        assert pushed[-1]["responder"]["name"] == "Sgt. Diaz (Unit 9)" and len(pushed[-1]["notes"]) == 2

        # stored in PostgreSQL as transitions, in order, with who and when
        await wait_until(lambda: rt.alerts.pending == 0, 10, what="every change stored")
        async with rt.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.alert_transitions.c.state, t.alert_transitions.c.actor, t.alert_transitions.c.note)
                                       .where(t.alert_transitions.c.alert_id == alert.id)
                                       .order_by(t.alert_transitions.c.at))).all()
        mine = [(s, n) for s, actor, n in rows if actor == f"user:{a.name}-supervisor" and s not in ("acknowledged", "delivered")]
        assert mine == [("escalated", "no answer on the radio"), ("escalated", "needs backup"),
                        ("note", "Called the officer's phone: no answer"), ("note", "Unit 7 sees the car"),
                        ("responder_assigned", "Unit 7"), ("responder_assigned", "Sgt. Diaz (Unit 9)")]

        # the list (the queue after a reload) says the same as the live feed
        listed = (await http.get("/api/v1/alerts", headers=sup)).json()[0]
        assert listed["responder"]["name"] == "Sgt. Diaz (Unit 9)" and len(listed["notes"]) == 2
        assert listed["escalation"]["standing"] is True and listed["escalation"]["reason"] == "needs backup"

        # who read the officer's evidence for this incident, and why: on the incident itself
        assert (await http.get(url, headers=sup, params={"purpose": "safety_response"})).status_code == 200
        r = await http.get(f"/api/v1/officers/{a.officer_id}/vitals", headers=sup, params={"purpose": "safety_response"})
        assert r.status_code == 200, r.text
        reads = (await http.get(url, headers=sup)).json()["evidence_reads"]
        classes = {(x["data_class"], x["purpose"], x["outcome"]) for x in reads}
        assert ("alert_evidence", "safety_response", "granted") in classes
        assert ("derived_features", "safety_response", "granted") in classes
        assert all(x["actor_label"] == f"{a.name}-supervisor (supervisor)" for x in reads), reads

        # the auditor's per-incident timeline: transitions (notes included) and every read, in words
        aud = _auth(a.tokens["auditor"])

        async def timeline() -> dict:
            r = await http.get(f"/api/v1/audit/incidents/{alert.id}", headers=aud, params={"purpose": "oversight_audit"})
            assert r.status_code == 200, r.text
            return r.json()

        for _ in range(50):  # the transitions enter the chain from the outbox
            got = await timeline()
            if sum(e["action"] == "alert.transition" for e in got["entries"]) >= 9:
                break
            await asyncio.sleep(0.2)
        assert got["alert"]["officer_name"] == f"Officer One of {a.name}" and "sos alert of Officer One" in got["alert"]["label"]
        notes_seen = [e["details"]["note"] for e in got["entries"] if e["action"] == "alert.transition" and e["details"]["state"] == "note"]
        assert notes_seen == ["Called the officer's phone: no answer", "Unit 7 sees the car"]
        reads = [e for e in got["entries"] if e["action"] == "access" and e["details"].get("data_class") == "derived_features"]
        assert reads and reads[0]["purpose"] == "safety_response" and reads[0]["actor_label"] == f"{a.name}-supervisor (supervisor)"
        seqs = [e["seq"] for e in got["entries"]]
        assert seqs == sorted(seqs)
        # another incident's reads are not in this one's timeline
        other = await rt.alerts.raise_alert(agency_id=a.name, device_id=a.device_id, seq=9, kind="fall",
                                            officer_id=None, officer_name=None, explanation=EVIDENCE)
        await wait_until(lambda: rt.alerts.pending == 0, 10, what="stored")
        assert (await http.get(f"/api/v1/alerts/{other.id}", headers=sup, params={"purpose": "safety_response"})).status_code == 200
        assert not [e for e in (await timeline())["entries"] if e["details"].get("alert") == str(other.id)]

        # who may: officers and auditors are refused with the reason; another agency's supervisor finds nothing
        for role in ("officer", "auditor", "fleet_admin"):
            for method, path, body in (("post", "escalate", {"reason": "x"}), ("post", "notes", {"text": "x"}),
                                       ("put", "responder", {"responder": "x"})):
                r = await http.request(method.upper(), f"{url}/{path}", headers=_auth(a.tokens[role]), json=body)
                assert r.status_code == 403 and f"role {role} may not call this" in r.json()["detail"], (role, path, r.text)
        sup_b = _auth(b.tokens["supervisor"])
        assert (await http.post(f"{url}/notes", headers=sup_b, json={"text": "x"})).status_code == 404
        assert (await http.post(f"/api/v1/alerts/{uuid.uuid4()}/escalate", headers=sup, json={"reason": "x"})).status_code == 404
        assert (await http.put(f"/api/v1/alerts/{uuid.uuid4()}/responder", headers=sup, json={"responder": "x"})).status_code == 404
        assert (await http.post("/api/v1/alerts/not-an-id/notes", headers=sup, json={"text": "x"})).status_code == 422
        blank = await http.post(f"{url}/notes", headers=sup, json={"text": "   "})
        assert blank.status_code == 422 and "must not be blank" in blank.text
        assert (await http.post(f"{url}/escalate", headers=sup, json={})).status_code == 422
        nul = await http.post(f"{url}/notes", headers=sup, json={"text": "a\u0000b"})  # PostgreSQL refuses NUL in text
        assert nul.status_code == 422 and "control characters" in nul.text
        assert (await http.post(f"{url}/notes", headers=sup, json={"text": "line one\nline two"})).status_code == 200
        # the same for the notes of acknowledging and resolving (a refused change would hold up the store's writer)
        assert (await http.post(f"{url}/resolve", headers=sup, json={"outcome": "other", "note": "x\u0000"})).status_code == 422
        assert (await http.get(f"/api/v1/audit/incidents/{alert.id}", headers=sup, params={"purpose": "oversight_audit"})).status_code == 403
        assert (await http.get(f"/api/v1/audit/incidents/{alert.id}", headers=_auth(b.tokens["auditor"]),
                               params={"purpose": "oversight_audit"})).status_code == 404

        # resolved: no more changes
        assert (await http.post(f"{url}/resolve", headers=sup, json={"outcome": "real_emergency"})).status_code == 200
        r = await http.post(f"{url}/notes", headers=sup, json={"text": "late"})
        assert r.status_code == 409 and "already resolved" in r.json()["detail"]

        # every new route declares its answers
        spec = (await http.get("/openapi.json")).json()["paths"]
        for path, method in (("/api/v1/alerts/{alert_id}/escalate", "post"), ("/api/v1/alerts/{alert_id}/notes", "post"),
                             ("/api/v1/alerts/{alert_id}/responder", "put"), ("/api/v1/audit/incidents/{alert_id}", "get")):
            declared = set(spec[path][method]["responses"])
            expected = {"200", "401", "403", "404", "422"} | ({"409"} if "alerts" in path else set())
            assert expected <= declared, (path, declared)


async def test_notes_and_responder_survive_a_restart(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency, escalate_after_s=600)
    db.upgrade(settings)
    a = await seed(settings, agency, 0x0A0000F1)
    async with serve(settings) as backend, httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
        sup = _auth(await login(http, f"{agency}-supervisor"))
        alert = await backend.runtime.alerts.raise_alert(agency_id=agency, device_id=a.device_id, seq=1, kind="sos",
                                                         officer_id=a.officer_id, officer_name="Officer One", explanation=EVIDENCE)
        url = f"/api/v1/alerts/{alert.id}"
        assert (await http.post(f"{url}/escalate", headers=sup, json={"reason": "no answer"})).status_code == 200
        assert (await http.post(f"{url}/notes", headers=sup, json={"text": "before the restart"})).status_code == 200
        assert (await http.put(f"{url}/responder", headers=sup, json={"responder": "Unit 3"})).status_code == 200
    async with serve(settings) as backend, httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
        sup = _auth(await login(http, f"{agency}-supervisor"))
        got = (await http.get(url, headers=sup)).json()
        assert [n["text"] for n in got["notes"]] == ["before the restart"]
        assert got["responder"]["name"] == "Unit 3" and got["escalation"]["reason"] == "no answer"
        assert got["escalation"]["standing"] is True
        # the reopened incident carries on: a standing escalation is still one, a new note appends
        assert (await http.post(f"{url}/escalate", headers=sup, json={"reason": "again"})).status_code == 409
        r = await http.post(f"{url}/notes", headers=sup, json={"text": "after the restart"})
        assert [n["text"] for n in r.json()["notes"]] == ["before the restart", "after the restart"]
        await wait_until(lambda: backend.runtime.alerts.pending == 0, 10, what="stored")
        listed = (await http.get("/api/v1/alerts", headers=sup)).json()[0]
        assert [n["text"] for n in listed["notes"]] == ["before the restart", "after the restart"]


async def test_a_supervisors_steps_are_journaled_before_they_return(tmp_path):
    """The database is away: escalation, note and responder still return, each on disk in the
    alert journal (what a restarted backend stores), and dispatch hears the escalation."""
    engine = create_async_engine("postgresql+asyncpg://vigil@127.0.0.1:1/none")  # nobody listens
    journal = AlertJournal(tmp_path / "j.alerts")
    metrics = BackendMetrics()
    events, heard = IncidentEvents(), []
    events.subscribe(lambda e: heard.append(e.change))
    store = AlertStore(engine, metrics, journal, wait_s=0.1)
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    alerts = AlertService(store, LiveHub(), metrics, events, lambda: now,
                          status=StatusBoard(offline_s=30, battery_low_pct=15, engine=engine))
    alert = await alerts.raise_alert(agency_id="nowhere", device_id=7, seq=1, kind="sos", officer_id=None,
                                     officer_name=None, explanation=EVIDENCE)
    await alerts.escalate(alert.id, "user:sup", "nowhere", "no answer")
    await alerts.add_note(alert.id, "user:sup", "nowhere", "a note")
    await alerts.assign_responder(alert.id, "user:sup", "nowhere", "Unit 1")
    assert heard == ["raised", ESCALATED]
    # dispatch is told why in the supervisor's words, not "unacknowledged"
    assert dispatch_payload(alerts.find(alert.id))["reason"] == "escalated by a supervisor: no answer"
    journal.close()
    kept = AlertJournal(tmp_path / "j.alerts").read()
    steps = [(tr["state"], tr["note"]) for w in kept for tr in w.transitions]
    assert steps == [("raised", "sos"), ("escalated", "no answer"), ("note", "a note"), ("responder_assigned", "Unit 1")]
    times = [tr["at"] for w in kept for tr in w.transitions]
    assert times == sorted(set(times))  # one clock instant, four distinct steps (the stored key)
    await engine.dispose()
