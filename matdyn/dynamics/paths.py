"""Particle displacements followed along latent rays (issue 12; paper §2.2, Eq. 2).

The variation at γ draws ε = γ·v with v ~ U[−1, 1]^d, and the variation engine draws v
from the same per-reference stream for every γ
(:func:`matdyn.sampling.streams.variation_latents`), so sample j of every γ lies on one ray
z + t·v_j, t ∈ [0, γ]. Linking each sample's particles to the reference in one jump
(:mod:`matdyn.dynamics.variation`) must pick a search radius R: a particle the generator
moves farther than R is lost, while a wider R pairs neighbours and redrawn particles with
the reference particle (on the Princeton beads the MC MSD at the analysis γ doubled from
R = 2 to 4 px, session 16).

Following the ray instead works like tracking a video: decode the images at a ladder of t
(:func:`ray_ladder`, steps of at most 2^¼ in t), locate the particles in each, and link each
reference particle from one step to the next within R (:func:`follow_particles`). A
particle is followed as long as each step moves it less than R, however far it goes in
all; a particle the generator erases (or redraws elsewhere) is *lost* at the step where it
vanishes and counted (``lost_fraction``), never paired with a neighbour. At every γ of
the ladder, MSD = ⟨|x(γ) − x(0)|²⟩ over the particles still followed. It is the same
variation as the engine's: at t = γ the images are exactly the engine's samples.

Bias to keep in mind: a particle lost on the way does not count, so a generator that
erases fast movers more often than slow ones reads low; ``lost_fraction`` says how many.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from matdyn.dynamics.locate import LocateParams, locate_stack
from matdyn.dynamics.variation import link_to_reference
from matdyn.errors import ConfigError

__all__ = ["RayPaths", "follow_particles", "follow_rays", "ray_ladder"]

#: largest ratio between consecutive steps of t along a ray. Near z the generator moves a
#: particle about in proportion to t, so one step moves it by (1 − 1/ratio) ≈ 16 % of its
#: displacement at the next step: a particle is followed out to ~6 search radii
STEP_RATIO = float(2.0 ** 0.25)


def ray_ladder(gammas: Sequence[float], t_min: float | None = None,
               ratio: float = STEP_RATIO) -> np.ndarray:
    """Steps t along a ray [K], increasing, holding every γ of ``gammas`` and a geometric
    grid (ratio ≤ ``ratio``) from ``t_min`` (default: the smallest γ / 4) to the largest γ.

    >>> ray_ladder([1.0], t_min=0.25, ratio=2 ** 0.5).round(3).tolist()
    [0.25, 0.354, 0.5, 0.707, 1.0]
    """
    g = np.unique(np.asarray(gammas, np.float64))
    if g.size == 0 or not np.all(np.isfinite(g)) or g[0] <= 0:
        raise ConfigError(f"ray ladder needs γ values > 0, got {list(gammas)!r}")
    if not ratio > 1:
        raise ConfigError(f"ray ladder ratio must be > 1, got {ratio!r}")
    lo = float(g[0] / 4 if t_min is None else t_min)
    if not 0 < lo <= g[0]:
        raise ConfigError(f"t_min must lie in (0, {g[0]:g}], got {t_min!r}")
    anchors = np.union1d([lo], g)
    out = [anchors[:1]]
    for a, b in zip(anchors[:-1], anchors[1:]):  # geometric points between anchors
        n = int(np.ceil(np.log(b / a) / np.log(ratio) - 1e-9))
        out.append(a * (b / a) ** (np.arange(1, n + 1) / n))
    t = np.concatenate(out)
    t[np.searchsorted(t, g)] = g  # the γ values exactly
    return t


def follow_particles(ref_xy: np.ndarray, steps: Sequence[tuple[np.ndarray, np.ndarray]],
                     n_samples: int, radius: float) -> np.ndarray:
    """Positions [K, N, P, 2] (px; NaN once lost) of P reference particles ``ref_xy`` [P, 2]
    followed through K steps on N rays. ``steps[k]`` = (coords [F, 2] px, sample [F] in
    0..N−1): the features located in every ray's image at step k. At each step, each
    particle still followed is linked to a feature of its own ray within ``radius`` px of its
    last position (one-to-one, nearest wins: :func:`~matdyn.dynamics.variation.
    link_to_reference`); a particle with none is lost from then on.

    >>> ref = np.array([[10.0, 10.0]])
    >>> steps = [(np.array([[10.0, 11.5]]), np.array([0])), (np.array([[10.0, 13.0]]), np.array([0]))]
    >>> follow_particles(ref, steps, 1, 2.0)[-1, 0, 0].tolist()  # 3 px in two 1.5-px steps
    [10.0, 13.0]
    """
    ref = np.asarray(ref_xy, np.float64).reshape(-1, 2)
    p, n = len(ref), int(n_samples)
    cur = np.broadcast_to(ref, (n, p, 2)).copy()
    out = np.full((len(steps), n, p, 2), np.nan)
    if p == 0 or n == 0:
        return out
    # one KD-tree for all rays: ray j is shifted far along x, so links stay within a ray
    span = 4.0 * (np.abs(ref).max() + float(radius) + 1.0)
    shift = np.arange(n, dtype=np.float64)[:, None] * span
    for k, (xy, sample) in enumerate(steps):
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        sample = np.asarray(sample, np.int64).reshape(-1)
        alive = np.isfinite(cur[..., 0])
        ref_all = cur.copy()
        ref_all[..., 1] += shift
        ref_all[~alive] = -1e12  # lost particles take no feature
        feats = xy.copy()
        feats[:, 1] += sample * span
        link = link_to_reference(ref_all.reshape(-1, 2), feats, np.zeros(len(feats), np.int64),
                                 1, float(radius))
        ok = link.ref_index >= 0
        new = np.full((n * p, 2), np.nan)
        new[link.ref_index[ok]] = xy[ok]
        cur = new.reshape(n, p, 2)
        cur[~alive] = np.nan
        out[k] = cur
    return out


@dataclass(frozen=True)
class RayPaths:
    """Particles of M references followed along N rays each.

    ``ladder`` [K] t values; ``ref_yx`` [M, P, 2] px (NaN padded); ``disp`` [M, K, N, P, 2]
    px, x(t) − x(0), NaN once lost or where no particle; ``n_ref`` [M] particles located.
    """

    ladder: np.ndarray
    ref_yx: np.ndarray
    disp: np.ndarray
    n_ref: np.ndarray

    def at(self, gamma: float) -> np.ndarray:
        """Displacements [M, N, P, 2] px at the ladder step equal to ``gamma``."""
        k = np.flatnonzero(np.isclose(self.ladder, gamma, rtol=1e-9, atol=1e-12))
        if k.size == 0:
            raise ConfigError(f"γ = {gamma:g} is not a step of the ladder {self.ladder.tolist()}")
        return self.disp[:, int(k[0])]

    def particle_msd(self, gamma: float) -> np.ndarray:
        """MSD [M, P] px² of each reference particle over the rays it was followed on (NaN
        where it was lost on every ray)."""
        r2 = (self.at(gamma).astype(np.float64) ** 2).sum(-1)  # [M, N, P]
        ok = np.isfinite(r2)
        n = ok.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.where(ok, r2, 0.0).sum(axis=1) / n, np.nan)

    def followed_fraction(self, gamma: float) -> np.ndarray:
        """[M, P] share of the rays on which each located particle is still followed at γ
        (NaN where no particle)."""
        d = self.at(gamma)
        ok = np.isfinite(d[..., 0]).mean(axis=1)
        exists = np.isfinite(self.ref_yx[..., 0])
        return np.where(exists, ok, np.nan)

    def ensemble_msd(self, gamma: float) -> float:
        """Mean over particles of their MSD at γ (px²): the tracking-style ensemble MSD."""
        m = self.particle_msd(gamma)
        return float(np.nanmean(m)) if np.isfinite(m).any() else float("nan")

    def lost_fraction(self, gamma: float) -> float:
        """Share of (particle, ray) pairs lost by γ."""
        f = self.followed_fraction(gamma)
        return float(1.0 - np.nanmean(f)) if np.isfinite(f).any() else float("nan")


def follow_rays(generate: Callable[[torch.Tensor], np.ndarray], z: torch.Tensor,
                directions: torch.Tensor, ladder: Sequence[float], params: LocateParams,
                radius: float, *, max_particles: int = 64, channel: int = 0,
                progress: bool = False) -> RayPaths:
    """Follow the particles of G(z_i) along the rays z_i + t·v_ij.

    ``generate``: latents [B, d] -> physical images [B, C, H, W] (e.g.
    :meth:`~matdyn.analysis.case.CaseContext.generate`); ``z`` [M, d] references,
    ``directions`` [M, N, d] the rays' v (ε at γ is γ·v); ``ladder`` the t steps
    (:func:`ray_ladder`); ``radius`` px, the per-step search radius. Located particles per
    reference beyond ``max_particles`` are left out (``n_ref`` counts them all).
    """
    t = np.asarray(ladder, np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0:
        raise ConfigError(f"ladder must be increasing t > 0, got {t.tolist()!r}")
    m, n, _ = directions.shape
    p_max = int(max_particles)
    ref_yx = np.full((m, p_max, 2), np.nan)
    disp = np.full((m, t.size, n, p_max, 2), np.nan, np.float32)
    refs = generate(z)[:, channel]
    loc = locate_stack(refs, params)
    n_ref = np.bincount(loc.frame, minlength=m).astype(np.int64)
    it = range(m)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="latent rays", unit="ref")
    tt = torch.as_tensor(t, dtype=z.dtype)
    for i in it:
        xy = loc.in_frame(i)[:p_max]
        ref_yx[i, : len(xy)] = xy
        if len(xy) == 0:
            continue
        lat = z[i][None, None] + tt[:, None, None] * directions[i][None]  # [K, N, d]
        imgs = generate(lat.reshape(-1, lat.shape[-1]))[:, channel]  # [K*N, H, W]
        found = locate_stack(imgs, params)
        step = found.frame // n
        steps = [(found.coords[step == k], found.frame[step == k] % n) for k in range(t.size)]
        pos = follow_particles(xy, steps, n, radius)  # [K, N, P, 2]
        disp[i, :, :, : len(xy)] = pos - xy[None, None]
    return RayPaths(t, ref_yx, disp, n_ref)
