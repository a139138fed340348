"""Particle dynamics in physical units (issue 12; paper §2.2, §3.3).

What is measured, and how to read it:

* :func:`variation_displacements` / :func:`variations_table` — each particle of a generated
  reference image is located (sub-pixel, trackpy) in every kept perturbed sample and
  linked to its reference position. Its displacement cloud gives the MSD (store unit², e.g.
  nm², always ≥ 0), D = MSD / (4 Δt) for the Δt the γ stands for (nm²/s), the anisotropy
  of the cloud (0 isotropic → 1 along a line), the drift fraction |⟨d⟩|²/MSD (0 diffusion →
  1 pure drift) and the non-Gaussian α2. ``msd_floor_*`` beside it is the same estimator
  on a still scene (locate noise only): an MSD near its floor means "no motion resolved".
* :func:`tracking_baseline` — the referee's number: trackpy link + ensemble MSD of the
  observed frames at lags 1..K frames (Δt = k·frame_interval), D from the first lags with
  an intercept for localisation error, drift speed v, MSD exponent α, per planted mode when
  the store has truth; "not applicable" for stage/augmented stores.
* :func:`lag_differences`, :func:`dt_for_gammas`, :func:`gamma_for_lags` — the γ ↔ Δt
  calibration: differences of frames k apart vs differences of a variation at γ. Use a
  pixel-level metric (DensityDifference): the entropy difference does not grow with lag
  on the NP stand-in (median 0.021–0.028 at lags 1–32), so it cannot give γ a time.
* :func:`msd_curve` — MSD at several Δt: D from the slope, α from the log-log slope;
  α ≈ 1 diffusive, α < 0.7 sub-diffusive/confined, α > 1.3 ballistic/directed.
* :func:`choose_n_clusters` — how many motion modes the descriptors support (gap statistic
  or silhouette), 1 when there is no real separation.

MC MSD and tracking MSD agree when the γ's Δt is right: compare MC D at γ with tracking D,
and MC MSD(γ) with tracking MSD at the calibrated Δt.
"""

from __future__ import annotations

from matdyn.dynamics.calibration import (
    classify_exponent,
    default_lags,
    dt_for_gammas,
    gamma_for_lags,
    lag_differences,
    lag_intercept,
    msd_curve,
)
from matdyn.dynamics.locate import (
    Located,
    LocateParams,
    estimate_locate_params,
    locate_stack,
    particle_polarity,
)
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
    log_anisotropy_ratio,
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
    "lag_intercept",
    "link_to_reference",
    "log_anisotropy_ratio",
    "noise_sigma",
    "locate_stack",
    "particle_polarity",
    "msd_curve",
    "still_variation",
    "time_series_check",
    "track_frames",
    "tracking_baseline",
    "tracking_msd",
    "variation_displacements",
    "variations_table",
]
