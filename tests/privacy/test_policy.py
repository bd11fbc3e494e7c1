"""The policy document: validation at load, the pure decision, and changes that wait out the
notice period (audited)."""
from __future__ import annotations

import datetime as dt

import pytest

from backend.privacy import audit
from backend.db import engine as db
from backend.privacy import store
from backend.privacy.engine import AccessRequest, Facts, Incident, decide
from backend.privacy.loader import SHIPPED_POLICY, PolicyError, load_policy_file, parse_policy
from backend.privacy.service import PrivacyService

SHIPPED = SHIPPED_POLICY.read_text()
T0 = dt.datetime(2025, 6, 1, 12, tzinfo=dt.timezone.utc)


class TestLoad:
    def test_shipped(self):
        p = load_policy_file()
        assert p.data_classes["raw_waveforms"].max_age_hours == 24
        assert p.data_classes["derived_features"].max_age_hours == 30 * 24
        assert {"discipline", "promotion", "fitness_for_duty"} <= p.refused_purposes
        assert len(p.sha256) == 64

    def test_raw_retention_may_go_down(self):
        assert parse_policy(SHIPPED.replace("max_age_hours: 24,", "max_age_hours: 6,")).data_classes["raw_waveforms"].max_age_hours == 6

    @pytest.mark.parametrize("text, match", [
        (SHIPPED.replace("max_age_hours: 24,", "max_age_hours: 73,"), "raw_waveforms"),
        (SHIPPED.replace("raw_retention_ceiling_hours: 72", "raw_retention_ceiling_hours: 200"), "hard ceiling"),
        (SHIPPED.replace("max_age_hours: 720,", "max_age_hours: 2000,"), "30 days"),
        (SHIPPED.replace("fitness_for_duty, ", ""), "fitness_for_duty"),
        (SHIPPED.replace("purposes: [officer_self_access]", "purposes: [officer_self_access, discipline]"), "unknown purposes|refused"),
        (SHIPPED.replace("    scope: open_incident", "    scope: agency"), "biometric data needs scope"),
        (SHIPPED.replace("min_group_officers: 10", "min_group_officers: 3"), "at least 10"),
    ])
    def test_refused_at_load(self, text, match):
        with pytest.raises(PolicyError, match=match):
            parse_policy(text)


class TestDecide:
    policy = load_policy_file()

    def req(self, **kw):
        base = dict(role="supervisor", agency_id="a", caller_officer_id=None, purpose="safety_response",
                    data_class="derived_features", target_officer_id=7)
        return AccessRequest(**{**base, **kw})

    def test_supervisor_needs_open_incident_and_stays_inside_it(self):
        inc = Incident("x", T0 - dt.timedelta(minutes=10), T0)
        assert not decide(self.policy, self.req(), Facts("a", ())).granted
        d = decide(self.policy, self.req(), Facts("a", (inc,)))
        assert d.granted and (d.start, d.end) == (inc.start, inc.end)
        d = decide(self.policy, self.req(start=T0 - dt.timedelta(hours=1)), Facts("a", (inc,)))
        assert not d.granted and d.rule == "supervisor.safety.vitals"
        assert not decide(self.policy, self.req(), Facts("b", (inc,))).granted

    @pytest.mark.parametrize("purpose", sorted(load_policy_file().refused_purposes))
    def test_refused_purposes_whoever_asks(self, purpose):
        for role, officer in (("supervisor", None), ("officer", 7), ("auditor", None), ("fleet_admin", None)):
            for dc in ("raw_waveforms", "derived_features", "alerts_incidents"):
                d = decide(self.policy, self.req(role=role, caller_officer_id=officer, purpose=purpose, data_class=dc),
                           Facts("a", (Incident("x", T0, T0),)))
                assert not d.granted and d.rule == f"always_refused.{purpose}"

    def test_auditor_aggregates_only(self):
        assert decide(self.policy, self.req(role="auditor", purpose="aggregate_model_evaluation", target_officer_id=None, aggregate=True), Facts()).granted
        assert not decide(self.policy, self.req(role="auditor", purpose="aggregate_model_evaluation"), Facts("a")).granted


@pytest.mark.integration
async def test_policy_change_waits_for_notice_and_is_audited(database_url):
    from tests.privacy.conftest import migrate
    from backend.app.config import BackendSettings

    settings = BackendSettings(database_url=database_url)
    migrate(settings)
    engine = db.create_engine(settings)
    privacy = PrivacyService(engine, settings, now=lambda: T0)
    await privacy.start()
    first = await privacy.policies.current(T0)
    assert first.policy.sha256 == load_policy_file().sha256 and first.effective_at == T0
    stricter = SHIPPED.replace('version: "2025-10.1"', 'version: "2025-11.1"').replace("max_age_hours: 24,", "max_age_hours: 12,")
    proposed = await store.propose(engine, stricter, "cli:union-rep", T0 + dt.timedelta(days=1))
    assert proposed.effective_at == T0 + dt.timedelta(days=15)  # 14 days' notice of the policy in force
    privacy.policies.invalidate()
    assert (await privacy.policies.current(T0 + dt.timedelta(days=14))).policy.version == "2025-10.1"
    assert [p.policy.version for p in await privacy.policies.pending(T0 + dt.timedelta(days=14))] == ["2025-11.1"]
    assert (await privacy.policies.current(T0 + dt.timedelta(days=15))).policy.version == "2025-11.1"
    actions = [(e["action"], e["subject"]) for e in await audit.read_chain(engine)]
    assert ("policy.install", "policy:2025-10.1") in actions and ("policy.propose", "policy:2025-11.1") in actions
    with pytest.raises(PolicyError):
        await store.propose(engine, SHIPPED.replace("max_age_hours: 24,", "max_age_hours: 96,"), "cli:x", T0)
    await engine.dispose()
