"""Tracking baseline: MSD(Δt) and D from tracking the observed frames (issue 12).

Particles are located in every frame (:func:`matdyn.dynamics.locate.locate_stack`), linked
into trajectories with :func:`trackpy.link` (Crocker & Grier 1996) and their ensemble MSD
taken with :func:`trackpy.emsd` at lags 1..K frames, in physical units. D comes from a
straight-line fit MSD(t) = 2·ndim·D·t + b over the first lags; the intercept b absorbs the
static localisation error (b = 2·ndim·σ² minus a motion-blur term; Michalet 2010, Phys. Rev.
E 82:041914, who also shows the first few lags give the best D). With a synthetic store's
truth, each trajectory gets the planted mode of the truth particle it follows, and the MSD
and D are reported per mode.

Stores whose frames are not one time series (stages of particles: ``particle_id`` /
``stage_days``; augmented charts: ``is_augmented``) get a result with
``applicable=False`` and the reason, never a number.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from matdyn.dynamics.locate import Located, LocateParams, estimate_locate_params, locate_stack
from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "TrackingResult",
    "assign_truth_modes",
    "fit_diffusion",
    "fit_directed",
    "time_series_check",
    "track_frames",
    "tracking_baseline",
    "tracking_msd",
]


def time_series_check(labels: Mapping[str, np.ndarray]) -> tuple[bool, str]:
    """(True, "") when the store's frames are one time series; else (False, why).

    >>> time_series_check({"stage_days": np.zeros(2), "particle_id": np.zeros(2)})[0]
    False
    """
    if "particle_id" in labels or "stage_days" in labels:
        return False, ("frames are stages of separate particles (labels particle_id/stage_days), "
                       "not a time series: the tracking baseline does not apply")
    if "is_augmented" in labels:
        return False, ("frames are augmented views (label is_augmented), not a time series: "
                       "the tracking baseline does not apply")
    return True, ""


def fit_diffusion(lag_t: np.ndarray, msd: np.ndarray, ndim: int = 2,
                  n_fit: int = 4) -> tuple[float, float]:
    """(D, b) from the least-squares line MSD = 2·ndim·D·t + b over the first ``n_fit`` lags
    (Michalet 2010). Units: D in msd-unit per lag-unit, b in msd-unit.

    >>> tuple(round(v, 6) for v in fit_diffusion(np.array([1., 2., 3.]), np.array([14., 26., 38.])))
    (3.0, 2.0)
    """
    t = np.asarray(lag_t, np.float64)[:n_fit]
    y = np.asarray(msd, np.float64)[:n_fit]
    ok = np.isfinite(t) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    slope, b = np.polyfit(t[ok], y[ok], 1)
    return float(slope / (2 * ndim)), float(b)


def fit_directed(lag_t: np.ndarray, msd: np.ndarray, ndim: int = 2) -> tuple[float, float, float]:
    """(D, v, b) from the least-squares fit MSD = 2·ndim·D·t + v²·t² + b (directed motion
    with diffusion, Qian, Sheetz & Elson 1991, Biophys. J. 60:910) over all given lags;
    v is the drift speed (length per time), NaN when the fit gives v² < 0.

    >>> t = np.arange(1., 6.)
    >>> tuple(round(x, 6) for x in fit_directed(t, 4 * 2 * t + 9 * t**2 + 1))
    (2.0, 3.0, 1.0)
    """
    t = np.asarray(lag_t, np.float64)
    y = np.asarray(msd, np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan"), float("nan"), float("nan")
    a = np.column_stack([t[ok], t[ok] ** 2, np.ones(ok.sum())])
    (c1, c2, b), *_ = np.linalg.lstsq(a, y[ok], rcond=None)
    return float(c1 / (2 * ndim)), float(np.sqrt(c2)) if c2 >= 0 else float("nan"), float(b)


def track_frames(frames: np.ndarray, params: LocateParams, search_range: float, *,
                 memory: int = 3, min_length: int = 10,
                 located: Located | None = None) -> pd.DataFrame:
    """Trajectories of frames [T, H, W]: columns frame, y, x (px), mass, particle.

    Links with :func:`trackpy.link` (``search_range`` px, ``memory`` frames a particle may
    vanish) and keeps trajectories of at least ``min_length`` frames
    (:func:`trackpy.filter_stubs`). ``located``: the frames' features when already located
    with ``params`` (:func:`~matdyn.dynamics.locate.locate_stack`), else located here."""
    import trackpy as tp

    loc = located if located is not None else locate_stack(frames, params)
    f = pd.DataFrame({"frame": loc.frame, "y": loc.coords[:, 0], "x": loc.coords[:, 1],
                      "mass": loc.mass})
    if f.empty:
        raise AnalysisError("no particle located in the frames; check dark/bright and the "
                            "locate diameter/minmass")
    tp.quiet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = tp.link(f, float(search_range), memory=int(memory))
        t = tp.filter_stubs(t, int(min_length)) if min_length > 1 else t
    return t.reset_index(drop=True)


def assign_truth_modes(tracks: pd.DataFrame, positions_px: np.ndarray, modes: np.ndarray,
                       max_dist: float) -> pd.Series:
    """Planted mode of each trajectory: every located point takes the mode of the nearest
    truth particle of its frame (within ``max_dist`` px, else −1); a trajectory takes its
    majority mode. ``positions_px`` [T, S, 2] and ``modes`` [T, S] in the frames' px."""
    point_mode = np.full(len(tracks), -1, np.int64)
    fr = tracks["frame"].to_numpy()
    yx = tracks[["y", "x"]].to_numpy()
    for t in np.unique(fr):  # one KD-tree per frame
        sel = np.flatnonzero(fr == t)
        d, j = cKDTree(positions_px[t]).query(yx[sel], distance_upper_bound=max_dist)
        ok = np.isfinite(d)
        point_mode[sel[ok]] = modes[t][j[ok]]
    s = pd.Series(point_mode, index=tracks.index)
    return s.groupby(tracks["particle"]).agg(lambda v: int(np.bincount(v + 1).argmax()) - 1)


@dataclass
class TrackingResult:
    """Tracking baseline. ``msd``: rows (mode, lag, lag_<time>, msd_<unit>2, n_tracks);
    ``fits``: rows (mode, D_<unit>2_per_<time>, offset_<unit>2, v_<unit>_per_<time>, alpha,
    n_tracks, n_fit): D and offset from the first ``n_fit`` lags (:func:`fit_diffusion`),
    v from :func:`fit_directed` over all lags, alpha the log-log MSD slope after removing a
    positive offset;
    mode "all" is every trajectory. ``applicable=False`` (with ``reason``) means the frames
    are not a time series and both tables are empty."""

    applicable: bool
    reason: str = ""
    msd: pd.DataFrame = field(default_factory=pd.DataFrame)
    fits: pd.DataFrame = field(default_factory=pd.DataFrame)
    units: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def diffusion(self, mode: str = "all") -> float:
        """D of one mode (``units``), NaN when absent or not applicable."""
        if not self.applicable or self.fits.empty:
            return float("nan")
        row = self.fits[self.fits["mode"] == mode]
        return float(row.iloc[0, 1]) if len(row) else float("nan")


def tracking_msd(tracks: pd.DataFrame, pixel_size: float, frame_interval: float, *,
                 max_lag: int = 10, n_fit: int = 4, track_mode: pd.Series | None = None,
                 mode_names: tuple[str, ...] = (), unit: str = "nm",
                 time_unit: str = "s") -> TrackingResult:
    """Ensemble MSD (:func:`trackpy.emsd`) at lags 1..``max_lag`` frames and D per mode."""
    import trackpy as tp

    if not (pixel_size > 0 and frame_interval > 0):
        raise ConfigError(f"pixel_size and frame_interval must be > 0, got {pixel_size!r}, "
                          f"{frame_interval!r}")
    groups: dict[str, np.ndarray] = {"all": tracks["particle"].unique()}
    if track_mode is not None:
        for m in sorted(set(track_mode.to_numpy().tolist()) - {-1}):
            name = mode_names[m] if m < len(mode_names) else str(m)
            groups[name] = track_mode.index[track_mode.to_numpy() == m].to_numpy()
    u, tu = unit, time_unit
    rows, fits = [], []
    for name, ids in groups.items():  # one ensemble MSD per planted mode
        sub = tracks[tracks["particle"].isin(ids)]
        if sub.empty:
            continue
        em = tp.emsd(sub, pixel_size, 1.0 / frame_interval, max_lagtime=int(max_lag))
        lag_t = em.index.to_numpy(np.float64)
        msd = em.to_numpy(np.float64)
        for lt, v in zip(lag_t, msd):
            rows.append({"mode": name, "lag": int(round(lt / frame_interval)),
                         f"lag_{tu}": lt, f"msd_{u}2": v, "n_tracks": int(len(ids))})
        d, b = fit_diffusion(lag_t, msd, 2, n_fit)
        _, v, _ = fit_directed(lag_t, msd, 2)
        pos = (msd - max(b, 0.0)) > 0
        alpha = (np.polyfit(np.log(lag_t[pos]), np.log(msd[pos] - max(b, 0.0)), 1)[0]
                 if pos.sum() >= 2 else np.nan)
        fits.append({"mode": name, f"D_{u}2_per_{tu}": d, f"offset_{u}2": b,
                     f"v_{u}_per_{tu}": v, "alpha": float(alpha),
                     "n_tracks": int(len(ids)), "n_fit": int(min(n_fit, len(lag_t)))})
    return TrackingResult(True, "", pd.DataFrame(rows), pd.DataFrame(fits),
                          {"length": u, "time": tu})


def _truth_in_working_px(store: Any, frames_shape: tuple[int, ...], fit: str,
                         indices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    truth = store.truth
    if "positions_px" not in truth or "particle_mode" not in truth:
        return None
    h, w = store.meta.spatial_shape
    side = min(h, w) if fit == "crop" else max(h, w)
    off = np.array([(h - side) // 2, (w - side) // 2], np.float64)
    scale = frames_shape[-1] / side
    # resizing by `scale` maps pixel centres as (p + 0.5)·scale − 0.5
    pos = (truth["positions_px"][indices] - off + 0.5) * scale - 0.5
    return pos, truth["particle_mode"][indices]


def pair_radius_check(frames: np.ndarray, params: LocateParams, lag: int, radius: float,
                      wide: float, *, located: Located | None = None) -> dict[str, Any]:
    """The Monte Carlo's link rule on observed frame pairs: particles of frame t + ``lag``
    linked to those of frame t (one-to-one, nearest within ``radius`` px, as
    :func:`~matdyn.dynamics.variation.link_to_reference` links samples to their reference)
    and again within ``wide`` px. Returns ``lag_frames``, ``n_pairs``, ``msd_px2``,
    ``msd_wide_px2`` and ``wide_over_msd``: how much linking farther adds for the data's own
    motion over that lag, the baseline of the MC's ``link_radius`` check (None without links).
    An approximation of the MC estimator: displacements are pooled over all links (the MC
    ensemble averages per-particle means), and a pair of frames stands for a reference and
    one sample.

    ``frames`` [T, H, W] (``located``: their features, when already located with
    ``params``); raises :class:`ConfigError` for lag < 1 or wide <= radius."""
    from matdyn.dynamics.variation import link_to_reference

    if int(lag) < 1 or not wide > radius > 0:
        raise ConfigError(f"pair radius check needs lag >= 1 and wide > radius > 0, got "
                          f"{lag!r}, {radius!r}, {wide!r}")
    t0 = np.arange(0, len(frames) - int(lag))
    if t0.size == 0:
        return {"lag_frames": int(lag), "n_pairs": 0, "msd_px2": None, "msd_wide_px2": None,
                "wide_over_msd": None}
    loc = located if located is not None else locate_stack(frames, params)
    pts = [loc.in_frame(i) for i in range(len(frames))]
    sums = {radius: [0.0, 0], wide: [0.0, 0]}
    for t in t0:
        ref, smp = pts[t], pts[t + int(lag)]
        for r in (radius, wide):
            link = link_to_reference(ref, smp, np.zeros(len(smp), np.int64), 1, r)
            d = link.displacement[link.ref_index >= 0]
            sums[r][0] += float((d ** 2).sum())
            sums[r][1] += len(d)
    m, mw = (sums[r][0] / sums[r][1] if sums[r][1] else None for r in (radius, wide))
    return {"lag_frames": int(lag), "n_pairs": int(t0.size), "msd_px2": m, "msd_wide_px2": mw,
            "wide_over_msd": mw / m if m and mw is not None else None}


def tracking_baseline(store: Any, *, start: int = 0, n_frames: int | None = None,
                      resolution: int | None = None, fit: str = "crop", channel: int = 0,
                      params: LocateParams | None = None, dark: bool = True,
                      search_range: float | None = None, memory: int = 3,
                      min_length: int = 10, max_lag: int = 10, n_fit: int = 4,
                      subtract_drift: bool = False,
                      radius_check: tuple[int, float, float] | None = None) -> TrackingResult:
    """Track one ``channel`` of a store's observed 2D frames; return MSD(Δt) and D.

    Frames come from :class:`matdyn.data.frames.ObservedFrames` (``resolution`` default:
    native short side). Physical units from the store: ``pixel_size`` (of the prepared
    frames) and ``frame_interval``. Per planted mode when the store's truth has
    ``positions_px`` and ``particle_mode`` (mode names from truth attrs ``mode_names``).
    With ``radius_check`` = (lag in frames, radius px, wide radius px): ``info["radius_check"]``
    = :func:`pair_radius_check` of the same frames at that lag (the radii of the Monte Carlo's
    links, which may differ from the tracking's search range). Not applicable (result with reason) for stage/augmented stores. Raises
    :class:`AnalysisError` when the store has no ``frame_interval``.
    """
    import trackpy as tp

    from matdyn.data.frames import ObservedFrames

    ok, why = time_series_check(store.labels)
    if not ok:
        return TrackingResult(False, why)
    m = store.meta
    if not m.frame_interval or m.ndim != 2:
        raise AnalysisError("tracking needs 2D frames and the store's frame_interval; set "
                            "frame_interval when importing the video")
    stop = len(store) if n_frames is None else min(len(store), start + int(n_frames))
    idx = np.arange(start, stop)
    res = int(resolution or min(m.spatial_shape))
    obs = ObservedFrames(store, idx, res, fit)
    if not -m.channels <= channel < m.channels:
        raise ConfigError(f"channel {channel} out of range for {m.channels} channels "
                          f"{list(m.channel_names)}")
    frames = obs.load()[:, channel]  # [T, R, R] one channel
    params = params or estimate_locate_params(frames[0], dark=dark)
    sr = float(search_range if search_range is not None else params.diameter // 2)
    loc = locate_stack(frames, params)  # once, for the tracks and the radius check
    tracks = track_frames(frames, params, sr, memory=memory, min_length=min_length, located=loc)
    if subtract_drift:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracks = tp.subtract_drift(tracks.copy(), tp.compute_drift(tracks))
    truth = _truth_in_working_px(store, frames.shape, fit, idx)
    track_mode = None
    names: tuple[str, ...] = ()
    if truth is not None:
        track_mode = assign_truth_modes(tracks, truth[0], truth[1], max(1.0, sr))
        names = tuple(store.truth_attrs.get("mode_names", ()))
    out = tracking_msd(tracks, obs.pixel_size, float(m.frame_interval), max_lag=max_lag,
                       n_fit=n_fit, track_mode=track_mode, mode_names=names, unit=m.unit,
                       time_unit=m.time_unit)
    out.info = {"n_frames": int(len(idx)), "n_tracks": int(tracks["particle"].nunique()),
                "pixel_size": obs.pixel_size, "frame_interval": float(m.frame_interval),
                "locate": {"diameter": params.diameter, "minmass": params.minmass},
                "search_range_px": sr, "subtract_drift": bool(subtract_drift)}
    if radius_check is not None:
        lag, r, wide = radius_check
        out.info["radius_check"] = pair_radius_check(frames, params, max(1, int(lag)),
                                                     float(r), float(wide), located=loc)
    return out
