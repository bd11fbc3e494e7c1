"""Fall detection from a 3-axis accelerometer: impact, free fall, orientation change, stillness.

A candidate is the largest local maximum of the acceleration magnitude above ``impact_g`` among
the samples that became decidable since the previous call (``post_impact_s`` after the impact
must already be in the window). Around it, :data:`FEATURE_NAMES` are measured from 6 s before to
1.5 s after the impact (samples before the window's start are taken from its first sample: a
device that just started has less history); a classifier (``method="boosted_trees"``, the
default: boosted depth-limited trees fitted on SisFall and checked leave-one-subject-out) or a
fixed rule (``method="threshold"``) decides. A decision is therefore available 1.5 s after the
impact plus the hop at which the caller runs it.

Assumptions (said here because alerts depend on them): the device is worn on the trunk at the
waist, the product's placement and SisFall's (``placement="waist"``; the chest is assumed alike
but was not measured, the arm and wrist are not validated); the trunk is no longer upright
0.5-1.5 s after the impact (a fall that ends sitting or kneeling with an upright trunk may be
missed, and is left to the man-down timer and the SOS button); nothing is assumed about what
happens after 1.5 s.
Falls from sitting with a soft landing (about 2 g) look like lying down quickly and are the
likeliest misses. A fall starts upright or sitting: an impact after the trunk lay far from upright
for the 5 s before it (rolling over, turning on a bunk) is never a fall, whatever the classifier
says (:func:`already_lying`, ``FallConfig.lying_before_deg``); man-down still watches a lying wearer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from models.exceptions import InvalidSignalError, check_option, check_sampling_rate
from models.quality import as_device_channels
from models.thresholds import BoostedTrees, FallConfig, FallModel, fall_model, thresholds_for

FALL_METHODS = ("boosted_trees", "threshold")
FEATURE_NAMES = (
    "fall_velocity_m_s",   # peak downward speed from acceleration along the pre-impact gravity
    "fall_drop_m",         # integrated drop over the 1.5 s before impact
    "pre_activity_g",      # magnitude std 3 s..1 s before impact (walking vs. sitting)
    "impact_g",            # peak magnitude
    "free_fall_min_g",     # minimum magnitude in the 1 s before impact
    "free_fall_area_g_s",  # area below 1 g in the 1 s before impact
    "orientation_change_deg",  # gravity direction 2..1 s before vs. 0.5..1.5 s after impact
    "post_activity_g",     # magnitude std 0.5..1.5 s after impact (stillness)
    "impact_energy_g_s",   # sum |a| - 1 g within 0.5 s of impact
    "jerk_g_s",            # steepest rise of magnitude into the impact
    "post_tilt_deg",       # trunk angle from upright after impact
    "pre_tilt_deg",        # trunk angle from upright before the event (falls start upright)
    "post_mean_g",         # magnitude mean 0.5..1.5 s after impact (1 g when at rest)
    "rebound_min_g",       # magnitude minimum within 0.5 s after impact
    "pre_peaks",           # rises above 2 g from 3 s to 0.2 s before impact (steps, jogging)
    "pre_activity_long_g",  # magnitude std 6 s..1 s before impact
    "early_orientation_change_deg",  # gravity direction 4..3 s before vs. 0.5..1.5 s after impact
    "max_tilt_swing_deg",  # largest angle of the 0.2 s-smoothed vector from the pre-impact gravity, -1..1.5 s
    "descent_velocity_m_s",  # peak downward speed along a causal 1 s gravity estimate, 1 s before impact
    "settle_activity_g",   # magnitude std 0.2..0.7 s after impact
    "descent_activity_g",  # magnitude std 1..0.1 s before impact
    "lying_before_deg",    # least trunk angle from upright among the 1 s means from 6 s to 1 s before impact
)
# the classifier's own features: every feature but the one the "already lying" rule reads
CLASSIFIER_FEATURES = FEATURE_NAMES[:-1]

# the fixed rule of method="threshold": each feature and the side it must be on
THRESHOLD_RULE = (
    ("impact_g", ">=", 2.5),
    ("free_fall_min_g", "<=", 0.75),
    ("orientation_change_deg", ">=", 45.0),
    ("post_activity_g", "<=", 0.35),
    ("pre_tilt_deg", "<=", 60.0),
)


@dataclass(frozen=True)
class FallDecision:
    """Per-device fall decision with its evidence."""

    suspected: np.ndarray       # (devices,) bool
    probability: np.ndarray     # (devices,) classifier probability (rule: 0 or 1); NaN without candidate
    impact_index: np.ndarray    # (devices,) sample index in the window, -1 without candidate
    seconds_since_impact: np.ndarray  # (devices,) at the end of the window; NaN without candidate
    features: np.ndarray        # (devices, len(FEATURE_NAMES)); NaN without candidate
    feature_names: tuple[str, ...]
    fired: tuple[tuple[str, ...], ...]  # per device: the evidence that fired
    threshold: float
    method: str


def acceleration_magnitude(accel: np.ndarray) -> np.ndarray:
    """Euclidean norm over the axis dimension of (devices, 3, samples)."""
    return np.sqrt(np.einsum("dcs,dcs->ds", accel, accel))


def _tilt(vectors: np.ndarray, upright: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)
    return np.degrees(np.arccos(np.clip(unit @ upright, -1.0, 1.0)))


def fall_features(accel: np.ndarray, sampling_rate: float, impact_index: np.ndarray, *,
                  upright_axis: tuple[float, float, float] = (0.0, -1.0, 0.0)) -> np.ndarray:
    """Evidence around one impact per device.

    Parameters
    ----------
    accel : array_like, shape (devices, 3, samples)
        Accelerometer in g.
    sampling_rate : float
        Samples per second (Hz).
    impact_index : array_like of int, shape (devices,)
        Sample of the impact in each device's window; samples outside the window are taken
        from its edge (a device that just started).
    upright_axis : tuple of 3 floats
        Accelerometer reading (unit vector) when the wearer stands upright.

    Returns
    -------
    numpy.ndarray, shape (devices, len(FEATURE_NAMES))

    Examples
    --------
    >>> a = np.zeros((1, 3, 400)); a[0, 1] = -1.0
    >>> fall_features(a, 50, np.array([300])).shape
    (1, 22)
    """
    rate = check_sampling_rate(sampling_rate)
    a = as_device_channels(accel, "accel", channels=3)
    idx = np.asarray(impact_index, dtype=np.intp).reshape(-1)
    if idx.size != a.shape[0]:
        raise InvalidSignalError(f"impact_index needs one index per device ({a.shape[0]}), got {idx.size}")
    if a.shape[0] == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    return _features_at(a, np.arange(a.shape[0]), idx, rate, upright_axis)


# every evidence segment lies within this span around the impact (s)
_SPAN_S = (-6.0, 1.5)
# Candidates per pass: a pass's temporaries stay in cache instead of being paged in.
DEVICE_CHUNK = 256


def _features_at(a: np.ndarray, devices: np.ndarray, idx: np.ndarray, rate: float,
                 upright_axis: tuple[float, float, float]) -> np.ndarray:
    """:func:`fall_features` of ``a[devices]`` around ``idx``, one chunk of devices at a time."""
    out = np.empty((devices.size, len(FEATURE_NAMES)))
    for first in range(0, devices.size, DEVICE_CHUNK):
        part = slice(first, first + DEVICE_CHUNK)
        out[part] = _span_features(a, devices[part], idx[part], rate, upright_axis)
    return out


def _span_features(a: np.ndarray, devices: np.ndarray, idx: np.ndarray, rate: float,
                   upright_axis: tuple[float, float, float]) -> np.ndarray:
    """The features of ``a[devices]``, reading only the span around each impact."""
    up = np.asarray(upright_axis, dtype=float)
    up = up / np.linalg.norm(up)
    n = a.shape[-1]
    first, stop = int(round(_SPAN_S[0] * rate)), int(round(_SPAN_S[1] * rate))
    cols = np.clip(idx[:, None] + np.arange(first, stop)[None, :], 0, n - 1)
    span = a[devices[:, None, None], np.arange(3)[None, :, None], cols[:, None, :]]

    def seg(start_s: float, stop_s: float) -> np.ndarray:
        return np.ascontiguousarray(span[..., int(round(start_s * rate)) - first:int(round(stop_s * rate)) - first])

    # the magnitude of the whole span once; every segment's magnitude is a slice of it
    magnitude = np.sqrt((span ** 2).sum(axis=1))

    def mag_seg(start_s: float, stop_s: float) -> np.ndarray:
        return magnitude[:, int(round(start_s * rate)) - first:int(round(stop_s * rate)) - first]

    pre_vec = seg(-2.0, -1.0).mean(axis=-1)
    post_vec = seg(0.5, 1.5).mean(axis=-1)
    gravity = pre_vec / np.maximum(np.linalg.norm(pre_vec, axis=-1, keepdims=True), 1e-9)
    along = np.einsum("dc,dcs->ds", gravity, seg(-1.5, 0.02)) - 1.0
    velocity = np.cumsum(along, axis=-1) / rate * 9.81
    drop = np.cumsum(velocity, axis=-1) / rate
    free_fall = mag_seg(-1.0, 0.02)
    cos = (pre_vec * post_vec).sum(-1) / np.maximum(
        np.linalg.norm(pre_vec, axis=-1) * np.linalg.norm(post_vec, axis=-1), 1e-9)
    around = mag_seg(-0.5, 0.5)
    rise = mag_seg(-0.2, 0.1)
    early_vec = seg(-4.0, -3.0).mean(axis=-1)
    # trunk swing: smoothed vector (0.2 s, centred; the span's edge is reflected) against pre-impact gravity
    swing = uniform_filter1d(seg(-1.5, 1.5), max(1, int(round(0.2 * rate))), axis=-1)[..., int(round(0.5 * rate)):]
    swing_cos = np.einsum("dc,dcs->ds", gravity, swing) / np.maximum(np.linalg.norm(swing, axis=1), 1e-9)
    # vertical speed along a causal 1 s mean of the acceleration (gravity as it was just before each sample)
    g_win = max(1, int(round(rate)))
    recent = seg(-2.0, 0.02)
    lowpass = uniform_filter1d(recent, g_win, axis=-1, origin=(g_win - 1) // 2)[..., g_win:]
    unit = lowpass / np.maximum(np.linalg.norm(lowpass, axis=1, keepdims=True), 1e-9)
    descent = np.cumsum((recent[..., g_win:] * unit).sum(axis=1) - 1.0, axis=-1) / rate * 9.81
    above = mag_seg(-3.0, -0.2) > 2.0
    per_second = int(round(rate))
    before = seg(-6.0, -1.0)[..., :5 * per_second].reshape(len(idx), 3, 5, per_second).mean(axis=-1)
    lying_before = _tilt(np.moveaxis(before, 1, 2), up).min(axis=-1)
    return np.column_stack([
        -velocity.min(axis=-1),
        -drop.min(axis=-1),
        mag_seg(-3.0, -1.0).std(axis=-1),
        mag_seg(0.0, 0.02)[:, 0],
        free_fall.min(axis=-1),
        np.clip(1.0 - free_fall, 0.0, None).sum(axis=-1) / rate,
        np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))),
        mag_seg(0.5, 1.5).std(axis=-1),
        np.abs(around - 1.0).sum(axis=-1) / rate,
        np.diff(rise, axis=-1).max(axis=-1) * rate,
        _tilt(post_vec, up),
        _tilt(pre_vec, up),
        mag_seg(0.5, 1.5).mean(axis=-1),
        mag_seg(0.0, 0.5).min(axis=-1),
        (above[:, 1:] & ~above[:, :-1]).sum(axis=-1),
        mag_seg(-6.0, -1.0).std(axis=-1),
        np.degrees(np.arccos(np.clip((early_vec * post_vec).sum(-1) / np.maximum(
            np.linalg.norm(early_vec, axis=-1) * np.linalg.norm(post_vec, axis=-1), 1e-9), -1.0, 1.0))),
        np.degrees(np.arccos(np.clip(swing_cos, -1.0, 1.0))).max(axis=-1),
        -descent.min(axis=-1),
        mag_seg(0.2, 0.7).std(axis=-1),
        mag_seg(-1.0, -0.1).std(axis=-1),
        lying_before,
    ])


def find_impact(accel: np.ndarray, sampling_rate: float, *, new_samples: int | None = None,
                config: FallConfig | None = None) -> np.ndarray:
    """Index of the newly decidable impact candidate per device, -1 if none.

    Parameters
    ----------
    accel : array_like, shape (devices, 3, samples)
        Accelerometer window in g.
    sampling_rate : float
        Samples per second (Hz).
    new_samples : int, optional
        Samples added since the previous call for these devices (the hop). Only impacts that
        became decidable within them are returned, so overlapping windows never report the
        same impact twice. ``None`` considers the whole window.
    config : FallConfig, optional

    Returns
    -------
    numpy.ndarray of int, shape (devices,)

    Examples
    --------
    >>> a = np.zeros((1, 3, 400)); a[0, 1] = -1.0; a[0, 1, 200] = -4.0
    >>> int(find_impact(a, 50)[0])
    200
    """
    rate = check_sampling_rate(sampling_rate)
    cfg = config or FallConfig()
    a = as_device_channels(accel, "accel", channels=3)
    if a.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    n = a.shape[-1]
    hi = n - int(round(cfg.post_impact_s * rate))
    lo = 0 if new_samples is None else max(0, hi - int(new_samples))
    if hi <= lo:
        return np.full(a.shape[0], -1, dtype=np.intp)
    half = max(1, int(round(cfg.min_separation_s * rate / 2)))
    # a local maximum in lo..hi is decided by the samples within `half` of that range
    first, stop = max(0, lo - half), min(n, hi + half)
    svm = acceleration_magnitude(np.ascontiguousarray(a[..., first:stop]))
    local_max = maximum_filter1d(svm, size=2 * half + 1, axis=-1, mode="nearest")
    svm, local_max = svm[:, lo - first:hi - first], local_max[:, lo - first:hi - first]
    zone = np.where((svm >= cfg.impact_g) & (svm >= local_max), svm, -np.inf)
    best = np.argmax(zone, axis=-1)
    found = np.isfinite(zone[np.arange(a.shape[0]), best])
    return np.where(found, best + lo, -1).astype(np.intp)


def fall_probability(features: np.ndarray, model: FallModel, *, trees: int | None = None) -> np.ndarray:
    """Probability of a fall for feature rows (n, len(FEATURE_NAMES)) under ``model``;
    ``trees`` uses only the first that many boosting rounds (a smaller model of the same fit).

    Examples
    --------
    >>> rows = np.zeros((2, len(FEATURE_NAMES)))
    >>> fall_probability(rows, fall_model_default()).shape
    (2,)
    """
    x = np.asarray(features, dtype=float)
    if x.ndim == 2 and x.shape[1] == len(FEATURE_NAMES) and model.feature_names != FEATURE_NAMES:
        # a model fitted on a subset of the features reads its own columns of a full row
        unknown = [n for n in model.feature_names if n not in FEATURE_NAMES]
        if unknown:
            raise InvalidSignalError(f"model uses features {unknown} that fall_features does not measure")
        x = x[:, [FEATURE_NAMES.index(n) for n in model.feature_names]]
    if x.ndim != 2 or x.shape[1] != len(model.feature_names):
        raise InvalidSignalError(f"features must be (n, {len(model.feature_names)}), got {x.shape}")
    if x.shape[0] == 0:
        return np.zeros(0)
    used = model.leaves.shape[0] if trees is None else int(np.clip(trees, 1, model.leaves.shape[0]))
    trees = np.arange(used)[None, :]
    depth = int(np.log2(model.leaves.shape[1]))
    leaf = np.zeros((x.shape[0], trees.size), dtype=np.intp)   # position within the level
    for level in range(depth):
        k = (1 << level) - 1 + leaf
        go_right = np.take_along_axis(x, model.features[trees, k], axis=1) > model.thresholds[trees, k]
        leaf = 2 * leaf + go_right
    logit = model.base_score + model.leaves[trees, leaf].sum(axis=1)
    return 1.0 / (1.0 + np.exp(-logit))


def already_lying(features: np.ndarray, config: FallConfig) -> np.ndarray:
    """Rows (n, len(FEATURE_NAMES)) whose wearer was already lying before the impact: the trunk
    more than ``config.lying_before_deg`` from upright in every second from 6 s to 1 s before it.
    A fall starts upright or sitting, so such an impact (rolling over, turning on a bunk) is no
    fall, whatever the classifier says; man-down still watches a wearer who lies still.
    ``lying_before_deg=None`` turns the rule off. NaN rows (no candidate) are not lying.

    Examples
    --------
    >>> row = np.zeros((1, len(FEATURE_NAMES))); row[0, -1] = 85.0
    >>> bool(already_lying(row, FallConfig())[0])
    True
    """
    x = np.asarray(features, dtype=float)
    if config.lying_before_deg is None:
        return np.zeros(x.shape[0], bool)
    return np.nan_to_num(x[:, FEATURE_NAMES.index("lying_before_deg")], nan=-1.0) >= config.lying_before_deg


def fall_model_default() -> FallModel:
    """The shipped classifier (see :func:`models.thresholds.fall_model`)."""
    return fall_model()


def detect_fall(
    accel: np.ndarray,
    sampling_rate: float,
    *,
    new_samples: int | None = None,
    placement: str = "waist",
    method: str = "boosted_trees",
    model: FallModel | None = None,
    config: FallConfig | None = None,
) -> FallDecision:
    """Decide, per device, whether a fall is suspected in the newly decidable part of a window.

    Parameters
    ----------
    accel : array_like, shape (devices, 3, samples)
        Accelerometer window in g (8 s at 50 Hz from the backend; at least
        ``pre_impact_s + post_impact_s`` is advisable).
    sampling_rate : float
        Samples per second (Hz).
    new_samples : int, optional
        Samples added since the previous call (the hop); see :func:`find_impact`.
    placement : {"wrist", "upper_arm", "chest", "waist"}
    method : {"boosted_trees", "threshold"}
        Learned classifier (default) or the fixed rule :data:`THRESHOLD_RULE`.
    model : BoostedTrees, optional
        Overrides the shipped classifier (used for leave-one-subject-out evaluation).
    config : FallConfig, optional
        Overrides the placement's configuration.

    Returns
    -------
    FallDecision

    Raises
    ------
    ValueError
        Unknown ``method`` or ``placement`` (listing the valid ones) or a badly shaped window.

    Examples
    --------
    >>> a = np.zeros((1, 3, 400)); a[0, 1] = -1.0
    >>> bool(detect_fall(a, sampling_rate=50).suspected[0])
    False
    """
    check_option("method", method, FALL_METHODS)
    rate = check_sampling_rate(sampling_rate)
    limits = thresholds_for(placement)
    cfg = config or limits.fall
    a = as_device_channels(accel, "accel", channels=3)
    devices = a.shape[0]
    idx = find_impact(a, rate, new_samples=new_samples, config=cfg)
    has = idx >= 0
    feats = np.full((devices, len(FEATURE_NAMES)), np.nan)
    prob = np.full(devices, np.nan)
    fired: list[tuple[str, ...]] = [() for _ in range(devices)]
    if has.any():
        feats[has] = _features_at(a, np.flatnonzero(has), idx[has], rate, limits.activity.upright_axis)
        if method == "boosted_trees":
            prob[has] = fall_probability(feats[has], model or fall_model())
        else:
            ok = np.ones(int(has.sum()), bool)
            for name, side, value in THRESHOLD_RULE:
                col = feats[has, FEATURE_NAMES.index(name)]
                ok &= col >= value if side == ">=" else col <= value
            prob[has] = ok.astype(float)
    threshold = cfg.probability if method == "boosted_trees" else 0.5
    suspected = has & (np.nan_to_num(prob, nan=0.0) >= threshold) & ~already_lying(feats, cfg)
    for d in np.flatnonzero(suspected):
        fired[d] = tuple(f"{name}={feats[d, k]:.3g}" for k, name in enumerate(FEATURE_NAMES)) + (
            f"p={prob[d]:.3f}>={threshold}",)
    since = np.where(has, (a.shape[-1] - 1 - idx) / rate, np.nan)
    return FallDecision(suspected, prob, idx, since, feats, FEATURE_NAMES, tuple(fired), threshold, method)


def fit_fall_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_trees: int = 300,
    depth: int = 3,
    learning_rate: float = 0.05,
    n_bins: int = 32,
    l2: float = 1.0,
    min_hessian: float = 3.0,
    feature_names: tuple[str, ...] = CLASSIFIER_FEATURES,
) -> BoostedTrees:
    """Fit boosted depth-limited trees (logistic loss) to candidate features; deterministic.

    Each node picks its own split (unlike oblivious trees, where a level shares one), on
    quantile bins; a split must leave ``min_hessian`` of weight on each side.

    Parameters
    ----------
    features : array_like, shape (n, n_features)
    labels : array_like of {0, 1}, shape (n,)
    n_trees, depth, learning_rate, n_bins, l2, min_hessian
        Boosting rounds, levels per tree, shrinkage, quantile bins per feature, leaf ridge,
        least hessian (p(1-p) summed) on each side of a split.
    feature_names : tuple of str

    Returns
    -------
    BoostedTrees

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2)); y = (x[:, 0] > 0).astype(float)
    >>> m = fit_fall_classifier(x, y, n_trees=20, depth=2, feature_names=("a", "b"))
    >>> bool((fall_probability(x, m) > 0.5).mean() > 0.4)
    True
    """
    x = np.asarray(features, dtype=float)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size or x.shape[1] != len(feature_names):
        raise InvalidSignalError(f"features {x.shape} must be (n, {len(feature_names)}) with one label per row")
    if x.shape[0] == 0 or y.min() == y.max():
        raise InvalidSignalError("fitting needs rows of both classes")
    n, nf = x.shape
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = np.full((nf, n_bins - 1), np.inf)
    for f in range(nf):
        e = np.unique(np.quantile(x[:, f], qs))
        edges[f, : e.size] = e
    xb = np.stack([np.searchsorted(edges[f], x[:, f], side="left") for f in range(nf)], axis=1)
    prior = np.clip(y.mean(), 1e-6, 1 - 1e-6)
    base = float(np.log(prior / (1 - prior)))
    pred = np.full(n, base)
    inner = 2 ** depth - 1
    feats = np.zeros((n_trees, inner), dtype=np.intp)
    thresholds = np.full((n_trees, inner), BoostedTrees.NO_SPLIT)
    leaves = np.zeros((n_trees, 2 ** depth))
    rows = np.arange(n)
    feature_offset = np.arange(nf)[None, :]
    no_edge = ~np.isfinite(edges)[:, None, :]   # (features, 1, bins - 1)
    for t in range(n_trees):
        p = 1.0 / (1.0 + np.exp(-pred))
        g, h = p - y, p * (1 - p)
        node = np.zeros(n, dtype=np.intp)   # position within the level
        for level in range(depth):
            nodes = 2 ** level
            # gradient and hessian histograms of every (feature, node, bin) in one pass each
            key = ((feature_offset * nodes + node[:, None]) * n_bins + xb).ravel()
            size = nf * nodes * n_bins
            gs = np.bincount(key, np.repeat(g, nf), size).reshape(nf, nodes, n_bins)
            hs = np.bincount(key, np.repeat(h, nf), size).reshape(nf, nodes, n_bins)
            gl, hl = np.cumsum(gs, axis=2)[..., :-1], np.cumsum(hs, axis=2)[..., :-1]
            gt, ht = gs.sum(axis=2, keepdims=True), hs.sum(axis=2, keepdims=True)
            gain = gl ** 2 / (hl + l2) + (gt - gl) ** 2 / (ht - hl + l2) - gt ** 2 / (ht + l2)
            gain[np.broadcast_to(no_edge, gain.shape)] = -np.inf
            gain[(hl < min_hessian) | (ht - hl < min_hessian)] = -np.inf
            bin_of = np.argmax(gain, axis=2)                       # (features, nodes)
            gain_of = np.take_along_axis(gain, bin_of[..., None], axis=2)[..., 0]
            best_f = np.argmax(gain_of, axis=0)                    # first feature on ties
            best_gain = gain_of[best_f, np.arange(nodes)]
            best_b = np.where(best_gain > 0, bin_of[best_f, np.arange(nodes)], -1)
            best_f = np.where(best_gain > 0, best_f, 0)
            first = nodes - 1
            split = best_b >= 0
            feats[t, first:first + nodes] = best_f
            thresholds[t, first:first + nodes] = np.where(split, edges[best_f, np.maximum(best_b, 0)], BoostedTrees.NO_SPLIT)
            k = first + node
            node = 2 * node + (x[rows, feats[t, k]] > thresholds[t, k])
        gsum = np.bincount(node, g, 2 ** depth)
        hsum = np.bincount(node, h, 2 ** depth)
        leaves[t] = -learning_rate * gsum / (hsum + l2)
        pred = pred + leaves[t][node]
    return BoostedTrees(tuple(feature_names), feats, thresholds, leaves, base, learning_rate)
