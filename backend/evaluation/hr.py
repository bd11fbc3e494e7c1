"""``vigil eval hr``: heart rate on IEEE SPC 2015 (official 8 s / 2 s windows, at 50 Hz, online)."""
from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import replace

import numpy as np

from backend.evaluation.datasets import DEVICE_RATE_HZ, SPC_HOP_S, SPC_WINDOW_S, Progress, SpcRecording
from models.heart_rate import HeartRateState, estimate_heart_rate
from models.thresholds import HeartRateConfig, thresholds_for

# The few settings chosen by selection, each from two values; everything else in
# HeartRateConfig is fixed (not searched). The quality threshold is chosen too (see QUALITY_GRID).
GRID = {
    "motion_history_windows": (1, 3),
    "transition_sd_bpm": (5.0, 7.0),
    "snap_bpm": (3.0, 5.0),
    "relock_weight": (0.0, 0.05),
}
# quality thresholds considered; the chosen one is the highest whose share of reported windows
# on the selection recordings stays >= COVERAGE_GOAL (the 80 % target plus a margin for new people)
QUALITY_GRID = tuple(np.round(np.arange(0.0, 0.951, 0.01), 2))
COVERAGE_GOAL = 0.85
WRONG_BPM = 10.0   # an error above this is a "wrong" value, for the gate's report


def windows_of(rec: SpcRecording) -> int:
    return len(rec.reference_bpm)


def run_vigil(recordings: list[SpcRecording], config: HeartRateConfig) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Stream every recording hop by hop, all recordings batched as devices (as the backend
    does). Returns per-recording tracked BPM, quality, and seconds per device-window."""
    rate = DEVICE_RATE_HZ
    win, hop = int(SPC_WINDOW_S * rate), int(SPC_HOP_S * rate)
    n = [windows_of(r) for r in recordings]
    state = HeartRateState.initial(len(recordings), config)
    est = [np.full(k, np.nan) for k in n]
    qual = [np.full(k, np.nan) for k in n]
    elapsed, count = 0.0, 0
    for k in range(max(n)):
        due = [i for i, m in enumerate(n) if k < m]
        ppg = np.stack([recordings[i].ppg[:, k * hop: k * hop + win] for i in due])
        acc = np.stack([recordings[i].accel[:, k * hop: k * hop + win] for i in due])
        t0 = time.perf_counter()
        out, part = estimate_heart_rate(ppg, acc, rate, state.select(due), config=config)
        elapsed += time.perf_counter() - t0
        count += len(due)
        state = state.merge(due, part)
        for j, i in enumerate(due):
            est[i][k] = out.tracked_bpm[j]
            qual[i][k] = out.quality[j]
    return est, qual, elapsed / max(count, 1)


def grid_size_text() -> str:
    return ", ".join(f"{k} in {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in GRID.items())


def grid_configs(base: HeartRateConfig) -> list[HeartRateConfig]:
    keys = list(GRID)
    return [replace(base, **dict(zip(keys, values))) for values in itertools.product(*(GRID[k] for k in keys))]


def _abs_errors(recordings, est: list[np.ndarray]) -> list[np.ndarray]:
    return [np.abs(e - r.reference_bpm) for e, r in zip(est, recordings)]


def choose(errors: list[list[np.ndarray]], quality: list[list[np.ndarray]], train: list[int]) -> tuple[int, float, dict]:
    """Selection on the recordings ``train`` only: the grid point with the lowest MAE over their
    windows, then the highest quality threshold that still reports >= COVERAGE_GOAL of them.
    Nothing is fitted to a recording, so a recording's estimate does not depend on the others:
    the inner leave-one-subject-out score of a grid point is its score on ``train``.
    Returns (grid index, threshold, the selection's own figures)."""
    maes = [np.concatenate([e[j] for j in train]).mean() for e in errors]
    best = int(np.argmin(maes))
    err = np.concatenate([errors[best][j] for j in train])
    q = np.concatenate([quality[best][j] for j in train])
    threshold = 0.0
    for t in QUALITY_GRID:
        if (q >= t).mean() >= COVERAGE_GOAL:
            threshold = float(t)
    kept = q >= threshold
    return best, threshold, {"mae": float(err.mean()), "reported_share": float(kept.mean()),
                             "reported_mae": float(err[kept].mean()) if kept.any() else float("nan"),
                             "within_5_bpm": float((err <= 5.0).mean())}


def nested_leave_one_subject_out(recordings, progress: Progress | None = None) -> dict:
    """Nested leave-one-subject-out (each recording is one subject): for every held-out recording,
    the grid point and the quality threshold are chosen by :func:`choose` on the other recordings
    alone; the held-out recording is scored with them. Returns the outer (unseen) estimates and
    quality, the threshold used for each, the chosen settings, and the inner (selection) figures."""
    base = thresholds_for("wrist").heart_rate
    configs = grid_configs(base)
    runs = []
    for c, cfg in enumerate(configs, 1):
        runs.append(run_vigil(recordings, cfg))
        if progress:
            progress(c, len(configs), "tracker settings grid")
    errors = [_abs_errors(recordings, run[0]) for run in runs]
    quality = [run[1] for run in runs]
    n = len(recordings)
    chosen, est, qual, thresholds, inner = [], [], [], [], []
    for i in range(n):
        best, threshold, figures = choose(errors, quality, [j for j in range(n) if j != i])
        chosen.append({**{k: getattr(configs[best], k) for k in GRID}, "min_quality": threshold})
        est.append(runs[best][0][i])
        qual.append(runs[best][1][i])
        thresholds.append(threshold)
        inner.append(figures)
    best_all, threshold_all, _ = choose(errors, quality, list(range(n)))
    return {"estimates": est, "quality": qual, "thresholds": thresholds, "chosen": chosen,
            "inner": {k: float(np.mean([f[k] for f in inner])) for k in inner[0]},
            "all_data_choice": {**{k: getattr(configs[best_all], k) for k in GRID}, "min_quality": threshold_all},
            "grid_size": len(configs),
            "seconds_per_window": float(np.mean([run[2] for run in runs]))}


def outer_figures(recordings, est: list[np.ndarray], qual: list[np.ndarray], thresholds: list[float]) -> dict:
    """Figures on held-out recordings: MAE of every window's tracked value, share of windows with
    a reported value (quality >= that fold's threshold), MAE of the reported values, and how well
    the gate separates wrong values (error > WRONG_BPM) from right ones."""
    err = np.concatenate(_abs_errors(recordings, est))
    kept = np.concatenate([q >= t for q, t in zip(qual, thresholds)])
    wrong = err > WRONG_BPM
    per = {r.name: {"mae": float(e.mean()), "reported_share": float((q >= t).mean()),
                    "reported_mae": float(e[q >= t].mean()) if (q >= t).any() else float("nan")}
           for r, e, q, t in zip(recordings, _abs_errors(recordings, est), qual, thresholds)}
    return {"mae": float(err.mean()), "reported_share": float(kept.mean()),
            "reported_mae": float(err[kept].mean()) if kept.any() else float("nan"),
            "within_5_bpm": float((err <= 5.0).mean()),
            "wrong_windows": int(wrong.sum()), "wrong_withheld": int((wrong & ~kept).sum()),
            "right_withheld_share": float((~wrong & ~kept).sum() / max((~wrong).sum(), 1)),
            "per_recording": per, "windows": int(err.size)}


def _hold_last(values: list[float]) -> np.ndarray:
    out, last = np.array(values, float), np.nan
    for i, v in enumerate(out):
        if np.isfinite(v):
            last = v
        else:
            out[i] = last
    return out


def run_library(recordings, name: str, progress: Progress | None = None) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """HeartPy or NeuroKit2 on the same windows (channel 1 of the PPG, 50 Hz). A window where
    the library fails or returns nothing holds the previous value (online); ``valid`` says
    which windows had an answer of their own."""
    rate = DEVICE_RATE_HZ
    win, hop = int(SPC_WINDOW_S * rate), int(SPC_HOP_S * rate)
    if name == "HeartPy":
        import heartpy as hp

        def one(x):
            _, measures = hp.process(hp.filter_signal(x, cutoff=[0.5, 4.0], sample_rate=rate, filtertype="bandpass"),
                                     sample_rate=rate)
            return float(measures["bpm"])
    else:
        import neurokit2 as nk

        def one(x):
            clean = nk.ppg_clean(x, sampling_rate=rate)
            peaks = nk.ppg_findpeaks(clean, sampling_rate=rate)["PPG_Peaks"]
            return 60.0 * rate / float(np.median(np.diff(peaks))) if len(peaks) > 1 else float("nan")
    est, valid = [], []
    elapsed, count = 0.0, 0
    for r, rec in enumerate(recordings, 1):
        vals = []
        for k in range(windows_of(rec)):
            x = rec.ppg[0, k * hop: k * hop + win]
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    v = one(x)
            except Exception:  # the libraries raise assorted errors on windows they cannot read
                v = float("nan")
            elapsed += time.perf_counter() - t0
            count += 1
            vals.append(v if np.isfinite(v) and 30 <= v <= 240 else float("nan"))
        valid.append(np.isfinite(np.array(vals)))
        est.append(_hold_last(vals))
        if progress:
            progress(r, len(recordings), f"{name} {rec.name}")
    return est, valid, elapsed / max(count, 1)


def summarise(recordings, est: list[np.ndarray]) -> dict:
    per = {}
    errs = []
    for rec, e in zip(recordings, est):
        err = np.abs(e - rec.reference_bpm)
        err = np.where(np.isfinite(err), err, np.abs(np.nanmean(e) - rec.reference_bpm) if np.isfinite(e).any() else 100.0)
        per[rec.name] = float(err.mean())
        errs.append(err)
    allerr = np.concatenate(errs)
    return {"per_recording_mae": per, "overall_mae": float(allerr.mean()),
            "mean_of_recording_mae": float(np.mean(list(per.values()))),
            "within_5_bpm": float((allerr <= 5.0).mean()), "windows": int(allerr.size)}
