"""Ground truth of the synthetic NP store (planted modes and trajectories) against the
clustered traces (``summary["recovery"]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from matdyn.analysis.case import CaseContext, finite_or_none, stats
from matdyn.analysis.cases.np_diffusion.config import CONFINED, MODE_NAMES
from matdyn.analysis.clustering import adjusted_rand, auc, supervised_ari


def region_map_at(region_map: np.ndarray, res: int, fit: str = "crop") -> np.ndarray:
    """Nearest-neighbour region map after the frames' squaring (``fit``: centre crop, or
    centred padding with -1 = outside every region) and resize to ``res`` px, as training
    prepares the frames (:func:`matdyn.data.transforms.square_frames`).

    >>> rm = np.array([[0, 0, 1, 1, 2, 2]] * 4)       # 4 x 6: crop keeps columns 1..4
    >>> region_map_at(rm, 2).tolist()
    [[1, 2], [1, 2]]
    >>> region_map_at(rm, 3, "pad").tolist()           # 6 x 6: one padded row each side
    [[0, 1, 2], [0, 1, 2], [-1, -1, -1]]
    """
    rm = np.asarray(region_map)
    if fit == "pad":
        side = max(rm.shape)
        sq = np.full((side, side), -1, dtype=np.int64)
        r0, c0 = (side - rm.shape[0]) // 2, (side - rm.shape[1]) // 2
        sq[r0 : r0 + rm.shape[0], c0 : c0 + rm.shape[1]] = rm
        rm = sq
    else:
        side = min(rm.shape)
        r0, c0 = (rm.shape[0] - side) // 2, (rm.shape[1] - side) // 2
        rm = rm[r0 : r0 + side, c0 : c0 + side]
    idx = np.minimum(((np.arange(res) + 0.5) * side / res).astype(np.int64), side - 1)
    return rm[np.ix_(idx, idx)].astype(np.int64)


def planted_mode(rm_res: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Region of ``rm_res`` [R, R] at the (rounded, clipped) pixel positions."""
    n = rm_res.shape[0]
    r = np.clip(np.rint(rows).astype(np.int64), 0, n - 1)
    c = np.clip(np.rint(cols).astype(np.int64), 0, n - 1)
    return rm_res[r, c]


def planted_motion(
    truth: Mapping[str, np.ndarray], lag: int, px_nm: float
) -> dict[int, dict[str, float]]:
    """Per planted mode, from the true trajectories (nm²), over ``lag`` frames:

    * ``msd``: mean squared displacement between frames t and t + lag (the spread of the
      states reachable after that time, what A estimates if samples are such states);
    * ``window_spread``: mean tr of the positions' covariance inside windows of ``lag``
      frames (what A measures on an average of ``lag`` consecutive frames; 2Dt/3 for
      free diffusion, i.e. MSD / 6).

    Only pairs / windows of one particle id with the centre inside the frame count.

    >>> pos = np.zeros((5, 1, 2)); pos[:, 0, 1] = np.arange(5.0)     # 1 px per frame
    >>> t = {"positions_px": pos, "slot_mode": np.array([0])}
    >>> planted_motion(t, 2, 10.0)[0]
    {'msd': 400.0, 'window_spread': 25.0}
    """
    pos = np.asarray(truth["positions_px"], dtype=np.float64)  # [T, S, 2]
    T = pos.shape[0]
    if lag < 1 or lag >= T:
        return {}
    ids = np.asarray(truth.get("particle_ids", np.zeros(pos.shape[:2])))
    vis = np.asarray(truth.get("visible", np.ones(pos.shape[:2]))).astype(bool)
    mode = np.asarray(truth["slot_mode"]).ravel()
    d2 = ((pos[lag:] - pos[:-lag]) ** 2).sum(axis=-1) * px_nm**2  # [T - lag, S]
    ok = (ids[lag:] == ids[:-lag]) & vis[lag:] & vis[:-lag]
    n_win = T // lag
    win = pos[: n_win * lag].reshape(n_win, lag, *pos.shape[1:])  # [W, lag, S, 2]
    spread = win.var(axis=1).sum(axis=-1) * px_nm**2  # [W, S]
    w_ids = ids[: n_win * lag].reshape(n_win, lag, -1)
    w_vis = vis[: n_win * lag].reshape(n_win, lag, -1)
    w_ok = (w_ids == w_ids[:, :1]).all(axis=1) & w_vis.all(axis=1)
    out = {}
    # one entry per planted mode
    for m in np.unique(mode):
        cols = mode == m
        if ok[:, cols].any() and w_ok[:, cols].any():
            out[int(m)] = {
                "msd": float(d2[:, cols][ok[:, cols]].mean()),
                "window_spread": float(spread[:, cols][w_ok[:, cols]].mean()),
            }
    return out




def _mode_entry(table: Any, m: int, d_modes: np.ndarray, t_s: float,
                motion: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Anisotropy before/after averaging and diffusion area vs planted, for mode ``m``."""
    sel = table.planted_mode == m
    a_ref = table.loc[sel & (table.source == "reference"), "anisotropy"]
    a_avg = table.loc[sel & (table.source == "averaged"), "anisotropy"]
    d_avg = table.loc[sel & (table.source == "averaged"), "diffusion_area"]
    return {
        "n_reference": int(a_ref.size),
        "n_averaged": int(a_avg.size),
        "anisotropy_reference_mean": finite_or_none(a_ref.mean()) if a_ref.size else None,
        "anisotropy_averaged_mean": finite_or_none(a_avg.mean()) if a_avg.size else None,
        "diffusion_area": stats(d_avg),
        "planted_4Dt": finite_or_none(4.0 * d_modes[m] * t_s) if m < d_modes.size else None,
        "planted_msd": motion.get(m, {}).get("msd"),
        "planted_window_spread": motion.get(m, {}).get("window_spread"),
    }


def _clustering_scores(table: Any, results: Mapping[str, Any], rows: np.ndarray) -> dict:
    """ARI per clustering method and the confined-mode AUCs, on traces inside a region."""
    planted = table.loc[rows, "planted_mode"].to_numpy()
    inside = planted >= 0
    aniso = table.loc[rows, "anisotropy"].to_numpy(dtype=np.float64)
    area = table.loc[rows, "diffusion_area"].to_numpy(dtype=np.float64)
    rec: dict[str, Any] = {"n_traces_in_regions": int(inside.sum()), "n_traces": int(len(planted))}
    for method, res in results.items():
        ok = inside.sum() >= 2
        rec[f"ari_{method}"] = adjusted_rand(planted[inside], res.labels[inside]) if ok else None
    pos = planted[inside] == CONFINED
    both = bool(pos.any() and (~pos).any())
    rec["anisotropy_auc_confined"] = auc(pos, -aniso[inside]) if both else None
    rec["diffusion_area_auc_confined"] = auc(pos, -area[inside]) if both else None
    rec["anisotropy_auc_goal"] = 0.75
    return rec


def recover(ctx: CaseContext, cfg: Any, table: Any, results: Mapping[str, Any],
            rows: np.ndarray) -> dict[str, Any]:
    """Ground-truth scores of a synthetic store (adds the ``planted_mode`` column)."""
    store, truth = ctx.store, dict(ctx.store.truth)
    rm = region_map_at(truth["region_map"], ctx.resolution, ctx.fit)
    table["planted_mode"] = planted_mode(rm, table["centroid_row"].to_numpy(),
                                         table["centroid_col"].to_numpy())
    rec = _clustering_scores(table, results, rows)
    t_s = float(cfg.gamma_time_s)
    d_modes = np.asarray(truth.get("mode_diffusion_nm2_s", []), dtype=np.float64).ravel()
    lag = None
    if getattr(store.meta, "frame_interval", None):
        lag = int(round(t_s / float(store.meta.frame_interval)))
    motion: dict[int, dict[str, float]] = {}
    if lag and "positions_px" in truth and "slot_mode" in truth:
        motion = planted_motion(truth, lag, float(store.meta.pixel_size) * (ctx.nm or 1.0))
    per_mode = {name: _mode_entry(table, m, d_modes, t_s, motion)
                for m, name in mode_names(store).items()}
    rec["modes"] = per_mode
    directed, free = per_mode.get("directed", {}), per_mode.get("free", {})
    rec["directed_anisotropy_reference"] = directed.get("anisotropy_reference_mean")
    rec["directed_anisotropy_averaged"] = directed.get("anisotropy_averaged_mean")
    rec["free_diffusion_area_mean"] = free.get("diffusion_area", {}).get("mean")
    rec["free_diffusion_area_std"] = free.get("diffusion_area", {}).get("std")
    rec["free_planted_4Dt"] = free.get("planted_4Dt")
    rec["free_planted_msd"] = free.get("planted_msd")
    rec["free_planted_window_spread"] = free.get("planted_window_spread")
    rec["planted_msd_lag_frames"] = lag
    rec["unit"] = "nm^2" if ctx.nm is not None else f"{ctx.unit}^2"
    return rec


def mode_names(store: Any) -> dict[int, str]:
    """Planted mode id -> name (the store's ``mode_names`` truth attribute)."""
    names = list((store.truth_attrs or {}).get("mode_names", MODE_NAMES))
    return {i: str(n) for i, n in enumerate(names)}


def recover_particles(ctx: CaseContext, table: Any, results: Mapping[str, Any], rows: np.ndarray,
                      gammas: list[float], dts: Mapping[float, float | None],
                      tracking: Mapping[str, Any], features: np.ndarray | None = None
                      ) -> dict[str, Any]:
    """Ground truth against the particle table (adds ``planted_mode``): ARI per clustering
    method, ``ari_supervised`` (what the clustered ``features`` [len(rows), f] can separate
    at all, :func:`~matdyn.analysis.clustering.supervised_ari`), and per planted mode the MC
    MSD / D medians beside the planted D, the true MSD over the calibrated Δt (from the
    trajectories) and the tracking D of that mode."""
    from matdyn.analysis.cases.np_diffusion.particles import _group_stats, ensemble, gamma_key
    from matdyn.dynamics import msd_curve

    truth = dict(ctx.store.truth)
    rm = region_map_at(truth["region_map"], ctx.resolution, ctx.fit)
    table["planted_mode"] = planted_mode(rm, table["centroid_row"].to_numpy(),
                                         table["centroid_col"].to_numpy())
    planted = table.loc[rows, "planted_mode"].to_numpy()
    inside = planted >= 0
    rec: dict[str, Any] = {"descriptors": "particles", "n_in_regions": int(inside.sum()),
                           "n_particles": int(len(planted))}
    for method, res in results.items():
        ok = inside.sum() >= 2
        rec[f"ari_{method}"] = adjusted_rand(planted[inside], res.labels[inside]) if ok else None
    if features is not None and inside.sum() >= 2:
        rec["ari_supervised"] = supervised_ari(np.asarray(features)[inside], planted[inside])
    d_modes = np.asarray(truth.get("mode_diffusion_nm2_s", []), dtype=np.float64).ravel()
    fi = float(getattr(ctx.store.meta, "frame_interval", 0) or 0)
    px_nm = float(ctx.store.meta.pixel_size) * (ctx.nm or 1.0)
    dt_run = dts.get(ctx.gamma)
    t = np.array([np.nan if dts.get(g) is None else dts[g] for g in gammas])
    modes = {}
    for m, name in mode_names(ctx.store).items():  # one entry per planted mode
        sub = table[(table.planted_mode == m) & (table.source == "particle")]
        entry = _group_stats(sub) | {"planted_D": finite_or_none(d_modes[m])
                                     if m < d_modes.size else None}
        msd_g = [finite_or_none(np.nanmedian(sub[f"msd_g{gamma_key(g)}"]))
                 if len(sub) and sub[f"msd_g{gamma_key(g)}"].notna().any() else None
                 for g in gammas]
        entry["msd_by_gamma"] = dict(zip([gamma_key(g) for g in gammas], msd_g))
        entry["ensemble"] = ens = ensemble(sub, gammas, dict(dts), ctx.gamma)
        entry["ensemble_D"], entry["ensemble_D_slope"] = ens["D"], ens["D_slope"]
        y = np.array([np.nan if v is None else v for v in msd_g])
        if np.isfinite(t).sum() >= 2 and np.isfinite(y).sum() >= 2:
            f = msd_curve(t, y, floor=np.full(len(y), entry.get("median_msd_floor") or 0.0))
            entry["D_slope_of_medians"] = finite_or_none(f["D"][0])
            entry["msd_exponent_of_medians"] = finite_or_none(f["alpha"][0])
        lag = int(round(dt_run / fi)) if dt_run and fi else 0
        if lag >= 1 and "positions_px" in truth and "slot_mode" in truth:
            entry["planted_msd_at_dt"] = pl_msd = planted_motion(truth, lag, px_nm).get(m, {}).get("msd")
            mc = ens["msd_by_gamma"].get(gamma_key(ctx.gamma))
            if pl_msd and mc is not None:  # how the generator shares motion between modes
                entry["msd_over_planted_at_dt"] = (mc - (ens["floor"] or 0.0)) / pl_msd
        entry["tracking_D"] = (tracking.get("modes", {}).get(name, {}) or {}).get("D")
        modes[name] = entry
    rec["modes"] = modes
    # MC ensemble MSD (floor removed) over the true MSD over the calibrated Δt, per mode: the
    # image-wide γ calibration fixes the sum of motion, this shows its split between modes
    rec["msd_over_planted_at_dt"] = {n: e["msd_over_planted_at_dt"] for n, e in modes.items()
                                     if e.get("msd_over_planted_at_dt") is not None}
    free, conf = modes.get("free", {}), modes.get("confined", {})
    # headline MC D: the ensemble MSD at the run's γ (trackpy emsd's averaging, like the
    # tracking baseline); the per-particle medians (at γ, and of the MSD(Δt) slope) beside it
    pl = free.get("planted_D")
    for key, name in (("ensemble_D", "free_D_over_planted"),
                      ("ensemble_D_slope", "free_D_ensemble_slope_over_planted"),
                      ("median_D_slope", "free_D_median_slope_over_planted"),
                      ("median_D", "free_D_median_at_gamma_over_planted")):
        if free.get(key) is not None and pl:
            rec[name] = free[key] / pl
    if free.get("tracking_D") and pl:
        rec["free_tracking_D_over_planted"] = free["tracking_D"] / pl
    if free.get("ensemble_D") and conf.get("ensemble_D") is not None:
        rec["confined_D_over_free"] = conf["ensemble_D"] / free["ensemble_D"]
    rec["unit"] = "nm^2" if ctx.nm is not None else f"{ctx.unit}^2"
    return rec
