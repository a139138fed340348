"""Particle traces of the NP case: segmentation, descriptors and the diffusion area's
second moments (paper §3.3.2, Fig. 6a/b; FINDINGS.md for the settings)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from matdyn.analysis.cases.np_diffusion.config import Config
from matdyn.descriptors.traces import TraceSet, extract_traces, second_moments, trace_descriptors


def lag1_corr(images: np.ndarray) -> np.ndarray:
    """Mean lag-1 pixel autocorrelation (rows and columns) of each image [N, 1, H, W] -> [N].

    >>> smooth = np.tile(np.sin(np.linspace(0, 3, 32)), (32, 1))[None, None]
    >>> noise = np.random.default_rng(0).standard_normal((1, 1, 32, 32))
    >>> bool(lag1_corr(smooth)[0] > 0.45), bool(abs(lag1_corr(noise)[0]) < 0.1)
    (True, True)
    """
    x = images[:, 0].astype(np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    var = (x**2).mean(axis=(1, 2))
    c_r = (x[:, 1:, :] * x[:, :-1, :]).mean(axis=(1, 2))
    c_c = (x[:, :, 1:] * x[:, :, :-1]).mean(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, 0.5 * (c_r + c_c) / var, 0.0)


def _segmentation(cfg: Config) -> dict[str, Any]:
    """The trace segmentation settings of ``cfg`` (shared by extraction and description)."""
    return {"sigma": cfg.trace_sigma, "tophat_radius": cfg.tophat_radius,
            "threshold": cfg.trace_threshold, "min_area": cfg.min_area}


def extract(image: np.ndarray, ps: float, cfg: Config, depth: float | None) -> TraceSet:
    return extract_traces(image, ps, depth=depth, **_segmentation(cfg))


def describe_traces(image: np.ndarray, ps: float, cfg: Config, depth: float) -> pd.DataFrame:
    return trace_descriptors(image, ps, path_sigma=cfg.path_sigma, depth=depth, **_segmentation(cfg))


def particle_depth(image: np.ndarray, cfg: Config) -> float:
    """Median peak dip depth of the particles of one still image (NaN if none)."""
    ts = extract(image, 1.0, cfg, None)
    if not ts.traces:
        return float("nan")
    return float(np.median([tr.weights.max() for tr in ts.traces]))


def moment_spreads(
    ts: TraceSet, image: np.ndarray, sigma: float, window: float, iterations: int = 6
) -> np.ndarray:
    """tr Σ (px²) of each trace's dip, background-subtracted locally, with its tails.

    The dip is the negated image smoothed with ``sigma`` (no top-hat, which would clip
    the tails of broad traces). Pixels are split between traces by a watershed of the dip
    seeded with the trace masks. For each trace, iterated from its mask: the background is
    a plane fitted to the dip in the annulus ``window`` < m ≤ ``window`` + 2 of its basin
    (m = Mahalanobis radius (x - μ)ᵀ Σ⁻¹ (x - μ) under the current moments), and the
    moments are those of the dip above that plane inside m ≤ ``window``. A 2D Gaussian
    keeps 98.7 % of its variance at 3.5.
    """
    from skimage.segmentation import watershed

    if not ts.traces:
        return np.zeros(0)
    img = np.asarray(image, dtype=np.float64)
    dip = -(ndimage.gaussian_filter(img, sigma) if sigma > 0 else img)
    lab = ts.labels
    basins = watershed(-dip, markers=lab)
    H, W = dip.shape
    out = []
    # one trace at a time: re-centre the window and refit the local background a few times
    for tr in ts.traces:
        cov = second_moments(tr.coords, tr.weights)
        mu = np.asarray(tr.centroid_px, dtype=np.float64)
        for _ in range(iterations):
            half = (
                int(math.ceil((window + 2.0) * math.sqrt(max(np.linalg.eigvalsh(cov)[-1], 0.25))))
                + 1
            )
            r0, r1 = max(int(mu[0]) - half, 0), min(int(mu[0]) + half + 1, H)
            c0, c1 = max(int(mu[1]) - half, 0), min(int(mu[1]) + half + 1, W)
            rr, cc = np.mgrid[r0:r1, c0:c1]
            pts = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.float64)
            own = (basins[r0:r1, c0:c1] == tr.label).ravel()
            d = pts - mu
            m = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))
            win = own & (m <= window)
            ring = own & (m > window) & (m <= window + 2.0)
            vals = dip[r0:r1, c0:c1].ravel()
            if ring.sum() >= 6:
                A = np.column_stack([np.ones(int(ring.sum())), d[ring]])
                coef = np.linalg.lstsq(A, vals[ring], rcond=None)[0]
                bg = coef[0] + d[win] @ coef[1:]
            else:
                bg = np.full(int(win.sum()), float(np.median(vals[~win])) if (~win).any() else 0.0)
            w = np.clip(vals[win] - bg, 0.0, None)
            if win.sum() == 0 or w.sum() <= 0:
                break
            new_cov = second_moments(pts[win], w)
            new_mu = (w[:, None] * pts[win]).sum(axis=0) / w.sum()
            done = np.allclose(new_cov, cov, rtol=1e-3, atol=1e-4) and np.allclose(
                new_mu, mu, atol=1e-3
            )
            cov, mu = new_cov, new_mu
            if done:
                break
        out.append(float(np.trace(cov)))
    return np.asarray(out, dtype=np.float64)


def spreads(image: np.ndarray, ts: TraceSet, cfg: Config) -> np.ndarray:
    """:func:`moment_spreads` of the traces ``ts`` found in ``image``."""
    return moment_spreads(ts, image, cfg.trace_sigma, cfg.moment_window)


def footprints(ts: TraceSet, ts_ref: TraceSet, spread_ref: np.ndarray) -> np.ndarray:
    """Still-particle spread (px²) for each trace of an averaged image: that of the
    reference particle whose centroid lies on the trace (the nearest one if several),
    else the median over the reference particles (NaN without any)."""
    fallback = float(np.median(spread_ref)) if spread_ref.size else float("nan")
    out = np.full(len(ts.traces), fallback)
    if not ts_ref.traces:
        return out
    cen = np.array([t.centroid_px for t in ts_ref.traces])  # [P, 2]
    pix = np.clip(np.rint(cen).astype(np.int64), 0, np.array(ts.labels.shape) - 1)
    on = ts.labels[pix[:, 0], pix[:, 1]]  # trace label under each reference particle
    for k, tr in enumerate(ts.traces):
        cand = np.flatnonzero(on == tr.label)
        if cand.size:
            dist = np.hypot(*(cen[cand] - np.asarray(tr.centroid_px)).T)
            out[k] = spread_ref[cand[np.argmin(dist)]]
    return out


