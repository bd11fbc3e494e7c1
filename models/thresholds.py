"""The one versioned configuration of every model threshold, per device placement.

Alerts carry :data:`THRESHOLDS_VERSION` so that a supervisor (or an auditor) can tell which
set of thresholds produced them. Values are plain frozen dataclasses, never raw dicts.
Placements: ``wrist``, ``upper_arm``, ``chest``, ``waist``. The product is worn at the waist
(:data:`PRODUCT_PLACEMENT`, hardware/README.md "Where it is worn"). Only ``waist`` (SisFall: falls
and posture) and ``wrist`` (IEEE SPC 2015: heart rate only) have been checked against recorded
data; the other placements reuse the closest values and say so in ``validated`` (and
``FallConfig.validated``).

On what data each figure holds (issue 18; `vigil eval hr` / `vigil eval falls` print them):
falls and posture: waist, SisFall's belt-worn ADXL345 (18 subjects, 12 young with falls, 6 older
without), resampled to 50 Hz; nothing was measured on the chest, upper arm or wrist. Heart rate:
wrist, the 12 IEEE SPC 2015 running recordings at 50 Hz; nothing was measured on the upper arm.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from models.exceptions import check_option

# v2: fall classifier refitted with the last-excursion impact reference
# v3: settings chosen by nested leave-one-subject-out (issue 18): fall classifier depth 3, 150 rounds at
#     learning rate 0.1, threshold 0.88; heart-rate quality is the tracker's confidence, threshold 0.66
THRESHOLDS_VERSION = "2025.1-models-v4"
PLACEMENTS = ("wrist", "upper_arm", "chest", "waist")
# where the product is worn: on the trunk at the waist, as SisFall's device (the fall figures hold there)
PRODUCT_PLACEMENT = "waist"


@dataclass(frozen=True)
class HeartRateConfig:
    """Spectral tracker of heart rate under motion (see :mod:`models.heart_rate`)."""

    min_bpm: float = 40.0
    max_bpm: float = 220.0
    grid_step_bpm: float = 0.5
    band_hz: tuple[float, float] = (0.4, 4.0)
    # accelerometer amplitude below which a spectrum is treated as "no motion" (g)
    accel_floor_g: float = 0.05
    # how much an accelerometer peak attenuates the PPG spectrum at the same frequency
    motion_attenuation: float = 5.0
    # above this normalised motion level the PPG bin is treated as unknown, not as absent
    motion_mask_level: float = 0.5
    motion_mask_gain: float = 2.0
    unknown_likelihood: float = 0.3
    motion_widen_bpm: float = 2.0
    motion_history_windows: int = 1
    # Gaussian random walk of heart rate between 2 s hops (BPM)
    transition_sd_bpm: float = 5.0
    recovery_weight: float = 0.01
    # extra prior mass after an unsure hop, times (1 - confidence)^2: how fast a lost lock is let go
    relock_weight: float = 0.05
    likelihood_floor: float = 0.01
    prior_mean_bpm: float = 90.0
    prior_sd_bpm: float = 30.0
    # the tracked value snaps to the raw PPG peak within this distance (motion masks blur it)
    snap_bpm: float = 3.0
    # quality (the tracker's posterior mass within quality_halfwidth_bpm of its value) below which
    # the estimate is withheld. This and the four settings searched by `vigil eval hr` (history
    # windows, transition_sd_bpm, snap_bpm, relock_weight) are what its selection chose on all
    # 12 SPC 2015 recordings; the figures for unseen people are the nested ones it prints.
    min_quality: float = 0.66
    quality_halfwidth_bpm: float = 6.0


@dataclass(frozen=True)
class SkinContactConfig:
    """Raw PPG (uint24 counts) plausibility: DC inside the range and a pulsatile component."""

    min_dc_counts: float = 20_000.0
    max_dc_counts: float = 16_000_000.0  # saturation of a 24-bit ADC is 16_777_215
    min_perfusion_index: float = 0.0005   # AC (std) / DC
    max_perfusion_index: float = 0.2


@dataclass(frozen=True)
class ActivityConfig:
    """Still / walking / running from accelerometer magnitude; posture from gravity."""

    still_energy_g: float = 0.03      # RMS of |a| - mean |a| (g); typing at a desk stays below
    running_energy_g: float = 0.45
    running_cadence_spm: float = 140.0
    min_cadence_spm: float = 60.0
    max_cadence_spm: float = 220.0
    # expected accelerometer reading (unit vector, device frame) when the wearer stands upright
    upright_axis: tuple[float, float, float] = (0.0, -1.0, 0.0)
    lying_tilt_deg: float = 60.0
    posture_reliable: bool = True


@dataclass(frozen=True)
class FallConfig:
    """Impact candidates and the evidence window around them (see :mod:`models.fall`)."""

    impact_g: float = 1.6
    pre_impact_s: float = 3.0
    post_impact_s: float = 1.5
    min_separation_s: float = 1.0
    # classifier probability above which a fall is suspected: chosen with the classifier's settings by
    # `vigil eval falls` on all SisFall subjects (leave-one-subject-out; cost: the largest share used of
    # the three target budgets, missed falls 1 %, flagged activities 0.5 %, 0.5 false suspicions per hour)
    probability: float = 0.81
    # an impact after the trunk lay this far from upright (deg) in every second from 6 s to 1 s before
    # it is no fall (the wearer was already lying: models.fall.already_lying); None: rule off. Chosen
    # with the classifier's settings by `vigil eval falls` (inner leave-one-subject-out)
    lying_before_deg: float | None = 70.0
    validated: bool = True


@dataclass(frozen=True)
class ManDownConfig:
    """PASS-like timings (NFPA 1970): pre-alert after 20 s without motion, alarm at 30 s."""

    pre_alert_s: float = 20.0
    alarm_s: float = 30.0
    # a suspected fall keeps man-down armed until the wearer has moved for this long
    fall_disarm_motion_s: float = 10.0


@dataclass(frozen=True)
class StrainConfig:
    """Physiological strain: heart rate high for the activity and the personal baseline."""

    # allowed rise above the resting baseline, per activity (BPM)
    margin_still_bpm: float = 40.0
    margin_walking_bpm: float = 60.0
    margin_running_bpm: float = 100.0
    sustain_s: float = 60.0
    # resting baseline learned online from still, good-quality windows
    baseline_halflife_s: float = 600.0
    baseline_min_s: float = 60.0
    default_baseline_bpm: float = 70.0
    extreme_low_bpm: float = 40.0
    extreme_high_bpm: float = 200.0
    extreme_sustain_s: float = 10.0
    min_quality: float = 0.4


@dataclass(frozen=True)
class PlacementThresholds:
    placement: str
    heart_rate: HeartRateConfig = field(default_factory=HeartRateConfig)
    skin_contact: SkinContactConfig = field(default_factory=SkinContactConfig)
    activity: ActivityConfig = field(default_factory=ActivityConfig)
    fall: FallConfig = field(default_factory=FallConfig)
    man_down: ManDownConfig = field(default_factory=ManDownConfig)
    strain: StrainConfig = field(default_factory=StrainConfig)
    validated: tuple[str, ...] = ()
    version: str = THRESHOLDS_VERSION


_THRESHOLDS = {
    # waist: SisFall mounting (y axis points down the trunk); falls validated there
    "waist": PlacementThresholds("waist", validated=("fall", "posture")),
    # chest: trunk-mounted like the waist, same axis convention assumed; nothing measured there
    "chest": PlacementThresholds("chest", fall=FallConfig(validated=False), validated=()),
    # upper arm: hangs along the trunk when standing; posture is only a rough cue
    "upper_arm": PlacementThresholds(
        "upper_arm",
        activity=ActivityConfig(lying_tilt_deg=70.0),
        fall=FallConfig(validated=False),
        validated=(),
    ),
    # wrist: the arm moves freely, so gravity says little about posture; man-down there
    # relies on a suspected fall or sustained stillness, and the fall model is not validated
    "wrist": PlacementThresholds(
        "wrist",
        activity=ActivityConfig(posture_reliable=False, still_energy_g=0.04),
        fall=FallConfig(impact_g=2.0, validated=False),
        validated=("heart_rate",),
    ),
}


def thresholds_for(placement: str) -> PlacementThresholds:
    """Return the thresholds of one placement.

    Parameters
    ----------
    placement : str
        One of ``wrist``, ``upper_arm``, ``chest``, ``waist``.

    Returns
    -------
    PlacementThresholds

    Raises
    ------
    ValueError
        If ``placement`` is unknown; the message lists the valid ones.

    Examples
    --------
    >>> thresholds_for("waist").man_down.alarm_s
    30.0
    """
    return _THRESHOLDS[check_option("placement", placement, PLACEMENTS)]


@dataclass(frozen=True)
class BoostedTrees:
    """Boosted depth-limited binary trees, each stored complete (node k splits into 2k+1, 2k+2):
    a small, pure-numpy classifier. A node that does not split has threshold ``NO_SPLIT``."""

    feature_names: tuple[str, ...]
    features: np.ndarray      # (trees, 2**depth - 1) int, breadth-first
    thresholds: np.ndarray    # (trees, 2**depth - 1) float; go right when feature > threshold
    leaves: np.ndarray        # (trees, 2**depth) float, log-odds
    base_score: float
    learning_rate: float

    NO_SPLIT = float(np.finfo(float).max)

    def to_dict(self) -> dict:
        return {
            "kind": "boosted_trees",
            "feature_names": list(self.feature_names),
            "features": self.features.tolist(),
            "thresholds": self.thresholds.tolist(),
            "leaves": self.leaves.tolist(),
            "base_score": self.base_score,
            "learning_rate": self.learning_rate,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "BoostedTrees":
        trees = len(data["leaves"])
        return cls(
            feature_names=tuple(data["feature_names"]),
            features=np.asarray(data["features"], dtype=np.intp).reshape(trees, -1),
            thresholds=np.asarray(data["thresholds"], dtype=float).reshape(trees, -1),
            leaves=np.asarray(data["leaves"], dtype=float).reshape(trees, -1),
            base_score=float(data["base_score"]),
            learning_rate=float(data["learning_rate"]),
        )


FallModel = BoostedTrees


@lru_cache(maxsize=1)
def fall_model() -> FallModel:
    """The shipped fall classifier, fitted on all of SisFall (waist) by ``vigil eval falls --export-model``
    with the settings its nested selection chose on all subjects.

    Its figures on unseen people come from the outer folds of the same command.
    """
    text = resources.files("models").joinpath("fall_model.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("kind") != "boosted_trees":
        raise ValueError(f"fall_model.json holds a {data.get('kind')!r} model; valid: 'boosted_trees'")
    return BoostedTrees.from_dict(data)
