"""Provisioning and deployment over USB serial with mpremote.

The device key goes onto the board's flash through the USB cable only; the firmware never
exposes it over BLE. Re-provisioning with the same key keeps the board's sequence-number
reservation (numbers must never repeat for a key); a new key starts afresh.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from firmware import config
from firmware import frame as F

REPO = Path(__file__).resolve().parents[2]
Runner = Callable[[list[str]], subprocess.CompletedProcess]


class ProvisionError(RuntimeError):
    """Provisioning could not complete; the message says what to do."""


def run_mpremote(args: list[str]) -> subprocess.CompletedProcess:
    try:
        import mpremote  # noqa: F401
    except ImportError as exc:
        raise ProvisionError("mpremote is not installed: pip install -e '.[firmware]'") from exc
    return subprocess.run([sys.executable, "-m", "mpremote", *args], capture_output=True)


def read_key_file(path: str | os.PathLike) -> bytes:
    """A device key file: 64 hex digits (whitespace allowed) or exactly 32 raw bytes."""
    data = Path(path).read_bytes()
    text = data.decode("ascii", "replace").strip()
    if len(text) == 2 * F.KEY_LEN:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if len(data) == F.KEY_LEN:
        return data
    raise ProvisionError("%s: a device key is 64 hex digits or 32 raw bytes" % path)


def parse_device_id(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ProvisionError("device id is a 32-bit unsigned number")
    return value


def provision(port: str, device_id: int, key: bytes, run: Runner = run_mpremote, force: bool = False) -> dict:
    """Write the configuration atomically onto the board at port; returns the record."""
    if len(key) != F.KEY_LEN:
        raise ProvisionError("a device key is exactly 32 bytes")
    existing = None
    cat = run(["connect", port, "fs", "cat", ":" + config.CONFIG_PATH])
    if cat.returncode == 0 and cat.stdout.strip():
        try:
            existing = config.decode(cat.stdout.strip())
        except config.ConfigError as exc:
            if not force:
                raise ProvisionError(
                    "the board holds an unreadable configuration (%s): its sequence reservation is "
                    "unknown, so re-using its key could repeat sequence numbers. Provision a NEW key "
                    "with --force." % exc) from exc
    rec = config.new_record(device_id, key.hex(), existing)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "vigil.json")
        with open(local, "wb") as f:
            f.write(config.encode(rec))
        for args in (
            ["connect", port, "fs", "cp", local, ":" + config.CONFIG_PATH + ".tmp"],
            ["connect", port, "exec", "import os; os.rename(%r, %r)" % (config.CONFIG_PATH + ".tmp", config.CONFIG_PATH)],
        ):
            proc = run(args)
            if proc.returncode != 0:
                raise ProvisionError("mpremote %s failed: %s" % (" ".join(args[2:4]), _text(proc.stderr)))
    back = run(["connect", port, "fs", "cat", ":" + config.CONFIG_PATH])
    try:
        check = config.decode(back.stdout.strip())
    except config.ConfigError as exc:
        raise ProvisionError("read-back of the configuration failed: %s" % exc) from exc
    if check["device_id"] != device_id or check["key"] != key.hex():
        raise ProvisionError("read-back does not match what was written")
    return rec


def deploy(port: str, run: Runner = run_mpremote, build_dir: Path | None = None) -> list[str]:
    """Compile the firmware with mpy-cross and copy it to the board: /lib/firmware/*.mpy and
    /main.py. Returns the board paths written."""
    from firmware.tools import checks

    build = build_dir or (checks.WORK / "build")
    written = []
    commands = [["connect", port, "exec", "import os\nfor d in ('/lib', '/lib/firmware', '/lib/firmware/drivers'):\n"
                 "    try:\n        os.mkdir(d)\n    except OSError:\n        pass"]]
    for src in checks.firmware_files():
        rel = src.relative_to(REPO)
        if rel.as_posix() == "firmware/main.py":
            commands.append(["connect", port, "fs", "cp", str(src), ":/main.py"])
            written.append("/main.py")
            continue
        out = build / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([checks.mpy_cross_exe(), "-march=" + checks.MPY_ARCH, "-o", str(out), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProvisionError("mpy-cross %s: %s" % (rel, proc.stderr))
        target = "/lib/" + rel.with_suffix(".mpy").as_posix()
        commands.append(["connect", port, "fs", "cp", str(out), ":" + target])
        written.append(target)
    for args in commands:
        proc = run(args)
        if proc.returncode != 0:
            raise ProvisionError("mpremote %s failed: %s" % (" ".join(args[2:]), _text(proc.stderr)))
    return written


def _text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
