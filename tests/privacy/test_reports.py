"""The transparency report's fairness breakdown: consented cohorts of >= 10 officers get
rates, smaller ones are suppressed; the CLI prints the same report."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from backend.identity import fleet
from backend.privacy import reports
from backend.db import engine as db
from backend.db import schema as t
from backend.privacy.loader import load_policy_file
from tests.privacy.conftest import NOW

pytestmark = pytest.mark.integration


async def test_fairness_by_consented_cohort_with_small_group_suppression(world):
    engine = db.create_engine(world.settings)
    secret = world.settings.secret_key.get_secret_value()
    rows, cohorts = [], []
    for i in range(14):  # 12 in band "30-39", 2 in "50-59"
        officer = await fleet.create_officer(engine, world.agency, f"F-{i}", f"Officer {i}")
        device = 0x00F00000 + i
        await fleet.provision_device(engine, secret, world.agency, device)
        cohorts.append({"officer_id": officer, "attribute": "age_band", "value": "30-39" if i < 12 else "50-59", "consented_at": NOW})
        for k, outcome in enumerate(("false_alarm", "real_emergency", "false_alarm" if i % 2 else "test")):
            rows.append({"id": uuid.uuid4(), "agency_id": world.agency, "officer_id": officer, "device_id": device, "kind": "fall",
                         "priority": 2, "state": "resolved", "raised_at": NOW - dt.timedelta(days=1, minutes=k), "seq": k,
                         "explanation": {}, "outcome": outcome, "updated_at": NOW})
    # one officer withdrew consent: not counted in any cohort
    cohorts[0]["withdrawn_at"] = NOW
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.alerts), rows)
        await conn.execute(sa.insert(t.officer_cohorts), [{"withdrawn_at": None, **c} for c in cohorts])
    report = await reports.transparency_report(engine, load_policy_file(), agency_id=world.agency, until=NOW)
    await engine.dispose()
    by_value = {c["value"]: c for c in report["fairness"]}
    assert by_value["50-59"]["suppressed"] and by_value["50-59"]["detectors"] == []
    band = by_value["30-39"]
    assert not band["suppressed"] and band["officers"] == 11
    (fall,) = band["detectors"]
    assert (fall["resolved"], fall["false_alarms"]) == (33, 11 + 6)  # officers 1..11: odd ones have 2 false alarms
    assert report["false_alarm_rate_by_detector"][0]["false_alarm_rate"] == round((14 + 7) / 42, 4)

    env = {**os.environ, "VIGIL_DATABASE_URL": world.settings.database_url}
    out = subprocess.run([sys.executable, "-m", "backend.cli", "report", "transparency", "--agency", world.agency],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "age_band=50-59: suppressed" in out and "age_band=30-39: 11 officers" in out
