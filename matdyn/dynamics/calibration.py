"""γ ↔ Δt: what time a perturbation strength stands for, and MSD(Δt) from several γ.

The paper chooses γ so that the generated variation differs from its reference about as
much as consecutive observed frames do (§2.2, §3.3.1). Doing this at several lags
k = 1, 2, 4, 8, … frames gives a time axis: the difference between frames t and t + k is a
function of Δt = k·frame_interval, the difference of a variation a function of γ, and
matching the two maps each γ to an equivalent Δt (:func:`gamma_for_lags`). With the MC
MSD measured at several γ, :func:`msd_curve` gives MSD(Δt), D from its slope and the MSD
exponent α (MSD ∝ Δt^α), which separates diffusive (α ≈ 1), sub-diffusive/confined
(α < 1) and ballistic/directed (α > 1) motion as in single-particle tracking (Saxton &
Jacobson 1997, Annu. Rev. Biophys. Biomol. Struct. 26:373; Qian et al. 1991).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "classify_exponent",
    "default_lags",
    "dt_for_gammas",
    "gamma_for_lags",
    "lag_differences",
    "lag_intercept",
    "msd_curve",
]

#: α band counted as normal diffusion; ±0.3 is our convention for noisy MC MSDs
DIFFUSIVE_BAND = (0.7, 1.3)


def default_lags(n_frames: int, max_fraction: float = 0.25) -> list[int]:
    """Lags 1, 2, 4, 8, … frames up to ``max_fraction`` of the sequence (at least [1]).

    >>> default_lags(100), default_lags(3)
    ([1, 2, 4, 8, 16], [1])
    """
    if not 0 < max_fraction <= 1:
        raise ConfigError(f"max_fraction must be in (0, 1], got {max_fraction!r}")
    top = max(1, int(max_fraction * n_frames))
    lags, k = [], 1
    while k <= top:
        lags.append(k)
        k *= 2
    return lags


def _pairs(n: int, lag: int, groups: np.ndarray | None, max_pairs: int) -> np.ndarray:
    i = np.arange(max(0, n - lag))
    if groups is not None:
        i = i[groups[i] == groups[i + lag]]
    if i.size > max_pairs:  # evenly spaced subset, deterministic
        i = i[np.linspace(0, i.size - 1, max_pairs).round().astype(np.int64)]
    return i


def lag_differences(frames: Any, metric: Any, *, lags: list[int] | None = None,
                    groups: np.ndarray | None = None, frame_interval: float | None = None,
                    max_fraction: float = 0.25, max_pairs: int = 2000,
                    time_unit: str = "s") -> pd.DataFrame:
    """Difference between frames t and t + k for each lag k (pure; nothing is written).

    ``frames``: :class:`matdyn.data.frames.ObservedFrames` (loaded here) or an array
    [n, C, *spatial], in temporal order; ``metric``: a difference metric of
    :mod:`matdyn.descriptors.differences` (``compare(images, references)``), e.g.
    ``EntropyDifference`` as in §3.3.1; ``groups`` [n]: pairs never cross groups;
    ``frame_interval``: Δt per frame (adds column ``dt_<time_unit>``). Returns one row per
    lag: lag, n_pairs, median, q25, q75, mean, max.
    """
    x = frames.load() if hasattr(frames, "load") else np.asarray(frames, np.float32)
    n = len(x)
    g = None if groups is None else np.asarray(groups).reshape(-1)
    if g is not None and g.size != n:
        raise AnalysisError(f"groups has {g.size} entries for {n} frames")
    rows = []
    for k in lags or default_lags(n, max_fraction):  # one batch of pairs per lag
        i = _pairs(n, int(k), g, max_pairs)
        if i.size == 0:
            continue
        v = np.asarray(metric.compare(x[i + k], x[i]), np.float64)
        row = {"lag": int(k), "n_pairs": int(i.size), "median": float(np.median(v)),
               "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75)),
               "mean": float(v.mean()), "max": float(v.max())}
        if frame_interval:
            row[f"dt_{time_unit}"] = float(k * frame_interval)
        rows.append(row)
    if not rows:
        raise AnalysisError("no frame pair at any lag; the sequence needs at least two "
                            "consecutive frames")
    return pd.DataFrame(rows)


def gamma_for_lags(gammas: np.ndarray, gamma_diff: np.ndarray, lag_diff: np.ndarray, *,
                   through_origin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """γ equivalent to each lag: invert the γ-curve (γ → median difference of a variation
    from its reference) at the lag differences, by monotone (PCHIP, Fritsch & Carlson 1980)
    interpolation. The curve is first made non-decreasing in γ (running maximum), so noise
    cannot fold it; ``through_origin`` adds (γ = 0, difference 0), exact for a difference
    metric (identical images differ by 0). Returns (γ per lag, in_range per lag); lags
    whose difference lies beyond the swept γ get NaN and in_range False.

    >>> g, ok = gamma_for_lags(np.array([0.5, 1., 2.]), np.array([.1, .2, .4]),
    ...                        np.array([.2, .3, .9]))
    >>> np.round(g, 3).tolist(), ok.tolist()
    ([1.0, 1.5, nan], [True, True, False])
    """
    gm = np.asarray(gammas, np.float64).reshape(-1)
    dv = np.asarray(gamma_diff, np.float64).reshape(-1)
    if gm.size != dv.size or gm.size < 1 or not np.isfinite(dv).all():
        raise AnalysisError("the γ-curve needs one finite difference per γ")
    order = np.argsort(gm)
    gm, dv = gm[order], np.maximum.accumulate(dv[order])
    if through_origin:
        gm, dv = np.concatenate([[0.0], gm]), np.concatenate([[0.0], np.maximum(dv, 0.0)])
    dv_u, first = np.unique(dv, return_index=True)  # strictly increasing for the inverse
    if dv_u.size < 2:
        raise AnalysisError("the γ-curve is flat: the difference metric does not change "
                            "with γ, so γ cannot be matched to a time")
    inv = PchipInterpolator(dv_u, gm[first], extrapolate=False)
    lag = np.asarray(lag_diff, np.float64)
    out = inv(lag)
    return out, np.isfinite(out)


def lag_intercept(lag_dt: np.ndarray, lag_diff: np.ndarray) -> float:
    """Difference of observed frames extrapolated to Δt → 0: the part of every frame
    difference that independent frame noise causes, not motion (a generated variation
    has no such noise). Straight line through the two shortest lags, clipped at 0; the
    same idea as the localisation-error intercept of an MSD fit (Michalet 2010).

    >>> lag_intercept(np.array([0.05, 0.1, 0.2]), np.array([0.32, 0.37, 0.46]))
    0.27
    """
    t = np.asarray(lag_dt, np.float64).reshape(-1)
    d = np.asarray(lag_diff, np.float64).reshape(-1)
    if t.size < 2:
        raise AnalysisError("the lag-difference intercept needs >= 2 lags")
    o = np.argsort(t)[:2]
    slope = (d[o[1]] - d[o[0]]) / (t[o[1]] - t[o[0]])
    return round(float(max(0.0, d[o[0]] - slope * t[o[0]])), 12)


def dt_for_gammas(gamma_diff: np.ndarray, lag_dt: np.ndarray,
                  lag_diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Δt each γ stands for: the lag-difference curve (Δt → median difference of frames
    Δt apart, made non-decreasing) inverted at each γ's difference by monotone (PCHIP)
    interpolation. Differences below the first lag or above the last get NaN and
    in_range False (the γ stands for less than one frame, or more than the longest lag).
    Observed differences include frame noise that generated variations lack: pass
    ``lag_diff - lag_intercept(lag_dt, lag_diff)`` to match motion with motion.

    >>> dt, ok = dt_for_gammas(np.array([.35, .5, .9]), np.array([.05, .1, .2]),
    ...                        np.array([.3, .4, .5]))
    >>> np.round(dt, 3).tolist(), ok.tolist()
    ([0.07, 0.2, nan], [True, True, False])
    """
    t = np.asarray(lag_dt, np.float64).reshape(-1)
    d = np.asarray(lag_diff, np.float64).reshape(-1)
    if t.size != d.size or t.size < 2:
        raise AnalysisError("the lag-difference curve needs >= 2 lags with one difference each")
    order = np.argsort(t)
    t, d = t[order], np.maximum.accumulate(d[order])
    d_u, first = np.unique(d, return_index=True)
    if d_u.size < 2:
        raise AnalysisError("frame differences do not change with lag: this metric cannot "
                            "give γ a time; use a pixel-level difference (DensityDifference)")
    out = PchipInterpolator(d_u, t[first], extrapolate=False)(np.asarray(gamma_diff, float))
    return out, np.isfinite(out)


def classify_exponent(alpha: np.ndarray, band: tuple[float, float] = DIFFUSIVE_BAND) -> np.ndarray:
    """"sub-diffusive (confined)" for α < band[0], "ballistic (directed)" for α > band[1],
    else "diffusive"; "undetermined" for NaN.

    >>> classify_exponent(np.array([0.2, 1.0, 1.9, np.nan])).tolist()
    ['sub-diffusive (confined)', 'diffusive', 'ballistic (directed)', 'undetermined']
    """
    a = np.asarray(alpha, np.float64)
    out = np.full(a.shape, "diffusive", dtype=object)
    out[a < band[0]] = "sub-diffusive (confined)"
    out[a > band[1]] = "ballistic (directed)"
    out[~np.isfinite(a)] = "undetermined"
    return out


def msd_curve(dt: np.ndarray, msd: np.ndarray, *, floor: np.ndarray | None = None,
              ndim: int = 2, band: tuple[float, float] = DIFFUSIVE_BAND) -> pd.DataFrame:
    """Per particle: D from the slope of MSD(Δt) and the MSD exponent α.

    ``dt`` [G] the Δt each γ stands for; ``msd`` [G, P] MC MSD of P reference particles at
    each γ (same unit²); ``floor`` [P] or [G, P] the noise floor (subtracted before the
    log-log fit of α, not before the slope). D: least-squares line MSD = 2·ndim·D·Δt + b
    (b absorbs localisation error, Michalet 2010); α: slope of log(MSD − floor) vs log Δt
    over points at least twice their floor (nearer, the log of the difference is noise);
    needs ≥ 2 distinct Δt. Returns columns D, offset, alpha,
    motion, n_points.
    """
    t = np.asarray(dt, np.float64).reshape(-1)
    y = np.asarray(msd, np.float64)
    if y.ndim == 1:  # one particle: msd [G], floor [G] or scalar
        y = y[:, None]
        floor = None if floor is None else np.asarray(floor, np.float64).reshape(-1, 1)
    if y.shape[0] != t.size or np.unique(t[np.isfinite(t)]).size < 2:
        raise AnalysisError(f"msd_curve needs MSD at >= 2 distinct Δt; got dt {t.tolist()} "
                            f"and msd of shape {np.shape(msd)}")
    f = np.zeros_like(y) if floor is None else np.broadcast_to(np.asarray(floor, float), y.shape)
    rows = []
    for p in range(y.shape[1]):  # one small fit per particle
        ok = np.isfinite(t) & np.isfinite(y[:, p])
        slope, b = (np.polyfit(t[ok], y[ok, p], 1) if ok.sum() >= 2 else (np.nan, np.nan))
        pos = ok & (y[:, p] > 2 * f[:, p]) & (y[:, p] - f[:, p] > 0) & (t > 0)
        alpha = (np.polyfit(np.log(t[pos]), np.log(y[pos, p] - f[pos, p]), 1)[0]
                 if np.unique(t[pos]).size >= 2 else np.nan)
        rows.append({"D": slope / (2 * ndim), "offset": b, "alpha": alpha,
                     "n_points": int(ok.sum())})
    out = pd.DataFrame(rows)
    out["motion"] = classify_exponent(out["alpha"].to_numpy(), band)
    return out
