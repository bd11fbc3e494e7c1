"""The README's main command runs: `vigil demo` (its real main, shortened) starts its own
PostgreSQL and Mosquitto, the backend, a gateway over the virtual BlueZ and simulated officers,
and an alert reaches the supervisor's live feed (it exits 1 when none did)."""
from __future__ import annotations

import pytest

from backend.cli import main
from backend.local import infra

pytestmark = pytest.mark.integration


def test_vigil_demo_pages_an_alert(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the demo keeps its keys and services under ./.vigil
    code = main(["demo", "--officers", "4", "--duration", "35", "--port", str(infra.free_port())])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ALERT priority" in out and "why:" in out, out  # the evidence followed, granted and audited
    # issue 21: the dashboard's address and one account for each of the four roles
    assert "Dashboard:  http://127.0.0.1:" in out, out
    for who in ("'supervisor'", "'admin'", "'auditor'", "'officer'"):
        assert f"sign in as {who}" in out, out
    alert_lines = [line for line in out.splitlines() if "ALERT priority" in line or "why:" in line]
    assert all(len(line) < 200 and "{" not in line for line in alert_lines), alert_lines  # sentences, not JSON
    assert (tmp_path / ".vigil" / "keys.json").stat().st_mode & 0o077 == 0  # generated keys: owner only


class TestAlertLines:
    """What the demo prints for the live feed's events: one sentence each, acknowledgements and
    resolutions too (issue 21: ~1 kB of raw JSON per alert, no acks, no resolutions)."""

    ALERT = {"id": "a1", "kind": "sos", "title": "SOS", "priority": 1, "officer_name": "Officer Rivera",
             "device_id": 0x00D30001, "location": {"lat": 40.7128, "lon": -74.006, "source": "gateway"},
             "transitions": [{"state": "raised", "actor": "device:13828097"}], "explanation": {"detector": "device", "event": "sos"}}

    def line(self, change, **extra):
        from backend.local.demo import alert_line
        return alert_line({"type": "alert", "data": {**self.ALERT, "change": change, **extra}})

    def test_raised(self):
        assert self.line("raised") == "ALERT priority 1 (life threat): SOS — Officer Rivera at 40.71280, -74.00600 (gateway)"

    def test_acknowledged_and_resolved_are_printed_with_who(self):
        acked = self.line("acknowledged", state="acknowledged",
                          transitions=[{"state": "acknowledged", "actor": "user:supervisor"}])
        assert acked == "ACKNOWLEDGED by supervisor: SOS of Officer Rivera; the wearable is told help is coming"
        resolved = self.line("resolved", outcome="false_alarm", transitions=[{"state": "resolved", "actor": "user:sup-2"}])
        assert resolved.startswith("RESOLVED by sup-2 as False alarm: SOS of Officer Rivera"), resolved

    def test_escalated_upgraded_and_quiet_changes(self):
        assert self.line("escalated").startswith("ESCALATED: SOS of Officer Rivera")
        by_hand = self.line("escalated", escalation={"manual": True, "reason": "no answer on the radio", "by": "user:sup-2"},
                            transitions=[{"state": "escalated", "actor": "user:sup-2"}])
        assert by_hand == "ESCALATED by sup-2: SOS of Officer Rivera — no answer on the radio; every supervisor told", by_hand
        assert self.line("upgraded", title="Device man-down alarm").startswith("UPGRADED to priority 1 (life threat): now Device man-down alarm")
        assert self.line("delivered") is None and self.line("merged") is None

    def test_why_is_words(self):
        from backend.local.demo import alert_line
        device = alert_line({"type": "alert_evidence", "data": {"id": "a1", "explanation": {"detector": "device", "event": "mandown_alarm"}}})
        assert device == "  why: the wearable's man-down alarm went off (no motion after the pre-alert)"
        model = alert_line({"type": "alert_evidence", "data": {"id": "a1", "explanation": {
            "detector": "backend.fall", "impact_g": 4.1, "window": {"start": 1, "end": 2}, "gateway": "car-12"}}})
        assert model == "  why: impact g 4.1" and "{" not in model
        upgraded = alert_line({"type": "alert_evidence", "data": {"id": "a1", "explanation": {
            "summary": "fall: impact 4.1 g", "related": [{"kind": "device_alarm", "explanation": {"detector": "device", "event": "mandown_alarm"}}]}}})
        assert "man-down alarm" in upgraded
        assert alert_line({"type": "heartbeat", "data": {}}) is None
