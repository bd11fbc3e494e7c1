"""``vigil eval falls``: the fall detector on SisFall, streamed as the backend runs it."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from backend.evaluation.datasets import DEVICE_RATE_HZ, SisfallRecording, Progress
from models.fall import FEATURE_NAMES, acceleration_magnitude, fall_features, fall_probability, find_impact, fit_fall_classifier
from models.thresholds import FallConfig, FallModel, thresholds_for

WINDOW_S = 8.0
MATCH_S = 1.0   # a detection counts for a fall when its impact is within 1 s of the reference


@dataclass(frozen=True)
class Candidates:
    """Every impact candidate met while streaming the recordings, with its evidence."""

    recording: np.ndarray    # (n,) index into the recordings list
    impact_s: np.ndarray     # (n,) time of the impact from the recording start
    decided_s: np.ndarray    # (n,) end of the window in which it was decided
    features: np.ndarray     # (n, len(FEATURE_NAMES))


def stream_candidates(recordings: list[SisfallRecording], *, hop_s: float, placement: str = "waist",
                      progress: Progress | None = None) -> Candidates:
    """Slide 8 s windows by ``hop_s`` over every recording (batched over recordings of equal
    length, as the backend batches devices) and keep each newly decidable impact candidate."""
    rate = DEVICE_RATE_HZ
    limits = thresholds_for(placement)
    cfg: FallConfig = limits.fall
    win, hop = int(WINDOW_S * rate), int(round(hop_s * rate))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(recordings):
        groups[rec.accel.shape[1]].append(i)
    rec_i, impact, decided, feats = [], [], [], []
    done = 0
    for length, members in sorted(groups.items()):
        batch = np.stack([recordings[i].accel for i in members])
        # the device streams from the start of the recording: early windows are shorter
        ends = list(range(hop, length + 1, hop))
        for k, end in enumerate(ends):
            start = max(0, end - win)
            window = batch[:, :, start:end]
            new = end if k == 0 else end - ends[k - 1]
            idx = find_impact(window, rate, new_samples=new, config=cfg)
            has = np.flatnonzero(idx >= 0)
            if has.size:
                feats.append(fall_features(window[has], rate, idx[has], upright_axis=limits.activity.upright_axis))
                rec_i.append(np.asarray(members)[has])
                impact.append((start + idx[has]) / rate)
                decided.append(np.full(has.size, end / rate))
        done += len(members)
        if progress:
            progress(done, len(recordings), f"{len(members)} recordings of {length / rate:.0f} s")
    cat = (lambda xs, dt=float: np.concatenate(xs) if xs else np.zeros(0, dt))
    return Candidates(cat(rec_i, int).astype(int), cat(impact), cat(decided),
                      np.concatenate(feats) if feats else np.zeros((0, len(FEATURE_NAMES))))


# a fall's impact is the last excursion of the magnitude above this share of the file's maximum
LAST_EXCURSION_SHARE = 0.8


def reference_impacts(recordings: list[SisfallRecording]) -> np.ndarray:
    """Reference impact time (s) of every recording.

    SisFall labels files, not onsets. Every fall file ends with the subject lying still, so
    nothing after the fall comes near its impact, while what came before it (jogging
    footstrikes, brisk steps) may exceed it: the reference is the top of the *last* excursion
    of the magnitude above ``LAST_EXCURSION_SHARE`` of the file's maximum. The rule was set by
    looking at the signals (files where the largest peak is a footstrike before a trip), not
    by the detector's score; :func:`largest_peak_impacts` gives the plain largest peak, and the
    command reports sensitivity against both.
    """
    rate = DEVICE_RATE_HZ
    out = np.empty(len(recordings))
    for i, r in enumerate(recordings):
        m = acceleration_magnitude(r.accel[None])[0]
        above = m >= LAST_EXCURSION_SHARE * m.max()
        last = int(np.flatnonzero(above)[-1])
        below = np.flatnonzero(~above[:last])
        first = int(below[-1]) + 1 if below.size else 0
        out[i] = (first + int(np.argmax(m[first:last + 1]))) / rate
    return out


def largest_peak_impacts(recordings: list[SisfallRecording]) -> np.ndarray:
    """The largest magnitude of every recording (s): the naive reference, kept for comparison."""
    rate = DEVICE_RATE_HZ
    return np.array([np.argmax(acceleration_magnitude(r.accel[None])[0]) / rate for r in recordings])


def training_labels(recordings, cands: Candidates, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, usable): falls' impact candidates are 1, daily-activity candidates 0; other
    candidates inside fall files (movements after the fall) are left out of fitting."""
    is_fall = np.array([recordings[i].is_fall for i in cands.recording], bool)
    near = np.abs(cands.impact_s - ref[cands.recording]) <= MATCH_S
    label = (is_fall & near).astype(float)
    usable = ~is_fall | near
    return label, usable


def leave_one_subject_out(recordings, cands: Candidates, label, usable, *, n_trees: int, depth: int,
                          progress: Progress | None = None) -> np.ndarray:
    """Probability of every candidate from a classifier that never saw its subject."""
    subjects = np.array([recordings[i].subject for i in cands.recording])
    prob = np.zeros(len(label))
    names = sorted(set(subjects))
    for k, subject in enumerate(names, 1):
        train = usable & (subjects != subject)
        test = subjects == subject
        model = fit_fall_classifier(cands.features[train], label[train], n_trees=n_trees, depth=depth)
        prob[test] = fall_probability(cands.features[test], model)
        if progress:
            progress(k, len(names), f"held out {subject}")
    return prob


def fit_all(cands: Candidates, label, usable, *, n_trees: int, depth: int) -> FallModel:
    return fit_fall_classifier(cands.features[usable], label[usable], n_trees=n_trees, depth=depth)


def score(recordings, cands: Candidates, ref: np.ndarray, prob: np.ndarray, threshold: float) -> dict:
    """Per-recording figures: sensitivity, specificity, false events per hour, latency, breakdowns."""
    rate = DEVICE_RATE_HZ
    fired = prob >= threshold
    n = len(recordings)
    is_fall = np.array([r.is_fall for r in recordings], bool)
    near = np.abs(cands.impact_s - ref[cands.recording]) <= MATCH_S
    detected = np.zeros(n, bool)
    latency = np.full(n, np.nan)
    for c in np.flatnonzero(fired & near):
        r = cands.recording[c]
        if is_fall[r]:
            lat = cands.decided_s[c] - ref[r]
            if not detected[r] or lat < latency[r]:
                latency[r] = lat
            detected[r] = True
    false_events = fired & ~is_fall[cands.recording]
    adl_flagged = np.zeros(n, bool)
    adl_flagged[cands.recording[false_events]] = True
    adl_hours = sum(r.accel.shape[1] for r in recordings if not r.is_fall) / rate / 3600
    fall_extra = fired & is_fall[cands.recording] & ~near
    by_code: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    by_group: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for i, r in enumerate(recordings):
        for table in (by_code[r.code], by_group[r.group + (" fall" if r.is_fall else " ADL")]):
            table[0] += 1
            table[1] += int(adl_flagged[i]) if not r.is_fall else int(not detected[i])
    for c in np.flatnonzero(false_events):
        r = recordings[cands.recording[c]]
        by_code[r.code][2] += 1
        by_group[r.group + " ADL"][2] += 1
    lat = latency[is_fall & detected]
    return {
        "threshold": threshold,
        "fall_recordings": int(is_fall.sum()),
        "adl_recordings": int((~is_fall).sum()),
        "adl_hours": adl_hours,
        "detected_falls": int(detected[is_fall].sum()),
        "sensitivity": float(detected[is_fall].mean()) if is_fall.any() else float("nan"),
        "specificity": float(1 - adl_flagged[~is_fall].mean()) if (~is_fall).any() else float("nan"),
        "false_events": int(false_events.sum()),
        "false_events_per_hour": float(false_events.sum() / adl_hours) if adl_hours else float("nan"),
        "latency_median_s": float(np.median(lat)) if lat.size else float("nan"),
        "latency_max_s": float(lat.max()) if lat.size else float("nan"),
        "latency_share_within_2s": float((lat <= 2.0).mean()) if lat.size else float("nan"),
        "extra_events_in_fall_recordings": int(fall_extra.sum()),
        "missed": sorted(f"{recordings[i].code}_{recordings[i].subject}_{recordings[i].trial}"
                         for i in np.flatnonzero(is_fall & ~detected)),
        # missed, yet a fall was suspected at another impact of the same file: still counted as missed
        "missed_but_suspected_elsewhere": sorted(
            f"{recordings[i].code}_{recordings[i].subject}_{recordings[i].trial}"
            for i in np.flatnonzero(is_fall & ~detected) if (fall_extra & (cands.recording == i)).any()),
        "false_alarm_recordings": sorted(f"{recordings[i].code}_{recordings[i].subject}_{recordings[i].trial}"
                                         for i in np.flatnonzero(adl_flagged)),
        # per code: [recordings, missed (falls) or flagged (ADL) recordings, false events]
        "by_code": {k: by_code[k] for k in sorted(by_code)},
        "by_group": {k: by_group[k] for k in sorted(by_group)},
    }


def rule_probability(cands: Candidates) -> np.ndarray:
    """The fixed rule of ``models.fall`` (no fitting) applied to every candidate, as 0 or 1."""
    from models.fall import THRESHOLD_RULE

    ok = np.ones(len(cands.recording), bool)
    for name, side, value in THRESHOLD_RULE:
        col = cands.features[:, FEATURE_NAMES.index(name)]
        ok &= col >= value if side == ">=" else col <= value
    return ok.astype(float)
