"""Synthetic stand-in for the aging rubber/brass clumps (paper §3.4, Table 1).

3D volumes of 32³ voxels (0.65 µm/voxel) with three channels, the densities of metallic
Cu, Cu2S and CuS in [0, 1] (their sum is the particle occupancy), for irregular particles
tracked over the aging stages 0, 3, 14 and 28 days (§3.4). Each store frame is one
particle at one stage, particle-major (p0 at 0, 3, 14, 28 d, then p1, ...).

Table 1 lists 4956 images while the text of §3.4 speaks of 4956 particles tracked over
four stages; we follow the image count: ``n_particles = 1239`` × 4 stages = 4956 frames.

Chemistry, per particle with reactivity mode m (``slow``, ``medium``, ``fast``) and a
per-particle rate drawn around the mode's mean (log-normal spread):

* Cu2S grows from the surface inward as a diffusion-limited shell of thickness
  ``h(t) = sqrt(h0² + 2 k t)`` voxels (``k`` in voxel²/day, ``h0`` the thin layer formed
  during vulcanisation), so Cu2S appears first and near the surface;
* CuS forms late and in the interior (deeper than the shell was at onset): after
  ``cus_onset_days`` a fraction ``g(t) = 1 − exp(−k_c (t − t_on))`` of that interior turns
  into CuS, in patches that follow a smooth random field; the shell then grows into the
  remaining Cu only;
* the rest stays metallic Cu, so the Cu fraction falls and Cu2S/CuS rise with stage, and
  faster modes sulfidise more.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter
from scipy.special import ndtr

from matdyn.data.synthetic._common import (
    Recipe,
    SyntheticData,
    make_params,
    materialize,
    require,
    rng_for,
    sigmoid,
    smooth_noise,
    write_store,
)

CHANNEL_NAMES = ("Cu", "Cu2S", "CuS")
MODE_NAMES = ("slow", "medium", "fast")
_S_PLAN, _S_SHAPE, _S_NOISE = 0, 1, 2


@dataclass(frozen=True)
class BrassClumpParams:
    """Parameters of the brass-clump stand-in (defaults: paper §3.4, Table 1)."""

    n_particles: int = 1239  # Table 1: 4956 images = 1239 particles × 4 stages
    size: int = 32  # Table 1: 32 × 32 × 32 voxels
    voxel_size_um: float = 0.65  # Table 1
    stages_days: tuple[float, ...] = (0.0, 3.0, 14.0, 28.0)  # §3.4: Aging-0/3/14/28
    # reactivity modes (slow, medium, fast): share of particles and mean rates
    mode_weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    mode_shell_rate: tuple[float, float, float] = (0.01, 0.04, 0.12)  # k, voxel²/day
    mode_cus_rate_per_day: tuple[float, float, float] = (0.01, 0.03, 0.08)  # k_c
    rate_spread: float = 0.15  # log-normal sigma of a particle's rate around its mode's
    initial_shell_vox: float = 0.0  # h0: Cu2S layer already present at day 0
    cus_onset_days: float = 7.0  # CuS starts forming after this (late aging, §3.4)
    # particle shape
    radius_range_vox: tuple[float, float] = (5.0, 9.0)
    aspect_spread: float = 0.2  # semi-axes vary by ± this fraction
    lumpiness: float = 0.25  # amplitude of the smooth radial perturbation
    # imaging
    front_width_vox: float = 0.3  # softness of the Cu2S front and the CuS patches
    psf_sigma_vox: float = 0.5
    noise_std: float = 0.01  # additive noise per channel (values clipped to [0, 1])

    def validate(self) -> None:
        require(self.n_particles >= 1, f"n_particles must be >= 1, got {self.n_particles}")
        require(self.size >= 12, f"size must be >= 12 voxels, got {self.size}")
        require(self.voxel_size_um > 0, f"voxel_size_um must be positive, got {self.voxel_size_um}")
        st = list(self.stages_days)
        require(len(st) >= 1 and all(s >= 0 for s in st) and st == sorted(st),
                f"stages_days must be non-negative and increasing, got {st}")
        for name in ("mode_weights", "mode_shell_rate", "mode_cus_rate_per_day"):
            v = getattr(self, name)
            require(len(v) == 3 and all(x >= 0 for x in v),
                    f"{name} needs three non-negative values (slow, medium, fast), got {v}")
        require(sum(self.mode_weights) > 0, "mode_weights must not all be zero")
        lo, hi = self.radius_range_vox
        extent = hi * (1 + self.aspect_spread) * (1 + self.lumpiness) + 1.5
        require(2 <= lo <= hi and extent < self.size / 2,
                f"radius_range_vox {self.radius_range_vox} with aspect_spread/lumpiness gives "
                f"particles up to {extent:.1f} voxels from the centre, more than half the "
                f"{self.size}-voxel box; lower radius_range_vox")
        for name in ("rate_spread", "initial_shell_vox", "cus_onset_days", "aspect_spread",
                     "lumpiness", "psf_sigma_vox", "noise_std"):
            v = getattr(self, name)
            require(v >= 0 and math.isfinite(v), f"{name} must be >= 0, got {v}")
        require(self.front_width_vox > 0, "front_width_vox must be positive")


@dataclass
class _Plan:
    p: BrassClumpParams
    mode: np.ndarray  # [P] int8
    shell_rate: np.ndarray  # [P] voxel²/day
    cus_rate: np.ndarray  # [P] 1/day
    radius: np.ndarray  # [P] base radius, voxels


def _plan(p: BrassClumpParams, seed: int) -> _Plan:
    rng = rng_for(seed, _S_PLAN)
    w = np.asarray(p.mode_weights, float)
    mode = rng.choice(3, size=p.n_particles, p=w / w.sum()).astype(np.int8)
    factor = np.exp(p.rate_spread * rng.standard_normal(p.n_particles))
    shell = np.asarray(p.mode_shell_rate)[mode] * factor
    cus = np.asarray(p.mode_cus_rate_per_day)[mode] * factor
    radius = rng.uniform(*p.radius_range_vox, p.n_particles)
    return _Plan(p, mode, shell, cus, radius)


def shell_thickness_vox(shell_rate: float, days: float, initial_vox: float = 0.0) -> float:
    """Cu2S shell thickness ``sqrt(h0² + 2 k t)`` (voxels) after ``days`` of aging.

    >>> round(shell_thickness_vox(0.25, 28.0, 0.0), 3)
    3.742
    """
    return math.sqrt(initial_vox**2 + 2.0 * shell_rate * days)


def cus_conversion(cus_rate: float, days: float, onset_days: float = 7.0) -> float:
    """Fraction of the interior turned into CuS: ``1 − exp(−k_c · max(t − t_on, 0))``.

    >>> cus_conversion(0.05, 3.0), round(cus_conversion(0.05, 27.0), 3)
    (0.0, 0.632)
    """
    return 1.0 - math.exp(-cus_rate * max(days - onset_days, 0.0))


def _shape(p: BrassClumpParams, radius: float, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancy [D,H,W] in [0,1], depth below the surface (voxels), interior patch field."""
    n = p.size
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))  # random orientation
    axes = radius * (1 + rng.uniform(-p.aspect_spread, p.aspect_spread, 3))
    centre = (n - 1) / 2 + rng.uniform(-1, 1, 3)
    g = np.stack(np.meshgrid(*(np.arange(n, dtype=float),) * 3, indexing="ij"), -1) - centre
    local = g @ q  # coordinates in the particle frame
    rho = np.sqrt(((local / axes) ** 2).sum(-1))
    lumps = p.lumpiness * np.tanh(smooth_noise(rng, (n, n, n), 2.5))
    inside = rho < 1 + lumps
    inside[[0, -1]] = False
    inside[:, [0, -1]] = False
    inside[:, :, [0, -1]] = False
    # signed distance to the surface (voxels, > 0 inside), smoothed against staircasing;
    # the occupancy is its partial-volume version
    sd = np.where(inside, distance_transform_edt(inside) - 0.5,
                  0.5 - distance_transform_edt(~inside))
    depth = gaussian_filter(sd, 0.7)
    occ = np.clip(0.5 + depth, 0.0, 1.0)
    occ[~binary_dilation(inside)] = 0.0
    patches = ndtr(smooth_noise(rng, (n, n, n), 2.0))  # ~uniform in [0, 1]
    return occ, depth, patches


def _render_particle(plan: _Plan, seed: int, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All stages of particle ``i``: volumes [S, 3, D, H, W], masses [S, 3], shell [S]."""
    p = plan.p
    occ, depth, patches = _shape(p, float(plan.radius[i]), rng_for(seed, _S_SHAPE, i))
    n_st = len(p.stages_days)
    vols = np.empty((n_st, 3, p.size, p.size, p.size), np.float32)
    masses = np.empty((n_st, 3))
    shells = np.empty(n_st)
    w = p.front_width_vox
    # CuS grows in the interior left when it starts (deeper than the shell at onset); the
    # Cu2S shell keeps growing into the remaining Cu only
    h_onset = shell_thickness_vox(plan.shell_rate[i], p.cus_onset_days, p.initial_shell_vox)
    for s, t in enumerate(p.stages_days):
        h = shell_thickness_vox(plan.shell_rate[i], t, p.initial_shell_vox)
        gc = cus_conversion(plan.cus_rate[i], t, p.cus_onset_days)
        cu2s_frac = sigmoid((h - depth) / w)
        interior = sigmoid((depth - h_onset - 0.5) / w)
        cus_frac = interior * sigmoid((gc - patches) / 0.05) if gc > 0 else np.zeros_like(occ)
        cus = occ * cus_frac
        cu2s = occ * cu2s_frac * (1 - cus_frac)
        cu = occ - cus - cu2s
        clean = np.stack([cu, cu2s, cus])
        masses[s] = clean.sum(axis=(1, 2, 3))
        shells[s] = h
        if p.psf_sigma_vox > 0:
            clean = gaussian_filter(clean, (0, p.psf_sigma_vox, p.psf_sigma_vox, p.psf_sigma_vox))
        rng = rng_for(seed, _S_NOISE, i * n_st + s)
        vols[s] = np.clip(clean + p.noise_std * rng.standard_normal(clean.shape), 0.0, 1.0)
    return vols, masses, shells


def recipe(params: BrassClumpParams | None = None, *, seed: int = 0, **overrides: Any) -> Recipe:
    """Plan the dataset (modes, rates, truth); volumes render lazily by chunk."""
    p = make_params(BrassClumpParams, params, overrides)
    plan = _plan(p, seed)
    n_st = len(p.stages_days)
    n = p.n_particles * n_st
    stage = np.tile(np.asarray(p.stages_days, float), p.n_particles)
    pid = np.repeat(np.arange(p.n_particles), n_st)

    def render(start: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        vols, masses, shells = [], [], []
        for i in range(start // n_st, (stop - 1) // n_st + 1):
            v, m, h = _render_particle(plan, seed, i)
            lo, hi = max(start - i * n_st, 0), min(stop - i * n_st, n_st)
            vols.append(v[lo:hi])
            masses.append(m[lo:hi])
            shells.append(h[lo:hi])
        masses_a = np.concatenate(masses)
        frac = masses_a / np.maximum(masses_a.sum(axis=1, keepdims=True), 1e-12)
        return np.concatenate(vols), {"species_mass_vox": masses_a, "species_fraction": frac,
                                      "shell_thickness_vox": np.concatenate(shells)}

    cus_g = np.array([cus_conversion(plan.cus_rate[i], t, p.cus_onset_days)
                      for i in range(p.n_particles) for t in p.stages_days])
    truth = {
        "particle_mode": plan.mode,  # [P] 0 slow, 1 medium, 2 fast
        "particle_shell_rate": plan.shell_rate,  # [P] voxel²/day
        "particle_cus_rate": plan.cus_rate,  # [P] 1/day
        "particle_radius_vox": plan.radius,  # [P]
        "frame_mode": plan.mode[pid],  # [N]
        "cus_conversion": cus_g,  # [N] fraction of the interior turned into CuS
    }
    truth_attrs = {
        "stages_days": list(p.stages_days),
        "mode_names": list(MODE_NAMES),
        "channel_names": list(CHANNEL_NAMES),
        "mode_shell_rate_vox2_per_day": list(p.mode_shell_rate),
        "mode_cus_rate_per_day": list(p.mode_cus_rate_per_day),
        "cus_onset_days": p.cus_onset_days,
        "initial_shell_vox": p.initial_shell_vox,
        "model": "Cu2S shell h=sqrt(h0^2+2kt) from the surface; CuS fraction "
                 "1-exp(-k_c(t-t_on)) of the interior; Cu the rest",
        "frame_order": "particle-major: frame = particle * n_stages + stage_index",
        "seed": int(seed),
    }
    labels = {"stage_days": stage, "particle_id": pid}
    meta = dict(spatial_shape=(p.size,) * 3, channel_names=list(CHANNEL_NAMES),
                pixel_size=p.voxel_size_um, unit="um", frame_interval=None, time_unit="day",
                source="synthetic:brass_clump", name="brass_clump")
    return Recipe(n, render, meta, labels, truth, truth_attrs, attrs={"params": asdict(p)})


def simulate(params: BrassClumpParams | None = None, *, seed: int = 0,
             **overrides: Any) -> SyntheticData:
    """Volumes and ground truth in memory (use a tiny ``n_particles``).

    >>> d = simulate(n_particles=2)
    >>> d.frames.shape, d.labels["stage_days"].tolist()[:4]
    ((8, 3, 32, 32, 32), [0.0, 3.0, 14.0, 28.0])
    """
    return materialize(recipe(params, seed=seed, **overrides))


def generate(path: str | os.PathLike, params: BrassClumpParams | None = None, *, seed: int = 0,
             overwrite: bool = False, progress: bool = True, chunk_frames: int = 128,
             **overrides: Any) -> Path:
    """Write the brass-clump store at ``path`` (paper scale by default) and return the path."""
    return write_store(path, recipe(params, seed=seed, **overrides), chunk_frames=chunk_frames,
                       overwrite=overwrite, progress=progress, desc="brass_clump")
