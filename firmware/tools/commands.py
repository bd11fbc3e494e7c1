"""`vigil firmware ...` and `vigil hardware ...`: provisioning over USB, firmware checks,
battery life and the pin map."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    fw = subparsers.add_parser("firmware", help="wearable firmware: provision, deploy, check")
    fsub = fw.add_subparsers(dest="firmware_command", metavar="ACTION")

    p = fsub.add_parser("provision", help="write device id and key to a board over USB serial (mpremote)")
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    p.add_argument("--device-id", required=True, help="32-bit device id (decimal or 0x...)")
    p.add_argument("--key-file", required=True, help="file with the 32-byte device key (64 hex digits or raw)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an unreadable configuration (only with a NEW key)")
    p.set_defaults(func=_provision)

    d = fsub.add_parser("deploy", help="compile the firmware with mpy-cross and copy it to a board")
    d.add_argument("--port", required=True)
    d.set_defaults(func=_deploy)

    c = fsub.add_parser("check", help="mpy-cross (xtensawin) + mypy on ESP32 stubs + tests under MicroPython")
    c.set_defaults(func=_check)

    t = fsub.add_parser("throughput", help="print the BLE throughput budget per device")
    t.set_defaults(func=_throughput)

    hw = subparsers.add_parser("hardware", help="board: battery life, pin map")
    hsub = hw.add_subparsers(dest="hardware_command", metavar="ACTION")
    b = hsub.add_parser("battery", help="battery life from hardware/power_budget.json")
    b.set_defaults(func=_battery)
    v = hsub.add_parser("check", help="validate hardware/pinmap.json and that firmware/board.py matches it")
    v.set_defaults(func=_hw_check)
    g = hsub.add_parser("board", help="regenerate firmware/board.py from hardware/pinmap.json")
    g.set_defaults(func=_board)


def _provision(args: argparse.Namespace) -> int:
    from firmware.tools import provision as P

    try:
        key = P.read_key_file(args.key_file)
        device_id = P.parse_device_id(args.device_id)
        rec = P.provision(args.port, device_id, key, force=args.force)
    except (P.ProvisionError, ValueError, OSError) as exc:
        print("provision failed: %s" % exc, file=sys.stderr)
        return 1
    print("provisioned device %d (VG-%08X) on %s; sequence numbers resume at %d"
          % (rec["device_id"], rec["device_id"], args.port, rec["seq_limit"]))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from firmware.tools import provision as P

    try:
        written = P.deploy(args.port)
    except P.ProvisionError as exc:
        print("deploy failed: %s" % exc, file=sys.stderr)
        return 1
    print("deployed %d files to %s" % (len(written), args.port))
    return 0


def _check(args: argparse.Namespace) -> int:
    from firmware.tools import checks

    try:
        r = checks.run_all()
    except checks.ToolMissing as exc:
        print("check failed: %s" % exc, file=sys.stderr)
        return 1
    print("mpy-cross -march=%s: %d files compiled, %d failed" % (checks.MPY_ARCH, len(r.compiled), len(r.compile_errors)))
    for f, err in r.compile_errors.items():
        print("  %s: %s" % (f, err))
    print("mypy (micropython-esp32-stubs): %s" % ("ok" if r.mypy_ok else "FAILED"))
    if not r.mypy_ok:
        print(r.mypy_output)
    passed = sum(1 for t in r.micropython if t["ok"])
    print("MicroPython %s (WebAssembly): %d/%d portable tests passed"
          % (".".join(map(str, r.micropython_version)), passed, len(r.micropython)))
    for t in r.micropython:
        if not t["ok"]:
            print("  FAILED %s\n%s" % (t["test"], t["detail"]))
    return 0 if r.ok else 1


def _throughput(args: argparse.Namespace) -> int:
    from firmware.tools.budget import ble_throughput

    print(ble_throughput().report())
    return 0


def _battery(args: argparse.Namespace) -> int:
    from firmware.tools import hardware as H

    life = H.battery_life()
    print(life.report())
    return 0 if life.hours >= H.MIN_BATTERY_HOURS else 1


def _hw_check(args: argparse.Namespace) -> int:
    from firmware.tools import hardware as H

    try:
        pinmap = H.validate_pinmap()
    except H.HardwareError as exc:
        for p in exc.problems:
            print("pin map: %s" % p, file=sys.stderr)
        return 1
    if H.BOARD_PY.read_text() != H.board_source(pinmap):
        print("firmware/board.py is out of date: run `vigil hardware board`", file=sys.stderr)
        return 1
    print("pin map ok: %d pins, %d buses; firmware/board.py up to date" % (len(pinmap["pins"]), len(pinmap["buses"])))
    return 0


def _board(args: argparse.Namespace) -> int:
    from firmware.tools import hardware as H

    print("wrote %s" % H.write_board())
    return 0
