"""Particle-level descriptors of NP variations (issue 12): the default ``describe`` step.

Each reference image's particles are located and followed through the kept perturbed
samples (:class:`matdyn.dynamics.streaming.ParticleLinks`, streamed in the variation
engine), at the run's γ and at each γ of ``msd_gammas`` (one more engine run each, same
references). One row per reference particle: MSD (nm², ≥ 0 by construction), D = MSD /
(2·ndim·Δt) with Δt the time the run's γ stands for (:mod:`.timebase`), the locate-noise
floor of both (``msd_floor``, ``D_floor``: a still scene), the anisotropy of the
displacement covariance and its log principal-variance ratio above the localisation noise
(``log_anisotropy_ratio``), the drift fraction |⟨d⟩|²/MSD, the non-Gaussian α2, and over
the γ's: MSD(Δt), D from its slope (``D_slope``) and the MSD exponent (``msd_exponent``;
≈ 1 diffusive, < 0.7 confined, > 1.3 directed; Saxton & Jacobson 1997).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from matdyn.analysis.case import CaseContext, finite_or_none, stats
from matdyn.analysis.cases.np_diffusion.config import Config
from matdyn.analysis.clustering import HACResult, hac, trimmed_hac
from matdyn.dynamics.calibration import classify_exponent
from matdyn.dynamics.locate import (
    LocateParams,
    estimate_locate_params,
    estimate_locate_params_from,
)
from matdyn.errors import AnalysisError

PREFIX = "particles"


def locate_params(ctx: CaseContext, cfg: Config,
                  observed: np.ndarray | None = None) -> tuple[LocateParams, str]:
    """One locator for both sides of the comparison: the config's settings, else estimated
    on the first of up to 8 ``observed`` frames [T, 1, R, R] (the frames the tracking
    baseline also locates) with a visible particle, else on the first generated reference
    (of up to 8) with one. Returns (params, where they come from)."""
    if cfg.locate_diameter is not None and cfg.locate_minmass is not None:
        return LocateParams(int(cfg.locate_diameter), float(cfg.locate_minmass),
                            dark=cfg.dark_particles), "config"

    def estimate(img: np.ndarray) -> LocateParams:
        return estimate_locate_params(img, dark=cfg.dark_particles,
                                      diameter=cfg.locate_diameter, minmass=cfg.locate_minmass)

    if observed is not None:
        try:
            params, i = estimate_locate_params_from(
                observed[:, 0], dark=cfg.dark_particles, diameter=cfg.locate_diameter,
                minmass=cfg.locate_minmass)
            return params, f"observed frame {i}"
        except AnalysisError:
            pass
    for i in range(min(cfg.n_refs, 8)):  # the first references, as the engine draws them
        z, _ = ctx.variation_latents(i, 1)
        try:
            return estimate(ctx.generate(z[None], 1)[0, 0]), f"generated reference {i}"
        except AnalysisError:
            continue
    raise AnalysisError("no particle located in the first observed frames or generated "
                        "reference images; set analysis.locate_diameter / locate_minmass or "
                        "check dark_particles")


def gamma_key(g: float) -> str:
    return f"{g:g}"


def _merge_keys(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_r=df.centroid_row.round(2), _c=df.centroid_col.round(2))


def table(ctx: CaseContext, runs: dict[float, Any], dts: dict[float, float | None],
          nm_per_px: float) -> pd.DataFrame:
    """Rows of the run's γ with ``msd_g<γ>`` and ``log_anisotropy_ratio_g<γ>`` columns for
    every γ of the ladder (the same reference particle, matched by reference index and
    position), ``log_anisotropy_ratio`` at the run's γ and, with ≥ 2 calibrated Δt,
    ``D_slope`` and ``msd_exponent`` (:func:`matdyn.dynamics.msd_curve`)."""
    from matdyn.dynamics import msd_curve
    from matdyn.dynamics.streaming import particle_rows

    rows = {g: particle_rows(r, PREFIX, nm_per_px, dts.get(g), ref_indices=r.ref_indices)
            for g, r in runs.items()}
    main = _merge_keys(rows[ctx.gamma])
    main.insert(0, "source", "particle")
    gammas = sorted(runs)
    for g in gammas:
        cols = ["ref_index", "_r", "_c", "msd", "rg", "anisotropy"]
        cols += ["msd_wide"] if "msd_wide" in rows[g] else []
        other = _merge_keys(rows[g])[cols]
        other = other.rename(columns={"msd": f"msd_g{gamma_key(g)}", "rg": "_rg", "anisotropy": "_an",
                                      "msd_wide": f"msd_wide_g{gamma_key(g)}"})
        main = main.merge(other, on=["ref_index", "_r", "_c"], how="left")
        main[f"log_anisotropy_ratio_g{gamma_key(g)}"] = _log_ratio(main, main.pop("_rg"),
                                                                   main.pop("_an"))
    main["log_anisotropy_ratio"] = main[f"log_anisotropy_ratio_g{gamma_key(ctx.gamma)}"]
    main = main.drop(columns=["_r", "_c"])
    t = np.array([np.nan if dts.get(g) is None else dts[g] for g in gammas], np.float64)
    main["D_slope"] = np.nan
    main["msd_exponent"] = np.nan
    if np.unique(t[np.isfinite(t)]).size >= 2 and len(main):
        y = main[[f"msd_g{gamma_key(g)}" for g in gammas]].to_numpy(np.float64).T
        floor = main["msd_floor"].to_numpy() if "msd_floor" in main else None
        fit = msd_curve(t, y, floor=floor)
        main["D_slope"], main["msd_exponent"] = fit["D"].to_numpy(), fit["alpha"].to_numpy()
    return main


def _log_ratio(df: pd.DataFrame, rg: pd.Series, anisotropy: pd.Series) -> np.ndarray:
    """:func:`matdyn.dynamics.log_anisotropy_ratio` regularised by the per-axis localisation
    variance of each particle (its still-scene MSD floor / 2; 0 without a floor)."""
    from matdyn.dynamics import log_anisotropy_ratio

    floor = df["msd_floor"].to_numpy(np.float64) / 2.0 if "msd_floor" in df else 0.0
    return log_anisotropy_ratio(rg.to_numpy(np.float64), anisotropy.to_numpy(np.float64),
                                np.nan_to_num(floor, nan=0.0))


#: features that :func:`features` reads at another γ of the ladder (``msd_g<γ>``, ...)
PER_GAMMA = {"log_msd": "msd_g", "msd": "msd_g", "log_anisotropy_ratio": "log_anisotropy_ratio_g"}


def feature_column(name: str, gamma: float | None = None) -> str:
    """The table column a clustering feature is read from (before any log)."""
    if gamma is not None and name in PER_GAMMA:
        return f"{PER_GAMMA[name]}{gamma_key(gamma)}"
    return name[4:] if name in ("log_msd", "log_rg") else name


def features(df: pd.DataFrame, names: tuple[str, ...], gamma: float | None = None) -> np.ndarray:
    """Feature matrix [n, f]; log_msd / log_rg are natural logs (clipped at 1e-9). With
    ``gamma`` (one of the run's γ ladder), the :data:`PER_GAMMA` features come from the
    variation at that γ; the others are always the run γ's."""
    cols = []
    for f in names:
        col = feature_column(f, gamma)
        if gamma is not None and f in PER_GAMMA and col not in df:
            raise AnalysisError(f"no variation at feature_gamma {gamma:g}: add it to "
                                "analysis.msd_gammas")
        v = df[col].to_numpy(np.float64)
        cols.append(np.log(np.clip(v, 1e-9, None)) if f in ("log_msd", "log_rg") else v)
    return np.column_stack(cols)


def _fit(method: str, x: np.ndarray, k: int, cfg: Config) -> HACResult:
    if method == "trimmed":
        return trimmed_hac(x, k, z_max=cfg.trim_z, method="average", scaling=cfg.scaling)
    return hac(x, k, method=method, scaling=cfg.scaling)


def name_clusters(labels: np.ndarray, msd: np.ndarray, real: bool) -> dict[int, str]:
    """Cluster id -> name: by median MSD rank ("most mobile" … "least mobile") when the
    separation is real, else generic "cluster c"."""
    ids = sorted(int(c) for c in np.unique(labels))
    if not real or len(ids) < 2:
        return {c: ("one mode" if len(ids) == 1 else f"cluster {c}") for c in ids}
    med = {c: float(np.nanmedian(msd[labels == c])) for c in ids}
    order = sorted(ids, key=lambda c: -med[c])
    names = {order[0]: "most mobile", order[-1]: "least mobile"}
    for j, c in enumerate(order[1:-1], 1):
        names[c] = f"mobility rank {j + 1}"
    return names


def cluster(cfg: Config, df: pd.DataFrame, ens: Any = None
            ) -> tuple[dict, dict[str, HACResult], np.ndarray]:
    """Number of clusters from the data (``cluster_count``, or the fixed ``n_modes``), then
    each ``methods`` clustering of ``particle_features``; adds ``cluster_<method>`` and
    ``mode_<method>`` columns; ``ens`` (rows -> dict, e.g. :func:`ensemble`) adds each
    cluster's ensemble MSD and D. Returns (summary, results, index of the clustered rows)."""
    from matdyn.dynamics import choose_n_clusters

    feats = tuple(cfg.particle_features)
    x_all = features(df, feats, cfg.feature_gamma)
    finite = np.isfinite(x_all).all(axis=1)
    if finite.sum() < 3:
        raise AnalysisError(f"only {int(finite.sum())} of {len(df)} particles have finite "
                            f"{list(feats)}; raise n_refs or check the locate settings")
    rows, x = df.index.to_numpy()[finite], x_all[finite]
    choice = choose_n_clusters(x, method=cfg.cluster_count, min_silhouette=cfg.min_silhouette,
                               linkage="average", seed=0)
    fixed = cfg.fixed_modes()
    k = int(min(fixed, len(x))) if fixed is not None else choice.k
    real = fixed is None or choice.k == k
    msd = df.loc[rows, "msd"].to_numpy(np.float64)
    methods, results = {}, {}
    for method in cfg.methods:  # paper's average linkage first, robust variants after
        try:
            res = _fit(method, x, k, cfg)
        except AnalysisError as err:
            methods[method] = {"error": str(err)}
            continue
        results[method] = res
        names = name_clusters(res.labels, msd, real)
        col = pd.Series(-1, index=df.index, dtype=np.int64)
        col.loc[rows] = res.labels
        df[f"cluster_{method}"] = col
        df[f"mode_{method}"] = col.map(lambda c, names=names: names.get(int(c), ""))
        methods[method] = {"sizes": [int((res.labels == c).sum()) for c in sorted(names)],
                           "modes": {names[c]: _group_stats(df.loc[rows[res.labels == c]])
                                     | ({"ensemble": ens(df.loc[rows[res.labels == c]])}
                                        if ens is not None else {})
                                     for c in sorted(names)}}
    summary = {"descriptors": "particles", "features": list(feats),
               "feature_gamma": cfg.feature_gamma,
               "feature_columns": [feature_column(f, cfg.feature_gamma) for f in feats],
               "scaling": cfg.scaling or "none",
               "n_modes": int(k), "n_modes_source": "fixed (analysis.n_modes)" if fixed else
               f"from the data ({cfg.cluster_count})",
               "n_modes_from_data": int(choice.k),
               "cluster_count_scores": {str(kk): v for kk, v in choice.scores.items()},
               "separation_real": bool(real), "n_particles": int(len(rows)), "methods": methods}
    return summary, results, rows


def ensemble(sub: pd.DataFrame, gammas: list[float], dts: dict[float, float | None],
             gamma: float, ndim: int = 2) -> dict[str, Any]:
    """Ensemble MSD of a group of particle rows: at each γ the mean over particles of their
    MC MSD (as trackpy's ``emsd`` averages over tracks, so it compares with the tracking
    baseline), minus the mean still-scene floor (localisation noise, Michalet 2010), and
    D = that / (2·ndim·Δt) at the run's ``gamma`` (``D``: the headline MC D, issue 12),
    from the slope of the ensemble MSD(Δt) over the γ ladder (``D_slope``) and its exponent.

    Why the mean: per-particle MC MSDs are heavy-tailed (a latent neighbourhood moves some
    particles far and others hardly). On five stand-in generators the median of per-particle
    D at the run's γ was 0.12–0.42× the planted free D and the ensemble 0.62–1.45×; on
    trackpy's bulk_water video 0.44× vs 0.99× the tracking D (issue 12 note). ``D`` is None
    without a time calibration of the run's γ."""
    from matdyn.dynamics import msd_curve

    floor = (float(np.nanmean(sub["msd_floor"])) if "msd_floor" in sub and
             sub["msd_floor"].notna().any() else 0.0)
    by_g = {}
    for g in gammas:
        col = sub[f"msd_g{gamma_key(g)}"] if f"msd_g{gamma_key(g)}" in sub else sub["msd"]
        by_g[g] = float(np.nanmean(col)) if col.notna().any() else np.nan
    wide, paired = {}, {}  # over the particles with both MSDs (the same population)
    for g in gammas:
        c, m = f"msd_wide_g{gamma_key(g)}", f"msd_g{gamma_key(g)}"
        if c in sub and m in sub and (both := sub[c].notna() & sub[m].notna()).any():
            wide[gamma_key(g)] = finite_or_none(float(sub.loc[both, c].mean()))
            paired[gamma_key(g)] = finite_or_none(float(sub.loc[both, m].mean()))
    out: dict[str, Any] = {"n": int(len(sub)), "floor": finite_or_none(floor),
                           "msd_by_gamma": {gamma_key(g): finite_or_none(v)
                                            for g, v in by_g.items()},
                           "msd_wide_by_gamma": wide, "msd_paired_by_gamma": paired,
                           "D": None, "D_wide": None, "D_slope": None, "msd_exponent": None}
    dt = dts.get(gamma)
    if dt and np.isfinite(by_g.get(gamma, np.nan)):
        out["D"] = finite_or_none((by_g[gamma] - floor) / (2 * ndim * dt))
    if dt and wide.get(gamma_key(gamma)) is not None:  # linked within the wide radius
        out["D_wide"] = finite_or_none((wide[gamma_key(gamma)] - floor) / (2 * ndim * dt))
    t = np.array([np.nan if dts.get(g) is None else dts[g] for g in gammas], np.float64)
    y = np.array([by_g[g] for g in gammas], np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    if np.unique(t[ok]).size >= 2:
        f = msd_curve(t[ok], y[ok], floor=np.full(int(ok.sum()), floor), ndim=ndim)
        out["D_slope"] = finite_or_none(f["D"][0])
        out["msd_exponent"] = finite_or_none(f["alpha"][0])
    return out


def _group_stats(sub: pd.DataFrame) -> dict[str, Any]:
    """Medians of one group of particle rows (NaN-safe), the per-γ columns (``msd_g<γ>``,
    ``log_anisotropy_ratio_g<γ>``, which the clustering reads) included."""
    out: dict[str, Any] = {"n": int(len(sub))}
    per_gamma = [c for c in sub if c.startswith(("msd_g", "log_anisotropy_ratio"))]
    for c in ("msd", "msd_floor", "D", "D_floor", "D_slope", "msd_exponent", "anisotropy",
              "drift_fraction", "alpha2", *per_gamma):
        if c in sub:
            v = sub[c].to_numpy(np.float64)
            out[f"median_{c}"] = finite_or_none(np.nanmedian(v)) if np.isfinite(v).any() else None
    return out


def summary(df: pd.DataFrame, dt: float | None, units: dict[str, str],
            info: dict[str, Any]) -> dict[str, Any]:
    """The ``particles`` section: statistics of MSD, D and their floors over all particles."""
    out = {"definition": "per reference particle: displacement cloud over the kept samples "
                         "(trackpy locate, nearest-particle link); MSD = <|d|^2>, D = MSD / "
                         "(2 ndim Δt)", "units": units, "dt": dt,
           "n_particles": int(len(df)), **info}
    for c in ("msd", "msd_floor", "D", "D_floor", "D_slope", "msd_exponent", "anisotropy",
              "drift_fraction", "alpha2"):
        if c in df:
            out[c] = stats(df[c])
    if len(df) and df["n_kept"].sum():
        out["missing_fraction"] = float(df["n_missing"].sum() / df["n_kept"].sum())
    if "msd" in df and "msd_floor" in df:
        ratio = df["msd"] / df["msd_floor"]
        out["fraction_above_floor_x3"] = finite_or_none((ratio > 3).mean()) if len(df) else None
    return out


def agreement(ens: dict[str, Any], section: dict[str, Any], tracking: dict[str, Any],
              factor: float = 2.0) -> dict[str, Any]:
    """``mc_vs_tracking``: the MC D of all particles over the tracking D of the observed
    frames. The criterion uses ``ens`` (:func:`ensemble` of all rows: ensemble MSD at the
    run's γ, the same averaging as the tracking's emsd); the ensemble slope D and the
    per-particle medians from ``section`` (the ``particles`` section) are reported beside
    it, with the MC and tracked MSD exponents. ``agrees`` is True when the ensemble D is
    within ``factor`` of tracking (2×: the issue-12 criterion on real videos); None when
    either side is missing (no time axis, no trackable frames). ``agrees_wide``: the same
    with the MSD linked within the wide radius (absent without it).

    ``mc_motion`` / ``tracking_motion`` classify the two MSD exponents with
    :func:`~matdyn.dynamics.calibration.classify_exponent` (α < 0.7 sub-diffusive, > 1.3
    ballistic, Saxton & Jacobson 1997); ``exponents_agree`` is False when the classes differ.
    A D can agree at the analysis Δt while the MC MSD(Δt) does not grow like the tracked one
    (Princeton beads: α 0.27 against 1.06, session 15): then the MC D holds at that Δt only.
    ``rays_motion`` / ``rays_exponents_agree``: the same for the MSD followed along the
    latent rays (``ens["rays_msd_exponent"]``). ``motion_from`` says which of the two decides
    (``rays`` when they were followed: no link radius caps their MSD; else ``one-jump``) and
    ``motion_agrees`` gives its verdict; :func:`motion_note` words it."""
    tr = (tracking.get("modes", {}) or {}).get("all") or {}
    d_tr, a_tr = tr.get("D"), tr.get("alpha")
    med = {k: (section.get(k) or {}).get("median") for k in ("D_slope", "D")}
    out: dict[str, Any] = {"tracking_D": d_tr, "tracking_alpha": a_tr,
                           "mc_D": ens.get("D"), "mc_D_wide": ens.get("D_wide"),
                           "mc_D_rays": ens.get("D_rays"),
                           "mc_D_slope": ens.get("D_slope"),
                           "mc_msd_exponent": ens.get("msd_exponent"),
                           "mc_median_D": med["D"], "mc_median_D_slope": med["D_slope"],
                           "factor": factor, "agrees": None}
    if not tracking.get("applicable") or not d_tr or d_tr <= 0:
        out["note"] = "no tracking baseline: " + str(tracking.get("reason", "not applicable"))
        return out
    for k in ("mc_D", "mc_D_wide", "mc_D_rays", "mc_D_slope", "mc_median_D",
              "mc_median_D_slope"):
        v = out[k]
        out[f"{k[3:]}_over_tracking"] = finite_or_none(v / d_tr) if v is not None else None
    r, rw = out["D_over_tracking"], out.get("D_wide_over_tracking")
    if r is not None:
        out["agrees"] = bool(1 / factor <= r <= factor)
    if rw is not None:  # the same criterion with the wide link radius (link_radius_check)
        out["agrees_wide"] = bool(1 / factor <= rw <= factor)
    # one classification of the tracked, ray and one-jump exponents (NaN: "undetermined")
    a = np.array([np.nan if v is None else v for v in
                  (a_tr, ens.get("rays_msd_exponent"), out["mc_msd_exponent"])], np.float64)
    tr_cls, r_cls, mc_cls = classify_exponent(a).tolist()
    ok = np.isfinite(a)
    if ok[0] and ok[1]:
        out.update(mc_rays_msd_exponent=a[1].item(), rays_motion=r_cls, tracking_motion=tr_cls,
                   rays_exponents_agree=r_cls == tr_cls)
    if ok[0] and ok[2]:
        out.update(mc_motion=mc_cls, tracking_motion=tr_cls, exponents_agree=mc_cls == tr_cls)
    # the kind of motion to read: the rays' when followed (no link radius caps their MSD)
    for src, key in (("rays", "rays_exponents_agree"), ("one-jump", "exponents_agree")):
        if key in out:
            out.update(motion_agrees=out[key], motion_from=src)
            break
    return out


def motion_note(agree: dict[str, Any], dt: float | None, time_unit: str) -> str | None:
    """The analysis note on the kind of motion (``agreement``'s output), or None when the
    MC and tracked MSD exponents fall in one class (or were not both measured). ``dt``: the
    Δt of the analysis γ (None without a time axis). The rays' exponent decides when the
    rays were followed: the one-jump MSD is capped by the link radius at large γ and flattens
    (Princeton beads, session 17: one-jump α 0.42, rays 0.84, tracking 0.94)."""
    a_tr, t_cls = agree.get("tracking_alpha"), agree.get("tracking_motion")
    at = (f"at the analysis Δt ({dt:.3g} {time_unit}) only" if dt is not None
          else "at the analysis γ only")
    if agree.get("motion_from") == "rays":
        a_r, r_cls = agree["mc_rays_msd_exponent"], agree["rays_motion"]
        one = (f"Δt^{agree['mc_msd_exponent']:.2f} ({agree['mc_motion']})"
               if "mc_motion" in agree else None)
        if agree["rays_exponents_agree"]:
            if agree.get("exponents_agree") is False:
                return (f"MC MSD(Δt) followed along the latent rays grows as Δt^{a_r:.2f} "
                        f"({r_cls}), like the tracked Δt^{a_tr:.2f}; linked in one jump it "
                        f"grows as {one} because the link radius caps it at large γ: read the "
                        "kind of motion from the rays (mc_vs_tracking.rays_motion)")
            return None
        also = (f"; linked in one jump it grows as {one}, like the tracked MSD"
                if agree.get("exponents_agree") else "")
        return (f"MC MSD(Δt) followed along the latent rays grows as Δt^{a_r:.2f} ({r_cls}), "
                f"the tracked MSD as Δt^{a_tr:.2f} ({t_cls}){also}: the MC D holds {at}, and "
                "the ray MSD curve (diamonds in figure particles_msd_dt) does not show the "
                "data's kind of motion")
    if agree.get("exponents_agree") is False:
        return (f"MC MSD(Δt) grows as Δt^{agree['mc_msd_exponent']:.2f} "
                f"({agree['mc_motion']}), the tracked MSD as Δt^{a_tr:.2f} "
                f"({t_cls}): the MC D holds {at}, and the MC MSD curve "
                "does not show the data's kind of motion (figure particles_msd_dt)")
    return None


#: a γ whose MC MSD grows by more than this factor when the link radius widens is named in
#: the analysis's note (the MSD there depends on the radius, not only on the motion)
RADIUS_NOTE_FACTOR = 1.25


def link_radius_check(msd_by_gamma: dict[str, float | None],
                      wide_by_gamma: dict[str, float | None] | None, radius_px: float,
                      wide_px: float | None, length_per_px: float, *,
                      paired_by_gamma: dict[str, float | None] | None = None) -> dict[str, Any]:
    """How much the ensemble MC MSD at each γ depends on the link radius.

    A sample particle is linked to its reference particle only within ``radius_px``
    (:class:`~matdyn.dynamics.streaming.ParticleLinks`; farther ones count as appearing), so
    the MC MSD cannot exceed R² and, for a cloud much wider than R, tends to R²/2 (uniform
    over the disc) however far particles move. Per γ: ``msd_over_cap`` = MSD / (R²/2) and,
    when the clouds were also linked within ``wide_px``, ``wide_over_msd`` = the MSD so
    linked / the MSD (1: the radius does not matter), both over the same particles when
    ``paired_by_gamma`` gives the MSD of the particles that have a wide MSD (a particle that
    always jumps past R has a wide MSD only). MSDs in length² (``length_per_px``
    per px). ``sensitive_gammas``: the γ keys whose ratio exceeds :data:`RADIUS_NOTE_FACTOR`.
    A Gaussian-cloud model is not used: on the Princeton beads (session 16; R = 2 px at
    0.7 µm/px) it put the truncation bias at the analysis γ at 2 %, but linking within 4 px
    doubled the MSD (heavy-tailed clouds: some particles jump 2-4 px).

    >>> c = link_radius_check({"1": 2.0}, {"1": 3.0}, 2.0, 4.0, 1.0)
    >>> c["by_gamma"]["1"], c["sensitive_gammas"]
    ({'msd_over_cap': 1.0, 'wide_over_msd': 1.5}, ['1'])
    """
    if not (radius_px > 0 and length_per_px > 0):
        raise AnalysisError(f"link radius and pixel size must be > 0, got {radius_px!r} px, "
                            f"{length_per_px!r} per px")
    cap = 0.5 * float(radius_px) ** 2 * float(length_per_px) ** 2
    wide_by_gamma = wide_by_gamma or {}
    per: dict[str, Any] = {}
    for k, m in msd_by_gamma.items():
        ok = m is not None and np.isfinite(m) and m > 0
        w = wide_by_gamma.get(k)
        mp = m if paired_by_gamma is None else paired_by_gamma.get(k, m)
        okp = mp is not None and np.isfinite(mp) and mp > 0
        per[k] = {"msd_over_cap": float(m / cap) if ok else None,
                  "wide_over_msd": (float(w / mp) if okp and w is not None and np.isfinite(w)
                                    else None)}
    sensitive = [k for k, v in per.items()
                 if v["wide_over_msd"] is not None and v["wide_over_msd"] > RADIUS_NOTE_FACTOR]
    return {"link_radius_px": float(radius_px),
            "wide_radius_px": None if wide_px is None else float(wide_px),
            "msd_cap": cap, "by_gamma": per, "sensitive_gammas": sensitive}
