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
    assert (tmp_path / ".vigil" / "keys.json").stat().st_mode & 0o077 == 0  # generated keys: owner only
