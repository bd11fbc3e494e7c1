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

# the small grid over which leave-one-recording-out selects the tracker's settings
GRID = {
    "snap_bpm": (3.0, 5.0),
    "transition_sd_bpm": (5.0, 7.0),
    "motion_mask_level": (0.3, 0.5),
}


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


def grid_configs(base: HeartRateConfig) -> list[HeartRateConfig]:
    keys = list(GRID)
    return [replace(base, **dict(zip(keys, values))) for values in itertools.product(*(GRID[k] for k in keys))]


def leave_one_recording_out(recordings, progress: Progress | None = None) -> dict:
    """Each recording is a different subject: its estimate uses the grid point that was best on
    the other eleven. Returns per-recording estimates and the chosen settings."""
    base = thresholds_for("wrist").heart_rate
    configs = grid_configs(base)
    runs = []
    for c, cfg in enumerate(configs, 1):
        runs.append(run_vigil(recordings, cfg))
        if progress:
            progress(c, len(configs), "tracker settings grid")
    abs_err = [[np.abs(run[0][i] - r.reference_bpm) for i, r in enumerate(recordings)] for run in runs]
    chosen, est, qual = [], [], []
    for i in range(len(recordings)):
        others = [np.concatenate([e[j] for j in range(len(recordings)) if j != i]).mean() for e in abs_err]
        best = int(np.argmin(others))
        chosen.append({k: getattr(configs[best], k) for k in GRID})
        est.append(runs[best][0][i])
        qual.append(runs[best][1][i])
    default = next(k for k, cfg in enumerate(configs) if all(getattr(cfg, key) == getattr(base, key) for key in GRID))
    return {"estimates": est, "quality": qual, "chosen": chosen,
            "default_estimates": runs[default][0], "default_quality": runs[default][1],
            "seconds_per_window": float(np.mean([run[2] for run in runs]))}


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
