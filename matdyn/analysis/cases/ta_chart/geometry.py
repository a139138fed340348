"""Geometry of the Ta-chart analysis: the registration crop, slit profiles, masks, and the
:class:`ChartMotion` reducer that registers every perturbed image against its reference
and measures its slit widths (paper §3.2, Figs. 3-4)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from matdyn.analysis.cases.ta_chart.config import Config
from matdyn.descriptors.overlap import iou_batch
from matdyn.descriptors.particles import binarize
from matdyn.descriptors.registration import (
    Registration,
    register_batch,
    slit_width,
    slit_widths,
    transform_points,
)
from matdyn.errors import AnalysisError, ConfigError
from matdyn.sampling.reducers import Reducer, ReferenceBlock, RunInfo, VariationBatch


@dataclass(frozen=True)
class SlitGeometry:
    """The registration crop and the slit-profile settings at the generator resolution.

    Registration and IoU use the central ``size`` × ``size`` crop (its disc); slit positions
    are in full-image (row, col) coordinates and their profiles must stay within
    ``slit_radius`` px of the image centre (the slit row of the support is wider than its
    incircle). Crop and image share their centre, so a registration measured on crops
    applies unchanged to full-image coordinates.
    """

    resolution: int
    start: int  # first row/col of the crop
    size: int  # crop side (same parity as the resolution: shared centre)
    pixel_size: float  # physical size of one pixel (generator resolution)
    half_length_px: tuple[float, float]  # profile half-lengths for d1, d2
    band_width: int
    polarity: str
    slit_radius: float  # px from the image centre

    @property
    def centre(self) -> float:
        """Centre of the crop in crop coordinates."""
        return (self.size - 1) / 2.0

    @property
    def image_centre(self) -> float:
        return (self.resolution - 1) / 2.0

    def crop(self, images: np.ndarray) -> np.ndarray:
        """[N, (1,) R, R] -> [N, m, m] float64."""
        x = np.asarray(images, dtype=np.float64)
        if x.ndim == 4:
            x = x[:, 0]
        s, m = self.start, self.size
        return x[:, s : s + m, s : s + m]

    @property
    def disc(self) -> np.ndarray:
        rr, cc = np.mgrid[: self.size, : self.size]
        return np.hypot(rr - self.centre, cc - self.centre) <= self.size / 2.0

    def inside(self, centre_rc: np.ndarray, angle_deg: float, k: int) -> bool:
        """True when the profile box of slit ``k`` (full-image coordinates) lies within
        ``slit_radius`` of the image centre."""
        th = math.radians(angle_deg)
        u = np.array([-math.sin(th), math.cos(th)])
        v = np.array([math.cos(th), math.sin(th)])
        h, b = self.half_length_px[k], (self.band_width - 1) / 2.0
        corners = [
            np.asarray(centre_rc) + su * h * u + sv * b * v for su in (-1, 1) for sv in (-1, 1)
        ]
        if not np.all(np.isfinite(centre_rc)):
            return False
        r = max(float(np.hypot(*(c - self.image_centre))) for c in corners)
        return bool(r <= self.slit_radius)

    def width(self, image: np.ndarray, centre_rc: np.ndarray, angle_deg: float, k: int) -> float:
        """Width (physical units) of slit ``k`` of a full image at a known place, NaN when
        not measurable."""
        if not self.inside(centre_rc, angle_deg, k):
            return float("nan")
        try:
            return slit_width(
                image,
                tuple(centre_rc),
                angle_deg,
                self.half_length_px[k],
                self.pixel_size,
                band_width=self.band_width,
                polarity=self.polarity,
            )
        except AnalysisError:
            return float("nan")


def make_geometry(
    resolution: int, pixel_size: float, cfg: Config, d_nm: tuple[float, float]
) -> SlitGeometry:
    """The crop (side ``crop_frac`` × resolution, same parity) and profile settings."""
    m = int(round(cfg.crop_frac * resolution))
    if (resolution - m) % 2:
        m -= 1
    if m < 16:
        raise ConfigError(
            f"the analysis crop is {m} px (crop_frac={cfg.crop_frac} of {resolution} px); the "
            "Ta-chart analysis needs >= 16 px: raise crop_frac or use a larger generator"
        )
    half = tuple(cfg.half_length_factor * d / pixel_size for d in d_nm)
    return SlitGeometry(
        resolution,
        (resolution - m) // 2,
        m,
        float(pixel_size),
        half,  # type: ignore[arg-type]
        int(cfg.band_width_px),
        cfg.slit_polarity,
        cfg.slit_region_frac * resolution / 2.0 - 1.0,
    )


def disc_masks(crops: np.ndarray, disc: np.ndarray, sigma: float) -> np.ndarray:
    """Otsu masks inside the analysis disc, [N, m, m] bool (outside the disc: False)."""
    x = np.array(crops, dtype=np.float64)
    fill = x[:, disc].mean(axis=1)
    x[:, ~disc] = fill[:, None]
    return binarize(x, "otsu", sigma=sigma or None) & disc


def pair_iou(masks: np.ndarray) -> np.ndarray:
    """IoU of consecutive masks of a sequence [n, ...] -> [n - 1]."""
    if len(masks) < 2:
        return np.zeros(0)
    return iou_batch(masks[1:], masks[:-1])


def map_pairs(
    pairs: np.ndarray, reg_shift: np.ndarray, reg_angle: float, shape: tuple[int, int]
) -> np.ndarray:
    """Slit pairs [P, 2, 2] in anchor coordinates -> reference coordinates, where the anchor
    ≈ shift(rotate(reference, angle)) (register_batch with the reference as template)."""
    flat = pairs.reshape(-1, 2) - np.asarray(reg_shift)[None]
    return transform_points(flat, shape, np.zeros(2), -reg_angle).reshape(pairs.shape)


def nearest_slits(pairs: np.ndarray, centre: float) -> np.ndarray:
    """For each slit (d1, d2) the copy closest to the crop centre among the chart's
    repeated slit pairs [P, 2, 2] -> [2, 2] (NaN when there is none).

    >>> nearest_slits(np.array([[[5.0, 0.0], [5.0, 4.0]], [[5.0, 8.0], [5.0, 12.0]]]), 5.0)
    array([[5., 8.],
           [5., 4.]])
    """
    out = np.full((2, 2), np.nan)
    if len(pairs) == 0:
        return out
    for k in range(2):
        d = np.hypot(pairs[:, k, 0] - centre, pairs[:, k, 1] - centre)
        out[k] = pairs[int(np.argmin(d)), k]
    return out


class ChartMotion(Reducer):
    """Per-sample rigid motion, slit widths and masks of Ta-chart variations (§3.2).

    Reference images are matched against observed ``anchors`` (crops of raw frames) whose
    slit pairs ``anchor_slits[a]`` [P, 2 slits, (row, col)] (full-image coordinates) are
    known; each perturbed image
    is then registered against its reference. Outputs per reference (first axis M):
    ``shift_px`` [N, 2], ``angle_deg`` [N], ``score`` [N], ``widths`` [N, 2] (physical),
    ``masks`` [N, bytes] (packed bits of the crop masks), ``ref_mask``, ``ref_anchor``,
    ``ref_anchor_score``, ``ref_slits`` [2, 2], ``ref_slit_angle``, ``ref_widths`` [2].
    """

    def __init__(
        self,
        geometry: SlitGeometry,
        anchors: np.ndarray,
        anchor_slits: list[np.ndarray],
        *,
        angles: np.ndarray,
        anchor_angles: np.ndarray,
        upsample_factor: int = 10,
        refine_iters: int = 2,
        sigma: float = 0.5,
        name: str = "motion",
    ) -> None:
        if len(anchors) == 0 or len(anchors) != len(anchor_slits):
            raise AnalysisError("ChartMotion needs at least one anchor frame with known slits")
        self.g = geometry
        self.anchors = np.asarray(anchors, dtype=np.float64)
        self.anchor_slits = [
            np.asarray(a, dtype=np.float64).reshape(-1, 2, 2) for a in anchor_slits
        ]
        self.angles = np.asarray(angles, dtype=np.float64)
        self.anchor_angles = np.asarray(anchor_angles, dtype=np.float64)
        self.upsample_factor = int(upsample_factor)
        self.refine_iters = int(refine_iters)
        self.sigma = float(sigma)
        self.name = name
        self._disc = geometry.disc

    def _register(
        self, images: np.ndarray, reference: np.ndarray, angles: np.ndarray
    ) -> Registration:
        return register_batch(
            images,
            reference,
            angles,
            upsample_factor=self.upsample_factor,
            refine_iters=self.refine_iters,
        )

    def start(self, info: RunInfo) -> None:
        if info.image_shape[0] != 1 or len(info.image_shape) != 3:
            raise AnalysisError(
                f"the Ta-chart case needs 2D one-channel images, the generator makes {info.image_shape}"
            )
        self._n = info.n_samples

    def locate(self, ref_image: np.ndarray) -> dict[str, Any]:
        """Best anchor of one reference image [R, R] and its slits in its coordinates."""
        reg = self._register(self.anchors, self.g.crop(ref_image[None])[0], self.anchor_angles)
        a = int(np.argmax(reg.score))
        shape = ref_image.shape
        mapped = map_pairs(self.anchor_slits[a], reg.shifts_px[a], float(reg.angles_deg[a]), shape)
        slits = nearest_slits(mapped, self.g.image_centre)
        # the anchor's profile direction (0°) as seen in the reference
        angle = -float(reg.angles_deg[a])
        widths = [self.g.width(ref_image, slits[k], angle, k) for k in range(2)]
        return {
            "anchor": a,
            "score": float(reg.score[a]),
            "slits": slits,
            "angle": angle,
            "widths": np.asarray(widths),
        }

    def begin_block(self, block: ReferenceBlock) -> None:
        k = len(block)
        crops = self.g.crop(block.images)
        self._crops = crops
        self._loc = [self.locate(img) for img in np.asarray(block.images, np.float64)[:, 0]]
        n, m2 = self._n, self.g.size * self.g.size
        nbytes = (m2 + 7) // 8
        self._out = {
            "shift_px": np.full((k, n, 2), np.nan),
            "angle_deg": np.full((k, n), np.nan),
            "score": np.full((k, n), np.nan),
            "widths": np.full((k, n, 2), np.nan),
            "masks": np.zeros((k, n, nbytes), np.uint8),
        }
        ref_masks = disc_masks(crops, self._disc, self.sigma)
        self._ref = {
            "ref_mask": np.packbits(ref_masks.reshape(k, -1), axis=1),
            "ref_anchor": np.array([d["anchor"] for d in self._loc], np.int64),
            "ref_anchor_score": np.array([d["score"] for d in self._loc]),
            "ref_slits": np.stack([d["slits"] for d in self._loc]),
            "ref_slit_angle": np.array([d["angle"] for d in self._loc]),
            "ref_widths": np.stack([d["widths"] for d in self._loc]),
        }

    def update(self, batch: VariationBatch) -> None:
        full = np.asarray(batch.images, np.float64)[:, 0]
        crops = self.g.crop(full)
        masks = disc_masks(crops, self._disc, self.sigma)
        packed = np.packbits(masks.reshape(len(batch), -1), axis=1)
        # one registration call per reference present in the batch (rows are contiguous)
        for slot in np.unique(batch.ref_slots):
            rows = np.flatnonzero(batch.ref_slots == slot)
            js = batch.sample_indices[rows]
            reg = self._register(crops[rows], self._crops[slot], self.angles)
            out = self._out
            out["shift_px"][slot, js] = reg.shifts_px
            out["angle_deg"][slot, js] = reg.angles_deg
            out["score"][slot, js] = reg.score
            out["masks"][slot, js] = packed[rows]
            loc = self._loc[slot]
            for k in range(2):
                if not np.isfinite(loc["widths"][k]):
                    continue
                w = slit_widths(
                    full[rows],
                    tuple(loc["slits"][k]),
                    loc["angle"],
                    self.g.half_length_px[k],
                    self.g.pixel_size,
                    registration=reg,
                    band_width=self.g.band_width,
                    polarity=self.g.polarity,
                )
                # profiles that left the slit region are not measurements
                for i, (sh, an) in enumerate(zip(reg.shifts_px, reg.angles_deg)):
                    c = transform_points(loc["slits"][k], full.shape[1:], sh, float(an))[0]
                    if not self.g.inside(c, loc["angle"] + float(an), k):
                        w[i] = np.nan
                out["widths"][slot, js, k] = w

    def end_block(self) -> dict[str, np.ndarray]:
        out = {**self._out, **self._ref}
        self._out, self._ref, self._crops, self._loc = {}, {}, None, []  # type: ignore[assignment]
        return out

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.anchors.tobytes())
        for a in self.anchor_slits:
            h.update(a.tobytes())
        return (
            f"ChartMotion(geometry={self.g!r}, anchors={h.hexdigest()[:16]}, "
            f"angles={self.angles.tolist()}, anchor_angles={self.anchor_angles.tolist()}, "
            f"upsample={self.upsample_factor}, refine={self.refine_iters}, sigma={self.sigma})"
        )

    def __repr__(self) -> str:
        return self.fingerprint()


