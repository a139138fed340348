"""Synthetic stand-in for the Ta test-chart translation case (paper §3.2, Table 1).

A rigid phase object (Ta bars, squares and two slits of widths d1 = 309 nm and
d2 = 324 nm, §3.2) translates horizontally at 340 nm/s with one frame per 7 ms under a
fixed triangular-aperture illumination. Each raw frame is followed by ``n_augment``
copies rotated by random angles in [-30°, 30°] (1755 + 5 × 1755 = 10 530 images of
178 × 178 px at 20.72 nm/px, Table 1).

Field of view. 1755 frames × 2.38 nm = 4.18 µm ≈ 202 px, more than the 178 px frame, so a
single slit pair would leave the view. The chart is therefore a strip of repeated cells
(period ``cell_width_frac`` × frame width, 89 px by default), each holding the slit pair,
a bar group and two squares whose positions are jittered per cell (seeded), so the pattern
is not exactly periodic. One slit pair is always within half a cell of the frame centre.
The illumination is fixed in the frame and the chart moves under it, as in the experiment.

Rendering. Every feature is an axis-aligned rectangle, so pixel values are the exact
area fraction of each pixel covered by Ta (equivalent to infinite supersampling followed
by area averaging), then blurred by a small Gaussian PSF; a 14.9 px slit keeps its width
to a small fraction of a pixel. Around the chart: a soft triangular support with Fresnel
ringing at its edges, a smooth strongly random phase outside it plus a quadratic ramp that
wraps (phase wraps near the border), per-frame low-order phase offsets and white noise.
All values are phase in radians wrapped to [-π, π).

Conventions. ``offset_nm`` is the chart displacement along +x (increasing column) since
frame 0; ``rotation_deg`` is the angle given to ``scipy.ndimage.rotate(frame, angle,
reshape=False)`` (counter-clockwise on screen with the origin at the top left).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, rotate

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
from matdyn.errors import AnalysisError

_S_LAYOUT, _S_ANGLES, _S_FRAME = 0, 1, 2

# slit block rows and positions inside a cell, as fractions of the frame / cell width
SLIT_ROWS = (0.36, 0.64)  # top and bottom of the slit row, fractions of the field of view
_SLIT1_LEFT, _SLIT2_LEFT, _BLOCK_LEFT, _BLOCK_RIGHT = 0.30, 0.62, 0.02, 0.92
SLIT_LEFT_FRACS = (_SLIT1_LEFT, _SLIT2_LEFT)  # left edges of slits d1, d2, fractions of a cell


@dataclass(frozen=True)
class TaChartParams:
    """Parameters of the Ta test-chart stand-in (defaults: paper §3.2, Table 1)."""

    n_frames: int = 1755  # §3.2: raw phase-reconstructed frames
    n_augment: int = 5  # §3.2: five rotated copies per frame -> 10 530 images
    max_rotation_deg: float = 30.0  # §3.2: rotations drawn from [-30°, 30°]
    size: int = 178  # Table 1: 178 × 178 px
    pixel_size_nm: float = 20.72  # Table 1
    speed_nm_s: float = 340.0  # §3.2: horizontal translation speed
    frame_interval_s: float = 0.007  # §3.2: 7 ms per frame
    d1_nm: float = 309.0  # §3.2 slit widths d1, d2
    d2_nm: float = 324.0
    chart_origin_nm: float = 0.0  # chart x at image column 0 in frame 0 (shifts the pattern)
    cell_width_frac: float = 0.5  # chart repeat period / frame width
    phase_contrast_rad: float = 1.0  # phase of Ta relative to the open membrane
    psf_sigma_px: float = 0.6
    noise_std_rad: float = 0.03  # white phase noise inside the support
    offset_noise_rad: float = 0.05  # per-frame random constant + linear phase ramp
    aperture_side_frac: float = 1.15  # side of the triangular support / frame width
    aperture_edge_px: float = 2.5  # softness of the support edge
    ringing_amplitude_rad: float = 0.25  # Fresnel fringes at the support edge
    ringing_period_px: float = 5.0
    ringing_decay_px: float = 6.0
    outside_noise_rad: float = 1.2  # smooth random phase outside the support
    wrap_ramp_rad: float = 9.0  # quadratic phase ramp at the frame corners (wraps)

    def validate(self) -> None:
        require(self.n_frames >= 1, f"n_frames must be >= 1, got {self.n_frames}")
        require(self.n_augment >= 0, f"n_augment must be >= 0, got {self.n_augment}")
        require(self.size >= 64, f"size must be >= 64 px so the slit block fits, got {self.size}")
        for name in ("pixel_size_nm", "frame_interval_s", "d1_nm", "d2_nm", "cell_width_frac",
                     "aperture_side_frac", "aperture_edge_px", "ringing_period_px",
                     "ringing_decay_px"):
            v = getattr(self, name)
            require(v > 0 and math.isfinite(v), f"{name} must be a positive number, got {v}")
        for name in ("max_rotation_deg", "speed_nm_s", "psf_sigma_px", "noise_std_rad",
                     "offset_noise_rad", "ringing_amplitude_rad", "outside_noise_rad",
                     "wrap_ramp_rad"):
            v = getattr(self, name)
            require(v >= 0 and math.isfinite(v), f"{name} must be >= 0, got {v}")
        cell_nm = self.cell_width_frac * self.size * self.pixel_size_nm
        require((_SLIT1_LEFT * cell_nm + self.d1_nm < _SLIT2_LEFT * cell_nm - 2 * self.pixel_size_nm)
                and (_SLIT2_LEFT * cell_nm + self.d2_nm < _BLOCK_RIGHT * cell_nm - 2 * self.pixel_size_nm),
                f"slits d1={self.d1_nm} nm, d2={self.d2_nm} nm do not fit a chart cell of "
                f"{cell_nm:.0f} nm; raise cell_width_frac or size")


def cell_width_nm(p: TaChartParams) -> float:
    """Width of one repeat of the chart (nm): ``cell_width_frac`` × the field of view."""
    return p.cell_width_frac * p.size * p.pixel_size_nm


def slit_edges_nm(p: TaChartParams, cell: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Chart-x edges (left, right) of slits d1 and d2 in chart cell ``cell``."""
    w = cell_width_nm(p)
    x0 = p.chart_origin_nm + cell * w
    s1 = x0 + _SLIT1_LEFT * w
    s2 = x0 + _SLIT2_LEFT * w
    return (s1, s1 + p.d1_nm), (s2, s2 + p.d2_nm)


def chart_rects(p: TaChartParams, seed: int) -> np.ndarray:
    """Ta rectangles [R, 4] (x0, x1, y0, y1) in nm covering every position the frames see."""
    w, fov = cell_width_nm(p), p.size * p.pixel_size_nm
    travel = p.speed_nm_s * p.frame_interval_s * (p.n_frames - 1)
    # image col j in frame k shows chart x = j*a - offset_k; offsets span [0, travel]
    c_lo = math.floor((-travel - p.chart_origin_nm) / w) - 1
    c_hi = math.ceil((fov - p.chart_origin_nm) / w) + 1
    rng = rng_for(seed, _S_LAYOUT)
    rects = []
    for c in range(c_lo, c_hi + 1):
        x0 = p.chart_origin_nm + c * w
        (a1, b1), (a2, b2) = slit_edges_nm(p, c)
        y0, y1 = SLIT_ROWS[0] * fov, SLIT_ROWS[1] * fov
        # slit block: three Ta blocks separated by the slits d1 and d2
        rects += [(x0 + _BLOCK_LEFT * w, a1, y0, y1), (b1, a2, y0, y1),
                  (b2, x0 + _BLOCK_RIGHT * w, y0, y1)]
        # bar group above: three horizontal bars and two vertical bars
        for k in range(3):
            yb = (0.14 + 0.055 * k) * fov
            rects.append((x0 + 0.08 * w, x0 + 0.58 * w, yb, yb + 0.028 * fov))
        for xb in (0.68, 0.80):
            rects.append((x0 + xb * w, x0 + (xb + 0.06) * w, 0.14 * fov, 0.275 * fov))
        # two squares below, jittered per cell so the strip is not exactly periodic
        side = 0.075 * fov
        for xs in (0.10, 0.52):
            jx, jy = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.02, 0.04) * fov
            xq, yq = x0 + xs * w + jx, 0.70 * fov + jy
            rects.append((xq, xq + side, yq, yq + side))
    return np.asarray(rects, float)


def _coverage(edges_lo: np.ndarray, edges_hi: np.ndarray, n: int, a: float) -> np.ndarray:
    """Fraction of each of ``n`` pixels (width ``a``) covered by intervals -> [R, n]."""
    left = np.arange(n) * a
    ov = np.minimum(edges_hi[:, None], left[None, :] + a) - np.maximum(edges_lo[:, None], left[None, :])
    return np.clip(ov, 0.0, a) / a


def render_chart(p: TaChartParams, rects: np.ndarray, offset_nm: float) -> np.ndarray:
    """Noise-free Ta coverage (0 = open, 1 = Ta) of the frame at chart offset ``offset_nm``,
    PSF-blurred, [H, W]."""
    a, n = p.pixel_size_nm, p.size
    cx = _coverage(rects[:, 0] + offset_nm, rects[:, 1] + offset_nm, n, a)  # [R, W]
    cy = _coverage(rects[:, 2], rects[:, 3], n, a)  # [R, H]
    img = cy.T @ cx
    if p.psf_sigma_px > 0:
        img = gaussian_filter(img, p.psf_sigma_px, mode="nearest")
    return img


@dataclass
class Support:
    """The illumination support of :func:`support`, fixed while the chart moves."""

    envelope: np.ndarray  # [H, W] in [0, 1], 1 inside the triangular support
    ringing: np.ndarray  # [H, W] Fresnel fringes (rad)
    ramp: np.ndarray  # [H, W] quadratic phase ramp (rad), weighted to the outside


def support(p: TaChartParams) -> Support:
    """The fixed illumination support (triangle, Fresnel fringes, outside ramp), [H, W] each."""
    n = p.size
    r, c = np.mgrid[0:n, 0:n].astype(float)
    cr = cc = (n - 1) / 2.0
    side = p.aperture_side_frac * n
    r_in = side / (2 * math.sqrt(3))
    # outward normals of an apex-up equilateral triangle, (row, col) with rows pointing down
    normals = [(1.0, 0.0), (-0.5, math.sqrt(3) / 2), (-0.5, -math.sqrt(3) / 2)]
    proj = np.max([nr * (r - cr) + nc * (c - cc) for nr, nc in normals], axis=0)
    d = r_in - proj  # signed distance to the edge, positive inside
    env = sigmoid(d / p.aperture_edge_px)
    ring = (p.ringing_amplitude_rad * np.cos(2 * math.pi * d / p.ringing_period_px)
            * np.exp(-np.abs(d) / p.ringing_decay_px))
    rad2 = ((r - cr) ** 2 + (c - cc) ** 2) / (2 * (n / 2.0) ** 2)  # 1 at the corners
    ramp = p.wrap_ramp_rad * rad2 * (1 - env)
    return Support(env, ring, ramp)


def wrap_phase(x: np.ndarray) -> np.ndarray:
    """Phase wrapped to [-π, π)."""
    return np.mod(x + math.pi, 2 * math.pi) - math.pi


def _render_frame(p: TaChartParams, rects: np.ndarray, sup: Support, offset_nm: float,
                  seed: int, k: int) -> np.ndarray:
    """Raw (unrotated) phase frame ``k``, [H, W] float64, wrapped to [-π, π)."""
    n = p.size
    rng = rng_for(seed, _S_FRAME, k)
    chart = p.phase_contrast_rad * render_chart(p, rects, offset_nm)
    outside = p.outside_noise_rad * smooth_noise(rng, (n, n), 3.0)
    lin = np.linspace(-0.5, 0.5, n)
    c0, gx, gy = p.offset_noise_rad * rng.standard_normal(3)
    low = c0 + gx * lin[None, :] + gy * lin[:, None]
    img = (sup.envelope * (chart + low) + (1 - sup.envelope) * outside + sup.ringing + sup.ramp
           + p.noise_std_rad * rng.standard_normal((n, n)))
    return wrap_phase(img)


@dataclass
class _Plan:
    p: TaChartParams
    rects: np.ndarray
    support: Support
    frame_offset_nm: np.ndarray  # [n_frames]
    angles: np.ndarray  # [n_frames, 1 + n_augment]; column 0 is the raw frame (0°)


def _plan(p: TaChartParams, seed: int) -> _Plan:
    offsets = p.speed_nm_s * p.frame_interval_s * np.arange(p.n_frames)
    ang = rng_for(seed, _S_ANGLES).uniform(-p.max_rotation_deg, p.max_rotation_deg,
                                           (p.n_frames, p.n_augment))
    angles = np.concatenate([np.zeros((p.n_frames, 1)), ang], axis=1)
    return _Plan(p, chart_rects(p, seed), support(p), offsets, angles)


def _render_images(plan: _Plan, seed: int, start: int, stop: int) -> np.ndarray:
    """Images [start, stop) (frame-major: raw frame, then its rotated copies), [n, 1, H, W]."""
    p = plan.p
    per = 1 + p.n_augment
    out = np.empty((stop - start, 1, p.size, p.size), np.float32)
    for k in range(start // per, (stop - 1) // per + 1):
        raw = _render_frame(p, plan.rects, plan.support, plan.frame_offset_nm[k], seed, k)
        for j in range(per):
            i = k * per + j
            if not start <= i < stop:
                continue
            if j == 0:
                out[i - start, 0] = raw
            else:
                out[i - start, 0] = rotate(raw, plan.angles[k, j], reshape=False, order=1,
                                           mode="constant", cval=0.0)
    return out


def recipe(params: TaChartParams | None = None, *, seed: int = 0, **overrides: Any) -> Recipe:
    """Plan the dataset (chart layout, offsets, angles, truth); frames render lazily."""
    p = make_params(TaChartParams, params, overrides)
    plan = _plan(p, seed)
    per = 1 + p.n_augment
    n = p.n_frames * per
    src = np.repeat(np.arange(p.n_frames), per)
    is_aug = np.tile(np.arange(per) > 0, p.n_frames).astype(np.int8)
    truth = {
        "offset_nm": plan.frame_offset_nm[src],
        "rotation_deg": plan.angles.reshape(-1),
        "source_frame": src,
        "is_augmented": is_aug,
        "chart_rects_nm": plan.rects,  # [R, 4] (x0, x1, y0, y1) of Ta in chart coordinates
    }
    truth_attrs = {
        "d1_nm": p.d1_nm,
        "d2_nm": p.d2_nm,
        "slit_widths_nm": [p.d1_nm, p.d2_nm],
        "pixel_size_nm": p.pixel_size_nm,
        "speed_nm_s": p.speed_nm_s,
        "frame_interval_s": p.frame_interval_s,
        "cell_width_nm": cell_width_nm(p),
        "chart_origin_nm": p.chart_origin_nm,
        "rotation_range_deg": [-p.max_rotation_deg, p.max_rotation_deg],
        "images_per_frame": per,
        "offset_convention": "chart displacement along +x (columns) since frame 0, nm",
        "rotation_convention": "angle of scipy.ndimage.rotate(frame, angle, reshape=False)",
        "seed": int(seed),
    }
    labels = {"source_frame": src, "is_augmented": is_aug,
              "time_s": src * p.frame_interval_s}
    meta = dict(spatial_shape=(p.size, p.size), channel_names=["phase"],
                pixel_size=p.pixel_size_nm, unit="nm", frame_interval=p.frame_interval_s,
                time_unit="s", source="synthetic:ta_chart", name="ta_chart")

    def render(start: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _render_images(plan, seed, start, stop), {}

    return Recipe(n, render, meta, labels, truth, truth_attrs, attrs={"params": asdict(p)})


def simulate(params: TaChartParams | None = None, *, seed: int = 0,
             **overrides: Any) -> SyntheticData:
    """Images and ground truth in memory (use a tiny ``n_frames``).

    >>> d = simulate(n_frames=2, n_augment=1)
    >>> d.frames.shape, d.truth["is_augmented"].tolist()
    ((4, 1, 178, 178), [0, 1, 0, 1])
    """
    return materialize(recipe(params, seed=seed, **overrides))


def generate(path: str | os.PathLike, params: TaChartParams | None = None, *, seed: int = 0,
             overwrite: bool = False, progress: bool = True, chunk_frames: int = 192,
             **overrides: Any) -> Path:
    """Write the Ta-chart store at ``path`` (paper scale by default) and return the path."""
    return write_store(path, recipe(params, seed=seed, **overrides), chunk_frames=chunk_frames,
                       overwrite=overwrite, progress=progress, desc="ta_chart")


def measure_slit_widths(image: np.ndarray, offset_nm: float,
                        params: TaChartParams | None = None, **overrides: Any) -> tuple[float, float]:
    """Widths (nm) of slits d1 and d2 in an unrotated frame whose chart offset is known.

    Picks the slit pair closest to the frame centre, averages the middle half of the slit
    rows, and integrates the contrast deficit across each slit:
    ``width = Σ_j (T_j − p_j) / (T_j − G)`` pixels, with ``T`` the Ta level (linear between the
    two flanks) and ``G`` the open level in the slit centre. Exact for blurred edges.

    >>> d = simulate(n_frames=1, n_augment=0)
    >>> w1, w2 = measure_slit_widths(d.frames[0, 0], float(d.truth["offset_nm"][0]))
    >>> abs(w1 - 309) < 20.72 and abs(w2 - 324) < 20.72
    True
    """
    p = make_params(TaChartParams, params, overrides)
    img = np.asarray(image, float)
    if img.shape != (p.size, p.size):
        raise AnalysisError(f"image shape {img.shape} differs from the chart's ({p.size}, "
                            f"{p.size}); pass the matching params/size")
    a, w, n = p.pixel_size_nm, cell_width_nm(p), p.size
    # the cell whose slit pair centre is closest to the frame centre
    centre_chart = n * a / 2 - offset_nm
    mid = 0.5 * (_SLIT1_LEFT + _SLIT2_LEFT) * w + 0.5 * p.d2_nm
    cell = round((centre_chart - p.chart_origin_nm - mid) / w)
    fov = n * a
    h = SLIT_ROWS[1] - SLIT_ROWS[0]
    r0 = int(round((SLIT_ROWS[0] + 0.25 * h) * fov / a))
    r1 = int(round((SLIT_ROWS[1] - 0.25 * h) * fov / a))
    profile = img[r0:r1].mean(axis=0)
    widths = []
    for left, right in slit_edges_nm(p, cell):
        lc, rc = (left + offset_nm) / a, (right + offset_nm) / a  # edges in column units
        j0, j1 = int(math.floor(lc)) - 5, int(math.ceil(rc)) + 5
        if j0 < 0 or j1 > n:
            raise AnalysisError("the slit pair is not fully inside the frame; check offset_nm")
        seg = profile[j0:j1]
        cols = np.arange(j0, j1)
        tl, tr = seg[:3].mean(), seg[-3:].mean()
        ta = tl + (tr - tl) * (cols - cols[0]) / (cols[-1] - cols[0])
        centre = 0.5 * (lc + rc) - 0.5
        core = np.abs(cols - centre) <= max(1.0, 0.5 * (rc - lc) - 3)
        gap = seg[core].mean()
        widths.append(float(np.sum((ta - seg) / (ta - gap)) * a))
    return widths[0], widths[1]
