"""Observed data of the Ta-chart case: raw frames, where their slits are (store truth or a
profile search), slit widths, consecutive-frame IoU and rotation sequences (paper §3.2).

Frames are prepared exactly as in training (:class:`~matdyn.data.frames.ObservedFrames`,
``dataset.fit`` crop or pad); slit positions from the store truth follow that geometry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.case import CaseContext
from matdyn.analysis.cases.ta_chart.config import Config, angle_grid
from matdyn.analysis.cases.ta_chart.geometry import (
    SlitGeometry,
    disc_masks,
    nearest_slits,
    pair_iou,
)
from matdyn.descriptors.registration import band_profile, half_contrast_width, register_batch
from matdyn.errors import AnalysisError


def spread(candidates: np.ndarray, n: int) -> np.ndarray:
    """``n`` entries of ``candidates`` evenly spread over it (all when fewer)."""
    if len(candidates) <= n:
        return np.asarray(candidates)
    return np.asarray(candidates)[np.round(np.linspace(0, len(candidates) - 1, n)).astype(int)]


class Observed:
    """Access to the observed data: raw frames, truth geometry, slit pairs."""

    def __init__(self, ctx: CaseContext, cfg: Config) -> None:
        from matdyn.data.frames import working_pixel_size

        store, R = ctx.store, ctx.resolution
        self.ctx, self.store, self.R, self.cfg = ctx, store, R, cfg
        meta, labels, n = store.meta, store.labels, len(store)
        aug = labels.get("is_augmented")
        self.is_aug = (
            np.zeros(n, bool) if aug is None or len(aug) != n else np.asarray(aug).astype(bool)
        )
        self.raw = np.flatnonzero(~self.is_aug)
        src = labels.get("source_frame")
        self.source = None if src is None or len(src) != n else np.asarray(src)
        self.truth = store.truth
        self.truth_attrs = store.truth_attrs
        # native (rows, cols) removed by the squaring: > 0 cropped, < 0 padded (square_frames)
        if ctx.fit == "crop":
            side = min(meta.spatial_shape)
            self.crop_off = [(s - side) // 2 for s in meta.spatial_shape]
        else:
            side = max(meta.spatial_shape)
            self.crop_off = [-((side - s) // 2) for s in meta.spatial_shape]
        self.pixel_size = working_pixel_size(meta.pixel_size, meta.spatial_shape, R, ctx.fit)
        self.params = self._params(meta)

    def _params(self, meta: Any) -> Any:
        from matdyn.data.synthetic.ta_chart import TaChartParams

        extra = meta.extra.get("params") if isinstance(meta.extra, dict) else None
        if ("offset_nm" in self.truth and isinstance(extra, dict)
                and str(meta.source) == "synthetic:ta_chart"):
            try:
                return TaChartParams(**extra)
            except TypeError:  # a store written by another version of the generator
                return None
        return None

    def load(self, indices: Any) -> np.ndarray:
        """Frames ``indices`` prepared as in training -> [n, 1, R, R] float32."""
        return self.ctx.observed(np.asarray(indices, dtype=np.int64)).load()

    @property
    def has_truth(self) -> bool:
        return self.params is not None

    def expected_widths(self) -> tuple[float, float]:
        if self.has_truth:
            return float(self.params.d1_nm), float(self.params.d2_nm)  # type: ignore[union-attr]
        return self.cfg.d1_nm, self.cfg.d2_nm

    def truth_pairs(self, frame: int, geom: SlitGeometry) -> np.ndarray:
        """Slit pairs [P, 2, 2] (row, col) in full-image coordinates of raw frame ``frame``."""
        from matdyn.data.synthetic.ta_chart import SLIT_ROWS, cell_width_nm, slit_edges_nm

        p = self.params
        assert p is not None
        off = float(self.truth["offset_nm"][frame])
        a = self.pixel_size
        w, fov = cell_width_nm(p), p.size * p.pixel_size_nm
        crop_nm_r, crop_nm_c = (c * p.pixel_size_nm for c in self.crop_off)
        row = (0.5 * (SLIT_ROWS[0] + SLIT_ROWS[1]) * fov - crop_nm_r) / a - 0.5
        centre_chart = fov / 2 - off
        c0 = int(round((centre_chart - p.chart_origin_nm) / w))
        pairs = []
        for cell in range(c0 - 3, c0 + 4):
            cols = [
                ((lo + hi) / 2 + off - crop_nm_c) / a - 0.5 for lo, hi in slit_edges_nm(p, cell)
            ]
            pairs.append([[row, cols[0]], [row, cols[1]]])
        return np.asarray(pairs, dtype=np.float64)

    def search_pairs(self, image: np.ndarray, geom: SlitGeometry) -> np.ndarray:
        """Profile search for slit pairs along the centre row of an unrotated frame [R, R]
        (no ground truth)."""
        d_px = np.asarray(self.expected_widths()) / geom.pixel_size
        tol = self.cfg.slit_search_tolerance_px
        row = geom.image_centre
        t, prof = band_profile(
            image,
            (row, geom.image_centre),
            0.0,
            geom.slit_radius,
            band_width=geom.band_width,
            step=0.25,
        )
        cols = t + geom.image_centre
        from skimage.filters import threshold_otsu

        thr = float(threshold_otsu(prof)) if np.ptp(prof) > 0 else float(prof[0])
        low = prof < thr if geom.polarity == "dark" else prof > thr
        # runs of slit-like samples: (start, stop) sample indices
        edges = np.flatnonzero(np.diff(np.r_[0, low.astype(np.int8), 0]))
        runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if a > 0 and b < len(low)]
        found = []
        for (a1, b1), (a2, b2) in zip(runs[:-1], runs[1:]):
            w1 = (
                half_contrast_width(t[max(a1 - 8, 0) : b1 + 8], prof[max(a1 - 8, 0) : b1 + 8])
                if b1 + 8 <= len(t)
                else np.nan
            )
            w2 = (
                half_contrast_width(t[max(a2 - 8, 0) : b2 + 8], prof[max(a2 - 8, 0) : b2 + 8])
                if b2 + 8 <= len(t)
                else np.nan
            )
            if abs(w1 - d_px[0]) <= tol and abs(w2 - d_px[1]) <= tol:
                found.append([[row, cols[(a1 + b1 - 1) // 2]], [row, cols[(a2 + b2 - 1) // 2]]])
        return np.asarray(found, dtype=np.float64).reshape(-1, 2, 2)

    def pairs(self, frame: int, image: np.ndarray, geom: SlitGeometry) -> np.ndarray:
        if self.has_truth:
            return self.truth_pairs(frame, geom)
        try:
            return self.search_pairs(image, geom)
        except AnalysisError:
            return np.zeros((0, 2, 2))

    def translation_steps(self) -> tuple[np.ndarray, str]:
        """Per raw-frame translation steps (nm) and where they come from."""
        if (
            "offset_nm" in self.truth
            and len(self.truth["offset_nm"]) == len(self.store)
            and len(self.raw) > 1
        ):
            off = np.asarray(self.truth["offset_nm"], dtype=np.float64)[self.raw]
            return np.abs(np.diff(off)), "store truth offset_nm of consecutive raw frames"
        step = self.cfg.speed_nm_s * self.cfg.frame_interval_s
        return np.array([step]), "speed_nm_s × frame_interval_s (config; §3.2)"


def observed_widths(obs: Observed, geom: SlitGeometry, cfg: Config) -> np.ndarray:
    """Slit widths d1, d2 [n, 2] (physical units) of observed raw frames spread over the data."""
    idx = spread(obs.raw, cfg.n_slit_frames)
    frames = obs.load(idx)[:, 0].astype(np.float64)
    out = np.full((len(idx), 2), np.nan)
    # per frame: the copy of each slit nearest the centre, at its known place
    for n, (fi, frame) in enumerate(zip(idx, frames)):
        pairs = obs.pairs(int(fi), frame, geom)
        if len(pairs):
            p = nearest_slits(pairs, geom.image_centre)
            out[n] = [geom.width(frame, p[k], 0.0, k) for k in range(2)]
    return out


def consecutive_iou(obs: Observed, geom: SlitGeometry, cfg: Config) -> np.ndarray:
    """IoU of the masks of consecutive raw frames (a centred run of ``n_observed_pairs``)."""
    n_pairs = min(cfg.n_observed_pairs, len(obs.raw) - 1)
    s0 = (len(obs.raw) - 1 - n_pairs) // 2
    seq = geom.crop(obs.load(obs.raw[s0 : s0 + n_pairs + 1]))
    return pair_iou(disc_masks(seq, geom.disc, cfg.binarize_sigma))


def _copy_angles(obs: Observed, c: np.ndarray, idx: np.ndarray, cfg: Config,
                 truth_rot: Any) -> np.ndarray | None:
    """Angles of the copies ``idx`` of one raw frame: store truth, else registration."""
    if truth_rot is not None:
        return np.asarray(truth_rot, dtype=np.float64)[idx]
    raw = np.flatnonzero(~obs.is_aug[idx])
    if not raw.size:
        return None
    grid = angle_grid(cfg.anchor_angle_range_deg, cfg.anchor_angle_step_deg)
    return register_batch(c, c[raw[0]], grid, upsample_factor=2).angles_deg


def observed_rotation(obs: Observed, geom: SlitGeometry,
                      cfg: Config) -> tuple[np.ndarray, np.ndarray, str]:
    """IoU and angle steps of observed rotation sequences: the images made from one raw
    frame (raw at 0° + rotated copies) sorted by angle."""
    if obs.source is None or not obs.is_aug.any():
        return np.zeros(0), np.zeros(0), "unavailable (no is_augmented/source_frame labels)"
    frames = spread(np.unique(obs.source[obs.is_aug]), cfg.n_rotation_frames)
    truth_rot = obs.truth.get("rotation_deg")
    if truth_rot is not None and len(truth_rot) != len(obs.store):
        truth_rot = None
    ious, steps = [], []
    members = [np.flatnonzero(obs.source == f) for f in frames]
    crops = geom.crop(obs.load(np.concatenate(members)))
    start = 0
    # one rotation sequence per source frame
    for idx in members:
        c = crops[start : start + len(idx)]
        start += len(idx)
        ang = _copy_angles(obs, c, idx, cfg, truth_rot)
        if ang is None:
            continue
        o = np.argsort(ang, kind="stable")
        steps.append(np.diff(ang[o]))
        ious.append(pair_iou(disc_masks(c[o], geom.disc, cfg.binarize_sigma)))
    src = ("store truth rotation_deg" if truth_rot is not None
           else "registration of each copy against its raw frame")
    return (np.concatenate(ious) if ious else np.zeros(0),
            np.concatenate(steps) if steps else np.zeros(0),
            f"gaps between sorted angles of the images of one raw frame ({src})")
