"""Settings of the Ta-chart case (paper §3.2): Config and the paper's numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from matdyn.analysis.case import at_least, one_of, positive_ints
from matdyn.errors import ConfigError

CASE = "ta_chart"
#: §3.2, Fig. 4b: slit widths (mean ± std, nm)
PAPER = {
    "gamma": 1.0,
    "slit_widths_generated_nm": {"d1": [309.0, 11.0], "d2": [340.0, 12.0]},
    "slit_widths_observed_nm": {"d1": [311.0, 13.0], "d2": [324.0, 11.0]},
    "slit_widths_truth_nm": {"d1": 309.0, "d2": 324.0},
    "translation_step_nm": 340.0 * 0.007,
    "rotation_steps_deg": [1.0, 2.0],
    "pixel_size_nm": 20.72,
}


@dataclass
class Config:
    """Settings of the Ta-chart case (paper §3.2); counts are CPU-sized."""

    n_refs: int = 3  # references I_z; paper: one (§3.2, Fig. 4b)
    n_samples: int = 200  # perturbed images per reference; paper: not stated (Videos S1/S2)
    batch_size: int = 64  # images per generator call
    crop_frac: float = (
        0.6  # registration/IoU crop side / resolution (inside the support's incircle)
    )
    slit_region_frac: float = 0.68  # slit profiles stay within this diameter / resolution
    angle_range_deg: float = 10.0  # registration search ±; paper sequences step 1-2° (§3.2)
    angle_step_deg: float = 0.5
    anchor_angle_range_deg: float = 30.0  # reference vs observed: augmentation ±30° (§3.2)
    anchor_angle_step_deg: float = 1.0
    n_anchors: int = 8  # observed raw frames the references are matched against
    min_anchor_score: float = 0.3  # NCC below this: not a test-chart image
    min_match_score: float = 0.5  # filter: NCC of a sample vs its reference
    upsample_factor: int = (
        50  # sub-pixel registration, 1/50 px (0.6 nm at 128 px, below the 2.38 nm step)
    )
    refine_iters: int = 2
    band_width_px: int = 7  # profile lines averaged along each slit
    half_length_factor: float = 0.9  # profile half-length / expected slit width
    slit_polarity: str = "dark"  # slits are open (low phase) between Ta blocks
    d1_nm: float = 309.0  # §3.2: slit widths, used to find slits without store truth
    d2_nm: float = 324.0
    slit_search_tolerance_px: float = 3.0
    speed_nm_s: float = 340.0  # §3.2: translation speed (bound without store truth)
    frame_interval_s: float = 0.007  # §3.2: 7 ms per raw frame
    n_observed_pairs: int = 200  # consecutive raw frame pairs for Fig. 4a
    n_rotation_frames: int = 100  # raw frames whose rotated copies form rotation sequences
    n_slit_frames: int = 100  # observed raw frames measured for d1, d2
    n_fidelity: int = 256  # generated and observed frames for fidelity
    swd_patches: int = 2048  # patches per pyramid level (SWD)
    max_w1_values: int = 400_000  # pixel values per side in the phase-value W1
    binarize_sigma: float = 0.5  # Gaussian smoothing (px) before the Otsu threshold (IoU)
    strip_length: int = 7  # images per Fig. 3b/c strip
    sequence_subset_frac: float = 0.5  # per sequence, this fraction with the least other motion
    slit_tolerance_px: float = 2.0  # recovery: "within approximately two pixels" (§3.2)
    jump_gap_ratio: float = 3.0  # recovery: a sorted sequence has a jump above this gap ratio

    def validate(self) -> None:
        """One-line ConfigError naming the first bad field."""
        positive_ints(self, ("n_refs", "n_samples", "batch_size", "n_anchors",
                             "n_observed_pairs", "n_rotation_frames", "n_slit_frames",
                             "swd_patches", "max_w1_values", "upsample_factor", "band_width_px"))
        at_least(self, {"n_fidelity": 4, "strip_length": 2})
        self._validate_ranges()
        for name in ("angle_step_deg", "anchor_angle_step_deg", "half_length_factor", "d1_nm",
                     "d2_nm", "slit_search_tolerance_px", "speed_nm_s", "frame_interval_s",
                     "slit_tolerance_px", "jump_gap_ratio"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"analysis.{name} must be a positive number, got {v!r}")
        one_of(self, "slit_polarity", ("dark", "bright"))
        if self.binarize_sigma < 0 or self.refine_iters < 0:
            raise ConfigError("analysis.binarize_sigma and analysis.refine_iters must be >= 0")

    def _validate_ranges(self) -> None:
        for name, lo, hi, what in (
            ("crop_frac", 0.2, 1.0, "in [0.2, 1]"),
            ("slit_region_frac", 0.2, 1.0, "in [0.2, 1]"),
            ("angle_range_deg", 0.0, 90.0, "in [0, 90] degrees"),
            ("anchor_angle_range_deg", 0.0, 90.0, "in [0, 90] degrees"),
            ("min_anchor_score", -1.0, 1.0, "an NCC in [-1, 1]"),
            ("min_match_score", -1.0, 1.0, "an NCC in [-1, 1]"),
        ):
            if not lo <= getattr(self, name) <= hi:
                raise ConfigError(f"analysis.{name} must be {what}, got {getattr(self, name)}")
        if not 0 < self.sequence_subset_frac <= 1:
            raise ConfigError("analysis.sequence_subset_frac must be in (0, 1], got "
                              f"{self.sequence_subset_frac}")


def angle_grid(half_range: float, step: float) -> np.ndarray:
    """Angles -half_range..half_range (deg) in steps of ``step``; [0] when the range is 0."""
    n = int(round(half_range / step))
    return np.round(np.arange(-n, n + 1) * step, 6) if n > 0 else np.zeros(1)

