"""Readers for the shared datasets, converted to the wearable's rate (50 Hz) and units (g).

The data stay in ``../shared/datasets`` (relative to the project root) or a path given on the
command line; nothing is copied into the repository.
"""
from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.signal import resample_poly

DEVICE_RATE_HZ = 50.0
SPC_RATE_HZ = 125
SISFALL_RATE_HZ = 200
SPC_WINDOW_S = 8.0
SPC_HOP_S = 2.0

Progress = Callable[[int, int, str], None]


def default_datasets_root() -> Path:
    """``../shared/datasets`` relative to the project root (the folder holding pyproject.toml)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists():
            return (parent / ".." / "shared" / "datasets").resolve()
    return Path("../shared/datasets").resolve()


def console_progress(label: str) -> Progress:
    """A progress bar on stderr (backend/cli/progress.py: none when stderr is no terminal, or --quiet)."""
    from backend.cli.progress import Bar
    return Bar(label)


@dataclass(frozen=True)
class SpcRecording:
    name: str
    ppg: np.ndarray      # (2, samples) at 50 Hz
    accel: np.ndarray    # (3, samples) at 50 Hz, g
    reference_bpm: np.ndarray  # (windows,) ECG-derived, window k covers [2k, 2k+8) s


def load_spc2015(folder: Path, progress: Progress | None = None) -> list[SpcRecording]:
    """IEEE SPC 2015 training set, resampled 125 Hz -> 50 Hz (polyphase, 2/5)."""
    from scipy.io import loadmat

    files = sorted(Path(folder).glob("DATA_*_TYPE0?.mat"))
    if not files:
        raise FileNotFoundError(f"no DATA_*_TYPE0?.mat files in {folder}")
    out = []
    for i, path in enumerate(files, 1):
        sig = loadmat(path)["sig"].astype(float)
        bpm = loadmat(path.with_name(path.stem + "_BPMtrace.mat"))["BPM0"].ravel().astype(float)
        res = resample_poly(sig, 2, 5, axis=1)
        out.append(SpcRecording(path.stem[:7], res[1:3], res[3:6], bpm))
        if progress:
            progress(i, len(files), path.name)
    return out


@dataclass(frozen=True)
class SisfallRecording:
    code: str          # D01..D19, F01..F15
    subject: str       # SA01.., SE01..
    trial: str
    accel: np.ndarray  # (3, samples) at 50 Hz, g (ADXL345)

    @property
    def is_fall(self) -> bool:
        return self.code.startswith("F")

    @property
    def group(self) -> str:
        return "young (SA)" if self.subject.startswith("SA") else "older (SE)"


_SISFALL_NAME = re.compile(r"([DF]\d\d)_(S[AE]\d\d)_(R\d\d)\.txt$")


def _sisfall_rows(raw: bytes) -> np.ndarray:
    """One SisFall file's text -> (samples, 9) integers (every value in the files is an integer)."""
    text = raw.decode("ascii").replace(";", " ").replace(",", " ")
    flat = np.array(text.split(), dtype=np.int64)
    return flat[: flat.size // 9 * 9].reshape(-1, 9)


def load_sisfall(source: Path, progress: Progress | None = None) -> list[SisfallRecording]:
    """SisFall files from a folder (searched recursively) or straight from the .tar.xz archive:
    ADXL345 raw -> g (32/8192), 200 Hz -> 50 Hz.

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist, or holds no ``<CODE>_<SUBJECT>_<TRIAL>.txt`` files.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"SisFall data not found: {source} (a folder of SisFall .txt files or the .tar.xz)")
    out = []

    def add(name: str, raw: bytes) -> None:
        code, subject, trial = _SISFALL_NAME.search(name).groups()
        accel_g = _sisfall_rows(raw)[:, 0:3] * 32.0 / 8192.0
        accel_50 = resample_poly(accel_g, 1, SISFALL_RATE_HZ // int(DEVICE_RATE_HZ), axis=0).T
        out.append(SisfallRecording(code, subject, trial, np.ascontiguousarray(accel_50)))

    if source.is_dir():
        files = sorted(p for p in source.rglob("*.txt") if _SISFALL_NAME.search(p.name))
        for i, path in enumerate(files, 1):
            add(path.name, path.read_bytes())
            if progress and (i % 50 == 0 or i == len(files)):
                progress(i, len(files), path.name)
    else:
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and _SISFALL_NAME.search(m.name)]
            for i, member in enumerate(members, 1):
                add(member.name, tar.extractfile(member).read())
                if progress and (i % 50 == 0 or i == len(members)):
                    progress(i, len(members), member.name)
    if not out:
        raise FileNotFoundError(f"no SisFall files (<CODE>_<SUBJECT>_<TRIAL>.txt) in {source}")
    out.sort(key=lambda r: (r.subject, r.code, r.trial))
    return out
