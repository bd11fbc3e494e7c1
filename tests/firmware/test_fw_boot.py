"""firmware main() boots under genuine MicroPython (the official WebAssembly port in Node), on a
host board: chips emulated at register level, a fake BLE stack with a scripted central, the
port's asyncio replaced by a virtual clock (firmware/tools/vasyncio.py) so nothing sleeps.
The script tests/firmware/boot/mp_boot.py runs under MicroPython and reports what it saw; the
judgement is here. Skipped only when node/npm are absent."""
import json

import pytest

from firmware import frame as F
from firmware import profile
from firmware.tools import checks

BOOT_SCRIPT = checks.REPO / "tests" / "firmware" / "boot" / "mp_boot.py"


@pytest.fixture(scope="module")
def tools():
    if not checks.node_available():
        pytest.skip("node and npm are not installed: MicroPython (WebAssembly) cannot run here")
    return checks.setup(need_node=True)


def _boot(tools, tmp_path, case):
    spec = tmp_path / "boot.json"
    spec.write_text(json.dumps({"case": case}))
    proc = checks.run_micropython_script(BOOT_SCRIPT, {"/boot.json": spec})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OBSERVED ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1][len("OBSERVED "):]), proc.stdout


@pytest.fixture(scope="module")
def booted(tools, tmp_path_factory):
    return _boot(tools, tmp_path_factory.mktemp("boot"), "provisioned")[0]


def test_it_is_micropython_running_main(booted):
    assert booted["implementation"] == ["micropython", [1, 29, 0]]
    assert booted["now"] == 30000 and booted["loop_steps"] > 1000
    assert booted["cpu_hz"] == 80_000_000  # main() set the clock before anything else


def test_boots_and_feeds_the_watchdog(booted):
    assert booted["wdt_timeout"] == 8000
    assert 28 <= booted["wdt_feeds"] <= 31  # once a second while every task progresses


def test_advertises_as_a_vigil_wearable(booted):
    assert booted["advertising"][0] == 100000  # fast advertising before the first link
    adv = bytes.fromhex(booted["adv_data"])
    assert bytes.fromhex(profile.VIGIL_SERVICE_UUID.replace("-", ""))[::-1] in adv
    assert b"VG-00C0FFEE" in bytes.fromhex(booted["resp_data"])


def test_samples_at_50hz_from_the_fifo_and_streams_sealed_frames(booted):
    frames = booted["frames"]
    tele = [f for f in frames if f["type"] == F.TYPE_TELEMETRY]
    assert all(f["rate"] == 50 and f["samples"] == 20 for f in tele)
    # 30 s of sampling at 50 Hz (the first blocks were held until the link at 1 s): ~1500 samples
    assert 1400 <= sum(f["samples"] for f in tele) <= 1520
    assert all(f["at"] >= 1000 for f in frames)  # nothing before the central connected
    seqs = [f["seq"] for f in frames if f["type"] != F.TYPE_EVENT]
    assert len(seqs) == len(set(seqs))
    assert booted["stored"] == 4096  # the sequence block was reserved in flash before use
    status = [f for f in frames if f["type"] == F.TYPE_STATUS]
    assert status


def test_sos_press_is_an_event_with_haptic_confirmation_resent_until_acked(booted):
    events = [f for f in booted["frames"] if f["type"] == F.TYPE_EVENT]
    assert events and {f["code"] for f in events} == {F.EVENT_SOS}
    assert {f["seq"] for f in events} == {booted["acked"]}
    first = events[0]["at"]
    assert 5000 <= first <= 5200  # 2 s after the press at 3 s
    assert booted["motor"][:2] == [59000, 0]  # the officer felt it
    before_ack = [f for f in events if f["at"] <= booted["ack_at"]]
    assert len(before_ack) >= 3  # resent at 1, 2, 4 s while unacknowledged
    after_ack = [f for f in events if f["at"] > booted["ack_at"] + 100]
    assert after_ack == []  # the backend's EVENT_ACK stopped the resends


def test_time_sync_clears_the_unsynced_flag(booted):
    frames = booted["frames"]
    before = [f for f in frames if f["at"] < booted["sync_at"]]
    after = [f for f in frames if f["at"] > booted["sync_at"] + 100 and f["type"] == F.TYPE_TELEMETRY]
    assert before and all(f["flags"] & F.FLAG_CLOCK_UNSYNCED for f in before)
    assert after and not any(f["flags"] & F.FLAG_CLOCK_UNSYNCED for f in after)
    # epoch time: the sync's time at the sync's uptime, plus the block's age
    sync_uptime = booted["sync_at"]
    for f in after:
        assert abs(f["time_ms"] - (booted["sync_epoch_ms"] + f["at"] - sync_uptime)) < 1500


def test_unprovisioned_device_stays_at_the_repl_blinking(tools, tmp_path):
    seen, stdout = _boot(tools, tmp_path, "unprovisioned")
    assert "not provisioned" in stdout
    assert seen["returned"]  # main() returned: the REPL is free for provisioning over USB
    assert seen["timers"] == [500]
    assert seen["led_toggles"] == [1, 0, 1, 0]  # blinking
    assert not seen["wdt"] and not seen["ble_active"] and seen["advertising"] == 0
