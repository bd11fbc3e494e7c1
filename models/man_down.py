"""Man-down: a pure state machine over (time, features), one row per device.

PASS-like semantics (NFPA 1970, lone-worker devices): when the wearer is without motion while
lying, or after a suspected fall, a *pre-alert* is raised after ``pre_alert_s`` (20 s) and the
*alarm* after ``alarm_s`` (30 s) of stillness. Motion during the pre-alert cancels it and
restarts the count. The alarm stays until :func:`reset_man_down` (a manual reset). Sitting
still upright (a report written in a car) never counts: stillness alone is not enough.
Time is passed in; nothing here reads a clock.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.exceptions import InvalidSignalError
from models.thresholds import ManDownConfig, thresholds_for

IDLE, PRE_ALERT, ALARM = 0, 1, 2
PHASES = ("idle", "pre_alert", "alarm")


@dataclass(frozen=True)
class ManDownState:
    """Per-device memory between updates."""

    phase: np.ndarray          # (devices,) int: IDLE, PRE_ALERT or ALARM
    still_since: np.ndarray    # (devices,) time the qualifying stillness began, NaN if none
    fall_armed: np.ndarray     # (devices,) bool: a suspected fall not yet walked off
    moving_since: np.ndarray   # (devices,) time motion began, NaN while still

    @classmethod
    def initial(cls, devices: int) -> "ManDownState":
        nan = np.full(devices, np.nan)
        return cls(np.zeros(devices, np.int8), nan.copy(), np.zeros(devices, bool), nan.copy())


@dataclass(frozen=True)
class ManDownDecision:
    """Per-device outcome of one update, with its evidence."""

    phase: np.ndarray          # (devices,) str, one of PHASES
    event: np.ndarray          # (devices,) str: "", "pre_alert", "alarm" or "cancelled"
    still_seconds: np.ndarray  # (devices,) seconds of qualifying stillness (0 if none)
    lying: np.ndarray
    after_fall: np.ndarray
    pre_alert_s: float
    alarm_s: float


def update_man_down(
    state: ManDownState,
    now: float | np.ndarray,
    *,
    moving: np.ndarray,
    lying: np.ndarray,
    fall_suspected: np.ndarray | None = None,
    placement: str = "waist",
    config: ManDownConfig | None = None,
) -> tuple[ManDownState, ManDownDecision]:
    """Advance the man-down state machine of every device to time ``now``.

    Parameters
    ----------
    state : ManDownState
        From :meth:`ManDownState.initial` or the previous call.
    now : float or array_like, shape (devices,)
        Time in seconds (any epoch, non-decreasing per device), passed in by the caller.
    moving : array_like of bool, shape (devices,)
        Motion in the latest window (e.g. motion energy above the still threshold).
    lying : array_like of bool, shape (devices,)
        Posture is lying (``posture == "lying"`` from :func:`models.activity.classify_activity`).
    fall_suspected : array_like of bool, shape (devices,), optional
        A fall was suspected in the latest window; it arms man-down until the wearer has
        moved for ``fall_disarm_motion_s``.
    placement : {"wrist", "upper_arm", "chest", "waist"}
    config : ManDownConfig, optional

    Returns
    -------
    state : ManDownState
    decision : ManDownDecision

    Examples
    --------
    >>> s = ManDownState.initial(1)
    >>> for t in range(0, 31):
    ...     s, d = update_man_down(s, float(t), moving=np.array([False]), lying=np.array([True]))
    >>> str(d.phase[0]), str(d.event[0])
    ('alarm', 'alarm')
    """
    cfg = config or thresholds_for(placement).man_down
    devices = state.phase.shape[0]
    moving = _flags(moving, devices, "moving")
    lying = _flags(lying, devices, "lying")
    fall = np.zeros(devices, bool) if fall_suspected is None else _flags(fall_suspected, devices, "fall_suspected")
    now_arr = np.broadcast_to(np.asarray(now, float), (devices,))

    moving_since = np.where(moving, np.where(np.isnan(state.moving_since), now_arr, state.moving_since), np.nan)
    walked_off = moving & (now_arr - moving_since >= cfg.fall_disarm_motion_s)
    armed = (state.fall_armed | fall) & ~walked_off
    qualifies = ~moving & (lying | armed)
    still_since = np.where(qualifies, np.where(np.isnan(state.still_since), now_arr, state.still_since), np.nan)
    still_s = np.where(qualifies, now_arr - still_since, 0.0)

    phase = state.phase.copy()
    event = np.full(devices, "", dtype=object)
    cancel = (phase == PRE_ALERT) & ~qualifies
    phase[cancel] = IDLE
    event[cancel] = "cancelled"
    to_alarm = (phase != ALARM) & qualifies & (still_s >= cfg.alarm_s)
    to_pre = (phase == IDLE) & qualifies & (still_s >= cfg.pre_alert_s) & ~to_alarm
    phase[to_pre] = PRE_ALERT
    event[to_pre] = "pre_alert"
    phase[to_alarm] = ALARM
    event[to_alarm] = "alarm"
    new_state = ManDownState(phase, still_since, armed, moving_since)
    decision = ManDownDecision(np.array(PHASES, dtype=object)[phase], event, still_s, lying, armed,
                               cfg.pre_alert_s, cfg.alarm_s)
    return new_state, decision


def reset_man_down(state: ManDownState, devices: np.ndarray) -> ManDownState:
    """Manual reset (the wearer or a supervisor clears the alarm) of the selected devices.

    Examples
    --------
    >>> s = reset_man_down(ManDownState.initial(2), np.array([True, False]))
    >>> s.phase.tolist()
    [0, 0]
    """
    sel = np.asarray(devices)
    phase = state.phase.copy()
    still = state.still_since.copy()
    armed = state.fall_armed.copy()
    phase[sel] = IDLE
    still[sel] = np.nan
    armed[sel] = False
    return ManDownState(phase, still, armed, state.moving_since.copy())


def _flags(x, devices: int, name: str) -> np.ndarray:
    arr = np.asarray(x, bool).reshape(-1)
    if arr.size != devices:
        raise InvalidSignalError(f"{name} needs one flag per device ({devices}), got {arr.size}")
    return arr
