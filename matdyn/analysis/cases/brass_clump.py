"""Brass-clump case (paper §3.4, Figs. 7-8): sulfidation modes of clump variations.

What :func:`run` does:

1. **Checks.** The generator must make 3D volumes with one channel per Cu state
   (Cu, Cu₂S, CuS); the store must hold the same channels.
2. **Observed volumes** are streamed once from the store (square crop, resized to the
   generator resolution as in training). Per volume we keep the channel masses inside the
   clump mask (total density > ``mask_threshold``), the mask's volume fraction, the aging
   stage (label ``stage_days``) and, for synthetic stores, the planted reactivity mode.
3. **Fidelity** (Fig. 7c): per-channel Wasserstein distances of the voxel densities inside
   the clump masks, generated (z ~ N(0, I)) vs observed, in state-normalised units (each
   channel mapped to [0, 1] by the observed channel's range; the paper reports
   0.010 / 0.017 / 0.006 for Cu / Cu₂S / CuS, §3.4.1) and in physical units; 3D
   multi-scale sliced Wasserstein distance; each with a split-half real-vs-real baseline.
   All-noise check: the generated clump masks must fill about the same share of the box as
   the observed ones (within a factor ``max_volume_ratio``), otherwise
   :class:`AnalysisError`.
4. **Monte Carlo** (γ = 0.5 in the paper): ``n_refs`` references × ``n_samples`` samples.
   Filters (§3.4.2): compositional mass deviation ≤ ``mass_dev_max`` (20 %) and
   IOU₃D ≥ ``iou_min`` (0.5). Descriptor per clump variation:
   [Var(IQR_Cu), Var(IQR_Cu₂S), Var(IQR_CuS)] over the retained samples, IQRs taken inside
   each sample's clump mask (:class:`~matdyn.sampling.reducers.IQRVariance`).
5. **Embedding and groups** (Fig. 8a): metric MDS to 2D of the scaled descriptors;
   ``n_groups`` clusters (:mod:`matdyn.analysis.clustering`, Ward by default).
6. **Temporal mapping** (Fig. 8b): each variation is mapped to aging stages through the
   ``k_neighbors`` observed volumes nearest to its reference in the space of per-channel
   mass fractions; its stage is their majority (ties: the earlier stage) and
   ``stage_mean`` their mean. Groups are named A, B, C, ... by increasing mean stage, as in
   the paper (A: Aging-0; B: 3-14 days; C: 14-28 days).
7. **Figures**: Fig. 7c densities, Fig. 8a MDS, Fig. 8b temporal mapping, Fig. 8c mass
   ratios per group (and the within-variation amplitude), Fig. 8d per group the
   representative variation (medoid) from low to high sulfidised mass ratio.

Recovery (synthetic stores): adjusted Rand index between the groups and the planted
reactivity mode of the matched observed particles, and between groups and matched stage;
Spearman / Kendall correlation between each variation's group rank (by mean stage) and its
matched stage ("groups order by stage").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matdyn.analysis.cases import require_shapes
from matdyn.analysis.clustering import adjusted_rand, hac, mds_embedding, order_groups, trimmed_hac
from matdyn.analysis.fidelity import (
    sliced_wasserstein,
    split_half_baseline,
    swd_baseline,
    wasserstein_1d,
)
from matdyn.data.transforms import resize_frames, square_frames
from matdyn.descriptors.composition import channel_mass
from matdyn.descriptors.differences import IoU, MassDeviation, MetricFilter
from matdyn.descriptors.particles import Binarizer
from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import to_jsonable
from matdyn.sampling.engine import VariationEngine, variation_latents
from matdyn.sampling.reducers import (
    IQRVariance,
    Reducer,
    ReferenceBlock,
    RunInfo,
    SampleMetrics,
    VariationBatch,
)
from matdyn.sampling.samplers import UniformSampler

__all__ = ["CHANNELS", "Composition", "Config", "run"]

CASE = "brass_clump"
CHANNELS = ("Cu", "Cu2S", "CuS")
#: paper numbers for the report table (§3.4)
PAPER = {
    "gamma": 0.5,
    "n_refs": 3000,
    "n_samples": 400,
    "intensity_w1": {"Cu": 0.010, "Cu2S": 0.017, "CuS": 0.006},
    "filters": {"mass_dev_max": 0.2, "iou_min": 0.5},
    "iou_at_gamma": 0.7,
    "groups": {
        "A": "Aging-0 (minimal sulfidation, high Cu)",
        "B": "3-14 days (Cu2S enrichment)",
        "C": "14-28 days (CuS enrichment)",
    },
}


@dataclass
class Config:
    """Settings of the brass-clump case (paper §3.4); counts are CPU-sized."""

    n_refs: int = 150  # reference clumps; paper: 3000 (§3.4.2)
    n_samples: int = 40  # perturbed clumps per reference; paper: 400 (§3.4.2)
    batch_size: int = 64  # volumes per generator call
    mass_dev_max: float = 0.2  # §3.4.2: compositional mass deviation ≤ 20 %
    iou_min: float = 0.5  # §3.4.2: IOU₃D ≥ 0.5 keeps the morphological identity
    mask_threshold: float = 0.5  # clump mask: total density above this (occupancy ~ partial volume)
    min_kept: int = 3  # variations with fewer retained samples get no descriptor
    n_groups: int = 3  # §3.4.2: groups A, B, C
    cluster_method: str = "ward"  # linkage for HAC ("average" is the paper's NP choice, §3.3.2)
    cluster_on: str = "mds"  # cluster the 2D MDS embedding ("mds") or the descriptors
    trim_z: float | None = None  # trimmed average linkage: set aside |z| > trim_z first
    scaling: str = "range"  # descriptor scaling before distances: range, iqr, std
    log_descriptors: bool = True  # log10 of the variances (they span decades; paper: not stated)
    k_neighbors: int = 5  # observed volumes that vote for a variation's aging stage
    max_observed: int | None = None  # observed volumes scanned for matching (None: all)
    n_fidelity: int = 256  # generated and observed volumes for fidelity
    swd_patches: int = 2048  # 7³ patches per pyramid level (SWD)
    max_w1_values: int = 400_000  # voxel values per channel and side in the W1
    max_volume_ratio: float = 5.0  # all-noise check: clump volume fraction vs observed
    mds_max_iter: int = 300
    n_render: int = 3  # Fig. 8d: samples per group, low to high sulfidised ratio

    def validate(self) -> None:
        for name in (
            "n_refs",
            "n_samples",
            "batch_size",
            "min_kept",
            "n_groups",
            "k_neighbors",
            "n_fidelity",
            "swd_patches",
            "max_w1_values",
            "mds_max_iter",
            "n_render",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ConfigError(f"analysis.{name} must be a positive integer, got {v!r}")
        if self.n_fidelity < 4:
            raise ConfigError(
                f"analysis.n_fidelity must be >= 4 (split-half baselines), got {self.n_fidelity}"
            )
        if self.n_groups < 2:
            raise ConfigError(f"analysis.n_groups must be >= 2, got {self.n_groups}")
        if not 0 < self.mass_dev_max or not math.isfinite(self.mass_dev_max):
            raise ConfigError(
                f"analysis.mass_dev_max must be a positive fraction, got {self.mass_dev_max}"
            )
        if not 0 <= self.iou_min <= 1:
            raise ConfigError(f"analysis.iou_min must be in [0, 1], got {self.iou_min}")
        if not math.isfinite(self.mask_threshold):
            raise ConfigError(
                f"analysis.mask_threshold must be a number, got {self.mask_threshold}"
            )
        if self.cluster_on not in ("mds", "descriptors"):
            raise ConfigError(
                f"analysis.cluster_on must be 'mds' or 'descriptors', got {self.cluster_on!r}"
            )
        if self.scaling not in ("range", "iqr", "std"):
            raise ConfigError(
                f"analysis.scaling must be 'range', 'iqr' or 'std', got {self.scaling!r}"
            )
        if self.max_volume_ratio <= 1:
            raise ConfigError(f"analysis.max_volume_ratio must be > 1, got {self.max_volume_ratio}")
        if self.max_observed is not None and self.max_observed < self.k_neighbors:
            raise ConfigError("analysis.max_observed must be at least analysis.k_neighbors")
        if self.trim_z is not None and not self.trim_z > 0:
            raise ConfigError(f"analysis.trim_z must be > 0 or null, got {self.trim_z}")


# ----------------------------------------------------------------------------- reducer
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
def _fractions(mass: np.ndarray) -> np.ndarray:
    """Mass ratios per channel (rows sum to 1; NaN for an empty clump)."""
    m = np.asarray(mass, dtype=np.float64)
    tot = m.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, m / tot, np.nan)


def _stats(v: Any) -> dict[str, float]:
    a = np.asarray(v, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {
            "n": 0,
            "min": float("nan"),
            "median": float("nan"),
            "mean": float("nan"),
            "max": float("nan"),
        }
    return {
        "n": int(a.size),
        "min": float(a.min()),
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


def _fmt(s: dict[str, float]) -> str:
    return f"min {s['min']:.3g} / median {s['median']:.3g} / max {s['max']:.3g}"


def _device(generator: Any) -> torch.device:
    if isinstance(generator, torch.nn.Module):
        for p in generator.parameters():
            return p.device
    return torch.device("cpu")


def _generate(generator: Any, z: torch.Tensor, batch_size: int) -> np.ndarray:
    """Physical-unit volumes (``.sample`` when available, as the variation engine does)."""
    fn = generator.sample if callable(getattr(generator, "sample", None)) else generator
    dev = _device(generator)
    out = []
    with torch.inference_mode():
        for a in range(0, len(z), batch_size):
            out.append(fn(z[a : a + batch_size].to(dev)).detach().to("cpu", torch.float32).numpy())
    return np.concatenate(out)


def _check(generator: Any, store: Any) -> None:
    require_shapes(generator, store, case=CASE, channels=len(CHANNELS), ndim=3,
                   what=", ".join(CHANNELS))
    for attr in ("latent_dim", "resolution"):
        if not isinstance(getattr(generator, attr, None), int):
            raise AnalysisError(f"the generator has no integer `{attr}`; pass a GeneratorBundle")


def _resize(x: np.ndarray, resolution: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return resize_frames(square_frames(t, "crop"), resolution).numpy()


@dataclass
class _Observed:
    mass: np.ndarray  # [O, C] channel masses inside the clump mask
    volume_frac: np.ndarray  # [O] mask voxels / box voxels
    index: np.ndarray  # [O] store frame indices
    fidelity: np.ndarray  # [F, C, R, R, R] volumes for the fidelity distances
    stage: np.ndarray | None  # [O] stage_days
    mode: np.ndarray | None  # [O] planted reactivity mode (synthetic)


def _scan_observed(
    store: Any, resolution: int, mask: Binarizer, cfg: Config, rng: np.random.Generator
) -> _Observed:
    """One streaming pass over the store: masses, volume fractions, a fidelity subset."""
    n = len(store)
    use = (
        np.arange(n)
        if cfg.max_observed is None or cfg.max_observed >= n
        else np.sort(rng.choice(n, cfg.max_observed, replace=False))
    )
    fid = set(np.sort(rng.choice(use, min(cfg.n_fidelity, len(use)), replace=False)).tolist())
    chunk = max(1, int(store.images.chunks[0]))
    wanted = np.zeros(n, bool)
    wanted[use] = True
    masses, vfrac, fid_vols = [], [], []
    # one storage chunk at a time: resize, measure, keep the fidelity volumes
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        sel = np.flatnonzero(wanted[lo:hi])
        if not sel.size:
            continue
        x = _resize(store.load(lo, hi)[sel], resolution)
        m = mask(x)
        masses.append(channel_mass(x, mask=m))
        vfrac.append(m.reshape(len(m), -1).mean(axis=1))
        fid_vols += [x[k] for k, i in enumerate(sel + lo) if int(i) in fid]
    labels, truth = store.labels, store.truth
    stage = labels.get("stage_days")
    stage = None if stage is None or len(stage) != n else np.asarray(stage, dtype=np.float64)[use]
    mode = truth.get("frame_mode")
    mode = None if mode is None or len(mode) != n else np.asarray(mode)[use]
    return _Observed(
        np.concatenate(masses), np.concatenate(vfrac), use, np.stack(fid_vols), stage, mode
    )


def _masked_values(
    vols: np.ndarray, masks: np.ndarray, c: int, limit: int, rng: np.random.Generator
) -> np.ndarray:
    v = vols[:, c][masks]
    return v[rng.choice(v.size, limit, replace=False)] if v.size > limit else v


def _vote(values: np.ndarray) -> float:
    """Most frequent value of a row (ties: the smallest).

    >>> _vote(np.array([3.0, 14.0, 14.0, 3.0, 28.0]))
    3.0
    """
    u, c = np.unique(values, return_counts=True)
    return float(u[np.argmax(c)])


def _log_descriptors(X: np.ndarray) -> np.ndarray:
    """log10(X + c) per column, c = 1 % of the column's median positive value, so exact
    zeros (a channel absent from every sample) stay finite and close to small values.

    >>> _log_descriptors(np.array([[0.0, 1.0], [100.0, 1.0]])).round(3).tolist()
    [[0.0, 0.004], [2.004, 0.004]]
    """
    X = np.asarray(X, dtype=np.float64)
    out = np.empty_like(X)
    for c in range(X.shape[1]):
        pos = X[:, c][X[:, c] > 0]
        off = 0.01 * float(np.median(pos)) if pos.size else 1e-12
        out[:, c] = np.log10(X[:, c] + off)
    return out


def _group_names(n: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"G{i}" for i in range(n)]


# ----------------------------------------------------------------------------- run
def run(
    generator: Any,
    store: Any,
    cfg: Config,
    *,
    gamma: float,
    sampler: Any = None,
    out_dir: Path,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
) -> dict:
    """Run the brass-clump analysis; write figures + table into out_dir; return the summary."""
    import pandas as pd
    from scipy.spatial.distance import cdist

    from matdyn.viz.figures import (
        cluster_boxplots,
        distribution_comparison,
        image_grid,
        mds_scatter,
        save_figure,
        temporal_mapping,
        volume_projections,
    )

    cfg.validate()
    _check(generator, store)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    R = int(generator.resolution)
    norm = dict(getattr(generator, "normalization", {}) or {})
    side = min(store.meta.spatial_shape)
    pixel_size = float(norm.get("pixel_size") or store.meta.pixel_size * side / R)
    unit = str(norm.get("unit") or store.meta.unit)
    rng = np.random.default_rng(seed)
    mask = Binarizer(threshold=float(cfg.mask_threshold), channel=None)
    notes: list[str] = []

    # ---- observed volumes and fidelity
    obs = _scan_observed(store, R, mask, cfg, rng)
    if len(obs.mass) < cfg.k_neighbors:
        raise AnalysisError(
            f"the store holds {len(obs.mass)} volumes; need at least k_neighbors={cfg.k_neighbors}"
        )
    z_fid = torch.randn(
        cfg.n_fidelity, generator.latent_dim, generator=torch.Generator().manual_seed(seed + 7919)
    )
    gen = _generate(generator, z_fid, cfg.batch_size)
    if gen.shape[1:] != obs.fidelity.shape[1:]:
        raise AnalysisError(
            f"generated volumes {gen.shape[1:]} differ from the resized observed ones "
            f"{obs.fidelity.shape[1:]}"
        )
    if not np.isfinite(gen).all():
        raise AnalysisError("the generator produced NaN/inf volumes")
    gen_masks, obs_masks = mask(gen), mask(obs.fidelity)
    gen_vf = gen_masks.reshape(len(gen), -1).mean(axis=1)
    obs_vf_med, gen_vf_med = float(np.median(obs.volume_frac)), float(np.median(gen_vf))
    ratio = gen_vf_med / obs_vf_med if obs_vf_med > 0 else float("inf")
    if not (1 / cfg.max_volume_ratio <= ratio <= cfg.max_volume_ratio):
        raise AnalysisError(
            f"generated clumps fill {gen_vf_med:.1%} of the box (median) against {obs_vf_med:.1%} "
            f"observed (ratio {ratio:.3g}, allowed 1/{cfg.max_volume_ratio:g}..{cfg.max_volume_ratio:g} "
            f"at mask_threshold={cfg.mask_threshold}); the generator does not draw clumps "
            "(all noise, empty, or wrong units)"
        )
    fidelity = _fidelity(obs.fidelity, obs_masks, gen, gen_masks, cfg, seed)
    fidelity["volume_fraction"] = {"observed_median": obs_vf_med, "generated_median": gen_vf_med}

    # ---- Monte Carlo variations with the §3.4.2 filters
    keep = MetricFilter(upper={"mass_dev": cfg.mass_dev_max}, lower={"iou": cfg.iou_min})
    sampler = sampler if sampler is not None else UniformSampler(gamma)  # matdyn.gamma.resolve_sampler
    engine = VariationEngine(
        generator,
        sampler,
        n_refs=cfg.n_refs,
        n_samples=cfg.n_samples,
        seed=seed,
        metrics=[MassDeviation(), IoU(mask)],
        reducers=[
            SampleMetrics(["mass_dev", "iou"]),
            IQRVariance(keep=keep, mask=mask),
            Composition(mask),
        ],
        batch_size=cfg.batch_size,
        progress=progress,
    )
    res = engine.run(out_dir / "variations")
    mass_dev, iou = res["metrics/mass_dev"], res["metrics/iou"]
    kept, iqr_var = res["iqr/kept"].astype(bool), res["iqr/iqr_var"]
    ref_mass, sample_mass = res["composition/ref_mass"], res["composition/mass"]
    M, N = kept.shape
    filters = _filters(mass_dev, iou, kept, cfg)
    if not kept.any():
        raise AnalysisError(
            f"the filters reject every sample: mass deviation {_fmt(_stats(mass_dev))} (need <= "
            f"{cfg.mass_dev_max}), IOU3D {_fmt(_stats(iou))} (need >= {cfg.iou_min}); relax "
            "analysis.mass_dev_max / analysis.iou_min or lower gamma"
        )

    # ---- descriptors, MDS, groups
    n_kept = kept.sum(axis=1)
    valid = (n_kept >= cfg.min_kept) & np.isfinite(iqr_var).all(axis=1)
    if valid.sum() < cfg.n_groups + 1:
        raise AnalysisError(
            f"only {int(valid.sum())} of {M} variations keep >= min_kept={cfg.min_kept} samples "
            f"(retained per variation: {_fmt(_stats(n_kept))}); need more than n_groups={cfg.n_groups}: "
            "raise n_samples, relax the filters or lower gamma"
        )
    X = _log_descriptors(iqr_var[valid]) if cfg.log_descriptors else iqr_var[valid]
    emb = mds_embedding(X, scaling=cfg.scaling, seed=seed, max_iter=cfg.mds_max_iter)
    space, scaling = (emb, None) if cfg.cluster_on == "mds" else (X, cfg.scaling)
    if cfg.trim_z is not None:
        hr = trimmed_hac(
            space, cfg.n_groups, z_max=cfg.trim_z, method=cfg.cluster_method, scaling=scaling
        )
    else:
        hr = hac(space, cfg.n_groups, method=cfg.cluster_method, scaling=scaling)
    labels = hr.labels

    # ---- temporal mapping: nearest observed volumes in mass-fraction space
    ref_frac = _fractions(ref_mass)  # [M, C]
    obs_frac = _fractions(obs.mass)
    ok_obs = np.isfinite(obs_frac).all(axis=1)
    vref = ref_frac[valid]
    if not np.isfinite(vref).all():
        raise AnalysisError(
            "some reference clumps have an empty mask; lower analysis.mask_threshold"
        )
    nn = np.argsort(cdist(vref, obs_frac[ok_obs]), axis=1)[:, : cfg.k_neighbors]
    o_idx = np.flatnonzero(ok_obs)[nn]  # [V, k] rows of obs
    stage = stage_mean = matched_mode = None
    if obs.stage is not None:
        stage = np.array([_vote(r) for r in obs.stage[o_idx]])
        stage_mean = obs.stage[o_idx].mean(axis=1)
        score, score_name = stage_mean, "stage_mean"
    else:
        score = 1.0 - vref[:, 0]  # sulfidised share (Cu2S + CuS)
        score_name = "sulfidised_ratio"
        notes.append(
            "the store has no stage_days label: groups are ordered by sulfidised mass ratio"
        )
    if obs.mode is not None:
        matched_mode = np.array([_vote(r) for r in obs.mode[o_idx].astype(np.float64)]).astype(int)
    go = order_groups(labels, score, planted=score)
    names = _group_names(cfg.n_groups)
    name_of = {int(g): names[r] for r, g in enumerate(go.groups)}
    group = np.array([name_of[int(g)] for g in labels])

    # ---- per-variation table
    frac_s = _fractions(sample_mass)  # [M, N, C]
    frac_s = np.where(kept[..., None], frac_s, np.nan)
    with np.errstate(invalid="ignore"):
        amp = np.nanstd(frac_s, axis=1)  # [M, C] within-variation amplitude
    rej = 1.0 - n_kept / N
    vidx = np.flatnonzero(valid)
    rows = []
    for v, i in enumerate(vidx):
        row = {
            "reference": int(i),
            "n_kept": int(n_kept[i]),
            "rejection_rate": float(rej[i]),
            "mds1": float(emb[v, 0]),
            "mds2": float(emb[v, 1]),
            "group": group[v],
        }
        for c, ch in enumerate(CHANNELS):
            row[f"var_iqr_{ch}"] = float(iqr_var[i, c])
        for c, ch in enumerate(CHANNELS):
            row[f"ratio_{ch}"] = float(ref_frac[i, c])
            row[f"amplitude_{ch}"] = float(amp[i, c])
        if stage is not None:
            row["stage_days"] = float(stage[v])
            row["stage_mean"] = float(stage_mean[v])  # type: ignore[index]
        if matched_mode is not None:
            row["matched_mode"] = int(matched_mode[v])
        rows.append(row)
    table = out_dir / "variations.csv"
    pd.DataFrame(rows).to_csv(table, index=False)

    # ---- figures
    figures: list[str] = []

    def save(fig: Any, name: str, title: str | None = None) -> None:
        if title:
            fig.suptitle(title, fontsize=9, y=1.04)
        save_figure(fig, fig_dir / name)
        figures.append(f"figures/{name}.png")

    rngp = np.random.default_rng(seed)
    obs_vals = {
        ch: _masked_values(obs.fidelity, obs_masks, c, 50_000, rngp)
        for c, ch in enumerate(CHANNELS)
    }
    gen_vals = {
        ch: _masked_values(gen, gen_masks, c, 50_000, rngp) for c, ch in enumerate(CHANNELS)
    }
    save(
        distribution_comparison(
            obs_vals,
            gen_vals,
            xlabel="density in the clump (state units)",
            distances=fidelity["intensity_w1"],
        ),
        "fig7c_density",
        "Fig. 7c: Cu-state densities, observed (line) vs generated (shaded)",
    )
    gnames = {n_: n_ for n_ in names}
    save(
        mds_scatter(emb, group, group_names=gnames),
        "fig8a_mds",
        f"Fig. 8a: MDS of clump variations (γ = {gamma:g})",
    )
    if stage is not None:
        stage_names = {s: f"Aging-{s:g}" for s in np.unique(stage)}
        save(
            temporal_mapping(emb, stage, stage_names=stage_names),
            "fig8b_temporal_mapping",
            "Fig. 8b: temporal mapping of clump variations (matched aging stage)",
        )
    save(
        cluster_boxplots(
            {ch: vref[:, c] for c, ch in enumerate(CHANNELS)},
            group,
            units={ch: "mass ratio" for ch in CHANNELS},
        ),
        "fig8c_mass_ratios",
        "Fig. 8c: compositional mass ratios of the reference clumps per group",
    )
    save(
        cluster_boxplots(
            {ch: amp[valid][:, c] for c, ch in enumerate(CHANNELS)},
            group,
            units={ch: "std of mass ratio" for ch in CHANNELS},
        ),
        "fig8c_amplitude",
        "Fig. 8c (extra): transformation amplitude within variations per group",
    )
    reps = _render_groups(generator, cfg, seed, sampler, emb, group, names, vidx, kept, frac_s)
    for gname, (i, imgs, titles) in reps.items():
        save(
            image_grid(
                imgs,
                pixel_size=pixel_size,
                unit=unit,
                titles=titles,
                ncols=len(CHANNELS),
                shared_range=True,
                cmap="magma",
            ),
            f"fig8d_group_{gname}",
            f"Fig. 8d: group {gname}, variation {i}: max projections, low → high sulfidised ratio",
        )
        ref_vol = _generate(
            generator, variation_latents(seed, int(i), 1, generator.latent_dim, sampler)[0][None], 1
        )[0]
        save(
            volume_projections(ref_vol, channel_names=CHANNELS, pixel_size=pixel_size, unit=unit),
            f"fig8d_group_{gname}_reference",
            f"Fig. 8d: group {gname}, reference clump {i}",
        )

    # ---- summary
    groups_summary = {}
    for gname in names:
        sel = group == gname
        entry = {
            "n": int(sel.sum()),
            "mean_ratio": {ch: float(np.nanmean(vref[sel, c])) for c, ch in enumerate(CHANNELS)},
            "mean_amplitude": {
                ch: float(np.nanmean(amp[valid][sel, c])) for c, ch in enumerate(CHANNELS)
            },
            "mean_descriptor": {
                ch: float(np.mean(iqr_var[valid][sel, c])) for c, ch in enumerate(CHANNELS)
            },
        }
        if stage is not None:
            entry["mean_stage_days"] = float(np.mean(stage_mean[sel]))  # type: ignore[index]
            entry["stage_counts"] = {
                f"{s:g}": int(np.sum(stage[sel] == s)) for s in np.unique(stage)
            }
        groups_summary[gname] = entry
    summary: dict[str, Any] = {
        "case": CASE,
        "gamma": float(gamma),
        "counts": {
            "n_refs": int(M),
            "n_samples": int(N),
            "n_valid_variations": int(valid.sum()),
            "n_observed": int(len(obs.mass)),
        },
        "pixel_size": pixel_size,
        "unit": unit,
        "fidelity": fidelity,
        "filters": filters,
        "groups": groups_summary,
        "group_order": {
            "by": score_name,
            "order": [name_of[int(g)] for g in go.groups],
            "mean": go.mean_score.tolist(),
        },
        "figures": figures,
        "table": "variations.csv",
        "paper": PAPER,
        "config": asdict(cfg),
        "notes": notes,
    }
    if store.truth:
        rec: dict[str, Any] = {}
        if stage is not None:
            rec["ari_stage"] = adjusted_rand(stage, labels)
            from scipy.stats import kendalltau, spearmanr

            # each variation's group rank (A = 0, ...) against its matched mean stage
            member_rank = np.array([list(go.groups).index(g) for g in labels], dtype=np.float64)
            sp = spearmanr(member_rank, stage_mean)
            rec["spearman_stage"] = float(sp.statistic)
            rec["spearman_stage_pvalue"] = float(sp.pvalue)
            rec["kendall_stage"] = float(kendalltau(member_rank, stage_mean).statistic)
            # groups are named by mean stage; "ordered" means the ranking is not chance
            rec["groups_order_by_stage"] = bool(sp.statistic > 0 and sp.pvalue < 0.05)
        if matched_mode is not None:
            rec["ari_mode"] = adjusted_rand(matched_mode, labels)
            mo = order_groups(labels, score, planted=matched_mode)
            rec["spearman_mode"] = mo.spearman
            rec["mode_names"] = list(store.truth_attrs.get("mode_names", []))
        summary["recovery"] = rec
    if log is not None:
        scalars = {
            f"analysis/{CASE}/rejection_rate": filters["combined"]["rejection_rate_overall"],
            f"analysis/{CASE}/swd": fidelity["swd"],
        }
        scalars.update(
            {f"analysis/{CASE}/w1_{ch}": v for ch, v in fidelity["intensity_w1"].items()}
        )
        for k, v in summary.get("recovery", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                scalars[f"analysis/{CASE}/{k}"] = v
        log({k: float(v) for k, v in scalars.items()})
    return to_jsonable(summary)


def _fidelity(
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
        va = _masked_values(a, am, c, cfg.max_w1_values, r)
        vb = _masked_values(b, bm, c, cfg.max_w1_values, r)
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


def _filters(
    mass_dev: np.ndarray, iou: np.ndarray, kept: np.ndarray, cfg: Config
) -> dict[str, Any]:
    """Rejection rates of each filter alone and combined, overall and per reference."""

    def entry(rejected: np.ndarray, threshold: Any, kind: str, metric: np.ndarray | None) -> dict:
        per = rejected.mean(axis=1)
        e = {
            "threshold": threshold,
            "kind": kind,
            "rejection_rate_overall": float(rejected.mean()),
            "rejection_rate_per_reference_summary": {
                "min": float(per.min()),
                "median": float(np.median(per)),
                "max": float(per.max()),
            },
        }
        if metric is not None:
            e["metric"] = _stats(metric)
        return e

    return {
        "mass_deviation": entry(
            ~(mass_dev <= cfg.mass_dev_max),
            cfg.mass_dev_max,
            "upper bound on |M - M_ref| / M_ref (§3.4.2)",
            mass_dev,
        ),
        "iou3d": entry(
            ~(iou >= cfg.iou_min),
            cfg.iou_min,
            "lower bound on IOU3D vs the reference (§3.4.2)",
            iou,
        ),
        "combined": entry(
            ~kept, {"mass_dev_max": cfg.mass_dev_max, "iou_min": cfg.iou_min}, "both filters", None
        ),
    }


def _render_groups(
    generator: Any,
    cfg: Config,
    seed: int,
    sampler: UniformSampler,
    emb: np.ndarray,
    group: np.ndarray,
    names: list[str],
    vidx: np.ndarray,
    kept: np.ndarray,
    frac_s: np.ndarray,
) -> dict[str, tuple[int, np.ndarray, list[str]]]:
    """Per group: the medoid variation's retained samples at low → high sulfidised ratio,
    as max projections along z, one row per sample and one column per channel."""
    out = {}
    N = kept.shape[1]
    for gname in names:
        members = np.flatnonzero(group == gname)
        if members.size == 0:
            continue
        centre = emb[members].mean(axis=0)
        v = members[int(np.argmin(np.linalg.norm(emb[members] - centre, axis=1)))]
        i = int(vidx[v])
        js = np.flatnonzero(kept[i])
        sulf = 1.0 - frac_s[i, js, 0]
        pick = js[np.argsort(sulf, kind="stable")][
            np.round(np.linspace(0, js.size - 1, min(cfg.n_render, js.size))).astype(int)
        ]
        z, eps = variation_latents(seed, i, N, generator.latent_dim, sampler)
        vols = _generate(generator, z[None] + eps[pick], cfg.batch_size)  # [k, C, D, H, W]
        imgs, titles = [], []
        for j, vol in zip(pick, vols):
            for c, ch in enumerate(CHANNELS):
                imgs.append(vol[c].max(axis=0))
                titles.append(f"{ch}, sulfidised {1.0 - frac_s[i, j, 0]:.2f}")
        out[gname] = (i, np.stack(imgs), titles)
    return out

