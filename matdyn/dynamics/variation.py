"""Particle-level displacement statistics of a Monte Carlo variation (issue 12).

A variation is a reference image G(z) and its kept perturbed samples G(z + ε_j). Each
particle of the reference is located with sub-pixel accuracy, located again in every
sample, and linked to the nearest reference particle within a search radius. The
displacement cloud {d_j} of one reference particle (nm) gives, with Δt the time the
variation's γ stands for:

* ``msd`` = ⟨|d|²⟩ — mean squared displacement, positive by construction;
* ``D`` = MSD / (2·ndim·Δt) — diffusion coefficient of free Brownian motion (Einstein 1905;
  Qian, Sheetz & Elson 1991, Biophys. J. 60:910);
* ``anisotropy`` = 1 − λmin/λmax of the displacement covariance (0 isotropic, → 1 along a
  line; cf. Saxton & Jacobson 1997, Annu. Rev. Biophys. Biomol. Struct. 26:373);
* ``drift_fraction`` = |⟨d⟩|² / ⟨|d|²⟩ ∈ [0, 1] — the share of the MSD carried by a
  systematic displacement; directed motion adds (vΔt)² to 2·ndim·DΔt (Qian et al. 1991),
  so ~0 for diffusion and → 1 for drift;
* ``rg`` = √tr(C) — radius of gyration of the cloud around its mean;
* ``alpha2`` = ⟨|d|⁴⟩ / ((1 + 2/ndim)⟨|d|²⟩²) − 1 — non-Gaussian parameter (Rahman 1964,
  Phys. Rev. 136:A405): 0 for Gaussian displacements, < 0 for displacements bounded by a
  confining region, > 0 for heterogeneous/hopping motion. Confinement proper needs MSD at
  several Δt (:func:`matdyn.dynamics.calibration.msd_curve`).

Unmatched features are never dropped silently: sample features with no reference particle
in range are ``appearing``, reference particles with no feature in a sample ``missing``;
both are counted per sample and per reference particle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from matdyn.dynamics.locate import Located, LocateParams, estimate_locate_params, locate_stack
from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "LinkResult",
    "VariationDisplacements",
    "cloud_stats",
    "link_to_reference",
    "log_anisotropy_ratio",
    "noise_sigma",
    "still_variation",
    "variation_displacements",
    "variations_table",
]


@dataclass(frozen=True)
class LinkResult:
    """Sample features linked to reference particles.

    ``ref_index`` [K]: reference particle of each sample feature, −1 when unmatched
    (appearing); ``displacement`` [K, 2] px (sample − reference, NaN when unmatched);
    ``matched`` [M, N] bool: reference particle m found in sample n.
    """

    ref_index: np.ndarray
    displacement: np.ndarray
    sample: np.ndarray
    matched: np.ndarray

    @property
    def n_appearing(self) -> np.ndarray:
        """[N] sample features with no reference particle in range, per sample."""
        return np.bincount(self.sample[self.ref_index < 0], minlength=self.matched.shape[1])

    @property
    def n_missing(self) -> np.ndarray:
        """[N] reference particles not found in each sample (disappearing)."""
        return (~self.matched).sum(axis=0)


def link_to_reference(ref_xy: np.ndarray, sample_xy: np.ndarray, sample: np.ndarray,
                      n_samples: int, search_radius: float) -> LinkResult:
    """Link features of N samples to M reference particles, one-to-one within each sample.

    Each sample feature goes to its nearest reference particle within ``search_radius``
    (px); when several features of one sample claim the same reference particle, the
    nearest wins and the others count as appearing.

    >>> r = link_to_reference(np.array([[0., 0.], [10., 10.]]),
    ...                       np.array([[0.5, 0.], [0.2, 0.], [30., 30.]]), np.array([0, 0, 0]),
    ...                       1, 2.0)
    >>> r.ref_index.tolist(), r.n_appearing.tolist(), r.n_missing.tolist()
    ([-1, 0, -1], [2], [1])
    """
    if not search_radius > 0:
        raise ConfigError(f"search_radius must be > 0 px, got {search_radius!r}")
    ref_xy = np.asarray(ref_xy, np.float64).reshape(-1, 2)
    xy = np.asarray(sample_xy, np.float64).reshape(-1, 2)
    sample = np.asarray(sample, np.int64).reshape(-1)
    m, k = len(ref_xy), len(xy)
    ref_index = np.full(k, -1, np.int64)
    matched = np.zeros((m, int(n_samples)), bool)
    if m and k:
        dist, nn = cKDTree(ref_xy).query(xy, distance_upper_bound=float(search_radius))
        cand = np.flatnonzero(np.isfinite(dist))
        # nearest candidate per (sample, reference particle) wins
        order = cand[np.lexsort((dist[cand], nn[cand], sample[cand]))]
        key = sample[order] * m + nn[order]
        first = np.ones(order.size, bool)
        first[1:] = key[1:] != key[:-1]
        win = order[first]
        ref_index[win] = nn[win]
        matched[nn[win], sample[win]] = True
    disp = np.full((k, 2), np.nan)
    ok = ref_index >= 0
    disp[ok] = xy[ok] - ref_xy[ref_index[ok]]
    return LinkResult(ref_index, disp, sample, matched)


def cloud_stats(disp: np.ndarray, groups: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Statistics of 2D displacement clouds, one per group; ``disp`` [K, 2] in any length
    unit, ``groups`` [K] in 0..n_groups−1. Returns arrays [n_groups] (NaN for groups with
    fewer than 2 members): n, msd, mean_dy, mean_dx, anisotropy, drift_fraction, rg, alpha2.

    >>> s = cloud_stats(np.array([[1., 0.], [-1., 0.], [1., 0.], [-1., 0.]]), np.zeros(4, int), 1)
    >>> float(s["msd"][0]), float(s["anisotropy"][0]), float(s["drift_fraction"][0])
    (1.0, 1.0, 0.0)
    """
    g = np.asarray(groups, np.int64)
    d = np.asarray(disp, np.float64)
    n = np.bincount(g, minlength=n_groups).astype(np.float64)

    def gmean(v: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(g, weights=v, minlength=n_groups) / n

    r2 = (d**2).sum(axis=1)
    msd = gmean(r2)
    my, mx = gmean(d[:, 0]), gmean(d[:, 1])
    cyy = gmean(d[:, 0] ** 2) - my**2
    cxx = gmean(d[:, 1] ** 2) - mx**2
    cxy = gmean(d[:, 0] * d[:, 1]) - my * mx
    half_tr, det = 0.5 * (cyy + cxx), cyy * cxx - cxy**2
    root = np.sqrt(np.clip(half_tr**2 - det, 0, None))
    lmax, lmin = half_tr + root, np.clip(half_tr - root, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        aniso = np.where(lmax > 0, 1.0 - lmin / lmax, 0.0)
        drift = np.where(msd > 0, (my**2 + mx**2) / msd, 0.0)
        alpha2 = gmean(r2**2) / (2.0 * msd**2) - 1.0  # ndim = 2: (1 + 2/2) = 2
    out = dict(n=n, msd=msd, mean_dy=my, mean_dx=mx, anisotropy=aniso, drift_fraction=drift,
               rg=np.sqrt(np.clip(cyy + cxx, 0, None)), alpha2=alpha2)
    few = n < 2
    for key in out:
        if key != "n":
            out[key] = np.where(few, np.nan, out[key])
    return out


def log_anisotropy_ratio(rg: Any, anisotropy: Any, noise_var: Any = 0.0) -> np.ndarray:
    """ln((λmax + σ²) / (λmin + σ²)) of 2D displacement clouds: the log ratio of the principal
    variances of the displacement covariance (the squared ratio of the principal radii of
    gyration that tell elongated, directed walks from round ones; Saxton 1993, Biophys. J.
    64:1766), regularised by the per-axis localisation variance σ².

    ``rg`` = √(λmax + λmin) and ``anisotropy`` = 1 − λmin/λmax as :func:`cloud_stats` gives
    them (any length unit); ``noise_var`` σ² in that unit squared, e.g. the still-scene MSD
    floor / 2 (both axes). 0 for a round cloud, ln(λmax/λmin) for a cloud far above the
    noise; a cloud inside the noise reads as round rather than as a line. Unlike the bounded
    anisotropy it does not saturate near 1: on the demo NP generator at γ = 1 the median is
    7.0 for lane particles (a variance ratio of ~10³) against 2.4 for free and 2.2 for
    trapped ones (6.2 / 3.3 / 1.9 on held-out layout e), so they stay apart after range
    scaling (issue 12). NaN where an input is NaN.

    >>> round(float(log_anisotropy_ratio(np.sqrt(5.0), 0.75)), 4)  # λmax 4, λmin 1: ln 4
    1.3863
    >>> round(float(log_anisotropy_ratio(np.sqrt(5.0), 0.75, noise_var=1.0)), 4)  # ln(5 / 2)
    0.9163
    """
    rg2 = np.asarray(rg, np.float64) ** 2
    a = np.asarray(anisotropy, np.float64)
    var = np.clip(np.asarray(noise_var, np.float64), 0.0, None)
    lmax = rg2 / (2.0 - a)
    lmin = lmax * (1.0 - a)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.log((lmax + var) / (lmin + var))
    return np.where(np.isfinite(out), out, np.nan)


@dataclass
class VariationDisplacements:
    """Per-reference-particle table of one variation plus what could not be linked.

    ``particles``: one row per reference particle, columns ``ref_particle``, ``y_px``,
    ``x_px``, ``n_matched``, ``n_missing``, ``msd_<unit>2``, ``D_<unit>2_per_<time>``,
    ``mean_dy_<unit>``, ``mean_dx_<unit>``, ``rg_<unit>``, ``anisotropy``, ``drift_fraction``,
    ``alpha2`` (and ``msd_floor_<unit>2``, ``D_floor_…`` once :meth:`add_floor` ran).
    ``n_appearing`` / ``n_missing`` [N]: per sample. ``units`` names the column units.
    """

    particles: pd.DataFrame
    n_appearing: np.ndarray
    n_missing: np.ndarray
    n_samples: int
    dt: float
    params: LocateParams
    search_radius_px: float
    units: dict[str, str] = field(default_factory=dict)

    @property
    def msd_col(self) -> str:
        return f"msd_{self.units['length']}2"

    @property
    def d_col(self) -> str:
        return f"D_{self.units['length']}2_per_{self.units['time']}"

    def summary(self) -> dict[str, float]:
        """Medians over reference particles plus link counts (JSON-ready)."""
        p = self.particles
        out = {"n_ref_particles": int(len(p)), "n_samples": int(self.n_samples),
               "dt": float(self.dt), "appearing_per_sample": float(np.mean(self.n_appearing))
               if self.n_samples else 0.0,
               "missing_per_sample": float(np.mean(self.n_missing)) if self.n_samples else 0.0}
        for c in (self.msd_col, self.d_col, "anisotropy", "drift_fraction", "alpha2",
                  f"msd_floor_{self.units['length']}2"):
            if c in p:
                out[f"median_{c}"] = float(np.nanmedian(p[c])) if len(p) else float("nan")
        return out

    def add_floor(self, still: VariationDisplacements) -> VariationDisplacements:
        """Attach the noise floor of a still variation of the same reference (same particle
        order): ``msd_floor_<unit>2`` and ``D_floor_…`` per reference particle."""
        if len(still.particles) != len(self.particles):
            raise AnalysisError("noise-floor variation has a different particle count; build "
                                "it from the same reference with the same locate settings")
        u = self.units["length"]
        self.particles[f"msd_floor_{u}2"] = still.particles[still.msd_col].to_numpy()
        self.particles[f"D_floor_{u}2_per_{self.units['time']}"] = (
            still.particles[still.msd_col].to_numpy() / (4.0 * self.dt))
        return self


def _check_inputs(reference: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, np.float64)
    ref = ref.reshape(ref.shape[-2:]) if ref.ndim == 3 and ref.shape[0] == 1 else ref
    smp = np.asarray(samples, np.float64)
    if smp.ndim == 4 and smp.shape[1] == 1:
        smp = smp[:, 0]
    if ref.ndim != 2 or smp.ndim != 3 or smp.shape[1:] != ref.shape:
        raise AnalysisError(f"variation needs a reference [H, W] and samples [N, H, W] of the "
                            f"same size; got {np.shape(reference)} and {np.shape(samples)}")
    return ref, smp


def variation_displacements(reference: np.ndarray, samples: np.ndarray, pixel_size: float,
                            dt: float, *, unit: str = "nm", time_unit: str = "s",
                            params: LocateParams | None = None, dark: bool = True,
                            search_radius: float | None = None) -> VariationDisplacements:
    """Displacement statistics of every reference particle over a variation.

    ``reference`` [H, W] (or [1, H, W]); ``samples`` [N, H, W] (or [N, 1, H, W]) the kept
    perturbed samples; ``pixel_size`` in ``unit`` per px; ``dt`` the time the variation's γ
    stands for, in ``time_unit`` (D = MSD / (4 dt) in 2D). ``params``: locate settings
    (default :func:`estimate_locate_params` on the reference); ``search_radius`` px
    (default: one locate diameter). Raises :class:`AnalysisError` on shape mismatch or a
    reference without particles.
    """
    if not (pixel_size > 0 and dt > 0):
        raise ConfigError(f"pixel_size and dt must be > 0, got {pixel_size!r}, {dt!r}")
    ref, smp = _check_inputs(reference, samples)
    params = params or estimate_locate_params(ref, dark=dark)
    radius = float(search_radius if search_radius is not None else params.diameter)
    loc: Located = locate_stack(np.concatenate([ref[None], smp]), params)
    ref_xy = loc.in_frame(0)
    if len(ref_xy) == 0:
        raise AnalysisError("no particle located in the reference image; check dark/bright "
                            "and the locate diameter/minmass")
    s = loc.frame > 0
    link = link_to_reference(ref_xy, loc.coords[s], loc.frame[s] - 1, len(smp), radius)
    ok = link.ref_index >= 0
    st = cloud_stats(link.displacement[ok] * pixel_size, link.ref_index[ok], len(ref_xy))
    u, t = unit, time_unit
    table = pd.DataFrame({
        "ref_particle": np.arange(len(ref_xy)), "y_px": ref_xy[:, 0], "x_px": ref_xy[:, 1],
        "n_matched": link.matched.sum(axis=1), "n_missing": (~link.matched).sum(axis=1),
        f"msd_{u}2": st["msd"], f"D_{u}2_per_{t}": st["msd"] / (4.0 * dt),
        f"mean_dy_{u}": st["mean_dy"], f"mean_dx_{u}": st["mean_dx"], f"rg_{u}": st["rg"],
        "anisotropy": st["anisotropy"], "drift_fraction": st["drift_fraction"],
        "alpha2": st["alpha2"],
    })
    return VariationDisplacements(table, link.n_appearing, link.n_missing, len(smp), float(dt),
                                  params, radius, {"length": u, "time": t})


def noise_sigma(image: np.ndarray) -> float:
    """White-noise std of an image [H, W] by Immerkær's Laplacian-difference estimator
    (Immerkær 1996, Comput. Vis. Image Underst. 64:300): insensitive to smooth structure.

    >>> im = np.random.default_rng(0).normal(0, 0.1, (128, 128))
    >>> round(noise_sigma(im), 2)
    0.1
    """
    from scipy.signal import convolve2d

    x = np.asarray(image, np.float64)
    x = x.reshape(x.shape[-2:])
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    h, w = x.shape
    return float(np.sqrt(np.pi / 2) * np.abs(convolve2d(x, k, mode="valid")).sum()
                 / (6.0 * (h - 2) * (w - 2)))


def still_variation(reference: np.ndarray, n_samples: int = 64, *,
                    noise_std: float | None = None, seed: int = 0) -> np.ndarray:
    """Samples [N, H, W] of a still scene: the reference plus white noise of std
    √2·``noise_std`` (default ``noise_std``: the reference's own noise,
    :func:`skimage.restoration.estimate_sigma`, Donoho & Johnstone 1994). The reference
    keeps its own noise, so √2 makes the sample-minus-reference locate error as large as
    between two independently noisy images. Their displacement MSD is the locate-noise
    floor of every particle — what the estimator reports when nothing moved (γ → 0).
    A generator's own floor is the same estimator on samples at a tiny γ."""
    ref = np.asarray(reference, np.float64)
    ref = ref.reshape(ref.shape[-2:])
    sd = noise_sigma(ref) if noise_std is None else float(noise_std)
    rng = np.random.default_rng(seed)
    return ref[None] + np.sqrt(2.0) * sd * rng.standard_normal((int(n_samples),) + ref.shape)


def variations_table(variations: Iterable[tuple[np.ndarray, np.ndarray]], pixel_size: float,
                     dt: float, *, unit: str = "nm", time_unit: str = "s",
                     params: LocateParams | None = None, dark: bool = True,
                     search_radius: float | None = None, floor_samples: int = 64,
                     seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`variation_displacements` over many variations, with a noise floor per particle.

    ``variations`` yields (reference [H, W], kept samples [N, H, W]) pairs; the locate
    settings are estimated once, on the first reference with particles (unless ``params``),
    so every reference is measured alike. Each reference also gets a still variation
    (:func:`still_variation`, ``floor_samples`` samples; 0 skips the floor). Returns
    (table with a ``ref`` column = position in ``variations``, info with the locate
    settings, link counts and the references skipped because no particle was found).
    """
    tables, skipped = [], []
    appear = missing = n_smp = 0
    for i, (ref, smp) in enumerate(variations):  # one reference and its samples at a time
        try:
            params = params or estimate_locate_params(ref, dark=dark)
            v = variation_displacements(ref, smp, pixel_size, dt, unit=unit,
                                        time_unit=time_unit, params=params,
                                        search_radius=search_radius)
        except AnalysisError:
            skipped.append(i)
            continue
        if floor_samples:
            still = still_variation(ref, floor_samples, seed=seed + i)
            v.add_floor(variation_displacements(ref, still, pixel_size, dt, unit=unit,
                                                time_unit=time_unit, params=params,
                                                search_radius=search_radius))
        appear += int(v.n_appearing.sum())
        missing += int(v.n_missing.sum())
        n_smp += v.n_samples
        tables.append(v.particles.assign(ref=i))
    if not tables:
        raise AnalysisError("no reference had a locatable particle; check dark/bright and the "
                            "locate diameter/minmass")
    info = {"locate": {"diameter": params.diameter, "minmass": params.minmass,
                       "dark": params.dark}, "skipped_refs": skipped,
            "appearing_per_sample": appear / max(n_smp, 1),
            "missing_per_sample": missing / max(n_smp, 1), "dt": float(dt)}
    return pd.concat(tables, ignore_index=True), info
