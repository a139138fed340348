"""Nanoparticle diffusion traces: extraction and shape descriptors (paper §3.3.2, Fig. 6).

Averaging the accepted images of a material variation turns each moving nanoparticle (a
dark phase dip) into a *trace*: a streak for directed motion, a blur for free diffusion,
a sharp dot for a trapped particle. This module finds the traces in one (averaged) phase
image and describes each one.

Extraction (:func:`extract_traces`; defaults from the CPU prototype, FINDINGS.md):

1. Gaussian smoothing, σ = 1 px (suppresses generator noise);
2. black top-hat with a disk of radius 6 px: ``closing(img) - img``, a non-negative *dip
   depth* map that removes background variations wider than the disk;
3. threshold at ``threshold × depth`` (0.35 by default) where ``depth`` is the particle
   depth: give it explicitly (e.g. the dip depth of a single particle in the reference
   image, so that fading traces of moving particles are measured against the same level),
   or leave it to be estimated as the 99.9th percentile of the dip map of this image;
4. 8-connected components, keeping those with at least ``min_area`` pixels (6).

Descriptor conventions (all tested in tests/test_traces.py):

* **Anisotropy** ``A = 2 λ1 / (λ1 + λ2) - 1 = (λ1 - λ2) / (λ1 + λ2)`` in [0, 1], with
  λ1 ≥ λ2 the eigenvalues of the dip-depth-weighted second-moment (covariance) matrix of
  the trace, pixels treated as unit squares (pixel-centre covariance + 1/12 on the
  diagonal, so a single pixel is isotropic). 0 = isotropic blob, → 1 = straight line.
* **Tortuosity** ``T = path length / end-to-end distance`` (the arc-chord ratio), ≥ 1,
  1 = straight. Published tools disagree on the direction: some report the inverse
  (straightness, chord / length in (0, 1]) or a perimeter-based proxy. Ours grows with
  meandering. For an ordered point sequence use :func:`tortuosity_of_path`; for a trace
  mask, :func:`mask_tortuosity` orders the skeleton (``skimage.morphology.skeletonize``)
  along its longest geodesic path (8-connected, steps 1 and √2), smooths the ordered
  coordinates with a Gaussian of ``path_sigma`` px to remove the pixel staircase, and
  applies the same ratio. A skeleton of fewer than 2 pixels counts as straight (1.0).
* **Diffusion area** (Fig. 6b), two definitions, both in physical units²:
  ``area`` = mask area × pixel_size² (what the segmentation covers), and ``ellipse_area``
  = π·√(λ1 λ2)·pixel_size², the area of the 1-σ ellipse of the weighted second moments.
  Both include the particle's own footprint (the trace is particle ⊛ position density).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.measure import label as cc_label
from skimage.morphology import black_tophat, disk, skeletonize

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "Trace",
    "TraceSet",
    "dip_response",
    "extract_traces",
    "second_moments",
    "anisotropy_from_moments",
    "anisotropy",
    "tortuosity_of_path",
    "skeleton_path",
    "mask_tortuosity",
    "trace_descriptors",
    "trace_descriptors_batch",
]

# Extraction defaults (FINDINGS.md: what worked on the synthetic NP-diffusion case)
DEFAULT_SIGMA = 1.0
DEFAULT_TOPHAT_RADIUS = 6
DEFAULT_THRESHOLD = 0.35  # fraction of the particle depth; 0.3-0.4 worked, lower segments noise
DEFAULT_MIN_AREA = 6
DEFAULT_DEPTH_QUANTILE = 0.999

_PIXEL_VARIANCE = 1.0 / 12.0  # second moment of a unit square about its centre, per axis


@dataclass(frozen=True)
class Trace:
    """One connected trace. Coordinates are (row, col) in pixels."""

    label: int  # value in TraceSet.labels
    coords: np.ndarray  # [n, 2] int (row, col) of the trace pixels
    weights: np.ndarray  # [n] dip depth at those pixels (> 0)
    centroid_px: tuple[float, float]  # depth-weighted (row, col)
    area_px: int
    area: float  # area_px * pixel_size**2 (physical unit²)

    @property
    def mask_bbox(self) -> tuple[int, int, int, int]:
        """(row_min, col_min, row_max_exclusive, col_max_exclusive)."""
        lo = self.coords.min(axis=0)
        hi = self.coords.max(axis=0) + 1
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    def mask(self) -> np.ndarray:
        """Boolean mask of the trace cropped to its bounding box."""
        r0, c0, r1, c1 = self.mask_bbox
        out = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        out[self.coords[:, 0] - r0, self.coords[:, 1] - c0] = True
        return out


@dataclass(frozen=True)
class TraceSet:
    """Result of :func:`extract_traces` on one image."""

    labels: np.ndarray  # [H, W] int32, 0 = background, traces numbered 1..n
    response: np.ndarray  # [H, W] float64 dip depth (smoothed black top-hat)
    threshold: float  # absolute threshold applied to ``response``
    depth: float  # particle depth the threshold fraction refers to
    pixel_size: float
    traces: list[Trace]

    def __len__(self) -> int:
        return len(self.traces)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 3:
        raise AnalysisError(
            f"trace extraction needs one 2D image [H, W], got shape {img.shape}; "
            "squeeze the channel axis (image[0]) or loop over a batch"
        )
    if not np.isfinite(img).all():
        raise AnalysisError("trace extraction got NaN/inf pixels; clean the image first")
    return img


def dip_response(
    image: np.ndarray, sigma: float = DEFAULT_SIGMA, tophat_radius: int = DEFAULT_TOPHAT_RADIUS
) -> np.ndarray:
    """Dip-depth map: Gaussian smoothing then black top-hat (``closing - image``), ≥ 0.

    >>> img = np.zeros((15, 15)); img[7, 7] = -1.0
    >>> r = dip_response(img, sigma=0, tophat_radius=3)
    >>> float(r[7, 7]), float(r[0, 0])
    (1.0, 0.0)
    """
    img = _check_image(image)
    if sigma < 0 or tophat_radius < 1:
        raise ConfigError(
            f"need sigma >= 0 and tophat_radius >= 1, got sigma={sigma}, tophat_radius={tophat_radius}"
        )
    if sigma > 0:
        img = ndimage.gaussian_filter(img, sigma, mode="reflect")
    return black_tophat(img, footprint=disk(int(tophat_radius)))


def extract_traces(
    image: np.ndarray,
    pixel_size: float = 1.0,
    *,
    sigma: float = DEFAULT_SIGMA,
    tophat_radius: int = DEFAULT_TOPHAT_RADIUS,
    threshold: float = DEFAULT_THRESHOLD,
    min_area: int = DEFAULT_MIN_AREA,
    depth: float | None = None,
    depth_quantile: float = DEFAULT_DEPTH_QUANTILE,
) -> TraceSet:
    """Segment the dark-dip traces of one phase image (see the module docstring).

    ``threshold`` is a fraction of ``depth`` (the particle depth, in image units); with
    ``depth=None`` it is the ``depth_quantile`` quantile of this image's dip map.

    >>> img = np.zeros((32, 32)); img[10:13, 5:25] = -1.0   # one dark streak
    >>> ts = extract_traces(img, pixel_size=40.0)
    >>> len(ts), ts.traces[0].area_px, ts.traces[0].area == ts.traces[0].area_px * 1600.0
    (1, 60, True)
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(
            f"threshold is a fraction of the particle depth in (0, 1), got {threshold}"
        )
    if min_area < 1 or pixel_size <= 0:
        raise ConfigError(f"need min_area >= 1 and pixel_size > 0, got {min_area}, {pixel_size}")
    response = dip_response(image, sigma=sigma, tophat_radius=tophat_radius)
    if depth is None:
        depth = float(np.quantile(response, depth_quantile))
    elif depth <= 0:
        raise ConfigError(f"particle depth must be > 0, got {depth}")
    thr = float(threshold * depth)

    labels = np.zeros(response.shape, dtype=np.int32)
    traces: list[Trace] = []
    if depth > 0:
        raw = cc_label(response > thr, connectivity=2)
        objects = ndimage.find_objects(raw)
        # keep components of at least min_area pixels, renumbered 1..n in scan order
        for idx, sl in enumerate(objects, start=1):
            if sl is None:
                continue
            local = raw[sl] == idx
            n_px = int(local.sum())
            if n_px < min_area:
                continue
            rr, cc = np.nonzero(local)
            rr = rr + sl[0].start
            cc = cc + sl[1].start
            new = len(traces) + 1
            labels[rr, cc] = new
            w = response[rr, cc]
            coords = np.stack([rr, cc], axis=1)
            centroid = (w[:, None] * coords).sum(axis=0) / w.sum()
            traces.append(
                Trace(
                    label=new,
                    coords=coords,
                    weights=w,
                    centroid_px=(float(centroid[0]), float(centroid[1])),
                    area_px=n_px,
                    area=n_px * float(pixel_size) ** 2,
                )
            )
    return TraceSet(labels, response, thr, float(depth), float(pixel_size), traces)


def second_moments(coords: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Covariance [2, 2] of pixel coordinates [n, 2], optionally weighted, pixels as unit squares.

    >>> second_moments(np.array([[0, 0]]))
    array([[0.08333333, 0.        ],
           [0.        , 0.08333333]])
    """
    pts = np.asarray(coords, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise AnalysisError(f"second_moments needs coordinates [n, 2] with n >= 1, got {pts.shape}")
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(pts),) or (w < 0).any() or w.sum() <= 0:
        raise AnalysisError("weights must be non-negative, one per point, with a positive sum")
    w = w / w.sum()
    d = pts - w @ pts
    cov = (w[:, None] * d).T @ d
    return cov + _PIXEL_VARIANCE * np.eye(2)


def anisotropy_from_moments(cov: np.ndarray) -> float:
    """``2 λ1/(λ1+λ2) - 1`` from a 2×2 second-moment matrix (λ1 ≥ λ2).

    >>> anisotropy_from_moments(np.diag([4.0, 1.0]))
    0.6
    """
    lam = np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64))  # ascending
    total = lam.sum()
    if total <= 0:
        return 0.0
    return float((lam[-1] - lam[0]) / total)  # == 2 λ1/(λ1+λ2) - 1, fewer roundings


def anisotropy(coords: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Anisotropy of a set of pixels: 0 = isotropic blob, → 1 = straight line.

    >>> line = np.stack([np.zeros(20), np.arange(20)], axis=1)
    >>> round(anisotropy(line), 3)
    0.995
    >>> yy, xx = np.mgrid[-5:6, -5:6]; blob = np.argwhere(yy**2 + xx**2 <= 25)
    >>> round(anisotropy(blob), 3)
    0.0
    """
    return anisotropy_from_moments(second_moments(coords, weights))


def tortuosity_of_path(points: np.ndarray) -> float:
    """Arc-chord ratio of an ordered path [n, d]: path length / end-to-end distance (≥ 1).

    Returns 1.0 for a path without extent (all points equal) and ``inf`` for a closed path
    of non-zero length (ends coincide).

    >>> tortuosity_of_path(np.array([[0, 0], [0, 1], [0, 2]]))
    1.0
    >>> round(tortuosity_of_path(np.array([[0, 0], [1, 1], [0, 2]])), 4)   # √2·2 / 2
    1.4142
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or len(pts) == 0:
        raise AnalysisError(
            f"tortuosity_of_path needs ordered points [n, d], got shape {pts.shape}"
        )
    length = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())
    chord = float(np.linalg.norm(pts[-1] - pts[0]))
    if length <= 1e-12:
        return 1.0
    if chord <= 1e-12:
        return float("inf")
    return max(1.0, length / chord)


_NEIGHBOURS = ((0, 1), (1, -1), (1, 0), (1, 1))  # half of the 8-neighbourhood (each edge once)


def skeleton_path(mask: np.ndarray) -> np.ndarray:
    """(row, col) pixels [n, 2] of the mask's skeleton along its longest geodesic path.

    The path runs between the two skeleton pixels found by a double Dijkstra sweep
    (exact on tree-like skeletons; an approximation if the skeleton has loops).

    >>> m = np.zeros((7, 12), bool); m[2:5, 1:11] = True
    >>> p = skeleton_path(m); len(p), bool((np.diff(p[:, 1]) == 1).all())
    (9, True)
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise AnalysisError(f"skeleton_path needs a 2D mask, got shape {m.shape}")
    skel = skeletonize(np.pad(m, 1))[1:-1, 1:-1]
    pts = np.argwhere(skel)
    if len(pts) <= 1:
        return pts
    index = -np.ones(m.shape, dtype=np.int64)
    index[pts[:, 0], pts[:, 1]] = np.arange(len(pts))
    rows, cols, wts = [], [], []
    # connect skeleton pixels to their 8-neighbours (steps 1 and √2)
    for dr, dc in _NEIGHBOURS:
        r2, c2 = pts[:, 0] + dr, pts[:, 1] + dc
        ok = (r2 >= 0) & (r2 < m.shape[0]) & (c2 >= 0) & (c2 < m.shape[1])
        j = np.full(len(pts), -1)
        j[ok] = index[r2[ok], c2[ok]]
        has = j >= 0
        rows.append(np.nonzero(has)[0])
        cols.append(j[has])
        wts.append(np.full(int(has.sum()), np.hypot(dr, dc)))
    n = len(pts)
    graph = coo_matrix(
        (np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsr()
    d0 = dijkstra(graph, directed=False, indices=0)
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1.0)))
    da, pred = dijkstra(graph, directed=False, indices=a, return_predecessors=True)
    b = int(np.argmax(np.where(np.isfinite(da), da, -1.0)))
    # walk back from b to a along the predecessor tree
    order = [b]
    while order[-1] != a:
        order.append(int(pred[order[-1]]))
    return pts[np.array(order[::-1])]


def mask_tortuosity(mask: np.ndarray, path_sigma: float = 1.0) -> float:
    """Tortuosity of a trace mask: arc-chord ratio of its ordered, smoothed skeleton path.

    >>> m = np.zeros((9, 40), bool); m[3:6, 2:38] = True
    >>> round(mask_tortuosity(m), 2)
    1.0
    """
    path = skeleton_path(mask).astype(np.float64)
    if len(path) < 2:
        return 1.0
    if path_sigma > 0:
        path = ndimage.gaussian_filter1d(path, path_sigma, axis=0, mode="nearest")
    return tortuosity_of_path(path)


def _orientation_deg(cov: np.ndarray) -> float:
    """Major-axis angle, degrees counter-clockwise from +col with rows pointing down, (-90, 90]."""
    _, vec = np.linalg.eigh(cov)
    v_row, v_col = vec[:, -1]
    ang = float(np.degrees(np.arctan2(-v_row, v_col)))
    if ang <= -90.0:
        ang += 180.0
    elif ang > 90.0:
        ang -= 180.0
    return ang


_COLUMNS = [
    "label", "centroid_row", "centroid_col", "area_px", "area", "ellipse_area",
    "anisotropy", "tortuosity", "orientation_deg", "major_sigma", "minor_sigma", "max_depth",
]  # fmt: skip


def _describe(ts: TraceSet, weighted: bool, path_sigma: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in _COLUMNS}
    px = ts.pixel_size
    # one row of descriptors per trace
    for tr in ts.traces:
        cov = second_moments(tr.coords, tr.weights if weighted else None)
        lam = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
        out["label"].append(tr.label)
        out["centroid_row"].append(tr.centroid_px[0])
        out["centroid_col"].append(tr.centroid_px[1])
        out["area_px"].append(tr.area_px)
        out["area"].append(tr.area)
        out["ellipse_area"].append(float(np.pi * np.sqrt(lam[0] * lam[1])) * px**2)
        out["anisotropy"].append(anisotropy_from_moments(cov))
        out["tortuosity"].append(mask_tortuosity(tr.mask(), path_sigma=path_sigma))
        out["orientation_deg"].append(_orientation_deg(cov))
        out["major_sigma"].append(float(np.sqrt(lam[1])) * px)
        out["minor_sigma"].append(float(np.sqrt(lam[0])) * px)
        out["max_depth"].append(float(tr.weights.max()))
    return out


def trace_descriptors(
    image: np.ndarray,
    pixel_size: float = 1.0,
    *,
    weighted: bool = True,
    path_sigma: float = 1.0,
    **extract_kwargs: float,
) -> pd.DataFrame:
    """Extract the traces of one image and describe each: one row per trace.

    Columns: ``label``, ``centroid_row``/``centroid_col`` (px), ``area_px``, ``area`` and
    ``ellipse_area`` (unit²), ``anisotropy``, ``tortuosity``, ``orientation_deg`` (major
    axis, counter-clockwise from +x), ``major_sigma``/``minor_sigma`` (unit, √λ of the
    second moments), ``max_depth`` (image units). ``extract_kwargs`` go to
    :func:`extract_traces` (sigma, tophat_radius, threshold, min_area, depth, ...).

    >>> img = np.zeros((32, 48)); img[14:17, 5:40] = -1.0
    >>> df = trace_descriptors(img, pixel_size=40.58)
    >>> len(df), bool(df.anisotropy[0] > 0.9), round(float(df.tortuosity[0]), 2)
    (1, True, 1.0)
    """
    ts = extract_traces(image, pixel_size, **extract_kwargs)  # type: ignore[arg-type]
    return pd.DataFrame(_describe(ts, weighted, path_sigma), columns=_COLUMNS)


def trace_descriptors_batch(
    images: np.ndarray,
    pixel_size: float = 1.0,
    **kwargs: float,
) -> pd.DataFrame:
    """:func:`trace_descriptors` over a batch [B, H, W] (or [B, 1, H, W]); adds column ``image``.

    >>> imgs = np.zeros((2, 24, 24)); imgs[0, 10:13, 4:20] = -1; imgs[1, 8:14, 8:14] = -1
    >>> df = trace_descriptors_batch(imgs)
    >>> df.image.tolist()
    [0, 1]
    """
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise AnalysisError(
            f"trace_descriptors_batch needs images [B, H, W] or [B, 1, H, W] with B >= 1, got shape {arr.shape}"
        )
    frames = []
    for i, img in enumerate(arr):
        df = trace_descriptors(img, pixel_size, **kwargs)
        df.insert(0, "image", i)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
