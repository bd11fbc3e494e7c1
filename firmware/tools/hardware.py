"""The board as data: pin-map validation, firmware/board.py generation, power budget.

hardware/pinmap.json is the one description of the wiring; firmware/board.py is generated
from it (and a test fails when the two drift apart). hardware/power_budget.json holds each
part's current per state and duty; battery_life() turns it into hours on the chosen cell.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HARDWARE = REPO / "hardware"
PINMAP_PATH = HARDWARE / "pinmap.json"
MODULES_PATH = HARDWARE / "modules.json"
POWER_PATH = HARDWARE / "power_budget.json"
BOARD_PY = REPO / "firmware" / "board.py"
MIN_BATTERY_HOURS = 16.0  # a 12-hour shift with margin


class HardwareError(ValueError):
    """The pin map or power budget breaks a rule; ``problems`` lists every broken rule."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def pin_problems(pinmap: dict, modules: dict) -> list[str]:
    """Every rule the pin map breaks (empty when it is sound)."""
    problems: list[str] = []
    module = modules["modules"].get(pinmap.get("module", ""))
    if module is None:
        return ["unknown module %r (known: %s)" % (pinmap.get("module"), ", ".join(modules["modules"]))]
    valid = set(module["gpios"])
    reserved = {int(k): v for k, v in module["reserved"].items()}
    strapping = set(module["strapping"])
    input_only = set(module["input_only"])
    users: dict[int, list[str]] = {}
    for bus_name, bus in pinmap.get("buses", {}).items():
        for role in ("sda", "scl"):
            users.setdefault(bus[role], []).append("%s.%s" % (bus_name, role))
            if bus[role] in input_only:
                problems.append("%s.%s on input-only GPIO%d (I2C lines are driven)" % (bus_name, role, bus[role]))
        seen: dict[int, str] = {}
        for dev in bus.get("devices", []):
            addr = int(dev["address"], 16)
            if not 0x08 <= addr <= 0x77:
                problems.append("%s: %s address 0x%02x is reserved by I2C" % (bus_name, dev["ref"], addr))
            if addr in seen:
                problems.append("%s: address 0x%02x used by both %s and %s" % (bus_name, addr, seen[addr], dev["ref"]))
            seen[addr] = dev["ref"]
    names = set()
    for pin in pinmap.get("pins", []):
        if pin["name"] in names:
            problems.append("pin name %s defined twice" % pin["name"])
        names.add(pin["name"])
        users.setdefault(pin["gpio"], []).append(pin["name"])
        if pin["direction"] not in ("in", "out"):
            problems.append("%s: direction must be in or out" % pin["name"])
        if pin["direction"] == "out" and pin["gpio"] in input_only:
            problems.append("%s: output on input-only GPIO%d" % (pin["name"], pin["gpio"]))
        if pin.get("pull") == "up" and pin["gpio"] in input_only:
            problems.append("%s: GPIO%d has no internal pull-up (input-only pad)" % (pin["name"], pin["gpio"]))
    for gpio, who in sorted(users.items()):
        if gpio not in valid:
            problems.append("GPIO%d (%s) does not exist on %s" % (gpio, ", ".join(who), pinmap["module"]))
        if gpio in reserved:
            problems.append("GPIO%d (%s) is reserved: %s" % (gpio, ", ".join(who), reserved[gpio]))
        if gpio in strapping:
            problems.append("GPIO%d (%s) is a strapping pin" % (gpio, ", ".join(who)))
        if len(who) > 1:
            problems.append("GPIO%d used twice: %s" % (gpio, ", ".join(who)))
    return problems


def validate_pinmap(pinmap: dict | None = None, modules: dict | None = None) -> dict:
    pinmap = pinmap if pinmap is not None else load_json(PINMAP_PATH)
    modules = modules if modules is not None else load_json(MODULES_PATH)
    problems = pin_problems(pinmap, modules)
    if problems:
        raise HardwareError(problems)
    return pinmap


def board_source(pinmap: dict) -> str:
    """The text of firmware/board.py for a pin map (deterministic)."""
    lines = [
        "# GENERATED from hardware/pinmap.json by `vigil hardware board`: do not edit by hand.",
        "# %s, %s." % (pinmap["board"], pinmap["module"]),
        "try:",
        "    from micropython import const",
        "except ImportError:  # CPython",
        "",
        "    def const(x):  # type: ignore",
        "        return x",
        "",
        "",
        "MODULE = %r" % pinmap["module"],
    ]
    for bus_name, bus in sorted(pinmap["buses"].items()):
        prefix = bus_name.upper()
        lines.append("%s_ID = const(%d)" % (prefix, bus["id"]))
        lines.append("%s_SDA = const(%d)" % (prefix, bus["sda"]))
        lines.append("%s_SCL = const(%d)" % (prefix, bus["scl"]))
        lines.append("%s_FREQ = const(%d)" % (prefix, bus["freq_hz"]))
        for dev in bus["devices"]:
            lines.append("%s_ADDR = const(0x%02X)  # %s %s on %s" % (dev["name"], int(dev["address"], 16), dev["ref"], dev["part"], bus_name))
            lines.append("%s_PART = %r" % (dev["name"], dev["part"]))
    for pin in sorted(pinmap["pins"], key=lambda p: p["name"]):
        lines.append("PIN_%s = const(%d)  # %s, %s, active %s" % (pin["name"], pin["gpio"], pin["ref"], pin["direction"], pin.get("active", "high")))
        lines.append("%s_ACTIVE_LOW = %s" % (pin["name"], pin.get("active") == "low"))
        if pin["direction"] == "in":
            lines.append("%s_PULL_UP = %s" % (pin["name"], pin.get("pull") == "up"))
    return "\n".join(lines) + "\n"


def write_board(pinmap: dict | None = None) -> Path:
    pinmap = validate_pinmap(pinmap)
    BOARD_PY.write_text(board_source(pinmap))
    return BOARD_PY


# ---- power budget ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartDraw:
    ref: str
    part: str
    average_ma: float


@dataclass(frozen=True)
class BatteryLife:
    cell: str
    capacity_mah: float
    usable_mah: float
    average_ma: float
    margin: float
    hours: float
    parts: tuple[PartDraw, ...]

    def report(self) -> str:
        rows = ["%-6s %-28s %9s" % ("ref", "part", "avg mA")]
        for p in sorted(self.parts, key=lambda p: -p.average_ma):
            rows.append("%-6s %-28s %9.3f" % (p.ref, p.part, p.average_ma))
        rows.append("%-35s %9.3f" % ("total (datasheet typicals)", self.average_ma))
        rows.append("%-35s %9.3f" % ("with margin x%.2f" % self.margin, self.average_ma * self.margin))
        rows.append("cell %s: %.0f mAh, %.0f mAh usable" % (self.cell, self.capacity_mah, self.usable_mah))
        rows.append("battery life: %.1f h (requirement: >= %.0f h)" % (self.hours, MIN_BATTERY_HOURS))
        return "\n".join(rows)


def budget_problems(budget: dict) -> list[str]:
    problems = []
    for part in budget["parts"]:
        # states of one part that overlap in time (a core running while PSRAM idles) are
        # listed as separate parts or marked with duty 1.0; a part's exclusive states sum <= 1
        exclusive = sum(s["duty"] for s in part["states"] if s["duty"] < 1.0)
        if exclusive > 1.0 + 1e-9:
            problems.append("%s: duties of exclusive states add up to %.3f > 1" % (part["ref"], exclusive))
        for s in part["states"]:
            if not 0 <= s["duty"] <= 1 or s["current_ma"] < 0:
                problems.append("%s %r: duty 0..1 and current >= 0" % (part["ref"], s["state"]))
    cell = budget["cell"]
    if not 0 < cell["usable_fraction"] <= 1 or cell["capacity_mah"] <= 0:
        problems.append("cell: capacity > 0 and usable_fraction 0..1")
    if budget.get("margin", 1.0) < 1.0:
        problems.append("margin must be >= 1")
    return problems


def battery_life(budget: dict | None = None) -> BatteryLife:
    budget = budget if budget is not None else load_json(POWER_PATH)
    problems = budget_problems(budget)
    if problems:
        raise HardwareError(problems)
    parts = tuple(
        PartDraw(p["ref"], p["part"], sum(s["current_ma"] * s["duty"] for s in p["states"]))
        for p in budget["parts"]
    )
    avg = sum(p.average_ma for p in parts)
    cell = budget["cell"]
    usable = cell["capacity_mah"] * cell["usable_fraction"]
    margin = budget.get("margin", 1.0)
    return BatteryLife(cell["part"], cell["capacity_mah"], usable, avg, margin, usable / (avg * margin), parts)
