"""``vigil bench models``: device-windows per second of the models at several batch sizes, next
to HeartPy and NeuroKit2 on the same windows.

Windows are 8 s at 50 Hz cut from the IEEE SPC 2015 recordings (real wrist PPG and motion),
tiled to the batch size; when the dataset is absent, from the simulator's synthetic signals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from backend.cli.progress import track

from models.activity import classify_activity
from models.fall import detect_fall
from models.heart_rate import HeartRateState, estimate_heart_rate
from models.man_down import ManDownState, update_man_down
from models.strain import StrainState, update_strain

RATE_HZ = 50.0
WINDOW = 400  # 8 s
HOP = 100  # 2 s
DEFAULT_BATCHES = (1, 100, 10_000)
# Enough repetitions that a small batch is timed over ~0.5 s, capped for the big one.
MIN_SECONDS = 0.5
# The figures are for one core: BLAS reads its thread count when numpy loads, so the bench runs in
# a child started with these (a second BLAS thread on a busy 2-core node slows the models ~5x).
ONE_CORE_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _windows(data: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    from backend.evaluation.datasets import default_datasets_root, load_spc2015

    folder = data or default_datasets_root() / "ieee_spc2015_train"
    if folder.exists():
        recs = load_spc2015(folder)
        ppg, acc = [], []
        for rec in recs:
            for k in range(0, rec.ppg.shape[1] - WINDOW, HOP):
                ppg.append(rec.ppg[:, k:k + WINDOW])
                acc.append(rec.accel[:, k:k + WINDOW])
        return np.stack(ppg), np.stack(acc), f"IEEE SPC 2015 ({len(ppg)} windows of 8 s)"
    rng = np.random.default_rng(1)
    t = np.arange(WINDOW) / RATE_HZ
    n = 512
    bpm = rng.uniform(60, 170, n)[:, None]
    ppg = np.sin(2 * np.pi * bpm / 60 * t) + 0.3 * rng.standard_normal((n, WINDOW))
    acc = np.stack([0.2 * np.sin(2 * np.pi * 2.5 * t) + 0.05 * rng.standard_normal((n, WINDOW)),
                    1 + 0.05 * rng.standard_normal((n, WINDOW)), 0.05 * rng.standard_normal((n, WINDOW))], axis=1)
    return np.stack([ppg, ppg], axis=1), acc, "synthetic (dataset not found)"


def _tile(x: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(x))
    return np.concatenate([x] * reps)[:n]


def _rate(fn, n: int) -> tuple[float, float]:
    """(device-windows per second, ms per call), repeating the call for at least MIN_SECONDS."""
    fn()  # warm-up (imports, caches)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS or (n >= 1000 and calls >= 3):
            return calls * n / elapsed, 1000 * elapsed / calls


def _library_rate(name: str, ppg: np.ndarray, count: int) -> float:
    if name == "HeartPy":
        import heartpy as hp

        def one(x):
            hp.process(hp.filter_signal(x, cutoff=[0.5, 4.0], sample_rate=RATE_HZ, filtertype="bandpass"), sample_rate=RATE_HZ)
    else:
        import neurokit2 as nk

        def one(x):
            clean = nk.ppg_clean(x, sampling_rate=RATE_HZ)
            nk.ppg_findpeaks(clean, sampling_rate=RATE_HZ)
    start = time.perf_counter()
    for x in ppg[:count, 0]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                one(x)
        except Exception:  # libraries raise assorted errors on unreadable windows; still timed
            pass
    return count / (time.perf_counter() - start)


def run(batches=DEFAULT_BATCHES, data: Path | None = None, out: Path = Path("artifacts/bench"), libraries: bool = True) -> dict:
    if any(os.environ.get(k) != v for k, v in ONE_CORE_ENV.items()):
        args = json.dumps({"batches": list(batches), "data": data and str(data), "out": str(out), "libraries": libraries})
        subprocess.run([sys.executable, "-c", "import json, sys; from backend.bench.models_bench import _run_child; "
                        "_run_child(json.loads(sys.argv[1]))", args], env={**os.environ, **ONE_CORE_ENV}, check=True)
        return json.loads((out / "bench_models.json").read_text())
    ppg_all, acc_all, source = _windows(data)
    print(f"vigil bench models: windows from {source}; one core (one BLAS thread); batch = devices per call")
    rows = []
    for n in track(batches, "batch sizes"):
        ppg, acc = _tile(ppg_all, n), _tile(acc_all, n)
        hr_state = HeartRateState.initial(n)
        md_state, st_state = ManDownState.initial(n), StrainState.initial(n)
        moving = np.zeros(n, bool)
        lying = np.zeros(n, bool)
        bpm = np.full(n, 80.0)
        quality = np.full(n, 0.8)
        activity = np.array(["still"] * n)
        figures = {
            "heart_rate": _rate(lambda: estimate_heart_rate(ppg, acc, RATE_HZ, hr_state, placement="wrist"), n),
            "activity_posture": _rate(lambda: classify_activity(acc, RATE_HZ, placement="wrist"), n),
            "fall": _rate(lambda: detect_fall(acc, RATE_HZ, new_samples=HOP, placement="waist"), n),
            "man_down": _rate(lambda: update_man_down(md_state, 100.0, moving=moving, lying=lying, placement="waist"), n),
            "strain": _rate(lambda: update_strain(st_state, 100.0, bpm=bpm, quality=quality, activity=activity, placement="wrist"), n),
        }
        for model, (per_s, ms) in figures.items():
            rows.append({"batch": n, "model": model, "device_windows_per_s": per_s, "ms_per_call": ms})
    if libraries:
        count = min(300, len(ppg_all))
        for name in ("HeartPy", "NeuroKit2"):
            rows.append({"batch": 1, "model": f"{name} heart rate", "device_windows_per_s": _library_rate(name, ppg_all, count),
                         "ms_per_call": None})
    print(f"{'model':<22}{'batch':>8}{'device-windows/s':>20}{'ms/call':>12}")
    for r in rows:
        ms = f"{r['ms_per_call']:.2f}" if r["ms_per_call"] is not None else "-"
        print(f"{r['model']:<22}{r['batch']:>8}{r['device_windows_per_s']:>20,.0f}{ms:>12}")
    hr_big = next((r for r in rows if r["model"] == "heart_rate" and r["batch"] == max(batches)), None)
    if hr_big:
        print(f"heart rate for {max(batches):,} devices' windows: {hr_big['ms_per_call']:.0f} ms of one core per hop (hop = 2000 ms)")
    out.mkdir(parents=True, exist_ok=True)
    result = {"source": source, "rows": rows}
    (out / "bench_models.json").write_text(json.dumps(result, indent=1))
    _plot(rows, out / "bench_models.png")
    print(f"wrote {out / 'bench_models.json'} and {out / 'bench_models.png'}")
    return result


def _run_child(args: dict) -> None:
    run(tuple(args["batches"]), args["data"] and Path(args["data"]), Path(args["out"]), args["libraries"])


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in sorted({r["model"] for r in rows if r["ms_per_call"] is not None}):
        pts = [(r["batch"], r["device_windows_per_s"]) for r in rows if r["model"] == model]
        ax.plot(*zip(*pts), marker="o", label=model)
    for r in rows:
        if r["ms_per_call"] is None:
            ax.axhline(r["device_windows_per_s"], linestyle="--", color="grey")
            ax.annotate(r["model"], (1, r["device_windows_per_s"]), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("devices per call")
    ax.set_ylabel("device-windows per second (one core)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
