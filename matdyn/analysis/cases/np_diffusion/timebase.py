"""Time axis and tracking baseline of the NP case (issue 12; paper §2.2, §3.3.1).

* :func:`calibrate`: the Δt each swept γ stands for. A pixel-level difference (default
  :class:`~matdyn.descriptors.differences.SquaredDifference`, smoothed at the particle
  scale) between observed frames k apart is measured at lags k = 1, 2, 4, …
  (:func:`matdyn.dynamics.lag_differences`), its Δt → 0 intercept (frame noise, which
  generated variations lack) is subtracted (:func:`matdyn.dynamics.lag_intercept`), and the
  median difference of each γ's variation is read off that curve
  (:func:`matdyn.dynamics.dt_for_gammas`). Squared differences make the intercept exact
  and grow ∝ MSD on both sides; the L1 density difference of Fig. 7d (``calibration_metric
  = density_diff``) grows ∝ √MSD, so its straight-line intercept also removed motion: on
  the demo generator γ stood for a Δt about 1.6× too long and free D came out 0.25×
  planted. The entropy difference is not used: it barely grows with lag on the NP stand-in.
* :func:`tracking`: the tracking baseline of the observed frames
  (:func:`matdyn.dynamics.tracking_baseline`, trackpy link + emsd, per planted mode when
  the store has truth), in the same units as the MC estimates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.case import CaseContext, finite_or_none
from matdyn.errors import AnalysisError


def _unavailable(note: str) -> dict[str, Any]:
    return {"available": False, "note": note, "dt_of_analysis_gamma": None}


#: a γ whose Δt falls where the observed difference grows slower than Δt^this is named in a
#: note: there a 10 % error in the matched difference moves its Δt by 10 % / exponent or more
SATURATION_EXPONENT = 0.5


def local_exponents(t: np.ndarray, motion: np.ndarray, dts: Any) -> np.ndarray:
    """Log-log slope of the observed motion difference ``motion`` [L] (noise intercept
    removed) against the lags ``t`` [L] in the lag interval holding each Δt of ``dts`` (the
    first or last interval beyond the ends); NaN where a Δt is missing or a difference is
    not positive. 1: the difference grows ∝ Δt (∝ MSD for diffusion); → 0: it saturates, and
    the Δt read off it for a γ is poorly determined.

    >>> np.round(local_exponents(np.array([1., 2., 4.]), np.array([1., 2., 2.5]), [1.5, 3.0]), 2).tolist()
    [1.0, 0.32]
    """
    t, m = np.asarray(t, np.float64), np.asarray(motion, np.float64)
    out = np.full(len(dts), np.nan)
    if len(t) < 2:
        return out
    for j, x in enumerate(dts):
        if x is None or not np.isfinite(x) or x <= 0:
            continue
        i = int(np.clip(np.searchsorted(t, x) - 1, 0, len(t) - 2))
        if m[i] > 0 and m[i + 1] > 0:
            out[j] = np.log(m[i + 1] / m[i]) / np.log(t[i + 1] / t[i])
    return out


def difference_unit(metric_name: str, channel_names: Any) -> str:
    """Unit of a calibration difference: squared differences are in the squared units of the
    store's intensities (summed over channels, which have no stored unit: named by channel),
    the density difference is a fraction of the reference density.

    >>> difference_unit("sq_diff", ["phase"])
    '(phase)²'
    >>> difference_unit("density_diff", ["phase"])
    'fraction of reference density'
    """
    if metric_name == "density_diff":
        return "fraction of reference density"
    names = [str(c) for c in channel_names]
    if metric_name == "sq_diff":
        return f"({' + '.join(names)})²" if len(names) == 1 else \
            "sum over channels of (" + ", ".join(names) + ")²"
    return f"{metric_name} units"


def calibrate(ctx: CaseContext, frames: np.ndarray, gamma_diff: dict[float, float],
              metric: Any = None, max_fraction: float = 0.25) -> dict[str, Any]:
    """The ``time_calibration`` section: γ → Δt (and Δt → γ) from ``frames`` [T, 1, R, R]
    (consecutive observed frames at the generator resolution) and ``gamma_diff`` {γ:
    median ``metric`` difference of that γ's samples to their reference}; ``metric``
    defaults to the L1 density difference. Without a ``frame_interval`` or a time series,
    ``available`` is False and ``note`` says why."""
    from matdyn.descriptors.differences import DensityDifference
    from matdyn.dynamics import (
        dt_for_gammas,
        gamma_for_lags,
        lag_differences,
        lag_intercept,
        time_series_check,
    )

    meta = ctx.store.meta
    fi, tu = getattr(meta, "frame_interval", None), str(getattr(meta, "time_unit", "s") or "s")
    if not fi:
        return _unavailable("the store has no frame_interval: γ cannot be given a time; MSD is "
                            "reported per γ only and D is null (set frame_interval on import)")
    ok, why = time_series_check(ctx.store.labels)
    if not ok:
        return _unavailable(why.replace("the tracking baseline does", "a time calibration does"))
    if len(frames) < 3:
        return _unavailable(f"{len(frames)} observed frames: too few lags for a time calibration")
    metric = DensityDifference() if metric is None else metric
    lag = lag_differences(frames, metric, frame_interval=float(fi),
                          max_fraction=max_fraction, time_unit=tu)
    if len(lag) < 2:
        return _unavailable("fewer than 2 frame lags: raise analysis.baseline_frames")
    t, d = lag[f"dt_{tu}"].to_numpy(), lag["median"].to_numpy()
    d0 = lag_intercept(t, d)
    # after removing the frame-noise intercept, the motion difference is 0 at Δt = 0
    t0, dm = np.concatenate([[0.0], t]), np.concatenate([[0.0], d - d0])
    g = sorted(gamma_diff)
    gd = np.array([gamma_diff[x] for x in g])
    try:
        dts, inr = dt_for_gammas(gd, t0, dm)
    except AnalysisError as err:
        return _unavailable(str(err))
    out: dict[str, Any] = {
        "available": True, "metric": f"{metric.name} (median)",
        "difference_unit": difference_unit(metric.name, meta.channel_names),
        "smoothing_sigma_px": getattr(metric, "sigma", None), "frame_interval": float(fi),
        "time_unit": tu, "lag_intercept": d0,
        "lags": lag.assign(motion_median=d - d0).to_dict("records"),
        "gammas": g, "gamma_diff": gd.tolist(), "dt": [finite_or_none(v) for v in dts],
        "in_range": inr.tolist(), "dt_of_analysis_gamma": None,
        "local_exponent": [finite_or_none(v) for v in local_exponents(t, d - d0, dts)]}
    if ctx.gamma in g:
        out["dt_of_analysis_gamma"] = finite_or_none(dts[g.index(ctx.gamma)])
    if len(g) >= 2:
        try:
            gl, ok_l = gamma_for_lags(np.array(g), gd, d - d0)
            out["gamma_for_lag"] = [{"lag": int(k), f"dt_{tu}": float(tt),
                                     "gamma": finite_or_none(v)}
                                    for k, tt, v in zip(lag["lag"], t, gl)]
        except AnalysisError as err:
            out["gamma_for_lag_note"] = str(err)
    if out["dt_of_analysis_gamma"] is None:
        out["note"] = (f"γ = {ctx.gamma:g} is outside the calibrated range (its difference "
                       f"{gamma_diff.get(ctx.gamma, float('nan')):.3g} vs observed motion "
                       f"differences {dm[1]:.3g}–{dm[-1]:.3g}); D is null")
    return out


def tracking(ctx: CaseContext, n_frames: int, params: Any,
             radius_check: tuple[int, float, float] | None = None) -> dict[str, Any]:
    """The ``tracking_baseline`` section: D, drift speed v and MSD exponent α per planted
    mode ("all" = every trajectory) and ensemble MSD(Δt), lengths in nm when the unit is a
    length (else the store's unit); ``params``: the Monte Carlo's LocateParams (one locator
    for both). ``radius_check`` (lag in frames, radius, wide radius in px): the link-radius check of the
    observed frames (``info.radius_check``, :func:`matdyn.dynamics.tracking.pair_radius_check`).
    ``applicable`` False with ``reason`` otherwise."""
    from matdyn.dynamics import tracking_baseline

    if n_frames <= 0:
        return {"applicable": False, "reason": "disabled (analysis.tracking_frames = 0)"}
    try:
        r = tracking_baseline(ctx.store, n_frames=int(n_frames), resolution=ctx.resolution,
                              fit=ctx.fit, params=params, dark=params.dark,
                              radius_check=radius_check)
    except AnalysisError as err:
        return {"applicable": False, "reason": str(err)}
    if not r.applicable:
        return {"applicable": False, "reason": r.reason}
    f = ctx.nm or 1.0  # store unit -> nm (1 when the unit is not a known length)
    tu = r.units["time"]
    modes: dict[str, Any] = {}
    for row in r.fits.to_dict("records"):
        vals = list(row.values())  # mode, D, offset, v, alpha, n_tracks, n_fit
        modes[str(row["mode"])] = {"D": finite_or_none(vals[1] * f * f),
                                   "offset": finite_or_none(vals[2] * f * f),
                                   "v": finite_or_none(vals[3] * f), "alpha": finite_or_none(vals[4]),
                                   "n_tracks": int(row["n_tracks"])}
    msd = [{"mode": str(m["mode"]), "dt": float(m[f"lag_{tu}"]),
            "msd": float(list(m.values())[3]) * f * f} for m in r.msd.to_dict("records")]
    unit = "nm" if ctx.nm is not None else ctx.unit
    return {"applicable": True, "method": "trackpy locate + link + emsd of the observed frames "
            "(D from the first 4 lags with an intercept, Michalet 2010)",
            "units": {"D": f"{unit}^2/{tu}", "msd": f"{unit}^2", "v": f"{unit}/{tu}", "dt": tu},
            "modes": modes, "msd": msd, "info": r.info}
