"""Issue 17, finding 9: one small-group rule and one minimum time bucket in every report, API and
view; deployment-wide audit entries (policy versions, retention) visible to every agency's auditors."""
from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pytest
import sqlalchemy as sa

from backend.db import engine as db
from backend.db import schema as t
from backend.identity import fleet
from backend.privacy import reports
from backend.privacy.service import PrivacyService
from tests.privacy.conftest import NOW

pytestmark = pytest.mark.integration


async def _alerts(engine, agency: str, officers: list[int], kind: str, outcome: str, at: dt.datetime, device: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.alerts), [
            {"id": uuid.uuid4(), "agency_id": agency, "officer_id": o, "device_id": device, "kind": kind, "priority": 2,
             "state": "resolved", "raised_at": at, "seq": i, "explanation": {}, "outcome": outcome, "updated_at": at}
            for i, o in enumerate(officers)])


async def test_report_api_and_view_suppress_the_same_groups(backend, world):
    engine = db.create_engine(world.settings)
    many = [await fleet.create_officer(engine, world.agency, f"S-{i}", f"Officer {i}") for i in range(11)]
    at = NOW - dt.timedelta(minutes=1)
    await _alerts(engine, world.agency, many, "fall", "false_alarm", at, world.alice_device)         # 11 officers: shown
    await _alerts(engine, world.agency, [world.alice], "sos", "real_emergency", at, world.alice_device)  # one officer: suppressed
    report = await reports.transparency_report(engine, await _policy(backend), agency_id=world.agency, until=NOW)
    async with engine.connect() as conn:
        view = {(r.kind, r.outcome): r for r in (await conn.execute(sa.text(
            "select * from reporting_alert_summary where agency_id = :a and month = date_trunc('month', cast(:at as timestamptz))"),
            {"a": world.agency, "at": at})).all()}
    await engine.dispose()
    by_type = {(r["kind"], r["outcome"]): r for r in report["alerts_by_type_and_outcome"]}
    assert set(by_type) == set(view) == {("fall", "false_alarm"), ("sos", "real_emergency")}
    for key, row in by_type.items():
        assert row["suppressed"] == view[key].suppressed and row["alerts"] == view[key].alerts, key
    assert by_type[("sos", "real_emergency")]["alerts"] is None and by_type[("fall", "false_alarm")]["alerts"] == 11
    detectors = {d["kind"]: d for d in report["false_alarm_rate_by_detector"]}
    assert detectors["sos"]["suppressed"] and detectors["sos"]["false_alarm_rate"] is None
    assert detectors["fall"]["false_alarm_rate"] == 1.0


async def _policy(backend):
    return (await backend.runtime.privacy.policies.current(NOW)).policy


async def test_aggregates_cover_whole_buckets_only(backend, world):
    """A 2-second window is widened to the whole day; each day is its own group, suppressed on its own."""
    start = NOW.replace(hour=0, minute=0, second=0)
    async with httpx.AsyncClient(base_url=backend.url) as http:
        r = await http.get("/api/v1/aggregates/vitals", headers=world.auth("auditor"),
                           params={"purpose": "aggregate_model_evaluation", "start": (NOW - dt.timedelta(seconds=2)).isoformat(),
                                   "end": NOW.isoformat()})
        body = r.json()
        assert r.status_code == 200, r.text
        assert dt.datetime.fromisoformat(body["start"]) == start and dt.datetime.fromisoformat(body["end"]) == start + dt.timedelta(days=1)
        assert body["bucket_hours"] == 24
        assert body["groups"] and all(g["suppressed"] and g["samples"] is None and g["hr_mean"] is None for g in body["groups"])
        assert {g["bucket_start"] for g in body["groups"]} == {start.isoformat()}
        report = (await http.get("/api/v1/reports/transparency", headers=world.auth("auditor"),
                                 params={"purpose": "oversight_audit", "since": (NOW - dt.timedelta(seconds=2)).isoformat(),
                                         "until": NOW.isoformat()})).json()
        assert dt.datetime.fromisoformat(report["period"]["since"]) == start


async def test_policy_and_retention_entries_reach_every_agencys_auditors(backend, world):
    engine = db.create_engine(world.settings)
    await PrivacyService(engine, world.settings, now=lambda: NOW + dt.timedelta(days=31)).run_retention_once()
    await engine.dispose()
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for agency in (world.agency, world.other_agency):
            log = (await http.get("/api/v1/audit", params={"purpose": "oversight_audit"},
                                  headers=world.auth("auditor", agency=agency))).json()
            actions = {e["action"] for e in log}
            assert {"policy.install", "retention.delete"} <= actions, (agency, actions)
            assert all(e["agency_id"] in (agency, "*") for e in log)
