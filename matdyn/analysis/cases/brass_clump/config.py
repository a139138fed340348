"""Settings of the brass-clump case (paper §3.4): Config, channels and the paper's numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from matdyn.analysis.case import at_least, one_of, positive_ints
from matdyn.errors import ConfigError

CASE = "brass_clump"
CHANNELS = ("Cu", "Cu2S", "CuS")
#: paper numbers for the report table (§3.4)
PAPER = {
    "gamma": 0.5,
    "n_refs": 3000,
    "n_samples": 400,
    "intensity_w1": {"Cu": 0.010, "Cu2S": 0.017, "CuS": 0.006},
    "filters": {"mass_dev_max": 0.2, "iou_min": 0.5},
    "iou_at_gamma": 0.7,
    "groups": {
        "A": "Aging-0 (minimal sulfidation, high Cu)",
        "B": "3-14 days (Cu2S enrichment)",
        "C": "14-28 days (CuS enrichment)",
    },
}


@dataclass
class Config:
    """Settings of the brass-clump case (paper §3.4); counts are CPU-sized."""

    n_refs: int = 150  # reference clumps; paper: 3000 (§3.4.2)
    n_samples: int = 40  # perturbed clumps per reference; paper: 400 (§3.4.2)
    batch_size: int = 64  # volumes per generator call
    mass_dev_max: float = 0.2  # §3.4.2: compositional mass deviation ≤ 20 %
    iou_min: float = 0.5  # §3.4.2: IOU₃D ≥ 0.5 keeps the morphological identity
    mask_threshold: float = 0.5  # clump mask: total density above this (occupancy ~ partial volume)
    min_kept: int = 3  # variations with fewer retained samples get no descriptor
    n_groups: int = 3  # §3.4.2: groups A, B, C
    cluster_method: str = "ward"  # linkage for HAC ("average" is the paper's NP choice, §3.3.2)
    cluster_on: str = "mds"  # cluster the 2D MDS embedding ("mds") or the descriptors
    trim_z: float | None = None  # trimmed average linkage: set aside |z| > trim_z first
    scaling: str = "range"  # descriptor scaling before distances: range, iqr, std
    log_descriptors: bool = True  # log10 of the variances (they span decades; paper: not stated)
    k_neighbors: int = 5  # observed volumes that vote for a variation's aging stage
    max_observed: int | None = None  # observed volumes scanned for matching (None: all)
    n_fidelity: int = 256  # generated and observed volumes for fidelity
    swd_patches: int = 2048  # 7³ patches per pyramid level (SWD)
    max_w1_values: int = 400_000  # voxel values per channel and side in the W1
    max_volume_ratio: float = 5.0  # all-noise check: clump volume fraction vs observed
    mds_max_iter: int = 300
    n_render: int = 3  # Fig. 8d: samples per group, low to high sulfidised ratio

    def validate(self) -> None:
        """One-line ConfigError naming the first bad field."""
        positive_ints(self, ("n_refs", "n_samples", "batch_size", "min_kept", "k_neighbors",
                             "swd_patches", "max_w1_values", "mds_max_iter", "n_render"))
        at_least(self, {"n_fidelity": 4, "n_groups": 2})
        if not 0 < self.mass_dev_max or not math.isfinite(self.mass_dev_max):
            raise ConfigError(
                f"analysis.mass_dev_max must be a positive fraction, got {self.mass_dev_max}")
        if not 0 <= self.iou_min <= 1:
            raise ConfigError(f"analysis.iou_min must be in [0, 1], got {self.iou_min}")
        if not math.isfinite(self.mask_threshold):
            raise ConfigError(f"analysis.mask_threshold must be a number, got {self.mask_threshold}")
        one_of(self, "cluster_on", ("mds", "descriptors"))
        one_of(self, "scaling", ("range", "iqr", "std"))
        if self.max_volume_ratio <= 1:
            raise ConfigError(f"analysis.max_volume_ratio must be > 1, got {self.max_volume_ratio}")
        if self.max_observed is not None and self.max_observed < self.k_neighbors:
            raise ConfigError("analysis.max_observed must be at least analysis.k_neighbors")
        if self.trim_z is not None and not self.trim_z > 0:
            raise ConfigError(f"analysis.trim_z must be > 0 or null, got {self.trim_z}")
