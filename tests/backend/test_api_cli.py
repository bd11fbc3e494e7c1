"""The `vigil` command line as a fleet admin meets it (issue 21): `vigil login` keeps the token;
expected errors are one line saying what to do, never a traceback; the fleet guards a shift that
ends in the past, a second retirement, and names the officer a retired device leaves without one."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from backend import cli
from tests.backend.api_helpers import PASSWORD, two_agencies


async def _vigil(*argv, env: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def run():
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli.main(list(argv))
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        code = await asyncio.to_thread(run)  # the CLI is synchronous; the backend runs in this loop
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_expected_errors_without_a_backend_are_one_line(capsys):
    assert cli.main(["eval", "hr", "--data", "/nonexistent"]) == 1  # was FileNotFoundError's traceback
    assert "/nonexistent" in _one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit):
        cli.main(["device", "retire", "zz"])
    err = capsys.readouterr().err
    assert "invalid <lambda> value" not in err and "is not a device id" in err and "0x00D30001" in err, err
    with pytest.raises(SystemExit):
        cli.main(["simulate", "--first-device-id", "zz"])
    err = capsys.readouterr().err
    assert "invalid <lambda> value" not in err and "is not a device id" in err, err


def test_a_bad_device_list_says_how_to_write_it(capsys, monkeypatch):
    monkeypatch.setenv("VIGIL_GATEWAY_DEVICES", "0x10,zz")
    assert cli.main(["gateway", "run"]) != 0
    line = _one_line(capsys.readouterr().err)
    assert "invalid literal for int()" not in line and "'zz' is not a device id" in line, line


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    """`vigil … | head -3`: the reader is gone before the command writes."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "backend.cli", "--help"], stdout=write, stderr=subprocess.PIPE, env=env,
                          timeout=60)
    os.close(write)
    assert b"Traceback" not in done.stderr, done.stderr.decode()


pytestmark_integration = pytest.mark.integration


@pytestmark_integration
async def test_login_guards_and_one_line_errors(database_url, mqtt_broker, agency, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "VIGIL_PASSWORD": PASSWORD, "VIGIL_TOKEN": ""}
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, _):
        api = ["--api", backend.url]
        code, _, err = await _vigil("officer", "list", *api, env=env)
        assert code == 2 and "vigil login" in _one_line(err)
        code, out, _ = await _vigil("login", *api, "--username", f"{a.name}-fleet_admin", env=env)
        assert code == 0 and "signed in" in out, out
        kept = tmp_path / "vigil" / "tokens.json"
        assert kept.stat().st_mode & 0o077 == 0  # readable only by this user
        code, out, err = await _vigil("officer", "list", *api, "--json", env=env)
        assert code == 0, err
        assert {o["id"] for o in json.loads(out)} == {a.officer_id, a.other_officer_id}

        # a closed pipe on a command that talks to the backend (the old CLI: BrokenPipeError's traceback)
        read, write = os.pipe()
        os.close(read)
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "backend.cli", "officer", "list", *api],
                                       stdout=write, stderr=subprocess.PIPE, env={**os.environ, **env}, timeout=60)
        os.close(write)
        assert b"Traceback" not in done.stderr and done.returncode == 141, done.stderr.decode()

        device = f"{a.device_id:#x}"
        # a shift that ended yesterday: refused, the device keeps its officer (it was silently unassigned)
        code, _, err = await _vigil("device", "assign", device, "--officer", str(a.other_officer_id), "--until", "2020-01-01T00:00:00Z", *api, env=env)
        line = _one_line(err)
        assert code == 1 and "in the past" in line and "[{" not in line, line
        code, _, err = await _vigil("device", "assign", device, "--officer", str(a.other_officer_id), "--until", "tomorrow", *api, env=env)
        line = _one_line(err)
        assert code == 1 and "ends_at" in line and "[{" not in line and "'loc'" not in line, line  # a 422 in words
        code, out, _ = await _vigil("device", "list", *api, "--json", env=env)
        assert next(d for d in json.loads(out) if d["device_id"] == a.device_id)["officer_id"] == a.officer_id
        code, out, _ = await _vigil("device", "list", *api, env=env)
        assert code == 0 and f"0x{a.device_id:08X}" in out and str(a.device_id) not in out, out  # one id format: hex, as on the pages

        # retiring a worn device names who wore it; a second retirement is refused and changes nothing
        code, out, _ = await _vigil("device", "retire", device, *api, "--json", env=env)
        retired = json.loads(out)
        assert code == 0 and retired["retired_from"] == {"officer_id": a.officer_id, "officer_name": f"Officer One of {a.name}"}
        code, _, err = await _vigil("device", "retire", device, *api, env=env)
        assert code == 1 and "already retired" in _one_line(err)
        code, out, _ = await _vigil("device", "list", *api, "--json", env=env)
        assert next(d for d in json.loads(out) if d["device_id"] == a.device_id)["retired_at"] == retired["retired_at"]

        code, out, _ = await _vigil("logout", *api, env=env)
        assert code == 0 and "signed out" in out
        code, _, err = await _vigil("officer", "list", *api, env=env)
        assert code == 2 and "not signed in" in _one_line(err)
