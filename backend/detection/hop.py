"""One detection hop: every model once over all due windows of one placement, then decisions;
and the fall steps between hops (:func:`analyse_falls`).

Pure: arrays and per-device state in, results and new state out; wall time is an argument
(a fall step only marks its suspicion on the device's state, in place).
The round runner (``rounds.py``) calls :func:`analyse` on the event loop in chunks (the default),
in a thread, or in a process of its own (:func:`run_in_process`, whose model states live in that
process's module global: ``ProcessPoolExecutor`` gives a task nothing else to keep them in).

Axes. The wearable's accelerometer reads +1 g on +Y when the officer stands upright (the
board's +Y points up the trunk, the unit worn upright at the waist, hardware/README.md; the simulator follows it). The models
follow SisFall's mounting, where upright reads -1 g on Y (``ActivityConfig.upright_axis``).
:data:`DEVICE_TO_MODEL_AXES` (a 180 degree turn about Z) maps one onto the other; without it
an upright officer reads as lying and a car seat would page.

Decisions (one :class:`AlertCandidate` per page):

* ``fall``: the fall model suspects a fall in the newly decidable part of a fall step's window.
  Falls are decided every fall step (0.5 s of device time by default, ``detection_fall_step_s``),
  not every hop: a fall is decidable 1.5 s after its impact, so the page follows the impact by
  1.5-2.0 s instead of the 1.5-3.5 s of the 2 s hop. A fall step runs the fall model only (the
  heart-rate, activity and strain models keep their 2 s hop); its suspicion is kept in the
  device's :class:`DeviceModelState` until the next hop arms man-down with it. An impact within
  ``fall_merge_s`` of the device's previous suspected one is the same fall, not paged again.
* ``man_down``: the man-down state machine reached its alarm (its pre-alert is only an
  officer-status "check", never a page). Stillness counts only while lying or after a
  suspected fall, and never while the device is off the body, as on the device itself: an
  officer sitting still upright in a car never pages. The alarm latches in the model; the
  backend re-arms it after ``rearm_motion_s`` of motion (the incident stays open until a
  supervisor resolves it) or when :func:`reset_man_down` is called.
* ``extreme_heart_rate`` / ``physiological_strain``: level conditions of the strain model,
  paged once when they start and again only after they cleared for ``rearm_s``.

Backfill. Windows are analysed in device-time order whether their samples came live or from
the device's ring buffer after an outage, so the models' timers stay right. A page is sent
only if the window ended at most ``live_alert_max_age_s`` ago; an older fall is not paged
(counted as stale), while a level condition (man-down alarm, heart rate) that is still
active is paged as soon as a recent window shows it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pickle
import traceback
from dataclasses import dataclass, field

import numpy as np

from backend.detection.windows import FallWindow, Window
from models.activity import classify_activity
from models.fall import FEATURE_NAMES, detect_fall
from models.heart_rate import HeartRateState, estimate_heart_rate
from models.man_down import ALARM, ManDownState, reset_man_down, update_man_down
from models.quality import skin_contact
from models.strain import StrainState, update_strain
from models.thresholds import THRESHOLDS_VERSION, thresholds_for

DEVICE_TO_MODEL_AXES = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    live_alert_max_age_s: float = 60.0
    rearm_s: float = 300.0          # a heart-rate condition pages again only after clearing this long
    rearm_motion_s: float = 30.0    # motion that re-arms a latched man-down alarm
    # A fall's impacts (a stumble, the knees, the trunk) come within a second or two: a suspected
    # impact this close to the device's previous one is the same fall, paged once. (At a 0.5 s
    # fall step each step has its own candidate: SisFall F04_SA01_R05 suspected a stumble 1.46 s
    # before its impact, then the impact; the 2 s hop had kept only the larger.)
    fall_merge_s: float = 3.0


@dataclass
class DeviceModelState:
    """Everything the models and the decisions remember about one device between hops."""

    hr: HeartRateState | None = None
    man_down: ManDownState = field(default_factory=lambda: ManDownState.initial(1))
    strain: StrainState | None = None
    last_bpm: float = float("nan")
    last_quality: float = 0.0
    man_down_paged: bool = False
    fall_suspected: bool = False  # a fall step suspected a fall since the last hop (arms man-down there)
    last_fall_ms: float = float("-inf")  # device time of the last suspected impact (DecisionConfig.fall_merge_s)
    paged_since: dict[str, float] = field(default_factory=dict)   # level kind -> device s it was paged
    clear_since: dict[str, float] = field(default_factory=dict)   # level kind -> device s it cleared


@dataclass(frozen=True, slots=True)
class FeatureRow:
    wall_ms: int
    heart_rate: float | None
    hr_quality: float
    activity: str
    posture: str
    cadence: float | None
    motion_energy: float


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    kind: str
    evidence_ms: float      # device time where the evidence began (names the pseudo-seq)
    window_seq: int         # seq of the window's last frame (fallback pseudo-seq)
    wall_ms: int            # wall time of the window end
    explanation: dict


@dataclass
class DeviceResult:
    device_id: int
    features: list[FeatureRow]
    alerts: list[AlertCandidate]
    stale: list[str]          # kinds withheld because the window is too old
    man_down_phase: str | None  # None from a fall step (man-down moves only at hops)
    worn: bool | None
    backfill: bool


@dataclass(frozen=True)
class HopInput:
    placement: str
    rate_hz: int
    window_samples: int
    hop_samples: int
    step_samples: int
    windows: list[Window]
    states: list[DeviceModelState]  # filled where the models run (ModelStates); the service sends []
    worn_reported: np.ndarray        # (devices,) bool: the last status frame did not say "removed"

    def part(self, start: int, stop: int) -> HopInput:
        """The windows ``start:stop`` of the batch."""
        return dataclasses.replace(self, windows=self.windows[start:stop], worn_reported=self.worn_reported[start:stop],
                                   states=self.states[start:stop])


@dataclass(frozen=True)
class FallStepInput:
    """The due fall steps of one placement and rate: only the fall model runs over them."""

    placement: str
    rate_hz: int
    window_samples: int
    new_samples: int | None          # the fall step; None: first step of a stream, the whole window is new
    windows: list[FallWindow]        # a device may have several, oldest first

    def part(self, start: int, stop: int) -> FallStepInput:
        """The windows ``start:stop`` of the batch."""
        return dataclasses.replace(self, windows=self.windows[start:stop])


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def stack(states: list, cls):
    """Concatenate one-row model states (frozen dataclasses of arrays) into one batch."""
    return cls(*[np.concatenate([getattr(s, name) for s in states]) for name in _field_names(cls)])


def row(state, i: int):
    """The one-row state of device ``i`` of a batch."""
    cls = type(state)
    return cls(*[getattr(state, name)[i:i + 1].copy() for name in _field_names(cls)])


def rows(state) -> list:
    """Every device's one-row state of a batch: the values of :func:`row`, as views of the
    batch's arrays (one iteration per field instead of a slice and a copy per device and field;
    no model writes into a state it is given, and :func:`stack` copies them into the next batch)."""
    cls = type(state)
    fields = [getattr(state, name) for name in _field_names(cls)]
    return [cls(*one) for one in zip(*[f.reshape(f.shape[0], 1, *f.shape[1:]) for f in fields])]


# The turn between the axes is a diagonal of signs: applied per axis, not as a matrix product.
_AXIS_SIGNS = np.diag(DEVICE_TO_MODEL_AXES).copy()
if not np.array_equal(np.diag(_AXIS_SIGNS), DEVICE_TO_MODEL_AXES) or not set(_AXIS_SIGNS) <= {-1.0, 1.0}:
    raise ValueError("DEVICE_TO_MODEL_AXES must be a diagonal of signs")
_NEGATED_AXES = tuple(int(k) for k in np.flatnonzero(_AXIS_SIGNS < 0))


def to_model_g(accel_mg: np.ndarray) -> np.ndarray:
    """(devices, samples, 3) milli-g in device axes -> (devices, 3, samples) g in model axes.

    C-contiguous: the models reduce along the sample axis, 2-3 times slower on a strided one.
    The same values as ``einsum("dsc,ck->dks", accel, DEVICE_TO_MODEL_AXES) / 1000``, 10 times
    sooner."""
    accel = np.asarray(accel_mg)
    out = np.empty((accel.shape[0], accel.shape[2], accel.shape[1]))
    np.divide(accel.transpose(0, 2, 1), 1000.0, out=out)  # one pass: cast, turn to C order, scale
    for axis in _NEGATED_AXES:  # (-x) / 1000 == -(x / 1000) exactly: IEEE rounding is symmetric
        np.negative(out[:, axis], out=out[:, axis])
    return out


def _num(x: float, digits: int = 3) -> float | None:
    return None if not math.isfinite(x) else round(float(x), digits)


def _nums(x: np.ndarray, digits: int) -> list[float | None]:
    """:func:`_num` of every element, as Python values (one conversion for the batch)."""
    return [None if not math.isfinite(v) else round(v, digits) for v in np.asarray(x, float).tolist()]


def _rounded(x: np.ndarray, digits: int) -> list[float]:
    return [round(v, digits) for v in np.asarray(x, float).tolist()]


def analyse(batch: HopInput, now_wall_ms: int, config: DecisionConfig = DecisionConfig()) -> tuple[list[DeviceResult], list[DeviceModelState]]:
    """Run every model once over the batch; returns per-device results and new states."""
    d = len(batch.windows)
    limits = thresholds_for(batch.placement)
    rate, w, hop, step = batch.rate_hz, batch.window_samples, batch.hop_samples, batch.step_samples
    k_steps = hop // step
    ppg_all = np.stack([win.ppg for win in batch.windows], dtype=float)           # (d, span)
    accel_all = to_model_g(np.stack([win.accel_mg for win in batch.windows]))      # (d, 3, span)
    span = ppg_all.shape[-1]
    ppg, accel = ppg_all[:, span - w:], accel_all[:, :, span - w:]

    # feature sub-windows ending at every step of the hop; the last one is the hop's window
    ends = [span - (k_steps - 1 - k) * step for k in range(k_steps)]
    sub = np.concatenate([accel_all[:, :, e - w:e] for e in ends])                 # (k*d, 3, w)
    act_all = classify_activity(sub, rate, placement=batch.placement)
    contact = skin_contact(ppg_all[:, span - w:], rate, placement=batch.placement)

    hr_cfg = limits.heart_rate
    hr_state = HeartRateState.concatenate([s.hr or HeartRateState.initial(1, hr_cfg) for s in batch.states])
    est, hr_state = estimate_heart_rate(ppg, accel, rate, hr_state, placement=batch.placement, contact=contact.contact)
    # falls were decided by the fall steps up to this window's end (analyse_falls)
    fall_suspected = np.array([s.fall_suspected for s in batch.states], bool)

    last = slice((k_steps - 1) * d, k_steps * d)
    activity = act_all.activity[last]
    posture = act_all.posture[last]
    off_body = (contact.dc_counts < limits.skin_contact.min_dc_counts) | ~batch.worn_reported
    moving = (activity != "still") | off_body
    now_s = np.array([win.end_ms / 1000.0 for win in batch.windows])
    md_state, md = update_man_down(
        stack([s.man_down for s in batch.states], ManDownState), now_s, moving=moving,
        lying=(posture == "lying") & ~off_body, fall_suspected=fall_suspected & ~off_body, placement=batch.placement)
    rearm = (md_state.phase == ALARM) & moving & (now_s - md_state.moving_since >= config.rearm_motion_s)
    if rearm.any():
        md_state = reset_man_down(md_state, rearm)
    strain_cfg = limits.strain
    st_state, st = update_strain(
        stack([s.strain or StrainState.initial(1, strain_cfg) for s in batch.states], StrainState), now_s,
        bpm=est.bpm, quality=est.quality, activity=activity, placement=batch.placement)

    # the feature rows' values as Python objects, converted once for the whole batch
    bpm_now, quality_now = _nums(est.bpm, 1), _rounded(est.quality, 3)
    act_names, posture_names = act_all.activity.tolist(), act_all.posture.tolist()
    cadence, energy = _nums(act_all.cadence_spm, 1), _rounded(act_all.motion_energy_g, 4)
    hr_rows, md_rows, st_rows = rows(hr_state), rows(md_state), rows(st_state)
    bpm_f, quality_f = est.bpm.tolist(), est.quality.tolist()
    alarm = (md_state.phase == ALARM).tolist()
    # most devices page nothing: _decide only for those with something to page
    to_decide = ((md.phase == "alarm") | st.extreme | st.strain).tolist()
    phases, worn = md.phase.tolist(), (~off_body).tolist()
    results, states = [], []
    for i, win in enumerate(batch.windows):
        old = batch.states[i]
        state = DeviceModelState(
            hr=hr_rows[i], man_down=md_rows[i], strain=st_rows[i],
            last_bpm=bpm_f[i], last_quality=quality_f[i],
            man_down_paged=old.man_down_paged and alarm[i], last_fall_ms=old.last_fall_ms,
            paged_since=dict(old.paged_since), clear_since=dict(old.clear_since))
        features = []
        for k, e in enumerate(ends):
            j = k * d + i
            is_last = k == k_steps - 1
            features.append(FeatureRow(
                wall_ms=win.wall_end_ms - (span - e) * 1000 // rate,
                heart_rate=bpm_now[i] if is_last else _num(old.last_bpm, 1),
                hr_quality=quality_now[i] if is_last else round(float(old.last_quality), 3),
                activity=act_names[j], posture=posture_names[j], cadence=cadence[j], motion_energy=energy[j]))
        alerts: list[AlertCandidate] = []
        stale: list[AlertCandidate] = []
        if to_decide[i]:
            recent = now_wall_ms - win.wall_end_ms <= config.live_alert_max_age_s * 1000
            for c in _decide(i, win, batch, state, md, st, act_all, last, contact, est, limits):
                (alerts if recent else stale).append(c)
        if alerts or state.paged_since:  # otherwise nothing to remember
            _remember(state, alerts, st, i, now_s[i], config)
        results.append(DeviceResult(win.device_id, features, alerts, [c.kind for c in stale],
                                    phases[i], worn[i], win.backfill))
        states.append(state)
    return results, states


# Calls of ModelStates.run after which the state of a device no longer analysed is copied out of
# its batch, swept as often (so within twice as many calls; a round of 2,000 devices is 10 calls
# of 200 windows: an active device is never that old).
DETACH_AFTER_CALLS = 32


class ModelStates:
    """Every device's :class:`DeviceModelState`, kept where the models run.

    In the detection thread it is an object of the service; in the detection process it lives
    in that process (:func:`run_in_process`), so a round sends only the windows and gets back
    only the results: the states, most of what a round would otherwise pickle both ways, never
    cross the process boundary. A new worker process starts from fresh states (the man-down
    timers and heart-rate trackers restart)."""

    def __init__(self) -> None:
        self.states: dict[int, DeviceModelState] = {}
        self._calls = 0
        self._analysed_at: dict[int, int] = {}  # device -> call that last analysed it (its state views that batch)
        self.failed: list[str] = []  # batches whose models raised since take_failed(), described

    def take_failed(self) -> list[str]:
        failed, self.failed = self.failed, []
        return failed

    def run(self, batches: list[HopInput | FallStepInput], resets: frozenset[int], now_wall_ms: int,
            config: DecisionConfig) -> list[list[DeviceResult | None]]:
        """Analyse one round, batch by batch in order (a device's fall steps come before its
        hop: :meth:`DeviceStreams.collect`). ``resets``: devices whose man-down alarm a person
        cleared. A fall step's result is None where it suspects nothing."""
        self._calls += 1
        if self._calls % DETACH_AFTER_CALLS == 0:
            self._detach_stale()
        out = []
        for batch in batches:
            if isinstance(batch, FallStepInput):
                out.append(self._run_falls(batch, now_wall_ms, config))
                continue
            states = []
            for win in batch.windows:
                state = self.states.get(win.device_id) or DeviceModelState()
                if win.device_id in resets:
                    state.man_down = reset_man_down(state.man_down, np.array([True]))
                    state.man_down_paged = False
                states.append(state)
            try:
                results, new = analyse(dataclasses.replace(batch, states=states), now_wall_ms, config)
            except Exception:  # one batch's model error: its windows are skipped, never the other batches'
                self.failed.append(self._describe(batch) + traceback.format_exc())
                out.append([])
                continue
            for result, state in zip(results, new):
                self.states[result.device_id] = state
                self._analysed_at[result.device_id] = self._calls
            out.append(results)
        return out

    def _run_falls(self, batch: FallStepInput, now_wall_ms: int, config: DecisionConfig) -> list[DeviceResult | None]:
        states = [self.states.get(win.device_id) or self.states.setdefault(win.device_id, DeviceModelState())
                  for win in batch.windows]
        try:
            return analyse_falls(batch, states, now_wall_ms, config)
        except Exception:  # as a hop's: this batch's fall steps are skipped, never the other batches'
            self.failed.append(self._describe(batch) + traceback.format_exc())
            return []

    @staticmethod
    def _describe(batch: HopInput | FallStepInput) -> str:
        step = "fall step" if isinstance(batch, FallStepInput) else "hop"
        return (f"{batch.placement} at {batch.rate_hz} Hz, {step} of {len(batch.windows)} window(s) of "
                f"device(s) {', '.join(f'{w.device_id:#010x}' for w in batch.windows[:5])}: ")

    def _detach_stale(self) -> None:
        """Copy out the states of the devices no longer analysed: a state is a view of its last
        batch's arrays (:func:`rows`), which it would otherwise keep whole."""
        for device_id, at in list(self._analysed_at.items()):
            if self._calls - at >= DETACH_AFTER_CALLS:
                state = self.states[device_id]
                state.hr, state.man_down, state.strain = row(state.hr, 0), row(state.man_down, 0), row(state.strain, 0)
                del self._analysed_at[device_id]


_PROCESS_STATES: ModelStates | None = None


def run_in_process(round_pickle: bytes) -> bytes:
    """:meth:`ModelStates.run` on the detection process's own states.

    The round and its results travel as bytes the event loop pickled and unpickles itself:
    left to the executor, the pickling ran in its helper threads, which waited for the GIL
    behind the busy event loop at every step (a round of 900 windows took over a second)."""
    global _PROCESS_STATES
    if _PROCESS_STATES is None:
        _PROCESS_STATES = ModelStates()
    batches, resets, now_wall_ms, config = pickle.loads(round_pickle)
    out = _PROCESS_STATES.run(batches, resets, now_wall_ms, config)
    return pickle.dumps((out, _PROCESS_STATES.take_failed()), protocol=pickle.HIGHEST_PROTOCOL)


@functools.cache
def impact_screen(placement: str, rate_hz: int) -> tuple[int, int] | None:
    """What a fall step needs to hold a fall model's impact candidate: (samples after the impact
    before it can be decided, least squared magnitude in mg² of an impact, a hair below the
    model's ``impact_g`` so float rounding never screens one out). None for a placement the
    models do not know: nothing screened (the batch fails alone in the models)."""
    try:
        cfg = thresholds_for(placement).fall
    except ValueError:
        return None
    return int(round(cfg.post_impact_s * rate_hz)), int((cfg.impact_g * 1000.0) ** 2 * (1 - 1e-6))


def may_hold_impact(decidable_mg: np.ndarray, least_sq_mg2: int) -> np.ndarray:
    """(steps,) bool: the newly decidable samples (steps, samples, 3) of each fall step, milli-g,
    reach the impact magnitude somewhere. :func:`models.fall.find_impact` finds a candidate only
    among such samples, so a step without one is decided (nothing suspected) without the model:
    most steps, since the impact threshold is above walking's peaks."""
    a = decidable_mg.astype(np.int32)
    return (np.einsum("dsc,dsc->ds", a, a).max(axis=1) >= least_sq_mg2) if a.shape[1] else np.zeros(len(a), bool)


def analyse_falls(batch: FallStepInput, states: list[DeviceModelState], now_wall_ms: int,
                  config: DecisionConfig = DecisionConfig()) -> list[DeviceResult | None]:
    """The fall model over the batch's fall steps: per window, a result with its fall page (or
    the page withheld as stale) where a fall is suspected, None where not (most windows) or
    where the impact is the same fall as the device's previous one (``fall_merge_s``).

    ``states``: each window's device state (a device's steps in one batch share one, oldest step
    first), updated in place: a suspicion is kept for the device's next hop, whose man-down it
    arms (``fall_suspected``), with its impact time (``last_fall_ms``)."""
    if not batch.windows:
        return []
    limits = thresholds_for(batch.placement)
    accel = to_model_g(np.stack([win.accel_mg for win in batch.windows]))
    fall = detect_fall(accel, batch.rate_hz, new_samples=batch.new_samples, placement=batch.placement)
    out: list[DeviceResult | None] = [None] * len(batch.windows)
    for i in np.flatnonzero(fall.suspected).tolist():
        win, state = batch.windows[i], states[i]
        impact_ms = win.end_ms - float(fall.seconds_since_impact[i]) * 1000.0
        # either way: a clock that went back must not silence the next hour's falls
        same_fall = abs(impact_ms - state.last_fall_ms) <= config.fall_merge_s * 1000.0
        state.fall_suspected, state.last_fall_ms = True, impact_ms
        if same_fall:
            continue
        page = _fall_alert(i, win, batch.placement, fall, limits)
        recent = now_wall_ms - win.wall_end_ms <= config.live_alert_max_age_s * 1000
        out[i] = DeviceResult(win.device_id, [], [page] if recent else [], [] if recent else [page.kind],
                              None, None, win.backfill)
    return out


def _fall_alert(i: int, win: FallWindow, placement: str, fall, limits) -> AlertCandidate:
    f = dict(zip(FEATURE_NAMES, fall.features[i]))
    impact_ms = win.end_ms - fall.seconds_since_impact[i] * 1000.0
    return AlertCandidate("fall", impact_ms, win.last_seq, win.wall_end_ms, {
        "thresholds_version": THRESHOLDS_VERSION, "placement": placement,
        "validated": list(limits.validated), "from_backfill": win.backfill,
        "detector": "backend.fall", "method": fall.method,
        "summary": (f"fall: impact {f['impact_g']:.1f} g, free fall to {f['free_fall_min_g']:.2f} g, "
                    f"trunk turned {f['orientation_change_deg']:.0f} deg"),
        "evidence": {k: round(float(v), 3) for k, v in f.items()},
        "probability": round(float(fall.probability[i]), 3), "probability_threshold": fall.threshold,
        "impact_threshold_g": limits.fall.impact_g,
    })


def _decide(i, win, batch, state, md, st, act_all, last, contact, est, limits) -> list[AlertCandidate]:
    if not (md.phase[i] == "alarm" or st.extreme[i] or st.strain[i]):
        return []  # nothing to page: most devices, every hop
    out = []
    end_ms = win.end_ms
    base = {"thresholds_version": THRESHOLDS_VERSION, "placement": batch.placement,
            "validated": list(limits.validated), "from_backfill": win.backfill}
    lvl = last.start + i
    if md.phase[i] == "alarm" and not state.man_down_paged:
        since_ms = end_ms - md.still_seconds[i] * 1000.0
        why = "after a suspected fall" if md.after_fall[i] else "lying"
        out.append(AlertCandidate("man_down", since_ms, int(win.seq[-1]), win.wall_end_ms, {
            **base, "detector": "backend.man_down",
            "summary": f"man down: {why}, no motion {md.still_seconds[i]:.0f} s",
            "evidence": {"still_s": round(float(md.still_seconds[i]), 1), "lying": bool(md.lying[i]),
                         "after_fall": bool(md.after_fall[i]), "posture": str(act_all.posture[lvl]),
                         "tilt_deg": round(float(act_all.tilt_deg[lvl]), 1),
                         "motion_energy_g": round(float(act_all.motion_energy_g[lvl]), 4)},
            "thresholds": {"pre_alert_s": md.pre_alert_s, "alarm_s": md.alarm_s,
                           "still_energy_g": act_all.thresholds.still_energy_g,
                           "lying_tilt_deg": act_all.thresholds.lying_tilt_deg},
        }))
    cfg = st.thresholds
    hr_evidence = {"heart_rate_bpm": _num(est.bpm[i], 1), "quality": round(float(est.quality[i]), 3),
                   "activity": str(act_all.activity[lvl]), "baseline_bpm": round(float(st.baseline_bpm[i]), 1)}
    if st.extreme[i] and "extreme_heart_rate" not in state.paged_since:
        out.append(AlertCandidate("extreme_heart_rate", end_ms - st.extreme_seconds[i] * 1000.0, int(win.seq[-1]), win.wall_end_ms, {
            **base, "detector": "backend.strain.extreme",
            "summary": f"extreme heart rate: {est.bpm[i]:.0f} bpm for {st.extreme_seconds[i]:.0f} s",
            "evidence": {**hr_evidence, "seconds": round(float(st.extreme_seconds[i]), 1)},
            "thresholds": {"low_bpm": cfg.extreme_low_bpm, "high_bpm": cfg.extreme_high_bpm,
                           "sustain_s": cfg.extreme_sustain_s, "min_quality": cfg.min_quality},
        }))
    if st.strain[i] and "physiological_strain" not in state.paged_since:
        out.append(AlertCandidate("physiological_strain", end_ms - st.high_seconds[i] * 1000.0, int(win.seq[-1]), win.wall_end_ms, {
            **base, "detector": "backend.strain",
            "summary": (f"physiological strain: {est.bpm[i]:.0f} bpm above {st.limit_bpm[i]:.0f} "
                        f"while {act_all.activity[lvl]} for {st.high_seconds[i]:.0f} s"),
            "evidence": {**hr_evidence, "limit_bpm": round(float(st.limit_bpm[i]), 1),
                         "seconds": round(float(st.high_seconds[i]), 1)},
            "thresholds": {"margin_still_bpm": cfg.margin_still_bpm, "margin_walking_bpm": cfg.margin_walking_bpm,
                           "margin_running_bpm": cfg.margin_running_bpm, "sustain_s": cfg.sustain_s},
        }))
    return out


def _remember(state: DeviceModelState, paged: list[AlertCandidate], st, i: int, now_s: float, config: DecisionConfig) -> None:
    for c in paged:
        if c.kind == "man_down":
            state.man_down_paged = True
        elif c.kind in ("extreme_heart_rate", "physiological_strain"):
            state.paged_since[c.kind] = now_s
            state.clear_since.pop(c.kind, None)
    for kind, active in (("extreme_heart_rate", st.extreme[i]), ("physiological_strain", st.strain[i])):
        if kind not in state.paged_since:
            continue
        if active:
            state.clear_since.pop(kind, None)
        elif now_s - state.clear_since.setdefault(kind, now_s) >= config.rearm_s:
            del state.paged_since[kind]
            del state.clear_since[kind]
