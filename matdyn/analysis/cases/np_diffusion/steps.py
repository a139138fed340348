"""Steps of the NP case that are specific to it: particle-level fidelity, the entropy
filter, the trace table and the clustering of traces (paper §3.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from matdyn.analysis.baselines import matched_split
from matdyn.analysis.case import CaseContext, finite_or_none, rejection_summary, stats
from matdyn.analysis.cases.np_diffusion.config import Config
from matdyn.analysis.cases.np_diffusion.traces import (
    describe_traces,
    extract,
    footprints,
    lag1_corr,
    particle_depth,
    spreads,
)
from matdyn.analysis.clustering import HACResult, hac, trimmed_hac
from matdyn.analysis.fidelity import (
    s2_distance,
    sliced_wasserstein,
    split_half_baseline,
    two_point_correlation,
    wasserstein_1d,
)
from matdyn.analysis.fidelity_content import checks_table, mask_centres
from matdyn.analysis.fidelity_repeats import located_subpixel_fidelity, near_repeat_fidelity
from matdyn.descriptors.differences import EntropyDifference
from matdyn.descriptors.particles import Binarizer, particle_areas_batch
from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma.continuity import consecutive_differences, summarize


def area_unit(ctx: CaseContext) -> str:
    return "nm^2" if ctx.nm is not None else f"{ctx.unit}^2"


def length_unit(ctx: CaseContext) -> str:
    return "nm" if ctx.nm is not None else ctx.unit


def to_area(ctx: CaseContext) -> float:
    """px² -> nm² (or unit² when the unit is unknown)."""
    return ctx.pixel_size**2 * (ctx.nm**2 if ctx.nm is not None else 1.0)


@dataclass
class Observed:
    """Observed frames at the generator resolution (``dataset.fit`` as in training)."""

    baseline: np.ndarray  # [B, 1, R, R] consecutive frames 0..B-1 (entropy baseline)
    fidelity: np.ndarray  # [F, 1, R, R] frames spread over the store
    n_store: int


def observe(ctx: CaseContext, cfg: Config) -> Observed:
    n_store = len(ctx.store)
    fid_idx = np.unique(np.linspace(0, n_store - 1, min(cfg.n_fidelity, n_store)).round())
    base = ctx.observed(np.arange(min(cfg.baseline_frames, n_store))).load()
    real = ctx.observed(fid_idx.astype(np.int64)).load()
    if len(real) < 4:
        raise AnalysisError(f"{ctx.store.path} has {n_store} frame(s); fidelity needs at least 4")
    return Observed(base, real, n_store)


def resolve_polarity(cfg: Config, frames: np.ndarray) -> dict[str, Any]:
    """Settle ``cfg.dark_particles`` ("auto": from the observed ``frames``' pixel skewness,
    :func:`matdyn.dynamics.particle_polarity`; the config then holds the answer) and say
    where it came from. The paper's trace protocol reads dark dips only: bright particles
    with ``descriptors`` traces/both raise :class:`ConfigError`."""
    from matdyn.dynamics import particle_polarity

    out: dict[str, Any] = {"source": "config"}
    why = "analysis.dark_particles=false"
    if cfg.dark_particles == "auto":
        cfg.dark_particles, sk = particle_polarity(frames)
        out = {"source": "auto (pixel skewness)", "skewness": sk}
        why = f"pixel skewness {sk:+.1f}"
    out["dark"] = bool(cfg.dark_particles)
    if not cfg.dark_particles and cfg.descriptors != "particles":
        raise ConfigError(f"analysis.descriptors={cfg.descriptors} reads dark particles (the "
                          f"paper's phase dips, §3.3); these particles are bright ({why}): "
                          "use analysis.descriptors=particles")
    return out


# ----------------------------------------------------------------------------- fidelity
def _check_not_noise(real: np.ndarray, gen: np.ndarray, cfg: Config) -> tuple[float, float]:
    r1_real, r1_gen = float(np.median(lag1_corr(real))), float(np.median(lag1_corr(gen)))
    if r1_real > 0.2 and r1_gen < cfg.noise_corr_ratio * r1_real:
        raise AnalysisError(
            f"generated frames look like noise: median lag-1 pixel autocorrelation {r1_gen:.3f} vs "
            f"{r1_real:.3f} in the observed frames (< {cfg.noise_corr_ratio} x); check the bundle "
            "(untrained or wrong checkpoint?)"
        )
    return r1_real, r1_gen


def _particles(ctx: CaseContext, cfg: Config, real: np.ndarray, gen: np.ndarray) -> dict:
    """The same segmentation for both sets, at a fraction of the observed particle depth."""
    depth = float(np.nanmedian([particle_depth(x[0], cfg) for x in real[: cfg.depth_frames]]))
    if not math.isfinite(depth) or depth <= 0:
        raise AnalysisError(
            f"no particles found in the observed frames at {ctx.resolution} px with sigma="
            f"{cfg.trace_sigma}, tophat_radius={cfg.tophat_radius}, min_area={cfg.min_area}; "
            "adjust the trace settings"
        )
    binarizer = Binarizer(threshold=cfg.trace_threshold * depth, dark=True,
                          sigma=cfg.trace_sigma, tophat_radius=cfg.tophat_radius)
    mask_real, mask_gen = binarizer(real), binarizer(gen)
    idx_real, a_real = particle_areas_batch(mask_real, min_area=cfg.min_area)
    idx_gen, a_gen = particle_areas_batch(mask_gen, min_area=cfg.min_area)
    if a_real.size < 2:
        raise AnalysisError(f"fewer than 2 particles in {len(real)} observed frames at "
                            f"{ctx.resolution} px; adjust the trace settings")
    if a_gen.size == 0:
        raise AnalysisError(
            f"no particles found in {len(gen)} generated frames (particle dips >= "
            f"{cfg.trace_threshold} x the observed depth {depth:.3g}, >= {cfg.min_area} px): "
            "all-noise or collapsed generator? check the bundle"
        )
    return {"depth": depth, "mask_real": mask_real, "mask_gen": mask_gen,
            "a_real": a_real * to_area(ctx), "a_gen": a_gen * to_area(ctx),
            "per_frame_real": float(np.bincount(idx_real, minlength=len(real)).mean()),
            "per_frame_gen": float(np.bincount(idx_gen, minlength=len(gen)).mean())}


_NORM_TEXT = {
    "range": "areas mapped to [0, 1] by the min and max of the pooled observed+generated areas",
    "std": "areas divided by the observed areas' standard deviation",
}


def fidelity(ctx: CaseContext, cfg: Config, real: np.ndarray, gen: np.ndarray) -> dict:
    """Noise checks, then particle-area W1, SWD and S₂ with real-vs-real baselines (Fig. 5a/b)."""
    seed, reps = ctx.seed, cfg.baseline_repeats
    r1_real, r1_gen = _check_not_noise(real, gen, cfg)
    subpixel = _subpixel(ctx, cfg, real, gen)  # before the sign flip: the locator reads dark_particles
    if cfg.dark_particles is False:  # the segmentation reads dips: bright particles, negated
        real, gen = -real, -gen
    p = _particles(ctx, cfg, real, gen)
    a_real, a_gen = p["a_real"], p["a_gen"]
    swd_kw = dict(n_patches=cfg.swd_patches, n_directions=cfg.swd_directions,
                  n_repeats=cfg.swd_repeats, min_size=min(16, ctx.resolution),
                  patch_size=min(7, ctx.resolution))

    def swd(a: np.ndarray, b: np.ndarray) -> float:
        return sliced_wasserstein(a, b, seed=seed, **swd_kw).mean

    def s2(x: np.ndarray) -> np.ndarray:
        return two_point_correlation(x, batch=True, periodic=False)[1]

    def matched(x: np.ndarray, y: np.ndarray, metric: Any) -> tuple[float | None, float]:
        """(value_matched, baseline): one pass over the split_half_baseline halvings."""
        m = matched_split(x, y, metric, n_repeats=reps, seed=seed)
        return m["generated_vs_real"], m["real_vs_real"]

    area_m, area_b = matched(a_real, a_gen, lambda x, y: wasserstein_1d(x, y, cfg.area_normalize))
    raw_m, raw_b = matched(a_real, a_gen, wasserstein_1d)
    s2_m, s2_b = matched(p["mask_real"], p["mask_gen"], lambda x, y: s2_distance(s2(x), s2(y)))
    return {
        "n_real": int(len(real)),
        "n_generated": int(len(gen)),
        "particle_depth_observed": p["depth"],
        "comparison": ("value: all observed vs all generated (the paper's protocol, §3.3.1); "
                       "baseline: two halves; value_matched: a half vs a generated subset as "
                       "large, the like-for-like partner of baseline (matdyn.analysis.baselines)"),
        "particle_area_w1": {
            "value": wasserstein_1d(a_real, a_gen, cfg.area_normalize),
            "value_matched": area_m,
            "baseline": area_b,
            "normalize": cfg.area_normalize or "none",
            "normalization": _NORM_TEXT.get(cfg.area_normalize, f"raw areas in {area_unit(ctx)}"),
        },
        "particle_area_w1_raw": {
            "value": wasserstein_1d(a_real, a_gen, None),
            "value_matched": raw_m,
            "baseline": raw_b,
            "unit": area_unit(ctx),
        },
        "particle_area_observed": stats(a_real),
        "particle_area_generated": stats(a_gen),
        "particles_per_frame": {"observed": p["per_frame_real"], "generated": p["per_frame_gen"]},
        "swd": {
            "value": swd(real, gen),
            # halves by hand: swd_baseline's own n_repeats would clash with the SWD's
            "baseline": float(np.mean(split_half_baseline(real, swd, n_repeats=reps, seed=seed))),
        },
        "s2": {
            "value": s2_distance(s2(p["mask_real"]), s2(p["mask_gen"])),
            "value_matched": s2_m,
            "baseline": s2_b,
        },
        "lag1_autocorrelation": {"observed": r1_real, "generated": r1_gen},
        "near_repeat": _near_repeat(cfg, p, seed),
        "subpixel": subpixel,
        "atypical": atypical(ctx, real, gen, seed),
        "_areas": (a_real, a_gen),  # for Fig. 5b; removed before the summary
    }


def _flag(out: dict[str, Any], checks: list, name: str) -> dict[str, Any]:
    out["flagged"] = bool(checks and checks[0].flagged())
    out["check"] = checks_table(checks).get(name)
    return out


def atypical(ctx: CaseContext, real: np.ndarray, gen: np.ndarray, seed: int) -> dict[str, Any]:
    """Share of faint, half-formed, split or merged particles, generated vs observed, overall
    and per planted region when the store has a ``truth/region_map``: the measure of the
    training summary (:func:`matdyn.analysis.fidelity_content.atypical_fidelity`, same
    segmentation :func:`~matdyn.analysis.fidelity_content.dark_particle_centres` and
    :data:`~matdyn.analysis.baselines.BASELINE_SPLITS` halvings), so the two agree on the
    same frames. ``real`` / ``gen`` [N, C, H, W] with dark particles in channel 0. ``flagged``
    lists the checks above 2× max(observed share, 2 %) (``atypical_share``,
    ``region_atypical.<mode>``); ``{"note": ...}`` when no observed particle is found."""
    from matdyn.analysis.baselines import BASELINE_SPLITS, halvings, matched_subsets
    from matdyn.analysis.cases.np_diffusion.config import MODE_NAMES
    from matdyn.analysis.cases.np_diffusion.recovery import region_map_at
    from matdyn.analysis.fidelity_content import atypical_fidelity, dark_particle_centres, flagged

    cr, cg = dark_particle_centres(real), dark_particle_centres(gen)
    if len(cr) == 0:
        return {"note": "no observed particle found by the top-hat + Otsu segmentation"}
    halves = halvings(cr.n_frames, BASELINE_SPLITS, seed)
    subsets = matched_subsets(cg.n_frames, halves, seed)
    truth = ctx.store.truth or {}
    rmap = names = None
    if "region_map" in truth:
        rmap = region_map_at(np.asarray(truth["region_map"]), ctx.resolution, ctx.fit)
        names = list(truth.get("mode_names") or MODE_NAMES)
    out, checks = atypical_fidelity([(cr.subset(a), cr.subset(b)) for a, b in halves],
                                    [cg.subset(g) for g in subsets],
                                    region_map=rmap, region_names=names)
    if not out:
        return {"note": "too few observed particles in a half for a baseline"}
    out["flagged"] = flagged(checks)
    return out


def _near_repeat(cfg: Config, p: dict, seed: int) -> dict[str, Any]:
    """Near-repeat distance of the particles of the masks above, generated vs observed
    (:func:`matdyn.analysis.fidelity_repeats.near_repeat_fidelity`, ``flagged``: more than
    2× its real-vs-real baseline)."""
    real = mask_centres(p["mask_real"], min_area=cfg.min_area)
    gen = mask_centres(p["mask_gen"], min_area=cfg.min_area)
    out, checks = near_repeat_fidelity(real, gen, n_splits=cfg.baseline_repeats, seed=seed)
    return _flag(out, checks, "near_repeat_median")


def _subpixel(ctx: CaseContext, cfg: Config, real: np.ndarray, gen: np.ndarray) -> dict[str, Any]:
    """Sub-pixel locking of trackpy centroids, generated vs observed, with the locator the
    Monte Carlo displacements use (:func:`matdyn.analysis.fidelity_repeats.located_subpixel_fidelity`,
    ``flagged``: more than 2× its real-vs-real baseline)."""
    from matdyn.analysis.cases.np_diffusion.particles import locate_params

    try:
        params, _ = locate_params(ctx, cfg, real)
    except AnalysisError as e:
        return {"note": f"not checked: {e}"}
    out, checks = located_subpixel_fidelity(real, gen, params=params,
                                            n_splits=cfg.baseline_repeats, seed=ctx.seed)
    return _flag(out, checks, "subpixel_w1")


# ----------------------------------------------------------------------------- filter
def entropy_threshold(cfg: Config, base_frames: np.ndarray, ent: EntropyDifference,
                      n_store: int) -> tuple[float, str, Any]:
    """(threshold, where it came from, consecutive-frame DistributionSummary or None)."""
    base = None
    if len(base_frames) > cfg.baseline_stride:
        base = consecutive_differences(base_frames, [ent], stride=cfg.baseline_stride)
        base = base.summary[ent.name]
    thr = cfg.threshold_value()
    if thr is not None:
        return thr, "fixed", base
    if base is None or base.n == 0:
        raise AnalysisError(
            f"entropy_threshold=auto needs more than {cfg.baseline_stride} consecutive observed "
            f"frames; the store has {n_store}: give a number instead"
        )
    thr = float(base.max if cfg.entropy_bound == "max" else base.p95)
    return thr, f"auto:{cfg.entropy_bound} of consecutive observed frames", base


def filter_summary(cfg: Config, result: Any, thr: float, source: str, base: Any,
                   gamma: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """Check the filter kept something; (filters dict, n_kept, used references)."""
    n_kept = result["mean/n_kept"].astype(np.int64)
    ediff = result["metrics/entropy_diff"]
    M, N = len(n_kept), cfg.n_samples
    seen = summarize(ediff)
    if n_kept.sum() == 0:
        raise AnalysisError(
            f"the entropy filter (entropy_diff <= {thr:.4g}, {source}) rejected all {M * N} "
            f"samples at gamma={gamma:g}; observed entropy differences min {seen.min:.4g}, median "
            f"{seen.median:.4g}, p95 {seen.p95:.4g}, max {seen.max:.4g}: raise entropy_threshold "
            "(or use auto) or lower gamma"
        )
    # a reference needs min_kept samples (and at least one when G(z_i) is not averaged in)
    used = n_kept >= max(int(cfg.min_kept), 0 if cfg.include_reference else 1)
    if not used.any():
        raise AnalysisError(
            f"no reference kept >= min_kept={cfg.min_kept} of {N} samples (most kept: "
            f"{int(n_kept.max())}; entropy_diff <= {thr:.4g}, observed median {seen.median:.4g}); "
            "lower min_kept, raise entropy_threshold or lower gamma"
        )
    # the reducer's counts as a mask: the last N - n_kept slots of each reference rejected
    rejected = np.arange(N)[None, :] >= n_kept[:, None]
    entry = rejection_summary(rejected, thr, "upper bound on |H(x) - H(x_ref)| (§3.3.2)")
    entry.update(threshold_source=source, observed=seen.as_dict(),
                 consecutive_observed=base.as_dict() if base is not None else None,
                 references_used=int(used.sum()), min_kept=int(cfg.min_kept))
    return {"entropy_diff": entry}, n_kept, used


# ----------------------------------------------------------------------------- traces
def _trace_rows(ctx: CaseContext, cfg: Config, src: str, img: np.ndarray, ts: Any,
                spread: np.ndarray, footprint: np.ndarray, depth: float) -> pd.DataFrame:
    df = describe_traces(img, ctx.pixel_size, cfg, depth)
    if len(df) != len(ts.traces):  # same extraction twice: must agree
        raise AnalysisError("trace extraction is not deterministic; please report this")
    df.insert(0, "trace", df.pop("label"))
    df.insert(0, "source", src)
    df["spread_px2"] = spread
    df["footprint_px2"] = footprint
    df["diffusion_area"] = (spread - footprint) * to_area(ctx)
    # √MSD: a length, far less skewed than the area (a better clustering feature)
    df["rms_displacement"] = np.sqrt(np.clip(df["diffusion_area"].to_numpy(), 0.0, None))
    df["depth"] = depth
    return df


def _reference_traces(ctx: CaseContext, cfg: Config, ref: np.ndarray, mean: np.ndarray,
                      depth: float, used: bool) -> list[pd.DataFrame]:
    """Rows of one reference image (still particles) and, if used, of its averaged image."""
    ts_ref = extract(ref, ctx.pixel_size, cfg, depth)
    spread_ref = spreads(ref, ts_ref, cfg)
    # still particles against their median: the noise floor of the diffusion area
    floor = np.full(spread_ref.size, np.median(spread_ref) if spread_ref.size else np.nan)
    rows = [_trace_rows(ctx, cfg, "reference", ref, ts_ref, spread_ref, floor, depth)]
    if used:
        ts = extract(mean, ctx.pixel_size, cfg, depth)
        foot = footprints(ts, ts_ref, spread_ref)
        rows.append(_trace_rows(ctx, cfg, "averaged", mean, ts, spreads(mean, ts, cfg), foot,
                                depth))
    return rows


def trace_table(ctx: CaseContext, cfg: Config, refs: np.ndarray, means: np.ndarray,
                ref_indices: np.ndarray, n_kept: np.ndarray, used: np.ndarray) -> pd.DataFrame:
    """One row per trace: the particles of each reference image and the traces of each
    averaged image, with descriptors and the diffusion area."""
    M, N = len(refs), cfg.n_samples
    depths = np.array([particle_depth(refs[i, 0], cfg) for i in range(M)])
    if not np.isfinite(depths).any():
        raise AnalysisError(
            f"no particles found in any of the {M} reference images; all-noise generator or "
            "trace settings unsuited to this resolution"
        )
    fallback = float(np.nanmedian(depths))
    rows: list[pd.DataFrame] = []
    # each reference: describe its particles (still) and the traces of its averaged image
    for i in range(M):
        d = depths[i] if math.isfinite(depths[i]) else fallback
        for df in _reference_traces(ctx, cfg, refs[i, 0], means[i, 0], d, bool(used[i])):
            df.insert(1, "ref_index", int(ref_indices[i]))
            df["n_kept"] = int(n_kept[i])
            df["rejection_rate"] = float(1.0 - n_kept[i] / N)
            rows.append(df)
    table = pd.concat(rows, ignore_index=True)
    if ctx.nm is not None:  # physical columns of trace_descriptors are in the bundle's unit
        for col, power in (("area", 2), ("ellipse_area", 2), ("major_sigma", 1),
                           ("minor_sigma", 1)):
            table[col] *= ctx.nm**power
    return table


def table_units(ctx: CaseContext) -> dict[str, str]:
    a, length = area_unit(ctx), length_unit(ctx)
    return {"centroid_row": "px", "centroid_col": "px", "area_px": "px", "spread_px2": "px^2",
            "footprint_px2": "px^2", "area": a, "ellipse_area": a, "diffusion_area": a,
            "rms_displacement": length, "major_sigma": length, "minor_sigma": length,
            "orientation_deg": "deg"}


# ----------------------------------------------------------------------------- clustering
def name_clusters(labels: np.ndarray, aniso: np.ndarray, area: np.ndarray,
                  k: int) -> dict[int, str]:
    """Cluster id -> mode name: highest mean anisotropy -> directed, then larger mean
    diffusion area -> free, -> confined; generic names unless k == 3."""
    ids = [int(c) for c in np.unique(labels)]
    if k != 3 or len(ids) != 3:
        return {c: f"cluster {c}" for c in ids}
    mean_a = {c: float(np.nanmean(aniso[labels == c])) for c in ids}
    directed = max(ids, key=lambda c: mean_a[c])
    rest = [c for c in ids if c != directed]
    mean_area = {c: float(np.nanmean(area[labels == c])) for c in rest}
    free = max(rest, key=lambda c: mean_area[c])
    confined = next(c for c in rest if c != free)
    return {directed: "directed", free: "free", confined: "confined"}


def _fit(method: str, X: np.ndarray, cfg: Config) -> HACResult:
    if method == "trimmed":
        return trimmed_hac(X, cfg.n_modes, z_max=cfg.trim_z, method="average",
                           scaling=cfg.scaling)
    return hac(X, cfg.n_modes, method=method, scaling=cfg.scaling)


def _method_summary(sub: pd.DataFrame, res: HACResult, names: dict[int, str],
                    feats: list[str], described: list[str]) -> dict:
    modes = {}
    for c in sorted(names):
        sel = sub[res.labels == c]
        modes[names[c]] = {"cluster": int(c), "n": int(len(sel))} | {
            f"mean_{f}": finite_or_none(sel[f].mean()) for f in described}
    return {"features": feats, "sizes": [int((res.labels == c).sum()) for c in sorted(names)],
            "modes": modes, "n_trimmed": int((~res.kept).sum())}


def cluster(cfg: Config, table: pd.DataFrame) -> tuple[dict, dict[str, HACResult], np.ndarray]:
    """HAC of the averaged traces with each method (Fig. 6c/d); adds ``cluster_<method>`` and
    ``mode_<method>`` columns. Returns (summary, results, table index of the clustered rows)."""
    avg = table[table.source == "averaged"]
    feats, robust = list(cfg.features), list(cfg.robust_features) or list(cfg.features)
    every = list(dict.fromkeys(feats + robust))
    finite = np.isfinite(avg[every].to_numpy(dtype=np.float64)).all(axis=1)
    if finite.sum() < cfg.n_modes:
        raise AnalysisError(
            f"only {int(finite.sum())} of {len(avg)} averaged traces have finite {every}; need "
            f">= n_modes={cfg.n_modes}: all-noise generator, or raise n_refs / lower trace_threshold"
        )
    rows = avg.index.to_numpy()[finite]
    sub = table.loc[rows]
    aniso, area = sub["anisotropy"].to_numpy(), sub["diffusion_area"].to_numpy()
    described = list(dict.fromkeys(every + ["anisotropy", "tortuosity", "diffusion_area"]))
    methods: dict[str, Any] = {}
    results: dict[str, HACResult] = {}
    # one clustering per method: the paper's average linkage and the robust variants
    for method in cfg.methods:
        method_feats = feats if method == "average" else robust
        try:
            res = _fit(method, avg[method_feats].to_numpy(dtype=np.float64)[finite], cfg)
        except AnalysisError as err:
            if method == cfg.methods[0]:
                raise
            methods[method] = {"error": str(err)}
            continue
        results[method] = res
        names = name_clusters(res.labels, aniso, area, cfg.n_modes)
        col = pd.Series(-1, index=table.index, dtype=np.int64)
        col.loc[rows] = res.labels
        table[f"cluster_{method}"] = col
        table[f"mode_{method}"] = col.map(lambda c, names=names: names.get(int(c), ""))
        methods[method] = _method_summary(sub, res, names, method_feats, described)
    summary = {"features": feats, "robust_features": robust, "scaling": cfg.scaling or "none",
               "n_modes": int(cfg.n_modes), "n_traces": int(finite.sum()), "methods": methods}
    return summary, results, rows
