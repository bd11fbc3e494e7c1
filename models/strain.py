"""Physiological strain and extreme heart rate: physiological states, judged against the
officer's own resting baseline and current activity, never against other people.

* **strain**: heart rate above ``baseline + margin(activity)`` for ``sustain_s``; the margin is
  generous during exertion because 85-90 % of maximum is normal when running.
* **extreme heart rate**: below ``extreme_low_bpm`` or above ``extreme_high_bpm`` with good
  signal quality for ``extreme_sustain_s`` (10 s).

The resting baseline is learned online: an exponentially weighted mean of reliable heart rate
during still windows (half-life ``baseline_halflife_s``); until ``baseline_min_s`` of such data
exist the default baseline is used. Time is passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.exceptions import InvalidSignalError
from models.thresholds import StrainConfig, thresholds_for


@dataclass(frozen=True)
class StrainState:
    baseline_bpm: np.ndarray     # (devices,) learned resting heart rate
    baseline_s: np.ndarray       # (devices,) seconds of still data behind it
    high_since: np.ndarray       # (devices,) start of the current high run, NaN if none
    extreme_since: np.ndarray    # (devices,) start of the current extreme run, NaN if none
    last_time: np.ndarray        # (devices,) time of the previous update, NaN at start

    @classmethod
    def initial(cls, devices: int, config: StrainConfig | None = None) -> "StrainState":
        cfg = config or StrainConfig()
        nan = np.full(devices, np.nan)
        return cls(np.full(devices, cfg.default_baseline_bpm), np.zeros(devices), nan.copy(), nan.copy(), nan.copy())


@dataclass(frozen=True)
class StrainDecision:
    strain: np.ndarray           # (devices,) bool
    extreme: np.ndarray          # (devices,) bool
    baseline_bpm: np.ndarray     # baseline in use (learned or default)
    limit_bpm: np.ndarray        # baseline + margin for the current activity
    high_seconds: np.ndarray
    extreme_seconds: np.ndarray
    thresholds: StrainConfig


def update_strain(
    state: StrainState,
    now: float | np.ndarray,
    *,
    bpm: np.ndarray,
    quality: np.ndarray,
    activity: np.ndarray,
    placement: str = "wrist",
    config: StrainConfig | None = None,
) -> tuple[StrainState, StrainDecision]:
    """Update the baseline and the strain / extreme-heart-rate timers of every device.

    Parameters
    ----------
    state : StrainState
    now : float or array_like, shape (devices,)
        Time in seconds, passed in by the caller.
    bpm : array_like, shape (devices,)
        Heart rate (NaN when there is no reliable estimate).
    quality : array_like, shape (devices,)
        Signal quality 0..1 of that estimate.
    activity : array_like of str, shape (devices,)
        ``still``, ``walking`` or ``running`` (see :func:`models.activity.classify_activity`).
    placement : {"wrist", "upper_arm", "chest", "waist"}
    config : StrainConfig, optional

    Returns
    -------
    state : StrainState
    decision : StrainDecision

    Raises
    ------
    ValueError
        If an activity name is unknown (the message lists the valid ones).

    Examples
    --------
    >>> s = StrainState.initial(1)
    >>> for t in range(0, 24, 2):
    ...     s, d = update_strain(s, float(t), bpm=np.array([210.0]), quality=np.array([0.9]),
    ...                          activity=np.array(["still"]))
    >>> bool(d.extreme[0])
    True
    """
    cfg = config or thresholds_for(placement).strain
    devices = state.baseline_bpm.shape[0]
    hr = np.asarray(bpm, float).reshape(-1)
    q = np.asarray(quality, float).reshape(-1)
    act = np.asarray(activity, dtype=object).reshape(-1)
    if hr.size != devices or q.size != devices or act.size != devices:
        raise InvalidSignalError(f"bpm, quality and activity need one value per device ({devices})")
    margins = {"still": cfg.margin_still_bpm, "walking": cfg.margin_walking_bpm, "running": cfg.margin_running_bpm}
    bad = [a for a in act if a not in margins]
    if bad:
        raise InvalidSignalError(f"unknown activity {bad[0]!r}; valid activities are: {', '.join(margins)}")
    now_arr = np.broadcast_to(np.asarray(now, float), (devices,))
    dt = np.where(np.isnan(state.last_time), 0.0, np.clip(now_arr - state.last_time, 0.0, None))
    good = np.isfinite(hr) & (q >= cfg.min_quality)

    # learn only from quiet, plausible windows: a racing heart while still must not lift the baseline
    current = np.where(state.baseline_s >= cfg.baseline_min_s, state.baseline_bpm, cfg.default_baseline_bpm)
    learn = good & (act == "still") & (hr <= current + cfg.margin_still_bpm)
    weight = 1.0 - 0.5 ** (dt / cfg.baseline_halflife_s)
    first = learn & (state.baseline_s == 0)
    baseline = np.where(first, hr, np.where(learn, state.baseline_bpm + weight * (hr - state.baseline_bpm), state.baseline_bpm))
    baseline_s = state.baseline_s + np.where(learn, dt, 0.0)
    in_use = np.where(baseline_s >= cfg.baseline_min_s, baseline, cfg.default_baseline_bpm)

    limit = in_use + np.array([margins[a] for a in act], float)
    high = good & (hr > limit)
    high_since = np.where(high, np.where(np.isnan(state.high_since), now_arr, state.high_since), np.nan)
    extreme_now = good & ((hr < cfg.extreme_low_bpm) | (hr > cfg.extreme_high_bpm))
    extreme_since = np.where(extreme_now, np.where(np.isnan(state.extreme_since), now_arr, state.extreme_since), np.nan)
    high_s = np.where(high, now_arr - high_since, 0.0)
    extreme_s = np.where(extreme_now, now_arr - extreme_since, 0.0)
    new_state = StrainState(baseline, baseline_s, high_since, extreme_since, now_arr.copy())
    decision = StrainDecision(high & (high_s >= cfg.sustain_s), extreme_now & (extreme_s >= cfg.extreme_sustain_s),
                              in_use, limit, high_s, extreme_s, cfg)
    return new_state, decision
