"""Scripted moments of a shift for simulated officers.

A scenario drives the officer and the world (sensors, button, battery, radio), never the device
logic: the firmware (gateway/sim/device.py) raises its events itself from what it measures.
A scenario is a list of steps at offsets (seconds of simulated time from the start); after the
last step the officer keeps doing the last activity. Every named scenario happens within its
first minute, so a fleet running one of each shows all of them within two minutes.

Step kinds:
    activity   arg: an activity of gateway.sim.signals.ACTIVITIES
    sos        the officer presses the SOS button
    take_off   the device is taken off and laid down (worn/skin-contact bits clear)
    put_on     the device is worn again
    battery    arg: battery percentage to jump to
    drain      arg: battery drain in % per simulated hour from now on
    dropout    arg: seconds without radio (link lost and out of range), then back
"""
from __future__ import annotations

from dataclasses import dataclass

STEP_KINDS = ("activity", "sos", "take_off", "put_on", "battery", "drain", "dropout")


@dataclass(frozen=True)
class Step:
    at_s: float
    kind: str
    arg: float | str | None = None

    def __post_init__(self):
        if self.kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {self.kind!r}; valid: {', '.join(STEP_KINDS)}")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Step, ...]

    @property
    def duration_s(self) -> float:
        return max((s.at_s + (float(s.arg) if s.kind == "dropout" else 0.0)) for s in self.steps)


def _a(at: float, activity: str) -> Step:
    return Step(at, "activity", activity)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("patrol", "patrol on foot: walking with stops", (
        _a(0, "walking"), _a(25, "standing"), _a(35, "walking"), _a(50, "standing"), _a(58, "walking"))),
    Scenario("car_report", "sitting in a car writing a report for a long time; must never page", (
        _a(0, "sitting_car"),)),
    Scenario("pursuit", "foot pursuit: walking, a sprint, then standing with a high heart rate", (
        _a(0, "walking"), _a(8, "running"), _a(40, "standing"), _a(58, "walking"))),
    # the firmware raises fall suspected, then pre-alert after 20 s without motion, alarm at 30 s
    Scenario("man_down", "a fall followed by no motion; the device raises fall, pre-alert, alarm", (
        _a(0, "walking"), _a(12, "fall"))),
    Scenario("sos", "the officer presses SOS while standing", (
        _a(0, "walking"), _a(6, "standing"), Step(10, "sos"))),
    Scenario("device_off", "the device is taken off and left on a table", (
        _a(0, "walking"), Step(10, "take_off"), _a(10, "off_body"))),
    Scenario("battery_low", "the battery runs down past the warning levels", (
        _a(0, "standing"), Step(0, "battery", 23), Step(0, "drain", 3600.0))),  # 1 %/s
    Scenario("dropout", "the radio link drops for 15 s; buffered frames follow as backfill", (
        _a(0, "walking"), Step(10, "dropout", 15.0), _a(40, "standing"))),
)}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}") from None


def shift_assignment(n_officers: int) -> list[str]:
    """Scenarios for a simulated shift: every scenario at least once when n >= 8, round robin."""
    names = list(SCENARIOS)
    return [names[i % len(names)] for i in range(n_officers)]
