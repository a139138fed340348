"""Particle displacements of a latent Monte Carlo, streamed through the variation engine.

:class:`ParticleLinks` is a :class:`~matdyn.sampling.reducers.Reducer`: for every reference
G(z_i) of a block it locates the particles once (:func:`~matdyn.dynamics.locate.locate_stack`,
sub-pixel), then locates the particles of every *kept* perturbed sample and links each
one to its reference particle (:func:`~matdyn.dynamics.variation.link_to_reference`,
nearest within ``search_radius``; unmatched features are counted as appearing, reference
particles not found as missing). It stores the displacement of every reference particle
in every sample (px, NaN when not found), so nothing but coordinates is kept: memory and
the engine's checkpoints stay small whatever N.

With ``floor_samples`` it also measures the locate-noise floor of each reference particle:
the same estimator on a still variation of the reference
(:func:`~matdyn.dynamics.variation.still_variation`).

:func:`particle_rows` turns the outputs into one row per reference particle in physical
units (MSD, D = MSD / (2·ndim·Δt), anisotropy, drift fraction, α2, floors), using
:func:`~matdyn.dynamics.variation.cloud_stats`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from matdyn.dynamics.locate import LocateParams, locate_stack
from matdyn.dynamics.variation import cloud_stats, link_to_reference, still_variation
from matdyn.errors import ConfigError
from matdyn.sampling.reducers import Reducer, ReferenceBlock, RunInfo, VariationBatch, _keep

__all__ = ["ParticleLinks", "particle_rows"]


def _link_stack(ref_xy: np.ndarray, stack: np.ndarray, samples: np.ndarray, n: int,
                params: LocateParams, radius: float, wide: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Displacements [n, P, 2] px (NaN = not found) and appearing counts [n] of the images
    ``stack`` [B, H, W] (sample indices ``samples`` [B]) against ``ref_xy`` [P, 2]; with
    ``wide`` (px), also the displacements linked within that larger radius (else None)."""
    loc = locate_stack(stack, params)
    out = []
    for r in (radius, wide):
        if r is None:
            out.append(None)
            continue
        link = link_to_reference(ref_xy, loc.coords, samples[loc.frame], n, r)
        disp = np.full((n, len(ref_xy), 2), np.nan)
        ok = link.ref_index >= 0
        disp[link.sample[ok], link.ref_index[ok]] = link.displacement[ok]
        out.append((disp, link.n_appearing))
    return out[0][0], out[0][1], (out[1][0] if out[1] is not None else None)


class ParticleLinks(Reducer):
    """Displacements of the reference particles over the kept samples (module docstring).

    Outputs per reference (``<name>/<key>``): ``ref_yx`` [M, P, 2] px (NaN padded),
    ``n_ref`` [M] particles located (may exceed ``max_particles``: the rest are left out
    and counted), ``disp`` [M, N, P, 2] float32 px (NaN when the sample was rejected or
    the particle not found), ``kept`` [M, N], ``appearing`` [M, N] and, with
    ``floor_samples`` > 0, ``floor_msd_px2`` [M, P]. ``search_radius`` px (default
    ``diameter // 2``, the tracking baseline's search range). With ``wide_factor`` (> 1) the
    kept samples are also linked within ``wide_factor`` × that radius (``disp_wide``, same
    shape as ``disp``): how much the MSD depends on the radius (on the Princeton beads the
    MC MSD at the analysis γ doubled from R = 2 to 4 px, session 16). Raises ConfigError on
    bad settings.
    """

    def __init__(self, params: LocateParams, keep: Any = None, *,
                 search_radius: float | None = None, max_particles: int = 64,
                 floor_samples: int = 0, seed: int = 0, channel: int = 0,
                 name: str = "particles", wide_factor: float | None = None) -> None:
        if int(max_particles) < 1 or int(floor_samples) < 0:
            raise ConfigError(f"max_particles must be >= 1 and floor_samples >= 0, got "
                              f"{max_particles!r}, {floor_samples!r}")
        self.params, self.keep = params, keep
        # default: the tracking baseline's search range (diameter // 2), so MC and tracking
        # link alike; farther features count as appearing (on the demo generator a 7-px radius
        # let regenerated particles in: free-mode D 1042 vs 318 nm²/s at 3 px, γ = 1)
        self.radius = float(search_radius if search_radius is not None
                            else max(1, params.diameter // 2))
        if not self.radius > 0:
            raise ConfigError(f"search_radius must be > 0 px, got {search_radius!r}")
        if wide_factor is not None and not float(wide_factor) > 1:
            raise ConfigError(f"wide_factor must be > 1 (or None), got {wide_factor!r}")
        self.wide = None if wide_factor is None else float(wide_factor) * self.radius
        self.max_particles, self.floor_samples = int(max_particles), int(floor_samples)
        self.seed, self.channel, self.name = int(seed), int(channel), name
        self.requires = tuple(getattr(keep, "names", ()))

    def start(self, info: RunInfo) -> None:
        self._n = info.n_samples

    def begin_block(self, block: ReferenceBlock) -> None:
        refs = block.images[:, self.channel].astype(np.float64)
        K, P, N = len(block), self.max_particles, self._n
        loc = locate_stack(refs, self.params)
        self._ref = np.full((K, P, 2), np.nan)
        self._n_ref = np.bincount(loc.frame, minlength=K).astype(np.int64)
        for k in range(K):
            xy = loc.in_frame(k)[:P]
            self._ref[k, : len(xy)] = xy
        self._disp = np.full((K, N, P, 2), np.nan, np.float32)
        self._wide = np.full((K, N, P, 2), np.nan, np.float32) if self.wide else None
        self._kept = np.zeros((K, N), bool)
        self._appear = np.zeros((K, N), np.int64)
        self._floor = np.full((K, P), np.nan)
        for k in range(K) if self.floor_samples else ():  # still variation of each reference
            m = int(min(self._n_ref[k], P))
            if m == 0:
                continue
            still = still_variation(refs[k], self.floor_samples,
                                    seed=self.seed * 100_003 + int(block.ref_indices[k]))
            d, _, _ = _link_stack(self._ref[k, :m], still, np.arange(len(still)), len(still),
                                  self.params, self.radius)
            st = cloud_stats(d[np.isfinite(d[..., 0])],
                             np.nonzero(np.isfinite(d[..., 0]))[1], m)
            self._floor[k, :m] = st["msd"]

    def update(self, batch: VariationBatch) -> None:
        rows = np.flatnonzero(_keep(self.keep, batch))
        if rows.size == 0:
            return
        slots, js = batch.ref_slots[rows], batch.sample_indices[rows]
        self._kept[slots, js] = True
        imgs = batch.images[rows, self.channel].astype(np.float64)
        for s in np.unique(slots):  # the kept samples of one reference at a time
            m = int(min(self._n_ref[s], self.max_particles))
            sel = np.flatnonzero(slots == s)
            if m == 0:
                continue
            d, app, dw = _link_stack(self._ref[s, :m], imgs[sel], js[sel], self._n,
                                     self.params, self.radius, self.wide)
            self._disp[s, js[sel], :m] = d[js[sel]]
            if dw is not None:
                self._wide[s, js[sel], :m] = dw[js[sel]]
            self._appear[s, js[sel]] = app[js[sel]]

    def end_block(self) -> dict[str, np.ndarray]:
        out = {"ref_yx": self._ref, "n_ref": self._n_ref, "disp": self._disp,
               "kept": self._kept, "appearing": self._appear}
        if self.floor_samples:
            out["floor_msd_px2"] = self._floor
        if self._wide is not None:
            out["disp_wide"] = self._wide
        return out

    def __repr__(self) -> str:
        return (f"ParticleLinks(params={self.params!r}, keep={self.keep!r}, "
                f"radius={self.radius}, max_particles={self.max_particles}, "
                f"floor_samples={self.floor_samples}, seed={self.seed}, name={self.name!r}"
                + (f", wide={self.wide})" if self.wide else ")"))  # unchanged fingerprint without


def particle_rows(result: Any, prefix: str, pixel_size: float, dt: float | None, *,
                  ref_indices: np.ndarray | None = None, ndim: int = 2) -> pd.DataFrame:
    """One row per reference particle of a :class:`ParticleLinks` run.

    ``pixel_size``: length per px (e.g. nm); ``dt``: time the run's γ stands for (None or
    NaN: D columns are NaN). Columns: ref_index, particle, centroid_row, centroid_col (px),
    n_kept, n_matched, n_missing, msd (length²), D (length²/time), mean_dy, mean_dx, rg
    (length), anisotropy, drift_fraction, alpha2, msd_floor / D_floor when measured and
    msd_wide (length², linked within the wide radius) when linked so.
    """
    ref_yx, disp = result[f"{prefix}/ref_yx"], result[f"{prefix}/disp"]
    kept = result[f"{prefix}/kept"]
    M, N, P, _ = disp.shape
    refs = np.arange(M) if ref_indices is None else np.asarray(ref_indices)
    present = np.isfinite(ref_yx[..., 0])  # [M, P]
    found = np.isfinite(disp[..., 0])  # [M, N, P]
    m_idx, _, p_idx = np.nonzero(found)
    group = m_idx * P + p_idx
    st = cloud_stats(disp[found].astype(np.float64) * pixel_size, group, M * P)
    t = float(dt) if dt is not None and np.isfinite(dt) and dt > 0 else float("nan")
    n_kept = np.repeat(kept.sum(axis=1)[:, None], P, axis=1)
    n_match = found.sum(axis=1)
    cols = {"ref_index": np.repeat(refs[:, None], P, axis=1),
            "particle": np.repeat(np.arange(P)[None], M, axis=0),
            "centroid_row": ref_yx[..., 0], "centroid_col": ref_yx[..., 1],
            "n_kept": n_kept, "n_matched": n_match, "n_missing": n_kept - n_match}
    cols |= {k: v.reshape(M, P) for k, v in st.items() if k != "n"}
    cols["D"] = cols["msd"] / (2.0 * ndim * t)
    if f"{prefix}/disp_wide" in result:  # the same clouds linked within the wide radius
        wide = result[f"{prefix}/disp_wide"]
        fw = np.isfinite(wide[..., 0])
        mw, _, pw = np.nonzero(fw)
        cols["msd_wide"] = cloud_stats(wide[fw].astype(np.float64) * pixel_size, mw * P + pw,
                                       M * P)["msd"].reshape(M, P)
    if f"{prefix}/floor_msd_px2" in result:
        cols["msd_floor"] = result[f"{prefix}/floor_msd_px2"] * pixel_size**2
        cols["D_floor"] = cols["msd_floor"] / (2.0 * ndim * t)
    frame = pd.DataFrame({k: np.asarray(v)[present] for k, v in cols.items()})
    order = ["ref_index", "particle", "centroid_row", "centroid_col", "n_kept", "n_matched",
             "n_missing", "msd", "msd_wide", "D", "msd_floor", "D_floor", "mean_dy", "mean_dx", "rg",
             "anisotropy", "drift_fraction", "alpha2"]
    return frame[[c for c in order if c in frame]].reset_index(drop=True)
