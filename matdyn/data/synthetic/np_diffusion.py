"""Synthetic stand-in for the gold-nanoparticle diffusion case (paper §3.3, Table 1).

Phase images (one channel, radians) of gold NPs seen as dark phase dips on a weakly varying
background. A GAN sees single frames, not time, so the three motion modes are planted on
distinct spatial supports that a frame can encode (see FINDINGS.md):

* mode 0, ``directed``: drift along fixed straight lanes (tiny transverse wobble);
* mode 1, ``free``: isotropic Brownian motion inside an open horizontal band;
* mode 2, ``confined``: Ornstein-Uhlenbeck motion around fixed trap points.

Diffusion area. We call *diffusion area over time t* the mean squared displacement of a
2D Brownian particle, ``A(t) = MSD(t) = 4 D t`` (nm²). The paper reports 7550 nm² per
second from XPCS (§3.3.2), so the free mode defaults to ``D = 7550 / 4 = 1887.5 nm²/s``
and ``A(1 s) = 7550 nm²`` (rms step in 1 s ≈ 87 nm ≈ 2.1 px).

Layout defaults are given for the paper's 142 px frames and scale with ``size``; they are
chosen to survive a 2× downsample (FINDINGS.md numbers × 2): radius 4.5 px, lanes 22 px
apart with 3 particles each, a 38 px band, traps ≥ 30 px apart, 15 particles in all.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from matdyn.data.synthetic._common import (
    Recipe,
    SyntheticData,
    make_params,
    materialize,
    require,
    rng_for,
    smooth_noise,
    write_store,
)
from matdyn.errors import ConfigError

MODE_NAMES = ("directed", "free", "confined")
DIRECTED, FREE, CONFINED = 0, 1, 2

#: the paper's XPCS diffusion area per second, nm² (§3.3.2)
XPCS_AREA_NM2_PER_S = 7550.0
_REF_SIZE = 142  # Table 1: 142 × 142 px frames; default layout is drawn at this size

# seed streams
_S_LAYOUT, _S_TRAJ, _S_NOISE = 0, 1, 2


def diffusion_area_nm2(diffusion_nm2_s: float, duration_s: float = 1.0) -> float:
    """Diffusion area ``A(t) = 4 D t`` (the 2D mean squared displacement), nm².

    >>> diffusion_area_nm2(1887.5, 1.0)
    7550.0
    """
    return 4.0 * diffusion_nm2_s * duration_s


@dataclass(frozen=True)
class NPDiffusionParams:
    """Parameters of the NP-diffusion stand-in. Layout fields left ``None`` take the paper
    layout drawn at 142 px and scaled by ``size / 142``; positions are (row, col) in px."""

    n_frames: int = 2000  # Table 1
    size: int = 142  # Table 1: 142 × 142 px
    pixel_size_nm: float = 40.58  # Table 1
    # not stated in the paper; 20 frames/s, so 2000 frames span 100 s and ~20 frames span
    # the ~1 s intervals of §3.3.2
    frame_interval_s: float = 0.05
    # rendering
    particle_radius_px: float | None = None  # 4.5 px at 142 px
    particle_depth_rad: float = 1.0  # phase dip depth at the particle centre
    psf_sigma_px: float = 0.7  # imaging blur
    noise_std: float = 0.015  # white phase noise, as a fraction of particle depth (≤ 0.02)
    background_amplitude: float = 0.05  # smooth background std, fraction of particle depth
    background_scale_px: float | None = None  # correlation length; default size / 6
    # mode 1: free Brownian motion in a band spanning the full width
    free_diffusion_nm2_s: float = XPCS_AREA_NM2_PER_S / 4.0  # A(1 s) = 7550 nm², §3.3.2
    n_free: int = 5
    band_rows_px: tuple[float, float] | None = None  # (58, 96) at 142 px
    # mode 0: directed motion along lanes
    lane_angle_deg: float = 0.0  # 0 = lanes along +x (columns), counter-clockwise positive
    lane_offsets_px: tuple[float, ...] | None = None  # from the centre along the lane normal
    particles_per_lane: int = 3
    lane_speed_nm_s: float = 200.0  # drift speed (~5 px/s)
    lane_diffusion_nm2_s: float = 100.0  # 1D diffusion along the lane on top of the drift
    lane_sigma_px: float = 0.3  # transverse wobble (stationary std)
    lane_relax_s: float = 0.5  # transverse relaxation time
    alternate_lane_directions: bool = True
    # mode 2: confinement in traps
    trap_positions_px: tuple[tuple[float, float], ...] | None = None  # 4 staggered traps
    trap_diffusion_nm2_s: float = XPCS_AREA_NM2_PER_S / 4.0  # short-time D inside a trap
    trap_sigma_px: float = 0.8  # stationary std of the trapped position

    def validate(self) -> None:
        require(self.n_frames >= 1, f"n_frames must be >= 1, got {self.n_frames}")
        require(self.size >= 16, f"size must be >= 16 px, got {self.size}")
        for name in ("pixel_size_nm", "frame_interval_s", "particle_depth_rad", "lane_relax_s"):
            v = getattr(self, name)
            require(v > 0 and math.isfinite(v), f"{name} must be a positive number, got {v}")
        for name in ("psf_sigma_px", "noise_std", "background_amplitude", "free_diffusion_nm2_s",
                     "lane_speed_nm_s", "lane_diffusion_nm2_s", "lane_sigma_px",
                     "trap_diffusion_nm2_s", "trap_sigma_px"):
            v = getattr(self, name)
            require(v >= 0 and math.isfinite(v), f"{name} must be >= 0, got {v}")
        require(self.n_free >= 0, f"n_free must be >= 0, got {self.n_free}")
        require(self.particles_per_lane >= 0,
                f"particles_per_lane must be >= 0, got {self.particles_per_lane}")
        if self.particle_radius_px is not None:
            require(self.particle_radius_px >= 1, "particle_radius_px must be >= 1 px")


@dataclass
class _Layout:
    size: int
    radius: float
    band: tuple[float, float]
    lane_points: np.ndarray  # [L, 2] a point on each lane (row, col)
    lane_dir: np.ndarray  # [2] unit vector along the lanes (row, col)
    lane_normal: np.ndarray  # [2]
    lane_s_range: np.ndarray  # [L, 2] parameter range of each lane across the padded frame
    traps: np.ndarray  # [K, 2]
    margin: float  # how far outside the frame a centre may go before it wraps/leaves
    region_map: np.ndarray  # [H, W] int8, -1 outside every mode's region


def _layout(p: NPDiffusionParams) -> _Layout:
    """Resolve defaults, build the mode-region map and check the regions are disjoint."""
    k = p.size / _REF_SIZE
    radius = p.particle_radius_px if p.particle_radius_px is not None else 4.5 * k
    band = tuple(p.band_rows_px) if p.band_rows_px is not None else (58.0 * k, 96.0 * k)
    offsets = (np.asarray(p.lane_offsets_px, float) if p.lane_offsets_px is not None
               else np.array([-50.0, -28.0]) * k)
    traps = (np.asarray(p.trap_positions_px, float).reshape(-1, 2)
             if p.trap_positions_px is not None
             else np.array([[112.0, 25.0], [126.0, 55.0], [112.0, 85.0], [126.0, 115.0]]) * k)
    require(len(band) == 2 and band[1] - band[0] >= 2 * radius + 1,
            f"band_rows_px {band} must be (top, bottom) and taller than a particle "
            f"(> {2 * radius + 1:.1f} px)")
    require(0 <= band[0] and band[1] <= p.size,
            f"band_rows_px {band} must lie inside the {p.size} px frame")
    n = p.size
    inside = (traps >= radius) & (traps <= n - 1 - radius)
    require(bool(inside.all()), f"trap_positions_px must lie inside the frame by one radius "
            f"({radius:.1f} px); got {traps.tolist()}")

    theta = math.radians(p.lane_angle_deg)
    lane_dir = np.array([-math.sin(theta), math.cos(theta)])  # counter-clockwise on screen
    lane_normal = np.array([math.cos(theta), math.sin(theta)])
    centre = np.array([(n - 1) / 2.0, (n - 1) / 2.0])
    lane_points = centre[None, :] + offsets[:, None] * lane_normal[None, :]
    margin = radius + 2.0
    s_range = np.zeros((len(offsets), 2))
    lo, hi = -margin, n - 1 + margin
    for i, pt in enumerate(lane_points):
        # clip the infinite line to the padded frame (slab method)
        s0, s1 = -np.inf, np.inf
        for ax in range(2):
            if abs(lane_dir[ax]) < 1e-12:
                if not (lo <= pt[ax] <= hi):
                    s0, s1 = 1.0, 0.0
                continue
            a, b = (lo - pt[ax]) / lane_dir[ax], (hi - pt[ax]) / lane_dir[ax]
            s0, s1 = max(s0, min(a, b)), min(s1, max(a, b))
        require(s1 - s0 > 2 * margin,
                f"lane {i} (offset {offsets[i]:.1f} px, angle {p.lane_angle_deg}°) does not "
                "cross the frame; change lane_offsets_px")
        s_range[i] = (s0, s1)

    # mode-region map: where a particle of each mode can leave signal
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    pad = 1.0 + p.psf_sigma_px
    masks = []
    lane_mask = np.zeros((n, n), bool)
    if p.particles_per_lane > 0:
        for pt in lane_points:
            dist = np.abs((rows - pt[0]) * lane_normal[0] + (cols - pt[1]) * lane_normal[1])
            lane_mask |= dist <= radius + 3 * p.lane_sigma_px + pad
    masks.append(lane_mask)
    band_mask = np.zeros((n, n), bool)
    if p.n_free > 0:
        band_mask[(rows >= band[0]) & (rows <= band[1])] = True
    masks.append(band_mask)
    trap_mask = np.zeros((n, n), bool)
    for t in traps:
        trap_mask |= np.hypot(rows - t[0], cols - t[1]) <= radius + 3 * p.trap_sigma_px + pad
    masks.append(trap_mask)
    region = np.full((n, n), -1, np.int8)
    for m, mask in enumerate(masks):
        clash = mask & (region >= 0)
        if clash.any():
            other = MODE_NAMES[int(region[clash][0])]
            raise ConfigError(
                f"the {MODE_NAMES[m]} region overlaps the {other} region; move lanes "
                "(lane_offsets_px), the band (band_rows_px) or traps (trap_positions_px) apart")
        region[mask] = m
    return _Layout(n, radius, (float(band[0]), float(band[1])), lane_points, lane_dir,
                   lane_normal, s_range, traps, margin, region)


def _ou_step(x: np.ndarray, sigma: float, a: float, rng: np.random.Generator) -> np.ndarray:
    """One exact Ornstein-Uhlenbeck step (relaxation factor ``a``) around 0."""
    return a * x + sigma * math.sqrt(max(1.0 - a * a, 0.0)) * rng.standard_normal(x.shape)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    z = np.mod(x - lo, 2 * span)
    return lo + np.where(z > span, 2 * span - z, z)


@dataclass
class _Trajectories:
    pos: np.ndarray  # [T, S, 2] (row, col) px
    ids: np.ndarray  # [T, S] int32
    slot_mode: np.ndarray  # [S] int8


def _simulate(p: NPDiffusionParams, lay: _Layout, seed: int) -> _Trajectories:
    rng = rng_for(seed, _S_TRAJ)
    T, dt, px = p.n_frames, p.frame_interval_s, p.pixel_size_nm
    n_lanes = len(lay.lane_points) if p.particles_per_lane > 0 else 0
    n_dir, n_free, n_trap = n_lanes * p.particles_per_lane, p.n_free, len(lay.traps)
    S = n_dir + n_free + n_trap
    pos = np.zeros((T, S, 2))
    incarnation = np.zeros((T, S), np.int64)  # bumps each time a slot's particle is replaced

    # mode 0: lanes — drift + 1D diffusion along s (wrapping = leave + new entrant),
    # OU wobble across
    if n_dir:
        lane_of = np.repeat(np.arange(n_lanes), p.particles_per_lane)
        s0, s1 = lay.lane_s_range[lane_of, 0], lay.lane_s_range[lane_of, 1]
        length = s1 - s0
        sign = np.where((lane_of % 2 == 1) & p.alternate_lane_directions, -1.0, 1.0)
        k_in_lane = np.tile(np.arange(p.particles_per_lane), n_lanes)
        phase = rng.uniform(0, 1, n_lanes)[lane_of]
        jitter = rng.uniform(-0.15, 0.15, n_dir)
        s_init = (k_in_lane + phase + jitter) / p.particles_per_lane * length
        steps = (sign * p.lane_speed_nm_s * dt
                 + math.sqrt(2 * p.lane_diffusion_nm2_s * dt) * rng.standard_normal((T, n_dir))) / px
        steps[0] = 0.0
        s = s_init[None, :] + np.cumsum(steps, axis=0)  # unwrapped, relative to s0
        wraps = np.floor(s / length).astype(np.int64)
        # every crossing of the lane end is a particle leaving and a new one entering
        incarnation[1:, :n_dir] = np.cumsum(np.abs(np.diff(wraps, axis=0)), axis=0)
        s = s0 + np.mod(s, length)
        a = math.exp(-dt / p.lane_relax_s)
        tr = np.zeros((T, n_dir))
        tr[0] = p.lane_sigma_px * rng.standard_normal(n_dir)
        for t in range(1, T):
            tr[t] = _ou_step(tr[t - 1], p.lane_sigma_px, a, rng)
        pts = lay.lane_points[lane_of]
        pos[:, :n_dir] = (pts[None] + s[..., None] * lay.lane_dir[None, None]
                          + tr[..., None] * lay.lane_normal[None, None])

    # mode 1: free — 2D Brownian, reflected at the band edges, replaced when it leaves
    # through the left/right side (a new particle enters from a random side)
    if n_free:
        sl = slice(n_dir, n_dir + n_free)
        y_lo, y_hi = lay.band[0] + lay.radius, lay.band[1] - lay.radius
        x_lo, x_hi = -lay.margin, lay.size - 1 + lay.margin
        step = math.sqrt(2 * p.free_diffusion_nm2_s * dt) / px
        min_gap = 2 * lay.radius + 1.0  # hard-core exclusion keeps free particles apart
        cur = np.empty((n_free, 2))
        for i in range(n_free):  # non-overlapping start (rejection sampling)
            for _ in range(100):
                cand = np.array([rng.uniform(y_lo, y_hi), rng.uniform(0, lay.size - 1)])
                if i == 0 or np.hypot(*(cur[:i] - cand).T).min() >= min_gap:
                    break
            cur[i] = cand
        inc = np.zeros(n_free, np.int64)
        pos[0, sl] = cur
        for t in range(1, T):
            prop = cur + step * rng.standard_normal((n_free, 2))
            prop[:, 0] = _reflect(prop[:, 0], y_lo, y_hi)
            # a move that would overlap another particle is rejected (the particle stays);
            # repeat until no pair overlaps (all-rejected is always valid)
            for _ in range(n_free):
                gap = np.hypot(prop[:, None, 0] - prop[None, :, 0], prop[:, None, 1] - prop[None, :, 1])
                np.fill_diagonal(gap, np.inf)
                moved = (prop != cur).any(axis=1)
                bad = (gap < min_gap).any(axis=1) & moved
                if not bad.any():
                    break
                prop[bad] = cur[bad]
            cur = prop
            out = (cur[:, 1] < x_lo) | (cur[:, 1] > x_hi)
            if out.any():
                k = int(out.sum())
                side = rng.integers(0, 2, k)
                cur[out, 1] = np.where(side == 0, x_lo + 0.5, x_hi - 0.5)
                cur[out, 0] = rng.uniform(y_lo, y_hi, k)
                inc[out] += 1
            pos[t, sl] = cur
            incarnation[t, sl] = inc

    # mode 2: traps — OU around each trap centre, short-time D = trap_diffusion_nm2_s
    if n_trap:
        sl = slice(n_dir + n_free, S)
        sig = p.trap_sigma_px
        tau = (sig * px) ** 2 / p.trap_diffusion_nm2_s if p.trap_diffusion_nm2_s > 0 else np.inf
        a = math.exp(-dt / tau)
        d = np.zeros((T, n_trap, 2))
        d[0] = sig * rng.standard_normal((n_trap, 2))
        for t in range(1, T):
            d[t] = _ou_step(d[t - 1], sig, a, rng)
        pos[:, sl] = lay.traps[None] + d

    slot_mode = np.concatenate([np.full(n_dir, DIRECTED), np.full(n_free, FREE),
                                np.full(n_trap, CONFINED)]).astype(np.int8)
    # unique ids: slot s owns ids offset[s] ... offset[s] + (its last incarnation)
    n_inc = incarnation.max(axis=0) + 1
    offset = np.concatenate([[0], np.cumsum(n_inc)[:-1]])
    ids = (offset[None, :] + incarnation).astype(np.int32)
    return _Trajectories(pos, ids, slot_mode)


def _render_chunk(p: NPDiffusionParams, lay: _Layout, traj: _Trajectories,
                  background: np.ndarray, seed: int, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) as [n, 1, H, W] float32 phase (rad)."""
    pos = traj.pos[start:stop]  # [B, S, 2]
    B, S = pos.shape[:2]
    n, R = lay.size, lay.radius
    pad = int(math.ceil(lay.margin + R + 4 * p.psf_sigma_px)) + 1
    nc = n + 2 * pad
    canvas = np.zeros(B * nc * nc)
    if S:
        # projected thickness of a sphere on a small patch, 3×3 supersampled per pixel
        h = int(math.ceil(R)) + 1
        offs = np.arange(-h, h + 1)
        sub = (np.arange(3) + 0.5) / 3 - 0.5
        grid = (offs[:, None] + sub[None, :])  # [K, 3]
        ctr = pos + pad
        base = np.rint(ctr).astype(np.int64)
        frac = ctr - base  # [B, S, 2]
        dy = grid[None, None] - frac[..., 0, None, None]  # [B, S, K, 3]
        dx = grid[None, None] - frac[..., 1, None, None]
        r2 = (dy[:, :, :, :, None, None] ** 2 + dx[:, :, None, None, :, :] ** 2) / R**2
        thick = np.sqrt(np.clip(1.0 - r2, 0.0, None)).mean(axis=(3, 5))  # [B, S, K, K]
        rr = base[..., 0, None, None] + offs[None, None, :, None]  # [B, S, K, 1]
        cc = base[..., 1, None, None] + offs[None, None, None, :]  # [B, S, 1, K]
        rr, cc = np.broadcast_arrays(rr, cc)
        ok = (rr >= 0) & (rr < nc) & (cc >= 0) & (cc < nc)
        bidx = np.broadcast_to(np.arange(B)[:, None, None, None], rr.shape)
        flat = (bidx * nc + rr) * nc + cc
        canvas += np.bincount(flat[ok], weights=thick[ok], minlength=B * nc * nc)
    canvas = canvas.reshape(B, nc, nc)
    if p.psf_sigma_px > 0:
        canvas = gaussian_filter(canvas, (0, p.psf_sigma_px, p.psf_sigma_px), mode="constant")
    frames = background[None] - p.particle_depth_rad * canvas[:, pad:pad + n, pad:pad + n]
    sd = p.noise_std * p.particle_depth_rad
    if sd > 0:
        for i in range(B):  # one noise stream per frame index: output is chunk-independent
            frames[i] += sd * rng_for(seed, _S_NOISE, start + i).standard_normal((n, n))
    return frames[:, None].astype(np.float32)


def recipe(params: NPDiffusionParams | None = None, *, seed: int = 0, **overrides: Any) -> Recipe:
    """Plan the dataset (trajectories, layout, truth); frames are rendered lazily by chunk."""
    p = make_params(NPDiffusionParams, params, overrides)
    lay = _layout(p)
    traj = _simulate(p, lay, seed)
    bg_scale = p.background_scale_px if p.background_scale_px is not None else p.size / 6
    background = (p.background_amplitude * p.particle_depth_rad
                  * smooth_noise(rng_for(seed, _S_LAYOUT), (p.size, p.size), bg_scale))
    T = p.n_frames
    inside = ((traj.pos >= 0) & (traj.pos <= p.size - 1)).all(axis=-1)
    d_modes = np.array([p.lane_diffusion_nm2_s, p.free_diffusion_nm2_s, p.trap_diffusion_nm2_s])
    truth = {
        "positions_px": traj.pos.astype(np.float32),  # [T, S, 2] (row, col)
        "positions_nm": (traj.pos * p.pixel_size_nm).astype(np.float32),
        "particle_ids": traj.ids,  # [T, S]
        "particle_mode": np.broadcast_to(traj.slot_mode, traj.ids.shape).copy(),  # [T, S]
        "slot_mode": traj.slot_mode,  # [S]
        "visible": inside.astype(np.int8),  # [T, S] centre inside the frame
        "region_map": lay.region_map,  # [H, W] int8, -1 outside every region
        "mode_diffusion_nm2_s": d_modes,  # [3] planted D per mode
    }
    truth_attrs = {
        "mode_names": list(MODE_NAMES),
        "diffusion_nm2_s": dict(zip(MODE_NAMES, d_modes.tolist())),
        "diffusion_area_definition": "A(t) = MSD(t) = 4 D t (nm^2)",
        "free_diffusion_area_per_s_nm2": diffusion_area_nm2(p.free_diffusion_nm2_s),
        "lane_speed_nm_s": p.lane_speed_nm_s,
        "lane_sigma_nm": p.lane_sigma_px * p.pixel_size_nm,
        "trap_sigma_nm": p.trap_sigma_px * p.pixel_size_nm,
        "particle_radius_px": lay.radius,
        "particle_radius_nm": lay.radius * p.pixel_size_nm,
        "particle_depth_rad": p.particle_depth_rad,
        "band_rows_px": list(lay.band),
        "lane_points_px": lay.lane_points.tolist(),
        "lane_direction": lay.lane_dir.tolist(),
        "trap_positions_px": lay.traps.tolist(),
        "n_particles_per_mode": [int((traj.slot_mode == m).sum()) for m in range(3)],
        "position_convention": "(row, col) of the particle centre; nm = px * pixel_size",
        "seed": int(seed),
    }
    meta = dict(spatial_shape=(p.size, p.size), channel_names=["phase"],
                pixel_size=p.pixel_size_nm, unit="nm", frame_interval=p.frame_interval_s,
                time_unit="s", source="synthetic:np_diffusion", name="np_diffusion")

    def render(start: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _render_chunk(p, lay, traj, background, seed, start, stop), {}

    labels = {"time_s": np.arange(T) * p.frame_interval_s}
    return Recipe(T, render, meta, labels, truth, truth_attrs,
                  attrs={"params": asdict(p)})


def region_labels(region_map: Any, resolution: int, fit: str = "crop") -> np.ndarray:
    """The planted mode-region map (truth ``region_map`` [H, W], -1 outside every region)
    at the working geometry: squared like the frames (``fit="crop"``: centre crop to the
    short side; ``"pad"``: padded to the long side with -1) and sampled at the centres of a
    ``resolution`` × ``resolution`` grid (nearest label) -> int8 [resolution, resolution].
    Labels index ``MODE_NAMES`` (0 directed, 1 free, 2 confined).

    >>> m = np.full((4, 4), -1, np.int8); m[:2] = 0; m[2:] = 2
    >>> region_labels(m, 2).tolist()
    [[0, 0], [2, 2]]
    """
    from matdyn.data.frames import check_fit

    m = np.asarray(region_map)
    if m.ndim != 2 or m.size == 0:
        raise ConfigError(f"region_map must be a 2D label image, got shape {m.shape}")
    if int(resolution) < 1:
        raise ConfigError(f"resolution must be >= 1 px, got {resolution}")
    h, w = m.shape
    if check_fit(fit) == "crop":
        s = min(h, w)
        sq = m[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    else:
        s = max(h, w)
        sq = np.full((s, s), -1, m.dtype)
        sq[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = m
    # centre of working pixel i lies at source coordinate (i + 0.5) * s / R - 0.5
    idx = np.clip(np.floor((np.arange(int(resolution)) + 0.5) * s / int(resolution)).astype(int),
                  0, s - 1)
    return sq[np.ix_(idx, idx)].astype(np.int8)


def simulate(params: NPDiffusionParams | None = None, *, seed: int = 0,
             **overrides: Any) -> SyntheticData:
    """Frames and ground truth in memory (use tiny ``n_frames``).

    >>> d = simulate(n_frames=3, seed=1)
    >>> d.frames.shape, d.truth["positions_px"].shape
    ((3, 1, 142, 142), (3, 15, 2))
    """
    return materialize(recipe(params, seed=seed, **overrides))


def generate(path: str | os.PathLike, params: NPDiffusionParams | None = None, *,
             seed: int = 0, overwrite: bool = False, progress: bool = True,
             chunk_frames: int = 256, **overrides: Any) -> Path:
    """Write the NP-diffusion store at ``path`` (paper scale by default) and return the path."""
    return write_store(path, recipe(params, seed=seed, **overrides), chunk_frames=chunk_frames,
                       overwrite=overwrite, progress=progress, desc="np_diffusion")
