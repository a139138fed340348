"""MC MSD with particles followed along latent rays (issue 12): the ``particles.rays`` section.

The one-jump links of :class:`~matdyn.dynamics.streaming.ParticleLinks` need a search
radius R, and the MC MSD depends on it (``particles.ensemble.link_radius``). Here the same
references' particles are followed along the rays z_i + t·v_ij of the engine's own samples
(:mod:`matdyn.dynamics.paths`), in steps of at most 2^¼ in t, each step linked within R:
nothing caps the displacement, and a particle the generator erases is counted as lost
instead of being paired with a neighbour. At every γ of the ladder: the ensemble MSD (mean
over particles of their MSD over the rays they were still followed on), minus the same
still-scene floor as the one-jump estimate, D = that / (2·ndim·Δt), and the lost fraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from matdyn.analysis.case import CaseContext, finite_or_none
from matdyn.analysis.cases.np_diffusion.config import MODE_NAMES
from matdyn.analysis.cases.np_diffusion.particles import gamma_key


def particle_floors(paths: Any, ref_yx: np.ndarray, floor_px2: np.ndarray,
                    tol: float = 0.5) -> np.ndarray:
    """Still-scene MSD floor [M, P] px² of each followed reference particle, taken from the
    one-jump run's particle at the same place (``ref_yx`` [M, P', 2], ``floor_px2`` [M, P'],
    :class:`~matdyn.dynamics.streaming.ParticleLinks`; within ``tol`` px); NaN where none."""
    out = np.full(paths.ref_yx.shape[:2], np.nan)
    for i in range(min(len(out), len(ref_yx))):
        mine, theirs = paths.ref_yx[i], ref_yx[i]
        a, b = np.isfinite(mine[:, 0]), np.isfinite(theirs[:, 0])
        if not a.any() or not b.any():
            continue
        d = np.linalg.norm(mine[a][:, None] - theirs[b][None], axis=-1)
        j = d.argmin(axis=1)
        hit = d[np.arange(len(j)), j] <= tol
        vals = np.where(hit, floor_px2[i][b][j], np.nan)
        out[i, np.flatnonzero(a)] = vals
    return out


def _group(paths: Any, g: float, sel: np.ndarray, floors: np.ndarray | None) -> dict[str, Any]:
    """MSD (px², minus the group's mean floor) and followed share of the particles ``sel``."""
    fol = paths.followed_fraction(g)
    msd = paths.particle_msd(g)
    sel = sel & np.isfinite(fol)
    out: dict[str, Any] = {"n": int(sel.sum()), "followed_fraction": None, "msd_px2": None,
                           "floor_px2": 0.0}
    if not sel.any():
        return out
    out["followed_fraction"] = finite_or_none(float(np.mean(fol[sel])))
    if np.isfinite(msd[sel]).any():
        out["msd_px2"] = float(np.nanmean(msd[sel]))
    if floors is not None and np.isfinite(floors[sel]).any():
        out["floor_px2"] = float(np.nanmean(floors[sel]))
    return out


def _curve(gammas: list[float], dts: dict[float, float | None], by_gamma: dict[str, Any],
           name: str, ndim: int) -> dict[str, Any]:
    """D from the slope of one group's ray MSD(Δt) over the γ ladder and its exponent α
    (:func:`~matdyn.dynamics.calibration.msd_curve`, floor removed); None without ≥ 2 Δt."""
    from matdyn.dynamics import msd_curve

    t, y, f = [], [], []
    for g in gammas:
        row = by_gamma.get(gamma_key(g), {})
        v = row if name == "all" else (row.get("modes") or {}).get(name, {})
        if dts.get(g) and v.get("msd") is not None:
            t.append(dts[g])
            y.append(v["msd"])
            f.append(v.get("floor") or 0.0)
    if len(set(t)) < 2:
        return {"D_slope": None, "msd_exponent": None}
    fit = msd_curve(np.array(t), np.array(y), floor=np.array(f), ndim=ndim)
    return {"D_slope": finite_or_none(fit["D"][0]),
            "msd_exponent": finite_or_none(fit["alpha"][0])}


def section(ctx: CaseContext, params: Any, radius: float, gammas: list[float],
            dts: dict[float, float | None], nm_px: float, n_refs: int, n_samples: int,
            max_particles: int, tracking: dict[str, Any], *,
            floors: tuple[np.ndarray, np.ndarray] | None = None,
            planted_free: float | None = None) -> tuple[dict[str, Any], Any]:
    """The ``particles.ensemble.rays`` section (module docstring) and the ``RayPaths``.

    ``radius`` px (the one-jump search radius), ``nm_px`` physical length per px,
    ``tracking`` the ``tracking_baseline`` section (D per mode), ``floors`` the one-jump
    run's (ref_yx [M, P, 2], floor_msd_px2 [M, P]) whose still-scene floors are subtracted
    per group, ``planted_free`` the planted D of the free mode (stores with truth; the only
    mode whose motion a D describes: lanes drift, traps saturate)."""
    from matdyn.analysis.cases.np_diffusion.recovery import planted_mode, region_map_at
    from matdyn.dynamics.paths import follow_rays, ray_ladder

    scale = float(getattr(ctx.sampler, "scale", 1.0))
    zs, vs = [], []
    for i in range(int(n_refs)):
        z, eps = ctx.variation_latents(i, n_samples)
        zs.append(z)
        vs.append(eps / scale)  # the ray direction: ε = γ·v (uniform) or σ·v (gaussian)
    ladder = ray_ladder(gammas)
    paths = follow_rays(ctx.generate, torch.stack(zs), torch.stack(vs), ladder, params, radius,
                        max_particles=max_particles, progress=ctx.progress)
    fl = particle_floors(paths, *floors) if floors is not None else None
    exists = np.isfinite(paths.ref_yx[..., 0])
    groups = {"all": exists}
    truth = ctx.store.truth or {}
    if "region_map" in truth:
        rm = region_map_at(np.asarray(truth["region_map"]), ctx.resolution, ctx.fit)
        modes = np.full(exists.shape, -1)
        modes[exists] = planted_mode(rm, paths.ref_yx[..., 0][exists],
                                     paths.ref_yx[..., 1][exists])
        groups |= {name: modes == m for m, name in enumerate(MODE_NAMES)}
    ndim, px2 = int(ctx.store.meta.ndim), nm_px**2
    tr = (tracking.get("modes") or {}) if tracking.get("applicable") else {}
    by_gamma: dict[str, Any] = {}
    for g in gammas:
        dt = dts.get(g)
        row: dict[str, Any] = {"dt": dt, "lost_fraction": finite_or_none(paths.lost_fraction(g))}
        for name, sel in groups.items():
            v = _group(paths, g, sel, fl)
            if v["n"] == 0:
                continue
            m, f = v.pop("msd_px2"), v.pop("floor_px2")
            v["msd"] = finite_or_none(m * px2) if m is not None else None
            v["floor"] = finite_or_none(f * px2)
            v["D"] = (finite_or_none((m - f) * px2 / (2 * ndim * dt))
                      if dt and m is not None else None)
            t_d = (tr.get(name) or {}).get("D")
            if v["D"] is not None and t_d:
                v["D_over_tracking"] = finite_or_none(v["D"] / t_d)
            if v["D"] is not None and planted_free and name == "free":
                v["D_over_planted"] = finite_or_none(v["D"] / planted_free)
            if name == "all":
                row |= {k: v[k] for k in ("msd", "floor", "D")}
            else:
                row.setdefault("modes", {})[name] = v
        by_gamma[gamma_key(g)] = row
    curves = {name: _curve(gammas, dts, by_gamma, name, ndim) for name in groups}
    d0 = by_gamma.get(gamma_key(ctx.gamma), {}).get("D")
    t_all = (tr.get("all") or {}).get("D")
    out: dict[str, Any] = {
        "definition": "particles followed along the latent rays z + t v of the engine's samples "
                      "in steps of at most 2^(1/4) in t, each step linked within the search "
                      "radius; MSD = mean over particles of <|x(γ) - x(0)|^2> over the rays they "
                      "were still followed on, minus the mean still-scene floor; lost = erased "
                      "or moved more than the radius in one step",
        "ladder": [float(t) for t in ladder], "radius_px": float(radius),
        "n_refs": int(n_refs), "n_samples": int(n_samples), "by_gamma": by_gamma,
        "msd_curve": curves, "msd_exponent": curves["all"]["msd_exponent"],
        "lost_fraction": by_gamma.get(gamma_key(ctx.gamma), {}).get("lost_fraction"),
        "D": d0, "D_over_tracking": finite_or_none(d0 / t_all) if d0 is not None and t_all
        else None}
    return out, paths
