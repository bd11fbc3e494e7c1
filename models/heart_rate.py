"""Heart rate from wrist PPG during motion, online, batched over devices.

The default method, ``spectral_tracking``, works on one 8 s window per device per 2 s hop:

1. PPG channels and accelerometer axes are band-passed (0.4-4 Hz) inside the window and
   their power is evaluated on a 0.5 BPM grid (40-220 BPM).
2. Motion suppression: the accelerometer spectrum (amplitude, each axis normalised, maximum
   over axes, widened by a few BPM and averaged over the last windows) attenuates the PPG
   spectrum where the arm moves; where motion is strong the PPG bin is treated as *unknown*
   rather than *absent*, so a heart rate that crosses the step cadence is not pushed away.
3. Tracking: a forward-only Bayesian filter over the BPM grid (Gaussian random walk between
   hops, a small recovery mass on a broad prior that grows when the last hop was unsure, so a
   lost lock is let go) multiplies in the suppressed spectrum; its mode, snapped to the nearest
   raw PPG peak, is the estimate. Only data up to the end of the current window is used.
4. Quality: the tracker's own confidence, the posterior mass within ``quality_halfwidth_bpm``
   of the estimate; below ``min_quality`` (or without skin contact) ``bpm`` is NaN: no reliable
   estimate rather than a wrong number. ``min_quality`` and the tracker settings are chosen by
   the nested leave-one-subject-out selection of ``vigil eval hr``.

The per-device filter memory travels in :class:`HeartRateState`, passed in and returned.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.ndimage import convolve1d, maximum_filter1d

from models.exceptions import InvalidSignalError, check_option, check_sampling_rate
from models.quality import as_device_channels, band_grid_power, concentration
from models.thresholds import HeartRateConfig, thresholds_for

HEART_RATE_METHODS = ("spectral_tracking", "spectral_peak")
MIN_WINDOW_S = 4.0
# Devices per pass through spectra and tracker: a pass's arrays (~1 MB) stay in cache and their
# memory is reused, instead of ~100 MB temporaries paged in at every hop.
DEVICE_CHUNK = 256


@dataclass(frozen=True)
class HeartRateState:
    """Filter memory of each device between hops (arrays indexed by device)."""

    posterior: np.ndarray      # (devices, bins) probability over the BPM grid
    motion_history: np.ndarray  # (devices, history, bins) recent motion spectra
    windows_seen: np.ndarray   # (devices,) int

    @classmethod
    def initial(cls, devices: int, config: HeartRateConfig | None = None) -> "HeartRateState":
        """A fresh state for ``devices`` devices (broad prior, no motion history)."""
        cfg = config or HeartRateConfig()
        bpm = _grid(cfg)
        prior = _prior(bpm, cfg)
        return cls(
            posterior=np.tile(prior, (devices, 1)),
            motion_history=np.full((devices, cfg.motion_history_windows, bpm.size), np.nan),
            windows_seen=np.zeros(devices, dtype=np.int64),
        )

    def select(self, devices: np.ndarray | slice | list[int]) -> "HeartRateState":
        """The state of a subset of devices (for a batch of only those whose window is due)."""
        return HeartRateState(self.posterior[devices], self.motion_history[devices], self.windows_seen[devices])

    def merge(self, devices: np.ndarray | list[int], part: "HeartRateState") -> "HeartRateState":
        """A copy with the states of ``devices`` replaced by ``part``."""
        out = HeartRateState(self.posterior.copy(), self.motion_history.copy(), self.windows_seen.copy())
        out.posterior[devices] = part.posterior
        out.motion_history[devices] = part.motion_history
        out.windows_seen[devices] = part.windows_seen
        return out

    @staticmethod
    def concatenate(states: list["HeartRateState"]) -> "HeartRateState":
        return HeartRateState(
            np.concatenate([s.posterior for s in states]),
            np.concatenate([s.motion_history for s in states]),
            np.concatenate([s.windows_seen for s in states]),
        )


@dataclass(frozen=True)
class HeartRateEstimate:
    """Per-device result of one window, with the evidence behind it."""

    bpm: np.ndarray            # (devices,) NaN when no reliable estimate
    tracked_bpm: np.ndarray    # (devices,) the tracker's value even when withheld
    quality: np.ndarray        # (devices,) 0..1
    reliable: np.ndarray       # (devices,) bool
    motion_bpm: np.ndarray     # (devices,) dominant accelerometer frequency (NaN when still)
    min_quality: float
    method: str


def _grid(cfg: HeartRateConfig) -> np.ndarray:
    return np.arange(cfg.min_bpm, cfg.max_bpm + cfg.grid_step_bpm / 2, cfg.grid_step_bpm)


def _prior(bpm: np.ndarray, cfg: HeartRateConfig) -> np.ndarray:
    prior = np.exp(-0.5 * ((bpm - cfg.prior_mean_bpm) / cfg.prior_sd_bpm) ** 2)
    return prior / prior.sum()


def estimate_heart_rate(
    ppg: np.ndarray,
    accel: np.ndarray,
    sampling_rate: float,
    state: HeartRateState | None = None,
    *,
    method: str = "spectral_tracking",
    placement: str = "wrist",
    contact: np.ndarray | None = None,
    config: HeartRateConfig | None = None,
) -> tuple[HeartRateEstimate, HeartRateState]:
    """Estimate heart rate for one window per device, using the accelerometer against motion.

    Parameters
    ----------
    ppg : array_like, shape (devices, samples) or (devices, channels, samples)
        PPG window of each device (any linear unit; counts are fine). Several channels
        (e.g. two green LEDs) are combined.
    accel : array_like, shape (devices, 3, samples)
        Accelerometer window in g, same samples as ``ppg``.
    sampling_rate : float
        Samples per second (Hz), e.g. 50 for the wearable.
    state : HeartRateState, optional
        Filter memory returned by the previous call for the same devices; ``None`` starts
        fresh. Windows are expected every 2 s (the tracker's random walk is tuned to it).
    method : {"spectral_tracking", "spectral_peak"}
        ``spectral_tracking`` (default) is described in the module docstring;
        ``spectral_peak`` is the plain PPG spectral maximum, kept as a baseline.
    placement : {"wrist", "upper_arm", "chest", "waist"}
        Selects the configuration when ``config`` is not given.
    contact : array_like of bool, shape (devices,), optional
        Skin-contact flags (see :func:`models.quality.skin_contact`); no contact withholds
        the estimate.
    config : HeartRateConfig, optional
        Overrides the placement's configuration.

    Returns
    -------
    estimate : HeartRateEstimate
    state : HeartRateState
        To pass to the next call.

    Raises
    ------
    ValueError
        Unknown ``method`` or ``placement`` (the message lists the valid ones), shapes that do
        not match, or a window shorter than 4 s.

    Examples
    --------
    >>> fs = 50
    >>> t = np.arange(8 * fs) / fs
    >>> ppg = np.sin(2 * np.pi * 1.5 * t)[None]            # 90 BPM
    >>> accel = np.zeros((1, 3, t.size))
    >>> est, state = estimate_heart_rate(ppg, accel, sampling_rate=fs)
    >>> round(float(est.bpm[0]))
    90
    """
    check_option("method", method, HEART_RATE_METHODS)
    rate = check_sampling_rate(sampling_rate)
    cfg = config or thresholds_for(placement).heart_rate
    x = as_device_channels(ppg, "ppg")
    a = as_device_channels(accel, "accel", channels=3)
    if x.shape[0] != a.shape[0] or x.shape[-1] != a.shape[-1]:
        raise InvalidSignalError(f"ppg {x.shape} and accel {a.shape} must cover the same devices and samples")
    devices = x.shape[0]
    if state is None:
        state = HeartRateState.initial(devices, cfg)
    if state.posterior.shape[0] != devices:
        raise InvalidSignalError(f"state holds {state.posterior.shape[0]} devices, windows hold {devices}")
    bpm_grid = _grid(cfg)
    if devices == 0:
        empty = np.zeros(0)
        return HeartRateEstimate(empty, empty, empty, np.zeros(0, bool), empty, cfg.min_quality, method), state
    if x.shape[-1] < MIN_WINDOW_S * rate:
        raise InvalidSignalError(f"a window needs at least {MIN_WINDOW_S} s of samples, got {x.shape[-1]} at {rate} Hz")
    if state.posterior.shape[1] != bpm_grid.size:
        raise InvalidSignalError("state was made with another heart-rate grid")
    if contact is None:
        contact = np.ones(devices, bool)
    contact = np.asarray(contact, bool).reshape(devices)

    tracked, quality, motion_bpm = np.empty(devices), np.empty(devices), np.empty(devices)
    tracking = method == "spectral_tracking"
    if tracking:
        posterior = np.empty_like(state.posterior)
        history = np.empty_like(state.motion_history)
    for first in range(0, devices, DEVICE_CHUNK):
        part = slice(first, first + DEVICE_CHUNK)
        ppg_spectrum, motion, motion_bpm[part] = _window_spectra(x[part], a[part], rate, cfg, bpm_grid)
        if tracking:
            tracked[part], quality[part] = _spectral_tracking(
                ppg_spectrum, motion, bpm_grid, cfg, state.posterior[part], state.motion_history[part],
                posterior[part], history[part])
        else:
            tracked[part] = bpm_grid[np.argmax(ppg_spectrum, axis=-1)]
            quality[part] = concentration(ppg_spectrum, bpm_grid, tracked[part], cfg.quality_halfwidth_bpm)
    reliable = contact & (quality >= cfg.min_quality)
    est = HeartRateEstimate(np.where(reliable, tracked, np.nan), tracked, quality, reliable, motion_bpm, cfg.min_quality, method)
    if not tracking:
        return est, replace(state, windows_seen=state.windows_seen + 1)
    return est, HeartRateState(posterior, history, state.windows_seen + 1)


def _window_spectra(x, a, rate, cfg, bpm):
    """PPG spectrum (channels combined) and motion spectrum of each device; (devices, bins) each."""
    grid = (cfg.min_bpm, cfg.max_bpm, cfg.grid_step_bpm)
    ppg_power = band_grid_power(x, rate, cfg.band_hz, grid)[0]
    ppg_power /= np.maximum(ppg_power.max(axis=-1, keepdims=True), 1e-30)
    ppg_spectrum = ppg_power.mean(axis=1)
    accel_amp = np.sqrt(band_grid_power(a, rate, cfg.band_hz, grid)[0])
    floor = cfg.accel_floor_g * x.shape[-1] / 4.0   # Hann peak of a floor-amplitude sinusoid
    axis_peak = accel_amp.max(axis=-1, keepdims=True)
    motion = (accel_amp / np.maximum(axis_peak, floor)).max(axis=1)
    moving = axis_peak.max(axis=(1, 2)) >= floor
    motion_bpm = np.where(moving, bpm[np.argmax(motion, axis=-1)], np.nan)
    return ppg_spectrum, motion, motion_bpm


@lru_cache(maxsize=8)
def _random_walk(bins: int, sd_bins: float) -> np.ndarray:
    """The Gaussian step between hops as a (bins, bins) matrix; mass past the grid's ends is lost."""
    offsets = np.arange(-int(4 * sd_bins), int(4 * sd_bins) + 1)
    kernel = np.exp(-0.5 * (offsets / sd_bins) ** 2)
    step = convolve1d(np.eye(bins), kernel / kernel.sum(), axis=-1, mode="constant")
    step.flags.writeable = False
    return step


def _spectral_tracking(ppg_spectrum, motion, bpm, cfg, last_posterior, last_history, posterior, history):
    """One hop of the tracker; fills ``posterior`` and ``history``, returns (tracked BPM, quality)."""
    step = cfg.grid_step_bpm
    widen = 2 * int(round(cfg.motion_widen_bpm / step)) + 1
    history[:, :-1] = last_history[:, 1:]
    history[:, -1] = maximum_filter1d(motion, size=widen, axis=-1, mode="nearest")
    # a device's first hops have no history yet (NaN); the plain mean is the same number otherwise
    noise = np.nanmean(history, axis=1) if np.isnan(history).any() else history.mean(axis=1)

    enhanced = ppg_spectrum / (1.0 + cfg.motion_attenuation * noise)
    enhanced /= np.maximum(enhanced.max(axis=-1, keepdims=True), 1e-30)
    unknown = np.clip((noise - cfg.motion_mask_level) * cfg.motion_mask_gain, 0.0, 1.0)
    likelihood = (1.0 - unknown) * enhanced + unknown * cfg.unknown_likelihood

    predicted = last_posterior @ _random_walk(bpm.size, cfg.transition_sd_bpm / step)
    predicted /= np.maximum(predicted.sum(axis=-1, keepdims=True), 1e-300)
    prior = _prior(bpm, cfg)
    # re-acquisition: the less sure the tracker was of its last value, the more mass goes back
    # to the broad prior, so a lost lock is given up within a few hops instead of being held
    weight = cfg.recovery_weight + cfg.relock_weight * (1.0 - _confidence(last_posterior, bpm, cfg)) ** 2
    predicted = (1 - weight[:, None]) * predicted + weight[:, None] * prior[None, :]
    np.multiply(predicted, likelihood + cfg.likelihood_floor, out=posterior)
    posterior /= posterior.sum(axis=-1, keepdims=True)

    # snap the mode to the largest raw PPG bin within snap_bpm of it (only bins that near are read)
    mode_bin = np.argmax(posterior, axis=-1)
    reach = int(np.ceil(cfg.snap_bpm / step)) + 1
    candidates = np.clip(mode_bin[:, None] + np.arange(-reach, reach + 1), 0, bpm.size - 1)
    near = np.abs(bpm[candidates] - bpm[mode_bin][:, None]) <= cfg.snap_bpm
    values = np.where(near, np.take_along_axis(ppg_spectrum, candidates, axis=-1), -1.0)
    tracked = bpm[np.take_along_axis(candidates, np.argmax(values, axis=-1)[:, None], axis=-1)[:, 0]]
    return tracked, _confidence(posterior, bpm, cfg, tracked)


def _confidence(posterior, bpm, cfg, at=None):
    """The tracker's own belief in a value: posterior mass within ``quality_halfwidth_bpm`` of
    ``at`` (default: each device's mode), per device."""
    if at is None:
        at = bpm[np.argmax(posterior, axis=-1)]
    near = np.abs(bpm[None, :] - at[:, None]) <= cfg.quality_halfwidth_bpm
    return (posterior * near).sum(axis=-1)
