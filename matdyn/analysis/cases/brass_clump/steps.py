"""Steps of the brass-clump case that are specific to it: the composition reducer, the
observed-volume scan, clump-density fidelity, the §3.4.2 filters, descriptors, the MDS
groups and the temporal mapping to aging stages (paper §3.4, Figs. 7-8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from matdyn.analysis.case import CaseContext, fmt_stats, rejection_summary, stats
from matdyn.analysis.cases.brass_clump.config import CHANNELS, Config
from matdyn.analysis.clustering import hac, mds_embedding, order_groups, trimmed_hac
from matdyn.analysis.fidelity import (
    sliced_wasserstein,
    split_half_baseline,
    swd_baseline,
    wasserstein_1d,
)
from matdyn.descriptors.composition import channel_mass
from matdyn.descriptors.particles import Binarizer
from matdyn.errors import AnalysisError
from matdyn.sampling.reducers import Reducer, ReferenceBlock, RunInfo, VariationBatch


class Composition(Reducer):
    """Channel masses inside each clump's own mask: ``ref_mass`` [M, C] of the references
    and ``mass`` [M, N, C] of every perturbed sample (for mass ratios, Fig. 8c/d)."""

    def __init__(self, mask: Binarizer, name: str = "composition") -> None:
        self.mask = mask
        self.name = name

    def start(self, info: RunInfo) -> None:
        self._n, self._c = info.n_samples, info.image_shape[0]

    def begin_block(self, block: ReferenceBlock) -> None:
        self._ref = channel_mass(block.images, mask=self.mask(block.images))
        self._mass = np.full((len(block), self._n, self._c), np.nan)

    def update(self, batch: VariationBatch) -> None:
        from matdyn.descriptors.differences import cached_masks

        masks = cached_masks(self.mask, batch.images, batch.cache)
        self._mass[batch.ref_slots, batch.sample_indices] = channel_mass(batch.images, mask=masks)

    def end_block(self) -> dict[str, np.ndarray]:
        out = {"ref_mass": self._ref, "mass": self._mass}
        self._ref = self._mass = None  # type: ignore[assignment]
        return out

    def __repr__(self) -> str:
        return f"Composition(mask={self.mask!r}, name={self.name!r})"


# ----------------------------------------------------------------------------- helpers
def fractions(mass: np.ndarray) -> np.ndarray:
    """Mass ratios per channel (rows sum to 1; NaN for an empty clump)."""
    m = np.asarray(mass, dtype=np.float64)
    tot = m.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, m / tot, np.nan)



@dataclass
class Observed:
    mass: np.ndarray  # [O, C] channel masses inside the clump mask
    volume_frac: np.ndarray  # [O] mask voxels / box voxels
    index: np.ndarray  # [O] store frame indices
    fidelity: np.ndarray  # [F, C, R, R, R] volumes for the fidelity distances
    stage: np.ndarray | None  # [O] stage_days
    mode: np.ndarray | None  # [O] planted reactivity mode (synthetic)


def scan_observed(ctx: CaseContext, mask: Binarizer, cfg: Config,
                  rng: np.random.Generator) -> Observed:
    """One streaming pass over the store (volumes prepared as in training, ``dataset.fit``):
    masses, volume fractions, a fidelity subset."""
    store = ctx.store
    n = len(store)
    use = (np.arange(n) if cfg.max_observed is None or cfg.max_observed >= n
           else np.sort(rng.choice(n, cfg.max_observed, replace=False)))
    fid = set(np.sort(rng.choice(use, min(cfg.n_fidelity, len(use)), replace=False)).tolist())
    frames = ctx.observed(use)
    chunk = max(1, int(store.images.chunks[0]))
    masses, vfrac, fid_vols = [], [], []
    # a block of volumes at a time: measure, keep the fidelity volumes
    for a in range(0, len(use), chunk):
        x = frames.load(a, a + chunk)
        m = mask(x)
        masses.append(channel_mass(x, mask=m))
        vfrac.append(m.reshape(len(m), -1).mean(axis=1))
        fid_vols += [x[k] for k, i in enumerate(use[a : a + chunk]) if int(i) in fid]
    stage = store.labels.get("stage_days")
    stage = None if stage is None or len(stage) != n else np.asarray(stage, dtype=np.float64)[use]
    mode = store.truth.get("frame_mode")
    mode = None if mode is None or len(mode) != n else np.asarray(mode)[use]
    return Observed(np.concatenate(masses), np.concatenate(vfrac), use, np.stack(fid_vols),
                    stage, mode)


def masked_values(
    vols: np.ndarray, masks: np.ndarray, c: int, limit: int, rng: np.random.Generator
) -> np.ndarray:
    v = vols[:, c][masks]
    return v[rng.choice(v.size, limit, replace=False)] if v.size > limit else v


def vote(values: np.ndarray) -> float:
    """Most frequent value of a row (ties: the smallest).

    >>> vote(np.array([3.0, 14.0, 14.0, 3.0, 28.0]))
    3.0
    """
    u, c = np.unique(values, return_counts=True)
    return float(u[np.argmax(c)])


def log_descriptors(X: np.ndarray) -> np.ndarray:
    """log10(X + c) per column, c = 1 % of the column's median positive value, so exact
    zeros (a channel absent from every sample) stay finite and close to small values.

    >>> log_descriptors(np.array([[0.0, 1.0], [100.0, 1.0]])).round(3).tolist()
    [[0.0, 0.004], [2.004, 0.004]]
    """
    X = np.asarray(X, dtype=np.float64)
    out = np.empty_like(X)
    for c in range(X.shape[1]):
        pos = X[:, c][X[:, c] > 0]
        off = 0.01 * float(np.median(pos)) if pos.size else 1e-12
        out[:, c] = np.log10(X[:, c] + off)
    return out


def group_names(n: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"G{i}" for i in range(n)]


# ----------------------------------------------------------------------------- fidelity
def fidelity_distances(
    obs: np.ndarray,
    obs_masks: np.ndarray,
    gen: np.ndarray,
    gen_masks: np.ndarray,
    cfg: Config,
    seed: int,
) -> dict[str, Any]:
    """Per-channel clump-density W1 (state-normalised and physical), SWD, baselines."""
    lo = np.array(
        [obs[:, c][obs_masks].min() if obs_masks.any() else 0.0 for c in range(obs.shape[1])]
    )
    hi = np.array(
        [obs[:, c][obs_masks].max() if obs_masks.any() else 1.0 for c in range(obs.shape[1])]
    )
    span = np.where(hi > lo, hi - lo, 1.0)

    def w1(
        a: np.ndarray, am: np.ndarray, b: np.ndarray, bm: np.ndarray, c: int, scaled: bool
    ) -> float:
        r = np.random.default_rng(seed)
        va = masked_values(a, am, c, cfg.max_w1_values, r)
        vb = masked_values(b, bm, c, cfg.max_w1_values, r)
        if va.size == 0 or vb.size == 0:
            return float("nan")
        if scaled:
            va, vb = (va - lo[c]) / span[c], (vb - lo[c]) / span[c]
        return wasserstein_1d(va, vb)

    def split(c: int, scaled: bool) -> float:
        both = np.concatenate([obs, obs_masks[:, None].astype(obs.dtype)], axis=1)
        vals = split_half_baseline(
            both,
            lambda a, b: w1(a[:, :-1], a[:, -1] > 0.5, b[:, :-1], b[:, -1] > 0.5, c, scaled),
            n_repeats=3,
            seed=seed,
        )
        return float(np.nanmean(vals))

    out: dict[str, Any] = {
        "intensity_w1": {
            ch: w1(obs, obs_masks, gen, gen_masks, c, True) for c, ch in enumerate(CHANNELS)
        },
        "intensity_w1_baseline": {ch: split(c, True) for c, ch in enumerate(CHANNELS)},
        "intensity_w1_physical": {
            ch: w1(obs, obs_masks, gen, gen_masks, c, False) for c, ch in enumerate(CHANNELS)
        },
        "state_range": {ch: [float(lo[c]), float(hi[c])] for c, ch in enumerate(CHANNELS)},
        "normalisation": "voxels inside the clump masks; each channel scaled by the observed range",
        "n_generated": int(len(gen)),
        "n_observed": int(len(obs)),
    }
    swd = sliced_wasserstein(obs, gen, n_patches=cfg.swd_patches, seed=seed)
    base = swd_baseline(obs, n_patches=cfg.swd_patches, seed=seed)
    out.update(
        {
            "swd": swd.mean,
            "swd_levels": swd.levels.tolist(),
            "swd_baseline": base.mean,
            "swd_baseline_levels": base.levels.tolist(),
        }
    )
    return out



def check_volumes(gen: np.ndarray, obs: Observed, mask: Binarizer, cfg: Config) -> dict:
    """All-noise check: generated clumps must fill about the observed share of the box."""
    gen_vf = mask(gen).reshape(len(gen), -1).mean(axis=1)
    obs_vf_med, gen_vf_med = float(np.median(obs.volume_frac)), float(np.median(gen_vf))
    ratio = gen_vf_med / obs_vf_med if obs_vf_med > 0 else float("inf")
    if not (1 / cfg.max_volume_ratio <= ratio <= cfg.max_volume_ratio):
        raise AnalysisError(
            f"generated clumps fill {gen_vf_med:.1%} of the box (median) against {obs_vf_med:.1%} "
            f"observed (ratio {ratio:.3g}, allowed 1/{cfg.max_volume_ratio:g}.."
            f"{cfg.max_volume_ratio:g} at mask_threshold={cfg.mask_threshold}); the generator "
            "does not draw clumps (all noise, empty, or wrong units)"
        )
    return {"observed_median": obs_vf_med, "generated_median": gen_vf_med}


# ----------------------------------------------------------------------------- filters
def filters(mass_dev: np.ndarray, iou: np.ndarray, kept: np.ndarray, cfg: Config) -> dict:
    """Rejection rates of each filter alone and combined, overall and per reference."""
    return {
        "mass_deviation": rejection_summary(
            ~(mass_dev <= cfg.mass_dev_max), cfg.mass_dev_max,
            "upper bound on |M - M_ref| / M_ref (§3.4.2)", mass_dev),
        "iou3d": rejection_summary(
            ~(iou >= cfg.iou_min), cfg.iou_min, "lower bound on IOU3D vs the reference (§3.4.2)",
            iou),
        "combined": rejection_summary(
            ~kept, {"mass_dev_max": cfg.mass_dev_max, "iou_min": cfg.iou_min}, "both filters"),
    }


# ----------------------------------------------------------------------------- describe, group
@dataclass
class Variations:
    """Per-variation quantities of the valid variations (``valid`` rows of the M refs)."""

    valid: np.ndarray  # [M] bool: kept >= min_kept and finite descriptors
    vidx: np.ndarray  # [V] reference index of each valid variation
    n_kept: np.ndarray  # [M]
    kept: np.ndarray  # [M, N] bool
    iqr_var: np.ndarray  # [M, C] descriptor
    ref_frac: np.ndarray  # [M, C] mass ratios of the references
    frac_s: np.ndarray  # [M, N, C] mass ratios of the kept samples (NaN elsewhere)
    amp: np.ndarray  # [M, C] within-variation amplitude (std of the ratios)


def variations(result: Any, cfg: Config) -> Variations:
    kept, iqr_var = result["iqr/kept"].astype(bool), result["iqr/iqr_var"]
    M = kept.shape[0]
    n_kept = kept.sum(axis=1)
    valid = (n_kept >= cfg.min_kept) & np.isfinite(iqr_var).all(axis=1)
    if valid.sum() < cfg.n_groups + 1:
        raise AnalysisError(
            f"only {int(valid.sum())} of {M} variations keep >= min_kept={cfg.min_kept} samples "
            f"(retained per variation: {fmt_stats(stats(n_kept))}); need more than n_groups="
            f"{cfg.n_groups}: raise n_samples, relax the filters or lower gamma"
        )
    frac_s = np.where(kept[..., None], fractions(result["composition/mass"]), np.nan)
    with np.errstate(invalid="ignore"):
        amp = np.nanstd(frac_s, axis=1)
    ref_frac = fractions(result["composition/ref_mass"])
    if not np.isfinite(ref_frac[valid]).all():
        raise AnalysisError("some reference clumps have an empty mask; lower analysis.mask_threshold")
    return Variations(valid, np.flatnonzero(valid), n_kept, kept, iqr_var, ref_frac, frac_s, amp)


def embed_and_cluster(v: Variations, cfg: Config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(2D MDS embedding [V, 2], cluster labels [V]) of the scaled descriptors (Fig. 8a)."""
    X = log_descriptors(v.iqr_var[v.valid]) if cfg.log_descriptors else v.iqr_var[v.valid]
    emb = mds_embedding(X, scaling=cfg.scaling, seed=seed, max_iter=cfg.mds_max_iter)
    space, scaling = (emb, None) if cfg.cluster_on == "mds" else (X, cfg.scaling)
    if cfg.trim_z is not None:
        hr = trimmed_hac(space, cfg.n_groups, z_max=cfg.trim_z, method=cfg.cluster_method,
                         scaling=scaling)
    else:
        hr = hac(space, cfg.n_groups, method=cfg.cluster_method, scaling=scaling)
    return emb, hr.labels


@dataclass
class StageMapping:
    """Temporal mapping of the valid variations through their nearest observed volumes."""

    stage: np.ndarray | None  # [V] majority stage
    stage_mean: np.ndarray | None  # [V] mean stage
    matched_mode: np.ndarray | None  # [V] majority planted mode
    score: np.ndarray  # [V] what orders the groups
    score_name: str


def temporal_mapping(ctx: CaseContext, v: Variations, obs: Observed, cfg: Config) -> StageMapping:
    """Each variation's k nearest observed volumes in mass-fraction space (Fig. 8b)."""
    from scipy.spatial.distance import cdist

    obs_frac = fractions(obs.mass)
    ok_obs = np.isfinite(obs_frac).all(axis=1)
    vref = v.ref_frac[v.valid]
    nn = np.argsort(cdist(vref, obs_frac[ok_obs]), axis=1)[:, : cfg.k_neighbors]
    o_idx = np.flatnonzero(ok_obs)[nn]  # [V, k] rows of obs
    stage = stage_mean = matched_mode = None
    if obs.stage is not None:
        stage = np.array([vote(r) for r in obs.stage[o_idx]])
        stage_mean = obs.stage[o_idx].mean(axis=1)
        score, score_name = stage_mean, "stage_mean"
    else:
        score, score_name = 1.0 - vref[:, 0], "sulfidised_ratio"  # Cu2S + CuS share
        ctx.note("the store has no stage_days label: groups are ordered by sulfidised mass ratio")
    if obs.mode is not None:
        matched_mode = np.array([vote(r) for r in obs.mode[o_idx].astype(np.float64)]).astype(int)
    return StageMapping(stage, stage_mean, matched_mode, score, score_name)


def name_groups(labels: np.ndarray, score: np.ndarray, n_groups: int) -> tuple[Any, np.ndarray]:
    """(GroupOrder, group name per variation): A, B, C, ... by increasing mean score."""
    go = order_groups(labels, score, planted=score)
    names = group_names(n_groups)
    name_of = {int(g): names[r] for r, g in enumerate(go.groups)}
    return go, np.array([name_of[int(g)] for g in labels])


def table_rows(v: Variations, emb: np.ndarray, group: np.ndarray, tm: StageMapping) -> list[dict]:
    """One row per valid variation: counts, MDS, group, descriptors, ratios, stage."""
    N = v.kept.shape[1]
    rows = []
    for k, i in enumerate(v.vidx):
        row = {"reference": int(i), "n_kept": int(v.n_kept[i]),
               "rejection_rate": float(1.0 - v.n_kept[i] / N), "mds1": float(emb[k, 0]),
               "mds2": float(emb[k, 1]), "group": group[k]}
        row |= {f"var_iqr_{ch}": float(v.iqr_var[i, c]) for c, ch in enumerate(CHANNELS)}
        for c, ch in enumerate(CHANNELS):
            row[f"ratio_{ch}"] = float(v.ref_frac[i, c])
            row[f"amplitude_{ch}"] = float(v.amp[i, c])
        if tm.stage is not None:
            row["stage_days"] = float(tm.stage[k])
            row["stage_mean"] = float(tm.stage_mean[k])  # type: ignore[index]
        if tm.matched_mode is not None:
            row["matched_mode"] = int(tm.matched_mode[k])
        rows.append(row)
    return rows


def groups_summary(v: Variations, group: np.ndarray, tm: StageMapping, names: list[str]) -> dict:
    out = {}
    vref, amp, desc = v.ref_frac[v.valid], v.amp[v.valid], v.iqr_var[v.valid]
    for gname in names:
        sel = group == gname
        entry = {
            "n": int(sel.sum()),
            "mean_ratio": {ch: float(np.nanmean(vref[sel, c])) for c, ch in enumerate(CHANNELS)},
            "mean_amplitude": {ch: float(np.nanmean(amp[sel, c])) for c, ch in enumerate(CHANNELS)},
            "mean_descriptor": {ch: float(np.mean(desc[sel, c])) for c, ch in enumerate(CHANNELS)},
        }
        if tm.stage is not None:
            entry["mean_stage_days"] = float(np.mean(tm.stage_mean[sel]))  # type: ignore[index]
            entry["stage_counts"] = {f"{s:g}": int(np.sum(tm.stage[sel] == s))
                                     for s in np.unique(tm.stage)}
        out[gname] = entry
    return out
