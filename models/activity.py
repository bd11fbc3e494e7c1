"""Activity (still / walking / running), step cadence, motion energy and posture per window."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.exceptions import check_option, check_sampling_rate
from models.quality import as_device_channels, band_grid_power
from models.thresholds import ActivityConfig, thresholds_for

ACTIVITIES = ("still", "walking", "running")
POSTURES = ("upright", "lying", "unknown")
MOTION_METHODS = ("vector_rms",)
# Devices per pass: a pass's temporaries stay in cache instead of ~100 MB paged in per hop.
DEVICE_CHUNK = 256


def motion_energy(accel: np.ndarray, sampling_rate: float, *, method: str = "vector_rms") -> np.ndarray:
    """Motion energy of each window: RMS (g) of the acceleration vector around its mean.

    The square root of the summed per-axis variances: independent of how the device is
    mounted, and it sees motion across gravity that the magnitude alone would miss.

    Parameters
    ----------
    accel : array_like, shape (devices, 3, samples)
        Accelerometer in g.
    sampling_rate : float
        Samples per second (Hz).
    method : {"vector_rms"}

    Returns
    -------
    numpy.ndarray, shape (devices,)

    Examples
    --------
    >>> a = np.zeros((1, 3, 100)); a[0, 2] = 1.0
    >>> float(motion_energy(a, sampling_rate=50)[0])
    0.0
    """
    check_option("method", method, MOTION_METHODS)
    check_sampling_rate(sampling_rate)
    a = as_device_channels(accel, "accel", channels=3)
    if a.shape[0] == 0 or a.shape[-1] == 0:
        return np.zeros(a.shape[0])
    return np.sqrt(a.var(axis=-1).sum(axis=1))


@dataclass(frozen=True)
class ActivityResult:
    """Per-device activity, posture and their evidence."""

    activity: np.ndarray       # (devices,) str, one of ACTIVITIES
    cadence_spm: np.ndarray    # (devices,) steps per minute, NaN when still
    motion_energy_g: np.ndarray
    posture: np.ndarray        # (devices,) str, one of POSTURES
    tilt_deg: np.ndarray       # (devices,) angle of gravity from the upright reading
    thresholds: ActivityConfig


def classify_activity(accel: np.ndarray, sampling_rate: float, *, placement: str = "waist",
                      config: ActivityConfig | None = None) -> ActivityResult:
    """Classify each device's window as still / walking / running and upright / lying.

    Cadence is the dominant frequency (60-220 per minute) of the magnitude; on the wrist the arm
    swings once per two steps, so the count is doubled there when the peak is below 100/min.

    Parameters
    ----------
    accel : array_like, shape (devices, 3, samples)
        Accelerometer in g.
    sampling_rate : float
        Samples per second (Hz).
    placement : {"wrist", "upper_arm", "chest", "waist"}
    config : ActivityConfig, optional
        Overrides the placement's configuration.

    Returns
    -------
    ActivityResult

    Examples
    --------
    >>> fs = 50; t = np.arange(8 * fs) / fs
    >>> a = np.zeros((1, 3, t.size)); a[0, 1] = -1.0 + 0.3 * np.sin(2 * np.pi * 1.8 * t)
    >>> r = classify_activity(a, sampling_rate=fs)
    >>> str(r.activity[0]), str(r.posture[0]), round(float(r.cadence_spm[0]))
    ('walking', 'upright', 108)
    """
    rate = check_sampling_rate(sampling_rate)
    limits = thresholds_for(placement)
    cfg = config or limits.activity
    a = as_device_channels(accel, "accel", channels=3)
    devices = a.shape[0]
    if devices == 0 or a.shape[-1] == 0:
        empty = np.zeros(devices)
        return ActivityResult(np.full(devices, "still", dtype=object), empty + np.nan, empty,
                              np.full(devices, "unknown", dtype=object), empty + np.nan, cfg)
    energy, cadence, gravity = np.empty(devices), np.full(devices, np.nan), np.empty((devices, 3))
    for first in range(0, devices, DEVICE_CHUNK):
        part = slice(first, first + DEVICE_CHUNK)
        chunk = a[part]
        energy[part] = motion_energy(chunk, rate)
        gravity[part] = chunk.mean(axis=-1)
        if a.shape[-1] >= 2 * rate:
            mag = np.sqrt((chunk ** 2).sum(axis=1))
            power, spm = band_grid_power(mag, rate, (0.8, 4.0), (cfg.min_cadence_spm, cfg.max_cadence_spm, 1.0))
            cadence[part] = spm[np.argmax(power, axis=-1)]
    if placement == "wrist":
        cadence = np.where(cadence < 100, 2 * cadence, cadence)
    still = energy < cfg.still_energy_g
    running = ~still & ((energy >= cfg.running_energy_g) | (cadence >= cfg.running_cadence_spm))
    activity = np.where(still, "still", np.where(running, "running", "walking")).astype(object)
    up = np.asarray(cfg.upright_axis, float)
    up = up / np.linalg.norm(up)
    norm = np.maximum(np.linalg.norm(gravity, axis=-1), 1e-9)
    tilt = np.degrees(np.arccos(np.clip(gravity @ up / norm, -1.0, 1.0)))
    if cfg.posture_reliable:
        posture = np.where(tilt >= cfg.lying_tilt_deg, "lying", "upright").astype(object)
    else:
        posture = np.full(devices, "unknown", dtype=object)
    return ActivityResult(activity, np.where(still, np.nan, cadence), energy, posture, tilt, cfg)
