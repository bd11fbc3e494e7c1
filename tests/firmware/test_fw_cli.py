"""`vigil firmware provision|deploy|throughput` against a fake board reached through a fake
mpremote (the serial link is the only thing faked)."""
import subprocess

import pytest

from backend.cli import main as vigil
from firmware import config
from firmware.tools import provision as P

KEY = bytes(range(7, 39))


class FakeBoard:
    """A board's file system as mpremote sees it."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.calls = []

    def __call__(self, args):
        self.calls.append(args)
        assert args[:2] == ["connect", "/dev/ttyACM0"]
        cmd = args[2:]
        if cmd[:2] == ["fs", "cat"]:
            path = cmd[2][1:]
            if path not in self.files:
                return subprocess.CompletedProcess(args, 1, b"", b"OSError: [Errno 2] ENOENT")
            return subprocess.CompletedProcess(args, 0, self.files[path], b"")
        if cmd[:2] == ["fs", "cp"]:
            with open(cmd[2], "rb") as f:
                self.files[cmd[3][1:]] = f.read()
            return subprocess.CompletedProcess(args, 0, b"", b"")
        if cmd[0] == "exec":
            src = cmd[1]
            if src.startswith("import os; os.rename("):
                a, b = eval(src[len("import os; os.rename("):-1])
                self.files[b] = self.files.pop(a)
            return subprocess.CompletedProcess(args, 0, b"", b"")
        raise AssertionError(args)


@pytest.fixture
def key_file(tmp_path):
    p = tmp_path / "device.key"
    p.write_text(KEY.hex() + "\n")
    return p


def test_provision_writes_an_atomic_config(key_file):
    board = FakeBoard()
    rec = P.provision("/dev/ttyACM0", 42, P.read_key_file(key_file), run=board)
    assert config.decode(board.files[config.CONFIG_PATH]) == rec
    assert rec["device_id"] == 42 and rec["key"] == KEY.hex() and rec["seq_limit"] == 0
    assert config.CONFIG_PATH + ".tmp" not in board.files  # written as tmp, then renamed
    cps = [c for c in board.calls if c[2:4] == ["fs", "cp"]]
    assert cps[0][5] == ":" + config.CONFIG_PATH + ".tmp"


def test_reprovisioning_keeps_the_sequence_reservation_of_the_same_key(key_file):
    old = config.new_record(42, KEY.hex())
    old["seq_limit"] = 90112
    board = FakeBoard({config.CONFIG_PATH: config.encode(old)})
    rec = P.provision("/dev/ttyACM0", 42, KEY, run=board)
    assert rec["seq_limit"] == 90112
    rec2 = P.provision("/dev/ttyACM0", 42, bytes(32), run=board)
    assert rec2["seq_limit"] == 0


def test_an_unreadable_config_needs_a_new_key_and_force():
    board = FakeBoard({config.CONFIG_PATH: b'{"torn'})
    with pytest.raises(P.ProvisionError, match="NEW key"):
        P.provision("/dev/ttyACM0", 42, KEY, run=board)
    P.provision("/dev/ttyACM0", 42, bytes(32), run=board, force=True)


def test_key_files_hex_or_raw(tmp_path):
    raw = tmp_path / "raw.key"
    raw.write_bytes(KEY)
    assert P.read_key_file(raw) == KEY
    bad = tmp_path / "bad.key"
    bad.write_text("abcd")
    with pytest.raises(P.ProvisionError):
        P.read_key_file(bad)
    assert P.parse_device_id("0x2A") == 42
    with pytest.raises(P.ProvisionError):
        P.parse_device_id(str(1 << 32))


def test_vigil_firmware_provision_command(key_file, monkeypatch, capsys):
    board = FakeBoard()
    monkeypatch.setattr(P, "run_mpremote", board)
    monkeypatch.setattr(P.provision, "__defaults__", (board, False))
    assert vigil(["firmware", "provision", "--port", "/dev/ttyACM0", "--device-id", "0x2A",
                  "--key-file", str(key_file)]) == 0
    assert "VG-0000002A" in capsys.readouterr().out
    assert config.decode(board.files[config.CONFIG_PATH])["device_id"] == 42


def test_deploy_copies_compiled_firmware_and_main(tmp_path):
    board = FakeBoard()
    written = P.deploy("/dev/ttyACM0", run=board, build_dir=tmp_path)
    assert "/main.py" in written and "/lib/firmware/frame.mpy" in written
    assert "/lib/firmware/drivers/lsm6dso.mpy" in written
    assert not any("tools" in w for w in written)
    assert board.files["/lib/firmware/app.mpy"][:1] == b"M"  # an .mpy header


def test_vigil_firmware_throughput(capsys):
    assert vigil(["firmware", "throughput"]) == 0
    out = capsys.readouterr().out
    assert "549 B/s with ATT/L2CAP headers" in out and "212 bytes" in out
