"""PPG signal quality and skin contact, per device, per window."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, sosfiltfilt

from models.exceptions import InvalidSignalError, check_option, check_sampling_rate
from models.thresholds import SkinContactConfig, thresholds_for

QUALITY_METHODS = ("spectral_concentration",)


def as_device_channels(x: np.ndarray, name: str, channels: int | None = None) -> np.ndarray:
    """Return ``x`` as float array (devices, channels, samples); 2-D means one channel."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise InvalidSignalError(f"{name} must be shaped (devices, samples) or (devices, channels, samples), got {arr.shape}")
    if channels is not None and arr.shape[1] != channels:
        raise InvalidSignalError(f"{name} must have {channels} channels, got {arr.shape[1]}")
    return arr


@lru_cache(maxsize=32)
def _band_sos(sampling_rate: float, low: float, high: float) -> np.ndarray:
    high = min(high, 0.45 * sampling_rate)
    return butter(4, [low, high], btype="band", fs=sampling_rate, output="sos")


def bandpass(x: np.ndarray, sampling_rate: float, band: tuple[float, float]) -> np.ndarray:
    """Zero-phase band-pass inside one window (uses only that window's samples)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    if x.shape[-1] < 40:
        return centred
    return sosfiltfilt(_band_sos(sampling_rate, band[0], band[1]), centred, axis=-1)


@lru_cache(maxsize=32)
def dft_basis(sampling_rate: float, samples: int, bpm_grid: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed DFT basis evaluated on a heart-rate grid (BPM): (samples, bins), bins."""
    low, high, step = bpm_grid
    bpm = np.arange(low, high + step / 2, step)
    t = np.arange(samples) / sampling_rate
    window = np.hanning(samples)
    basis = window[:, None] * np.exp(-2j * np.pi * t[:, None] * (bpm[None, :] / 60.0))
    return basis, bpm


def grid_power(x: np.ndarray, sampling_rate: float, bpm_grid: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of the last axis of ``x`` on the BPM grid; returns (power, bpm)."""
    basis, bpm = dft_basis(sampling_rate, x.shape[-1], bpm_grid)
    return np.abs(x @ basis) ** 2, bpm


# Above this many samples per window the (samples x samples) filter matrix behind
# band_grid_power costs more to build and hold than it saves; filter, then transform instead.
OPERATOR_MAX_SAMPLES = 2048
# Singular values of the filter-and-transform map below this share of the largest are dropped:
# the spectrum then moves by ~1e-12 of its peak, the size of double rounding in the direct route.
OPERATOR_RTOL = 1e-12
# Windows per matrix product: the (rows, 2 x bins) intermediate stays in the core's cache.
_CHUNK_ROWS = 256


@lru_cache(maxsize=32)
def band_spectrum_operator(sampling_rate: float, samples: int, band: tuple[float, float],
                           bpm_grid: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bandpass` then :func:`grid_power`'s DFT, as one factorised linear map.

    Centring, zero-phase filtering (edges included) and the windowed DFT are all linear in the
    window, so their composition is a (samples, bins) complex matrix. Its real and imaginary
    parts side by side have low numerical rank, because a narrow band holds few degrees of
    freedom of a short window (78 of 400 for 0.4-4 Hz over 8 s at 50 Hz), so it is kept as
    ``left @ right``: a fifth of the multiplications, and the filter comes for free.

    Returns
    -------
    left : numpy.ndarray, shape (samples, rank)
    right : numpy.ndarray, shape (rank, 2 * bins)
        Real parts of the spectrum in the first ``bins`` columns, imaginary in the rest.
    bpm : numpy.ndarray, shape (bins,)
    """
    response = bandpass(np.eye(samples), sampling_rate, band)  # row i: the output for a unit sample at i
    basis, bpm = dft_basis(sampling_rate, samples, bpm_grid)
    full = response @ basis
    u, s, vt = np.linalg.svd(np.concatenate([full.real, full.imag], axis=1), full_matrices=False)
    rank = max(1, int((s > OPERATOR_RTOL * s[0]).sum()))
    left, right = u[:, :rank] * s[:rank], vt[:rank].copy()
    for cached in (left, right, bpm):
        cached.flags.writeable = False
    return left, right, bpm


def band_grid_power(x: np.ndarray, sampling_rate: float, band: tuple[float, float],
                    bpm_grid: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``grid_power(bandpass(x, sampling_rate, band), sampling_rate, bpm_grid)``, fast.

    Uses :func:`band_spectrum_operator` (same power to ~1e-12 of each window's peak) for
    windows up to :data:`OPERATOR_MAX_SAMPLES` samples, the two steps beyond.

    Examples
    --------
    >>> t = np.arange(400) / 50
    >>> power, bpm = band_grid_power(np.sin(2 * np.pi * 1.5 * t)[None], 50, (0.4, 4.0), (40.0, 220.0, 0.5))
    >>> float(bpm[np.argmax(power[0])])
    90.0
    """
    samples = x.shape[-1]
    if not 0 < samples <= OPERATOR_MAX_SAMPLES:
        return grid_power(bandpass(x, sampling_rate, band), sampling_rate, bpm_grid)
    left, right, bpm = band_spectrum_operator(float(sampling_rate), samples, tuple(band), tuple(bpm_grid))
    bins = bpm.size
    flat = x.reshape(-1, samples)
    power = np.empty((flat.shape[0], bins))
    for start in range(0, flat.shape[0], _CHUNK_ROWS):
        rows = flat[start:start + _CHUNK_ROWS]
        spectrum = (rows - rows.mean(axis=-1, keepdims=True)) @ left @ right
        np.square(spectrum, out=spectrum)
        np.add(spectrum[:, :bins], spectrum[:, bins:], out=power[start:start + _CHUNK_ROWS])
    return power.reshape(*x.shape[:-1], bins), bpm


def ppg_quality(ppg: np.ndarray, sampling_rate: float, *, method: str = "spectral_concentration",
                halfwidth_bpm: float = 6.0) -> np.ndarray:
    """Signal-quality index of PPG windows, 0 (noise) to 1 (one clean pulse frequency).

    Parameters
    ----------
    ppg : array_like, shape (devices, samples) or (devices, channels, samples)
        PPG windows at ``sampling_rate``; channels are averaged after normalisation.
    sampling_rate : float
        Samples per second (Hz).
    method : {"spectral_concentration"}
        Share of the 40-220 BPM power that lies within ``halfwidth_bpm`` of the dominant
        peak or of its second harmonic.
    halfwidth_bpm : float
        Half-width of the peak band.

    Returns
    -------
    numpy.ndarray, shape (devices,)

    Examples
    --------
    >>> t = np.arange(400) / 50
    >>> q = ppg_quality(np.sin(2 * np.pi * 1.5 * t)[None], sampling_rate=50)
    >>> bool(q[0] > 0.8)
    True
    """
    check_option("method", method, QUALITY_METHODS)
    rate = check_sampling_rate(sampling_rate)
    x = as_device_channels(ppg, "ppg")
    if x.shape[0] == 0:
        return np.zeros(0)
    power, bpm = band_grid_power(x, rate, (0.4, 4.0), (40.0, 220.0, 0.5))
    power = power / np.maximum(power.max(axis=-1, keepdims=True), 1e-30)
    spectrum = power.mean(axis=1)
    peak = bpm[np.argmax(spectrum, axis=-1)]
    return concentration(spectrum, bpm, peak, halfwidth_bpm)


def concentration(spectrum: np.ndarray, bpm: np.ndarray, peak_bpm: np.ndarray, halfwidth_bpm: float) -> np.ndarray:
    """Share of ``spectrum`` (devices, bins) near ``peak_bpm`` or its harmonic, per device."""
    near = (np.abs(bpm[None, :] - peak_bpm[:, None]) <= halfwidth_bpm) | (
        np.abs(bpm[None, :] - 2 * peak_bpm[:, None]) <= halfwidth_bpm)
    total = np.maximum(spectrum.sum(axis=-1), 1e-30)
    return np.where(np.isfinite(peak_bpm), (spectrum * near).sum(axis=-1) / total, 0.0)


@dataclass(frozen=True)
class SkinContact:
    """Per-device skin-contact decision and its evidence."""

    contact: np.ndarray          # (devices,) bool
    dc_counts: np.ndarray        # (devices,)
    perfusion_index: np.ndarray  # (devices,)
    thresholds: SkinContactConfig


def skin_contact(ppg_counts: np.ndarray, sampling_rate: float, *, placement: str = "wrist") -> SkinContact:
    """Whether the PPG sensor touches skin, from raw uint24 counts.

    Off-skin, the photodiode sees ambient light (low DC) or saturates, and no pulsatile
    component rides on the DC level.

    Parameters
    ----------
    ppg_counts : array_like, shape (devices, samples) or (devices, channels, samples)
        Raw PPG counts as sent by the wearable (first channel is used).
    sampling_rate : float
        Samples per second (Hz).
    placement : {"wrist", "upper_arm", "chest", "waist"}

    Returns
    -------
    SkinContact

    Examples
    --------
    >>> t = np.arange(400) / 50
    >>> ppg = 2e6 + 4e3 * np.sin(2 * np.pi * 1.2 * t)
    >>> bool(skin_contact(ppg[None], sampling_rate=50).contact[0])
    True
    """
    rate = check_sampling_rate(sampling_rate)
    cfg = thresholds_for(placement).skin_contact
    x = as_device_channels(ppg_counts, "ppg_counts")[:, 0, :]
    if x.shape[0] == 0:
        empty = np.zeros(0)
        return SkinContact(np.zeros(0, bool), empty, empty, cfg)
    dc = x.mean(axis=-1)
    ac = bandpass(x, rate, (0.4, 4.0)).std(axis=-1)
    pi = ac / np.maximum(np.abs(dc), 1.0)
    ok = ((dc >= cfg.min_dc_counts) & (x.max(axis=-1) < cfg.max_dc_counts)
          & (pi >= cfg.min_perfusion_index) & (pi <= cfg.max_perfusion_index))
    return SkinContact(ok, dc, pi, cfg)
