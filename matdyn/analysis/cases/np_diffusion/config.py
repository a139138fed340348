"""Settings of the NP-diffusion case (paper §3.3): Config, the paper's numbers, names."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matdyn.analysis.case import at_least, one_of, positive_ints
from matdyn.errors import ConfigError

CASE = "np_diffusion"
MODE_NAMES = ("directed", "free", "confined")  # region_map values 0, 1, 2 of the stand-in
DIRECTED, FREE, CONFINED = 0, 1, 2
_METHODS = ("average", "trimmed", "ward")
_FEATURES = (
    "anisotropy",
    "tortuosity",
    "diffusion_area",
    "rms_displacement",
    "area",
    "ellipse_area",
    "major_sigma",
    "minor_sigma",
)

_PARTICLE_FEATURES = ("log_msd", "msd", "log_anisotropy_ratio", "drift_fraction", "anisotropy",
                      "alpha2", "log_rg", "msd_exponent")


#: the paper's numbers for the report table (§3.3.1, §3.3.2)
PAPER: dict[str, Any] = {
    "particle_area_w1": 0.068,  # §3.3.1, observed vs generated NP areas
    "n_fidelity": 1000,  # §3.3.1, generated samples
    "gamma": 1.0,  # §3.3.1
    "gamma_time_s": 1.0,  # §3.3.1: γ = 1 ≈ NP motion over ~1 s
    "entropy_threshold": 0.2,  # §3.3.2
    "entropy_upper_bound_consecutive": 0.26,  # §3.3.1
    "n_refs": 200,  # §3.3.2
    "n_samples": 500,  # §3.3.2
    "diffusion_area_nm2": {"mean": 7712.0, "std": 2862.0},  # §3.3.2, Fig. 6b
    "xpcs_diffusion_nm2_per_s": {"mean": 7550.0, "std": 850.0},  # §3.3.2
    "n_modes": 3,  # §3.3.2, Fig. 6c
    "linkage": "average",  # §3.3.2
}


@dataclass
class Config:
    """Every count and threshold of the NP case; CPU-sized counts, paper values in comments."""

    n_refs: int = 60  # paper: 200 reference states (§3.3.2)
    n_samples: int = 100  # paper: 500 perturbed images per reference (§3.3.2)
    n_fidelity: int = 200  # paper: 1000 generated frames vs the observed ones (§3.3.1)
    # filter: |H(x) - H(x_ref)| <= threshold; a number (paper 0.2, §3.3.2, on the paper's
    # entropy scale) or "auto" = `entropy_bound` of consecutive observed frames (paper's rule)
    entropy_threshold: float | str = "auto"
    entropy_bound: str = "max"  # "max" (paper: upper bound 0.26, §3.3.1) or "p95"
    entropy_bins: int = 256  # grey levels of the image entropy (ours, FINDINGS.md)
    baseline_frames: int = 500  # consecutive observed frames for the baseline (paper: all 2000)
    baseline_stride: int = 1  # frame step of the consecutive-frame baseline
    include_reference: bool = True  # G(z_i) belongs to its variation V_i (Eq. 3)
    min_kept: int = 5  # references with fewer kept samples are left out (ours)
    gamma_time_s: float = 1.0  # time the run's γ stands for (paper: γ = 1 ≈ 1 s, §3.3.1)
    # trace extraction (FINDINGS.md: σ 1, top-hat 6, threshold 0.3-0.4 of the depth, 6 px)
    trace_sigma: float = 1.0
    tophat_radius: int = 6
    trace_threshold: float = 0.35
    min_area: int = 6
    moment_window: float = 3.5  # Mahalanobis radius of the moment window (diffusion area)
    path_sigma: float = 1.0  # smoothing of the skeleton path for tortuosity
    depth_frames: int = 64  # observed frames used to measure the particle depth
    # fidelity
    area_normalize: str | None = "range"  # W1 of areas: "range" | "std" | None (nm²)
    baseline_repeats: int = 3  # random halvings for the real-vs-real baselines
    swd_patches: int = 2048  # per pyramid level (PGGAN: 16384 on 2^13 images)
    swd_directions: int = 128
    swd_repeats: int = 2
    noise_corr_ratio: float = 0.5  # generated lag-1 autocorrelation below this × observed: noise
    # descriptors: "particles" (particle-level MC displacements, issue 12), "traces" (the
    # paper's averaged-image traces, §3.3.2) or "both" side by side
    descriptors: str = "particles"
    # MC MSD at these γ too (each one more engine run, the run's γ is always measured):
    # MSD(Δt) through the γ → Δt calibration of consecutive observed frames (ours)
    msd_gammas: Sequence[float] = (0.5, 1.0, 2.0)
    msd_samples: int = 50  # samples per reference in the extra γ runs
    # γ → Δt calibration metric (ours, issue 12): "sq_diff" = mean squared difference after
    # Gaussian smoothing (frame noise adds exactly and the motion part grows ∝ MSD, see
    # matdyn.descriptors.differences.SquaredDifference) or "density_diff" (the L1 of paper
    # Fig. 7d; its straight-line noise intercept also removes motion, so Δt comes out long
    # and D low: 3× too long on Brownian test frames, 1.5× on the demo generator, whose
    # median per-particle free D went from 0.25× to 0.37× planted with sq_diff)
    calibration_metric: str = "sq_diff"
    # smoothing of sq_diff in px at the generator resolution; "auto": locate diameter / 4
    # (the particle's own profile survives, voxel-scale noise and texture do not)
    calibration_sigma: float | str = "auto"
    locate_diameter: int | None = None  # trackpy diameter (px, odd); None: estimated (observed frames)
    locate_minmass: float | None = None  # None: Otsu split of the located masses
    search_radius: float | None = None  # px to link a sample particle; None: diameter // 2 (as tracking)
    radius_check_factor: float | None = 2.0  # also link within this × the radius (MSD's radius sensitivity)
    # samples per reference followed along their latent rays (particles.ensemble.rays: MC MSD
    # without a link-radius cap, matdyn.dynamics.paths); 0: off
    ray_samples: int = 16
    # particles darker than the background (phase dips): True / False, or "auto" = from the
    # sign of the observed frames' pixel skewness (matdyn.dynamics.particle_polarity)
    dark_particles: bool | str = "auto"
    max_particles: int = 64  # per reference image (more are counted, left out)
    floor_samples: int = 32  # still-scene samples per reference: the locate-noise floor
    tracking_frames: int = 2000  # observed frames tracked for the baseline (trackpy; 0: off)
    # how far and how elongated each particle moves (issue 12, session 9): log MSD and the
    # log ratio of the principal variances of its displacement cloud above the localisation
    # noise (matdyn.dynamics.log_anisotropy_ratio), both at feature_gamma. On 9 quick NP
    # generators over 5 stand-in layouts, average-linkage ARI (k from the gap statistic)
    # 0.64-0.85 against 0-0.56 for log MSD alone at the run's γ (0.37-0.64 with k = 3);
    # with the bounded anisotropy (saturates near 1) instead, the gap statistic said k = 1 on all 9
    particle_features: Sequence[str] = ("log_msd", "log_anisotropy_ratio")
    # γ of the ladder (one of msd_gammas) whose clouds give log_msd / log_anisotropy_ratio
    # for the clustering; None: the run's γ. At the run's γ (0.13-0.38 on those generators)
    # slow particles hardly leave the localisation noise, at γ = 2 generators regenerate
    # particles instead of moving them (issue 12). ARI on the 9: γ = 1 0.64-0.85; γ = 2
    # higher on 5 but 0.53 and 0 (k = 1) on two; the run's γ 0.35-0.75
    feature_gamma: float | None = 1.0
    # clustering (§3.3.2: scaled distance, HAC average linkage, 3 modes); "auto": from the
    # data (cluster_count: silhouette or gap, matdyn.dynamics.modes), 1 when no structure
    n_modes: int | str = "auto"
    # gap statistic (Tibshirani et al. 2001): on one log-normal mode silhouette split log MSD
    # into 6 (1D silhouettes of contiguous splits exceed 0.5), gap said 1; demo: both 3
    cluster_count: str = "gap"
    min_silhouette: float = 0.5  # Kaufman & Rousseeuw 1990: <= 0.5 weak structure
    features: Sequence[str] = ("anisotropy", "tortuosity")  # the paper's two descriptors
    # features of the robust variants (trimmed, ward); empty: same as `features`. Tortuosity
    # is ~1 for nearly every trace here (FINDINGS.md); rms displacement separates the modes
    robust_features: Sequence[str] = ("anisotropy", "rms_displacement")
    scaling: str | None = "range"
    methods: Sequence[str] = ("average", "trimmed", "ward")  # paper first, robust variants
    trim_z: float = 2.0
    # execution
    batch_size: int = 64
    n_show: int = 6  # image pairs in the grid figures

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        self.robust_features = tuple(self.robust_features or ())
        self.methods = tuple(self.methods)
        self.msd_gammas = tuple(float(g) for g in (self.msd_gammas or ()))
        self.particle_features = tuple(self.particle_features)
        if isinstance(self.area_normalize, str) and self.area_normalize.lower() in ("none", "null"):
            self.area_normalize = None

    def validate(self) -> None:
        """One-line ConfigError naming the first bad field."""
        positive_ints(self, ("n_refs", "n_samples", "entropy_bins", "baseline_stride", "min_area",
                             "batch_size", "tophat_radius", "depth_frames", "swd_patches",
                             "swd_directions", "swd_repeats", "baseline_repeats", "n_show"))
        at_least(self, {"n_fidelity": 4, "baseline_frames": 2, "min_kept": 0,
                        "msd_samples": 2, "max_particles": 1, "floor_samples": 0,
                        "tracking_frames": 0, "ray_samples": 0})
        if self.n_modes != "auto":
            at_least(self, {"n_modes": 1})
        one_of(self, "descriptors", ("particles", "traces", "both"))
        one_of(self, "cluster_count", ("silhouette", "gap"))
        self._validate_particles()
        self._validate_threshold()
        self._validate_traces()
        one_of(self, "entropy_bound", ("max", "p95"))
        one_of(self, "area_normalize", (None, "range", "std"))
        one_of(self, "scaling", (None, "range", "iqr", "std"))
        bad = [f for f in (*self.features, *self.robust_features) if f not in _FEATURES]
        if not self.features or bad:
            raise ConfigError(f"analysis.features must be a non-empty subset of {_FEATURES}, "
                              f"got {list(self.features)}")
        if not self.methods or any(m not in _METHODS for m in self.methods):
            raise ConfigError(f"analysis.methods must be a non-empty subset of {_METHODS}, "
                              f"got {list(self.methods)}")

    def _validate_threshold(self) -> None:
        thr = self.entropy_threshold
        if isinstance(thr, str) and thr != "auto":
            try:
                thr = float(thr)
            except ValueError:
                raise ConfigError(
                    f"analysis.entropy_threshold must be a number or 'auto', got {thr!r}"
                ) from None
        if not isinstance(thr, str) and not (math.isfinite(float(thr)) and float(thr) >= 0):
            raise ConfigError(f"analysis.entropy_threshold must be >= 0 or 'auto', got {thr!r}")

    def _validate_traces(self) -> None:
        if not 0.0 < self.trace_threshold < 1.0:
            raise ConfigError("analysis.trace_threshold is a fraction of the particle depth in "
                              f"(0, 1), got {self.trace_threshold}")
        if self.trace_sigma < 0 or self.path_sigma < 0 or not self.moment_window > 0:
            raise ConfigError("analysis.trace_sigma and path_sigma must be >= 0, moment_window > 0")
        if not self.gamma_time_s > 0:
            raise ConfigError(f"analysis.gamma_time_s must be > 0, got {self.gamma_time_s}")
        if not 0.0 <= self.noise_corr_ratio < 1.0:
            raise ConfigError(
                f"analysis.noise_corr_ratio must be in [0, 1), got {self.noise_corr_ratio}")

    def _validate_particles(self) -> None:
        if self.dark_particles not in (True, False, "auto"):
            raise ConfigError(f"analysis.dark_particles must be true, false or auto, got "
                              f"{self.dark_particles!r}")
        if any(not (math.isfinite(g) and g > 0) for g in self.msd_gammas):
            raise ConfigError(f"analysis.msd_gammas must be numbers > 0, got {list(self.msd_gammas)}")
        raw = self.feature_gamma
        try:
            fg = None if raw is None else float(raw)
        except (TypeError, ValueError):
            fg = float("nan")
        uses = self.descriptors in ("particles", "both")  # traces alone never read it
        if uses and fg is not None and not any(abs(fg - g) <= 1e-9 for g in self.msd_gammas):
            raise ConfigError(f"analysis.feature_gamma must be one of analysis.msd_gammas "
                              f"{list(self.msd_gammas)}, got {raw!r}; add it there, or set "
                              "analysis.feature_gamma=null to cluster at the analysis γ")
        self.feature_gamma = fg
        bad = [f for f in self.particle_features if f not in _PARTICLE_FEATURES]
        if not self.particle_features or bad:
            raise ConfigError(f"analysis.particle_features must be a non-empty subset of "
                              f"{_PARTICLE_FEATURES}, got {list(self.particle_features)}")
        one_of(self, "calibration_metric", ("sq_diff", "density_diff"))
        sig = self.calibration_sigma
        if sig != "auto":
            try:
                ok = math.isfinite(float(sig)) and float(sig) >= 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"analysis.calibration_sigma must be a number >= 0 (px) or "
                                  f"'auto', got {sig!r}")
        f = self.radius_check_factor
        if f is not None and not (isinstance(f, (int, float)) and not isinstance(f, bool)
                                  and f > 1):
            raise ConfigError(f"analysis.radius_check_factor must be > 1 or null, got "
                              f"{self.radius_check_factor!r}")
        if self.search_radius is not None and not self.search_radius > 0:
            raise ConfigError(f"analysis.search_radius must be > 0 px or null, got "
                              f"{self.search_radius!r}")

    def calibration_sigma_px(self, diameter: int) -> float:
        """Smoothing of the sq_diff calibration metric in px: the configured value, or
        ``diameter / 4`` for "auto" (``diameter``: the trackpy locate diameter)."""
        if self.calibration_sigma == "auto":
            return float(diameter) / 4.0
        return float(self.calibration_sigma)

    def fixed_modes(self) -> int | None:
        """The fixed number of clusters, or None for "auto" (chosen from the data)."""
        return None if self.n_modes == "auto" else int(self.n_modes)

    def threshold_value(self) -> float | None:
        """The fixed entropy threshold, or None for 'auto'."""
        return None if self.entropy_threshold == "auto" else float(self.entropy_threshold)


