"""Particle dynamics in physical units: Monte Carlo displacement statistics of generator
variations, a tracking baseline on observed frames, the γ ↔ Δt calibration and the number
of motion modes (issue 12; paper §2.2, §3.3)."""

from __future__ import annotations

from matdyn.dynamics.calibration import (
    classify_exponent,
    default_lags,
    dt_for_gammas,
    gamma_for_lags,
    lag_differences,
    msd_curve,
)
from matdyn.dynamics.locate import Located, LocateParams, estimate_locate_params, locate_stack
from matdyn.dynamics.modes import ClusterChoice, choose_n_clusters
from matdyn.dynamics.tracking import (
    TrackingResult,
    assign_truth_modes,
    fit_diffusion,
    fit_directed,
    time_series_check,
    track_frames,
    tracking_baseline,
    tracking_msd,
)
from matdyn.dynamics.variation import (
    LinkResult,
    VariationDisplacements,
    cloud_stats,
    link_to_reference,
    noise_sigma,
    still_variation,
    variation_displacements,
    variations_table,
)

__all__ = [
    "ClusterChoice",
    "LinkResult",
    "LocateParams",
    "Located",
    "TrackingResult",
    "VariationDisplacements",
    "assign_truth_modes",
    "choose_n_clusters",
    "classify_exponent",
    "cloud_stats",
    "default_lags",
    "dt_for_gammas",
    "estimate_locate_params",
    "fit_diffusion",
    "fit_directed",
    "gamma_for_lags",
    "lag_differences",
    "link_to_reference",
    "noise_sigma",
    "locate_stack",
    "msd_curve",
    "still_variation",
    "time_series_check",
    "track_frames",
    "tracking_baseline",
    "tracking_msd",
    "variation_displacements",
    "variations_table",
]
