"""Ta test-chart case (paper §3.2, Figs. 3-4): rigid motion inside latent variations.

What :func:`run` does:

1. **Checks.** The generator must make 2D one-channel images (CXDI phase) and the store
   must hold the same kind of frames.
2. **Observed frames** are read from the store, centre-cropped to a square and resized to
   the generator resolution (as training did). Raw frames are those with label
   ``is_augmented == 0`` (every frame when the label is missing).
3. **Analysis region.** The chart moves under a *fixed* illumination support, so matching
   whole frames would lock onto the support. Registration and IoU masks use the central
   square crop of side ``crop_frac`` × resolution, weighted by a circular window (the
   incircle of the triangular support; the paper also shows centre crops, Fig. 3a). Slit
   profiles may
   reach further out along the slit row, up to ``slit_region_frac`` × resolution / 2 from
   the centre (the support is wider there than its incircle).
4. **Fidelity**: phase-value 1D Wasserstein distance (rad) and multi-scale sliced
   Wasserstein distance between generated (z ~ N(0, I)) and observed frames, each with a
   split-half real-vs-real baseline. All-noise check: a few generated frames are template
   matched against observed raw frames; if none matches (NCC below ``min_anchor_score``)
   the generator does not draw a test chart and :class:`AnalysisError` is raised.
5. **Monte Carlo** (:class:`~matdyn.sampling.engine.VariationEngine`, γ = 1 in the paper):
   ``n_refs`` references × ``n_samples`` perturbed images. The :class:`ChartMotion`
   reducer template-matches every image against its reference
   (:func:`~matdyn.descriptors.registration.register_batch`, ±``angle_range_deg``) and
   measures the slit widths d1, d2 with profiles that follow the measured motion.
6. **Sequences** (Fig. 3b, c): per reference, the retained images sorted by translation
   along the chart axis (the ``sequence_subset_frac`` that rotate least: the paper's
   "selected subsets") and by rotation (those that translate least); IoU of consecutive
   images in those orders versus
   consecutive observed frames (Fig. 4a); slit widths of generated vs observed frames
   (Fig. 4b).

Where the slits are. Observed raw frames: from the store's ground truth when it has one
(chart offset ``offset_nm`` and the chart layout of :mod:`matdyn.data.synthetic.ta_chart`),
otherwise by a profile search (dark runs of the horizontal profile through the slit row
whose widths match ``d1_nm``, ``d2_nm`` within ``slit_search_tolerance_px``, left = d1).
Generated images: each reference image is template matched (±``anchor_angle_range_deg``)
against ``n_anchors`` observed raw frames of known slit geometry; the slits of the best
anchor are mapped into the reference through that match (the chart repeats, so for each of
d1 and d2 the copy nearest the image centre is taken). The slit positions of the perturbed images then follow
their registration against the reference ("template-matched profiles", §3.2). Widths are
the half-contrast widths of profiles across each slit averaged over ``band_width_px``
lines, in nm of the generator's pixel size.

Smoothness bounds (recovery). Translation: the largest step between consecutive raw
frames, from the ground-truth offsets (340 nm/s × 7 ms = 2.38 nm in the paper, §3.2; from
``speed_nm_s`` × ``frame_interval_s`` without truth). Rotation: the observed data have no
time-resolved rotation; its "consecutive steps" are the gaps between the sorted rotation
angles of the images made from one raw frame (the raw frame at 0° and its rotated copies),
pooled over frames; the bound is the largest such gap. A generated sequence is smooth when
no step between neighbours in the sorted order exceeds the bound. Both depend on how
densely the sequence is sampled (more samples → smaller steps), so the median and 95th
percentile of the steps are reported too, and ``jump_free`` judges the largest step against
the largest one expected for as many values spread uniformly over the same range
(``max_gap_ratio`` ≤ ``jump_gap_ratio``), which does not depend on the sample count.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matdyn.analysis.cases import require_shapes
from matdyn.analysis.fidelity import (
    sliced_wasserstein,
    split_half_baseline,
    swd_baseline,
    wasserstein_1d,
)
from matdyn.data.transforms import resize_frames, square_frames
from matdyn.descriptors.overlap import iou_batch
from matdyn.descriptors.particles import binarize
from matdyn.descriptors.registration import (
    Registration,
    band_profile,
    half_contrast_width,
    register_batch,
    slit_width,
    slit_widths,
    transform_points,
)
from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import to_jsonable
from matdyn.sampling.engine import VariationEngine, variation_latents
from matdyn.sampling.reducers import Reducer, ReferenceBlock, RunInfo, VariationBatch
from matdyn.sampling.samplers import UniformSampler

__all__ = ["ChartMotion", "Config", "SlitGeometry", "run"]

CASE = "ta_chart"
#: §3.2, Fig. 4b: slit widths (mean ± std, nm)
PAPER = {
    "gamma": 1.0,
    "slit_widths_generated_nm": {"d1": [309.0, 11.0], "d2": [340.0, 12.0]},
    "slit_widths_observed_nm": {"d1": [311.0, 13.0], "d2": [324.0, 11.0]},
    "slit_widths_truth_nm": {"d1": 309.0, "d2": 324.0},
    "translation_step_nm": 340.0 * 0.007,
    "rotation_steps_deg": [1.0, 2.0],
    "pixel_size_nm": 20.72,
}


@dataclass
class Config:
    """Settings of the Ta-chart case (paper §3.2); counts are CPU-sized."""

    n_refs: int = 3  # references I_z; paper: one (§3.2, Fig. 4b)
    n_samples: int = 200  # perturbed images per reference; paper: not stated (Videos S1/S2)
    batch_size: int = 64  # images per generator call
    crop_frac: float = (
        0.6  # registration/IoU crop side / resolution (inside the support's incircle)
    )
    slit_region_frac: float = 0.68  # slit profiles stay within this diameter / resolution
    angle_range_deg: float = 10.0  # registration search ±; paper sequences step 1-2° (§3.2)
    angle_step_deg: float = 0.5
    anchor_angle_range_deg: float = 30.0  # reference vs observed: augmentation ±30° (§3.2)
    anchor_angle_step_deg: float = 1.0
    n_anchors: int = 8  # observed raw frames the references are matched against
    min_anchor_score: float = 0.3  # NCC below this: not a test-chart image
    min_match_score: float = 0.5  # filter: NCC of a sample vs its reference
    upsample_factor: int = (
        50  # sub-pixel registration, 1/50 px (0.6 nm at 128 px, below the 2.38 nm step)
    )
    refine_iters: int = 2
    band_width_px: int = 7  # profile lines averaged along each slit
    half_length_factor: float = 0.9  # profile half-length / expected slit width
    slit_polarity: str = "dark"  # slits are open (low phase) between Ta blocks
    d1_nm: float = 309.0  # §3.2: slit widths, used to find slits without store truth
    d2_nm: float = 324.0
    slit_search_tolerance_px: float = 3.0
    speed_nm_s: float = 340.0  # §3.2: translation speed (bound without store truth)
    frame_interval_s: float = 0.007  # §3.2: 7 ms per raw frame
    n_observed_pairs: int = 200  # consecutive raw frame pairs for Fig. 4a
    n_rotation_frames: int = 100  # raw frames whose rotated copies form rotation sequences
    n_slit_frames: int = 100  # observed raw frames measured for d1, d2
    n_fidelity: int = 256  # generated and observed frames for fidelity
    swd_patches: int = 2048  # patches per pyramid level (SWD)
    max_w1_values: int = 400_000  # pixel values per side in the phase-value W1
    binarize_sigma: float = 0.5  # Gaussian smoothing (px) before the Otsu threshold (IoU)
    strip_length: int = 7  # images per Fig. 3b/c strip
    sequence_subset_frac: float = 0.5  # per sequence, this fraction with the least other motion
    slit_tolerance_px: float = 2.0  # recovery: "within approximately two pixels" (§3.2)
    jump_gap_ratio: float = 3.0  # recovery: a sorted sequence has a jump above this gap ratio

    def validate(self) -> None:
        for name in (
            "n_refs",
            "n_samples",
            "batch_size",
            "n_anchors",
            "n_observed_pairs",
            "n_rotation_frames",
            "n_slit_frames",
            "n_fidelity",
            "swd_patches",
            "max_w1_values",
            "upsample_factor",
            "band_width_px",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ConfigError(f"analysis.{name} must be a positive integer, got {v!r}")
        if self.n_fidelity < 4:
            raise ConfigError(
                f"analysis.n_fidelity must be >= 4 (split-half baselines), got {self.n_fidelity}"
            )
        if self.strip_length < 2:
            raise ConfigError(f"analysis.strip_length must be >= 2, got {self.strip_length}")
        for name in ("crop_frac", "slit_region_frac"):
            if not 0.2 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"analysis.{name} must be in [0.2, 1], got {getattr(self, name)}")
        for name in ("angle_range_deg", "anchor_angle_range_deg"):
            if not 0 <= getattr(self, name) <= 90:
                raise ConfigError(
                    f"analysis.{name} must be in [0, 90] degrees, got {getattr(self, name)}"
                )
        for name in (
            "angle_step_deg",
            "anchor_angle_step_deg",
            "half_length_factor",
            "d1_nm",
            "d2_nm",
            "slit_search_tolerance_px",
            "speed_nm_s",
            "frame_interval_s",
            "slit_tolerance_px",
            "jump_gap_ratio",
        ):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"analysis.{name} must be a positive number, got {v!r}")
        for name in ("min_anchor_score", "min_match_score"):
            if not -1 <= getattr(self, name) <= 1:
                raise ConfigError(
                    f"analysis.{name} is an NCC in [-1, 1], got {getattr(self, name)}"
                )
        if self.slit_polarity not in ("dark", "bright"):
            raise ConfigError(
                f"analysis.slit_polarity must be 'dark' or 'bright', got {self.slit_polarity!r}"
            )
        if not 0 < self.sequence_subset_frac <= 1:
            raise ConfigError(
                f"analysis.sequence_subset_frac must be in (0, 1], got {self.sequence_subset_frac}"
            )
        if self.binarize_sigma < 0 or self.refine_iters < 0:
            raise ConfigError("analysis.binarize_sigma and analysis.refine_iters must be >= 0")


def _grid(half_range: float, step: float) -> np.ndarray:
    n = int(round(half_range / step))
    return np.round(np.arange(-n, n + 1) * step, 6) if n > 0 else np.zeros(1)


# ----------------------------------------------------------------------------- geometry
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


def _geometry(
    resolution: int, pixel_size: float, cfg: Config, d_nm: tuple[float, float]
) -> SlitGeometry:
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


def _binarize(crops: np.ndarray, disc: np.ndarray, sigma: float) -> np.ndarray:
    """Otsu masks inside the analysis disc, [N, m, m] bool (outside the disc: False)."""
    x = np.array(crops, dtype=np.float64)
    fill = x[:, disc].mean(axis=1)
    x[:, ~disc] = fill[:, None]
    return binarize(x, "otsu", sigma=sigma or None) & disc


def _pair_iou(masks: np.ndarray) -> np.ndarray:
    """IoU of consecutive masks of a sequence [n, ...] -> [n - 1]."""
    if len(masks) < 2:
        return np.zeros(0)
    return iou_batch(masks[1:], masks[:-1])


def _map_pairs(
    pairs: np.ndarray, reg_shift: np.ndarray, reg_angle: float, shape: tuple[int, int]
) -> np.ndarray:
    """Slit pairs [P, 2, 2] in anchor coordinates -> reference coordinates, where the anchor
    ≈ shift(rotate(reference, angle)) (register_batch with the reference as template)."""
    flat = pairs.reshape(-1, 2) - np.asarray(reg_shift)[None]
    return transform_points(flat, shape, np.zeros(2), -reg_angle).reshape(pairs.shape)


def _nearest_slits(pairs: np.ndarray, centre: float) -> np.ndarray:
    """For each slit (d1, d2) the copy closest to the crop centre among the chart's
    repeated slit pairs [P, 2, 2] -> [2, 2] (NaN when there is none).

    >>> _nearest_slits(np.array([[[5.0, 0.0], [5.0, 4.0]], [[5.0, 8.0], [5.0, 12.0]]]), 5.0)
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
        mapped = _map_pairs(self.anchor_slits[a], reg.shifts_px[a], float(reg.angles_deg[a]), shape)
        slits = _nearest_slits(mapped, self.g.image_centre)
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
        ref_masks = _binarize(crops, self._disc, self.sigma)
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
        masks = _binarize(crops, self._disc, self.sigma)
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


# ----------------------------------------------------------------------------- observed data
def _load_resized(store: Any, indices: np.ndarray, resolution: int) -> np.ndarray:
    """Frames ``indices`` of a store, square-cropped and resized -> [n, C, R, R] float32,
    reading each storage chunk at most once."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return np.zeros((0, store.meta.channels) + (resolution,) * store.meta.ndim, np.float32)
    order = np.argsort(idx, kind="stable")
    out: list[np.ndarray] = [None] * idx.size  # type: ignore[list-item]
    chunk = max(1, int(store.images.chunks[0]))
    sorted_idx = idx[order]
    # one storage chunk at a time: load it, keep the requested frames
    for c in np.unique(sorted_idx // chunk):
        lo, hi = c * chunk, min((c + 1) * chunk, len(store))
        sel = np.flatnonzero((sorted_idx >= lo) & (sorted_idx < hi))
        block = store.load(int(lo), int(hi))[sorted_idx[sel] - lo]
        x = resize_frames(
            square_frames(torch.from_numpy(np.ascontiguousarray(block)), "crop"), resolution
        )
        for s, frame in zip(sel, x.numpy()):
            out[order[s]] = frame
    return np.stack(out).astype(np.float32, copy=False)


def _spread(candidates: np.ndarray, n: int) -> np.ndarray:
    """``n`` entries of ``candidates`` evenly spread over it (all when fewer)."""
    if len(candidates) <= n:
        return np.asarray(candidates)
    return np.asarray(candidates)[np.round(np.linspace(0, len(candidates) - 1, n)).astype(int)]


class _Observed:
    """Access to the observed data: raw frames, truth geometry, slit pairs."""

    def __init__(self, store: Any, resolution: int, cfg: Config) -> None:
        self.store, self.R, self.cfg = store, resolution, cfg
        meta = store.meta
        labels = store.labels
        n = len(store)
        aug = labels.get("is_augmented")
        self.is_aug = (
            np.zeros(n, bool) if aug is None or len(aug) != n else np.asarray(aug).astype(bool)
        )
        self.raw = np.flatnonzero(~self.is_aug)
        src = labels.get("source_frame")
        self.source = None if src is None or len(src) != n else np.asarray(src)
        self.truth = store.truth
        self.truth_attrs = store.truth_attrs
        side = min(meta.spatial_shape)
        self.native_side = side
        self.crop_off = [
            (s - side) // 2 for s in meta.spatial_shape
        ]  # (rows, cols) removed by the square crop
        self.pixel_size = meta.pixel_size * side / resolution
        self.params = None
        extra = meta.extra.get("params") if isinstance(meta.extra, dict) else None
        if (
            "offset_nm" in self.truth
            and isinstance(extra, dict)
            and str(meta.source) == "synthetic:ta_chart"
        ):
            from matdyn.data.synthetic.ta_chart import TaChartParams

            try:
                self.params = TaChartParams(**extra)
            except TypeError:  # a store written by another version of the generator
                self.params = None

    @property
    def has_truth(self) -> bool:
        return self.params is not None

    def expected_widths(self) -> tuple[float, float]:
        if self.has_truth:
            return float(self.params.d1_nm), float(self.params.d2_nm)  # type: ignore[union-attr]
        return self.cfg.d1_nm, self.cfg.d2_nm

    def truth_pairs(self, frame: int, geom: SlitGeometry) -> np.ndarray:
        """Slit pairs [P, 2, 2] (row, col) in full-image coordinates of raw frame ``frame``."""
        from matdyn.data.synthetic.ta_chart import _SLIT_ROWS, _cell_width_nm, _slit_edges_nm

        p = self.params
        assert p is not None
        off = float(self.truth["offset_nm"][frame])
        a = self.pixel_size
        w, fov = _cell_width_nm(p), p.size * p.pixel_size_nm
        crop_nm_r, crop_nm_c = (c * p.pixel_size_nm for c in self.crop_off)
        row = (0.5 * (_SLIT_ROWS[0] + _SLIT_ROWS[1]) * fov - crop_nm_r) / a - 0.5
        centre_chart = fov / 2 - off
        c0 = int(round((centre_chart - p.chart_origin_nm) / w))
        pairs = []
        for cell in range(c0 - 3, c0 + 4):
            cols = [
                ((lo + hi) / 2 + off - crop_nm_c) / a - 0.5 for lo, hi in _slit_edges_nm(p, cell)
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


# ----------------------------------------------------------------------------- generation helpers
def _device(generator: Any) -> torch.device:
    if isinstance(generator, torch.nn.Module):
        for p in generator.parameters():
            return p.device
    return torch.device("cpu")


def _generate(generator: Any, z: torch.Tensor, batch_size: int) -> np.ndarray:
    """Physical-unit images (``.sample`` when the generator has it, as the engine does)."""
    fn = generator.sample if callable(getattr(generator, "sample", None)) else generator
    dev = _device(generator)
    out = []
    with torch.inference_mode():
        for a in range(0, len(z), batch_size):
            out.append(fn(z[a : a + batch_size].to(dev)).detach().to("cpu", torch.float32).numpy())
    return np.concatenate(out) if out else np.zeros((0,))


def _check_generator(generator: Any, store: Any) -> None:
    require_shapes(generator, store, case=CASE, channels=1, ndim=2, what="phase images")


def _stats(v: np.ndarray) -> dict[str, float]:
    v = np.asarray(v, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {
            "n": 0,
            "mean": float("nan"),
            "std": float("nan"),
            "min": float("nan"),
            "median": float("nan"),
            "p95": float("nan"),
            "max": float("nan"),
        }
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
    }


def _fmt(s: dict[str, float]) -> str:
    return f"min {s['min']:.3g} / median {s['median']:.3g} / max {s['max']:.3g}"


# ----------------------------------------------------------------------------- figures
def _slit_figure(image: np.ndarray, slits: np.ndarray, angle: float, geom: SlitGeometry, unit: str):
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    fig = Figure(figsize=(3.4, 3.4))
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", interpolation="nearest")
    c0 = geom.image_centre
    ax.add_patch(
        Circle(
            (c0, c0),
            geom.size / 2.0,
            fill=False,
            color="C0",
            lw=0.8,
            ls="--",
            label="registration disc",
        )
    )
    th = math.radians(angle)
    u = np.array([-math.sin(th), math.cos(th)])
    for k, name in enumerate(("d1", "d2")):
        c = slits[k]
        if not np.all(np.isfinite(c)):
            continue
        a, b = c - geom.half_length_px[k] * u, c + geom.half_length_px[k] * u
        ax.plot([a[1], b[1]], [a[0], b[0]], color=f"C{k + 1}", lw=1.5, label=f"{name} profile")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"Fig. 4b: slit profiles in the reference ({geom.pixel_size:.1f} {unit}/px)", fontsize=8
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- run
def run(
    generator: Any,
    store: Any,
    cfg: Config,
    *,
    gamma: float,
    sampler: Any = None,
    out_dir: Path,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
) -> dict:
    """Run the Ta-chart analysis; write figures + table into out_dir; return the summary dict."""
    import pandas as pd

    from matdyn.viz.figures import (
        distribution_comparison,
        image_grid,
        iou_distributions,
        save_figure,
        sequence_strip,
    )

    cfg.validate()
    _check_generator(generator, store)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    R = int(generator.resolution)
    norm = dict(getattr(generator, "normalization", {}) or {})
    obs = _Observed(store, R, cfg)
    pixel_size = float(norm.get("pixel_size") or obs.pixel_size)
    unit = str(norm.get("unit") or store.meta.unit)
    notes: list[str] = []
    if abs(pixel_size - obs.pixel_size) > 0.01 * obs.pixel_size:
        notes.append(
            f"generator pixel_size {pixel_size:.4g} differs from the store's at {R} px "
            f"({obs.pixel_size:.4g}); generated lengths use the generator's"
        )
    d_nm = obs.expected_widths()
    geom = _geometry(R, pixel_size, cfg, d_nm)
    geom_obs = _geometry(R, obs.pixel_size, cfg, d_nm)
    disc = geom.disc
    rng = np.random.default_rng(seed)
    if len(obs.raw) < 2:
        raise AnalysisError(
            "the store holds fewer than 2 raw (non-augmented) frames; the "
            "Ta-chart case needs a frame sequence"
        )

    # ---- fidelity: generated z ~ N(0, I) vs observed frames (all, as in training)
    n_fid = min(cfg.n_fidelity, len(store))
    obs_fid = _load_resized(store, np.sort(rng.choice(len(store), n_fid, replace=False)), R)
    z_fid = torch.randn(
        cfg.n_fidelity, generator.latent_dim, generator=torch.Generator().manual_seed(seed + 7919)
    )
    gen_fid = _generate(generator, z_fid, cfg.batch_size)
    if gen_fid.shape[1:] != obs_fid.shape[1:]:
        raise AnalysisError(
            f"generated frames {gen_fid.shape[1:]} differ from the resized "
            f"observed frames {obs_fid.shape[1:]}"
        )
    if not np.isfinite(gen_fid).all():
        raise AnalysisError("the generator produced NaN/inf images")

    # ---- anchors: observed raw frames with known slit pairs
    anchor_idx = _spread(obs.raw, cfg.n_anchors)
    anchor_frames = _load_resized(store, anchor_idx, R)
    anchor_crops = geom_obs.crop(anchor_frames)
    anchor_pairs = [obs.pairs(int(i), f[0], geom_obs) for i, f in zip(anchor_idx, anchor_frames)]
    keep = [k for k, p in enumerate(anchor_pairs) if len(p)]
    if not keep:
        raise AnalysisError(
            "no slit pair was found in the observed raw frames (profile search for widths "
            f"{d_nm[0]:g}/{d_nm[1]:g} nm ± {cfg.slit_search_tolerance_px:g} px); set "
            "analysis.d1_nm/d2_nm or slit_search_tolerance_px"
        )
    anchor_crops = anchor_crops[keep]
    anchor_pairs = [anchor_pairs[k] for k in keep]
    anchor_idx = anchor_idx[keep]

    # all-noise check: generated frames must match some observed raw frame
    probe = geom.crop(gen_fid[: min(8, len(gen_fid))])
    probe_scores = np.array(
        [
            register_batch(
                anchor_crops,
                p,
                _grid(cfg.anchor_angle_range_deg, max(cfg.anchor_angle_step_deg, 2.0)),
                upsample_factor=2,
                refine_iters=0,
            ).score.max()
            for p in probe
        ]
    )
    ps = _stats(probe_scores)
    if ps["median"] < cfg.min_anchor_score:
        raise AnalysisError(
            f"generated frames match no observed Ta-chart frame (best NCC per frame: {_fmt(ps)}, "
            f"need median >= min_anchor_score={cfg.min_anchor_score}); the generator does not "
            "draw the test chart (untrained or wrong bundle?)"
        )

    fidelity = _fidelity(obs_fid, gen_fid, cfg, seed)
    fidelity["probe_anchor_ncc"] = ps
    fidelity["value_unit"] = "store units (CXDI phase, rad)"

    # ---- Monte Carlo variations
    reducer = ChartMotion(
        geom,
        anchor_crops,
        anchor_pairs,
        angles=_grid(cfg.angle_range_deg, cfg.angle_step_deg),
        anchor_angles=_grid(cfg.anchor_angle_range_deg, cfg.anchor_angle_step_deg),
        upsample_factor=cfg.upsample_factor,
        refine_iters=cfg.refine_iters,
        sigma=cfg.binarize_sigma,
    )
    sampler = sampler if sampler is not None else UniformSampler(gamma)  # matdyn.gamma.resolve_sampler
    engine = VariationEngine(
        generator,
        sampler,
        n_refs=cfg.n_refs,
        n_samples=cfg.n_samples,
        seed=seed,
        reducers=[reducer],
        batch_size=cfg.batch_size,
        progress=progress,
    )
    res = engine.run(out_dir / "variations")
    g = {k.split("/", 1)[1]: res[k] for k in res.keys() if k.startswith("motion/")}
    M, N = g["score"].shape

    ref_anchor_score = g["ref_anchor_score"]
    if np.nanmax(ref_anchor_score) < cfg.min_anchor_score:
        raise AnalysisError(
            f"no reference image matches an observed frame (best NCC {_fmt(_stats(ref_anchor_score))}, "
            f"need >= {cfg.min_anchor_score}); the generator does not draw the test chart"
        )
    kept = (g["score"] >= cfg.min_match_score) & np.isfinite(g["shift_px"]).all(axis=2)
    kept &= (ref_anchor_score >= cfg.min_anchor_score)[:, None]
    rej = 1.0 - kept.mean(axis=1)
    if not kept.any():
        raise AnalysisError(
            f"min_match_score={cfg.min_match_score} rejects every sample (registration NCC "
            f"{_fmt(_stats(g['score']))}); lower analysis.min_match_score or gamma"
        )
    filters = {
        "match_score": {
            "threshold": cfg.min_match_score,
            "kind": "lower bound on the NCC of a sample vs its reference",
            "rejection_rate_overall": float(1.0 - kept.mean()),
            "rejection_rate_per_reference_summary": {
                "min": float(rej.min()),
                "median": float(np.median(rej)),
                "max": float(rej.max()),
            },
        },
        "reference_anchor": {
            "threshold": cfg.min_anchor_score,
            "kind": "lower bound on a reference's NCC with its best observed raw frame (all its "
            "samples are dropped below it; included in match_score's rates)",
            "rejection_rate_overall": float(np.mean(ref_anchor_score < cfg.min_anchor_score)),
            "rejection_rate_per_reference_summary": {
                k: float(f(ref_anchor_score < cfg.min_anchor_score))
                for k, f in (("min", np.min), ("median", np.median), ("max", np.max))
            },
        },
    }

    # translation along the chart axis of each reference and across it, physical units
    th = np.radians(g["ref_slit_angle"])  # [M]
    u = np.stack([-np.sin(th), np.cos(th)], axis=1)  # (row, col) chart +x in the reference
    v = np.stack([np.cos(th), np.sin(th)], axis=1)
    along = np.einsum("mnk,mk->mn", g["shift_px"], u) * pixel_size
    across = np.einsum("mnk,mk->mn", g["shift_px"], v) * pixel_size
    angle = g["angle_deg"]

    # ---- observed consecutive frames (Fig. 4a) and smoothness bounds
    n_pairs = min(cfg.n_observed_pairs, len(obs.raw) - 1)
    s0 = (len(obs.raw) - 1 - n_pairs) // 2
    seq_idx = obs.raw[s0 : s0 + n_pairs + 1]
    seq = geom_obs.crop(_load_resized(store, seq_idx, R))
    obs_iou_t = _pair_iou(_binarize(seq, disc, cfg.binarize_sigma))
    t_steps, t_source = obs.translation_steps()
    t_bound = float(np.max(t_steps))
    obs_iou_r, r_steps, r_source = _observed_rotation(obs, store, geom_obs, cfg, R, disc)
    r_bound = float(np.max(r_steps)) if r_steps.size else float("nan")

    # ---- generated sequences sorted by translation / rotation (Fig. 3b, c; Fig. 4a)
    seqs = _sequences(kept, along, across, angle, g["masks"], geom.size, cfg.sequence_subset_frac)

    # ---- slit widths: generated (retained samples) vs observed raw frames (Fig. 4b)
    gw = np.where(kept[..., None], g["widths"], np.nan)  # [M, N, 2]
    ow = _observed_widths(obs, store, geom_obs, cfg, R)
    slits = {}
    for k, name in enumerate(("d1", "d2")):
        slits[name] = {
            "generated": _stats(gw[..., k]),
            "observed": _stats(ow[:, k]),
            "reference": [float(x) for x in g["ref_widths"][:, k]],
        }
    if not np.isfinite(gw).any():
        raise AnalysisError(
            "no slit width could be measured in the generated images (slit profiles left the "
            f"analysis disc or had no contrast; reference anchor NCC {_fmt(_stats(ref_anchor_score))}); "
            "raise analysis.crop_frac or check the generator"
        )

    # ---- table
    rows = []
    for i in range(M):
        for j in range(N):
            rows.append(
                {
                    "reference": i,
                    "sample": j,
                    "kept": bool(kept[i, j]),
                    "score": float(g["score"][i, j]),
                    "shift_row_px": float(g["shift_px"][i, j, 0]),
                    "shift_col_px": float(g["shift_px"][i, j, 1]),
                    f"translation_along_{unit}": float(along[i, j]),
                    f"translation_across_{unit}": float(across[i, j]),
                    "rotation_deg": float(angle[i, j]),
                    f"d1_{unit}": float(gw[i, j, 0]),
                    f"d2_{unit}": float(gw[i, j, 1]),
                    "rank_translation": int(seqs["rank_t"][i, j]),
                    "rank_rotation": int(seqs["rank_r"][i, j]),
                }
            )
    table = out_dir / "variations.csv"
    pd.DataFrame(rows).to_csv(table, index=False)

    # ---- figures
    figures: list[str] = []

    def save(fig: Any, name: str) -> None:
        save_figure(fig, fig_dir / name)
        figures.append(f"figures/{name}.png")

    show = obs.raw[np.round(np.linspace(0, len(obs.raw) - 1, min(5, len(obs.raw)))).astype(int)]
    titles = [f"raw frame {int(k)}" for k in show]
    extra_imgs = []
    if obs.source is not None and obs.is_aug.any():
        aug = np.flatnonzero(obs.is_aug & (obs.source == obs.source[show[0]]))[:4]
        extra_imgs = list(aug)
        rot = obs.truth.get("rotation_deg")
        titles += [
            f"rotated {float(rot[k]):+.1f}°" if rot is not None else f"augmented {int(k)}"
            for k in aug
        ]
    fig3a = geom_obs.crop(_load_resized(store, np.r_[show, extra_imgs].astype(np.int64), R))
    save(
        image_grid(fig3a, pixel_size=obs.pixel_size, unit=unit, titles=titles, ncols=5),
        "fig3a_observed",
    )

    best = int(np.argmax(kept.sum(axis=1)))
    z_b, eps_b = variation_latents(seed, best, N, generator.latent_dim, sampler)
    for kind, order, vals, fname in (
        ("translation", seqs["order_t"].get(best), along[best], "fig3b_translation_sequence"),
        ("rotation", seqs["order_r"].get(best), angle[best], "fig3c_rotation_sequence"),
    ):
        if order is None or len(order) < 2:
            continue
        pick = order[
            np.round(np.linspace(0, len(order) - 1, min(cfg.strip_length, len(order)))).astype(int)
        ]
        imgs = _generate(generator, z_b[None] + eps_b[pick], cfg.batch_size)
        fig = sequence_strip(
            geom.crop(imgs), vals[pick], kind=kind, unit=unit, pixel_size=pixel_size
        )
        fig.suptitle(
            f"Fig. 3{'b' if kind == 'translation' else 'c'}: generated {kind} sequence "
            f"(reference {best}, γ = {gamma:g})",
            fontsize=9,
            y=1.06,
        )
        save(fig, fname)

    gen_iou = {"translation": seqs["iou_t"], "rotation": seqs["iou_r"]}
    obs_iou = {"translation": obs_iou_t}
    if obs_iou_r.size:
        obs_iou["rotation"] = obs_iou_r
    fig = iou_distributions(obs_iou, {k: v for k, v in gen_iou.items() if k in obs_iou})
    fig.suptitle("Fig. 4a: IoU of consecutive frames", fontsize=9, y=1.04)
    save(fig, "fig4a_iou")

    ref_image = _generate(generator, z_b[None], 1)[0, 0]
    save(
        _slit_figure(ref_image, g["ref_slits"][best], float(g["ref_slit_angle"][best]), geom, unit),
        "fig4b_reference_slits",
    )
    obs_w = {k: ow[:, i][np.isfinite(ow[:, i])] for i, k in enumerate(("d1", "d2"))}
    gen_w = {k: gw[..., i][np.isfinite(gw[..., i])] for i, k in enumerate(("d1", "d2"))}
    if all(v.size for v in obs_w.values()) and all(v.size for v in gen_w.values()):
        fig = distribution_comparison(obs_w, gen_w, xlabel=f"slit width ({unit})", bins=30)
        fig.suptitle("Fig. 4b: slit widths, observed vs generated", fontsize=9, y=1.04)
        save(fig, "fig4b_slit_widths")

    # ---- summary
    sequences = {
        "translation": {
            "steps": _stats(np.abs(seqs["jumps_t"])),
            "bound": t_bound,
            "bound_source": t_source,
            "unit": unit,
            "iou_generated": _stats(seqs["iou_t"]),
            "iou_observed": _stats(obs_iou_t),
            "range": _stats(along[kept]),
            "max_gap_ratio": _nanmax(seqs["gap_t"]),
        },
        "rotation": {
            "steps": _stats(np.abs(seqs["jumps_r"])),
            "bound": r_bound,
            "bound_source": r_source,
            "unit": "deg",
            "observed_steps": _stats(r_steps),
            "iou_generated": _stats(seqs["iou_r"]),
            "iou_observed": _stats(obs_iou_r),
            "range": _stats(angle[kept]),
            "max_gap_ratio": _nanmax(seqs["gap_r"]),
        },
        "translation_across": _stats(across[kept]),
    }
    summary: dict[str, Any] = {
        "case": CASE,
        "gamma": float(gamma),
        "counts": {"n_refs": int(M), "n_samples": int(N), "n_kept": int(kept.sum())},
        "pixel_size": pixel_size,
        "unit": unit,
        "fidelity": fidelity,
        "filters": filters,
        "sequences": sequences,
        "slit_widths": slits,
        "figures": figures,
        "table": "variations.csv",
        "paper": PAPER,
        "config": asdict(cfg),
        "notes": notes,
    }
    if store.truth:
        summary["recovery"] = _recovery(obs, slits, sequences, pixel_size, cfg)
    if log is not None:
        scalars = {
            f"analysis/{CASE}/phase_w1": fidelity["phase_w1"],
            f"analysis/{CASE}/swd": fidelity["swd"],
            f"analysis/{CASE}/rejection_rate": filters["match_score"]["rejection_rate_overall"],
            f"analysis/{CASE}/d1_generated": slits["d1"]["generated"]["mean"],
            f"analysis/{CASE}/d2_generated": slits["d2"]["generated"]["mean"],
            f"analysis/{CASE}/translation_max_step": sequences["translation"]["steps"]["max"],
            f"analysis/{CASE}/rotation_max_step": sequences["rotation"]["steps"]["max"],
        }
        log({k: float(v) for k, v in scalars.items()})
    return to_jsonable(summary)


def _unpack(packed: np.ndarray, size: int) -> np.ndarray:
    """Packed crop masks [..., bytes] -> bool [..., size, size]."""
    flat = np.unpackbits(packed, axis=-1, count=size * size).astype(bool)
    return flat.reshape(packed.shape[:-1] + (size, size))


def _sequences(
    kept: np.ndarray,
    along: np.ndarray,
    across: np.ndarray,
    angle: np.ndarray,
    packed_masks: np.ndarray,
    size: int,
    subset_frac: float,
) -> dict[str, Any]:
    """Per reference, the translation and rotation sequences (sample orders), the IoU of
    consecutive images in them, their steps and gap ratios, and each sample's rank."""
    M, N = kept.shape
    out: dict[str, Any] = {
        "order_t": {},
        "order_r": {},
        "rank_t": np.full((M, N), -1),
        "rank_r": np.full((M, N), -1),
    }
    parts: dict[str, list] = {
        k: [] for k in ("iou_t", "iou_r", "jumps_t", "jumps_r", "gap_t", "gap_r")
    }
    # one pair of sequences per reference
    for i in range(M):
        js = np.flatnonzero(kept[i])
        if js.size == 0:
            continue
        masks = _unpack(packed_masks[i, js], size)
        pos = {j: p for p, j in enumerate(js)}
        # "selected subsets" (§3.2): the samples that rotate least form the translation
        # sequence, those that translate least the rotation sequence
        st = _least(js, np.abs(angle[i, js]), subset_frac)
        sr = _least(js, np.hypot(along[i, js], across[i, js]), subset_frac)
        for key, sel, val in (("t", st, along[i]), ("r", sr, angle[i])):
            order = sel[np.argsort(val[sel], kind="stable")]
            out[f"order_{key}"][i] = order
            out[f"rank_{key}"][i, order] = np.arange(len(order))
            parts[f"iou_{key}"].append(_pair_iou(masks[[pos[j] for j in order]]))
            parts[f"jumps_{key}"].append(np.diff(val[order]))
            parts[f"gap_{key}"].append(_gap_ratio(val[order]))
    for key in ("iou_t", "iou_r", "jumps_t", "jumps_r"):
        out[key] = np.concatenate(parts[key]) if parts[key] else np.zeros(0)
    out["gap_t"], out["gap_r"] = parts["gap_t"], parts["gap_r"]
    return out


def _observed_widths(
    obs: _Observed, store: Any, geom: SlitGeometry, cfg: Config, R: int
) -> np.ndarray:
    """Slit widths d1, d2 [n, 2] (physical units) of observed raw frames spread over the data."""
    idx = _spread(obs.raw, cfg.n_slit_frames)
    frames = _load_resized(store, idx, R)[:, 0].astype(np.float64)
    out = np.full((len(idx), 2), np.nan)
    # per frame: the copy of each slit nearest the centre, at its known place
    for n, (fi, frame) in enumerate(zip(idx, frames)):
        pairs = obs.pairs(int(fi), frame, geom)
        if len(pairs):
            p = _nearest_slits(pairs, geom.image_centre)
            out[n] = [geom.width(frame, p[k], 0.0, k) for k in range(2)]
    return out


def _fidelity(obs: np.ndarray, gen: np.ndarray, cfg: Config, seed: int) -> dict[str, Any]:
    """Phase-value W1 and multi-scale SWD, each with its split-half real-vs-real baseline."""
    w1 = _w1_metric(cfg.max_w1_values, seed)
    swd = sliced_wasserstein(obs, gen, n_patches=cfg.swd_patches, seed=seed)
    base = swd_baseline(obs, n_patches=cfg.swd_patches, seed=seed)
    return {
        "phase_w1": w1(obs, gen),
        "phase_w1_baseline": float(np.mean(split_half_baseline(obs, w1, n_repeats=3, seed=seed))),
        "swd": swd.mean,
        "swd_levels": swd.levels.tolist(),
        "swd_baseline": base.mean,
        "swd_baseline_levels": base.levels.tolist(),
        "n_generated": int(len(gen)),
        "n_observed": int(len(obs)),
    }


def _least(idx: np.ndarray, other: np.ndarray, frac: float) -> np.ndarray:
    """The ``frac`` share (at least 2) of ``idx`` with the smallest ``other``, in idx order.

    >>> _least(np.arange(4), np.array([3.0, 0.0, 2.0, 1.0]), 0.5).tolist()
    [1, 3]
    """
    n = min(len(idx), max(2, int(math.ceil(frac * len(idx)))))
    return np.sort(idx[np.argsort(other, kind="stable")[:n]])


def _gap_ratio(values: np.ndarray) -> float:
    """Largest step of a sorted sequence over the largest step expected for the same number
    of values drawn uniformly over the same range, ``L · H(n-1) / (n-1)`` (H: harmonic
    number). About 1 for an evenly filled range; much larger means a jump (a gap in the
    motion that the latent neighbourhood does not reach), whatever the sample density.

    >>> round(_gap_ratio(np.array([0.0, 1.0, 2.0, 3.0])), 3)
    0.545
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    if n < 3 or np.ptp(v) <= 0:
        return float("nan")
    expected = np.ptp(v) * np.sum(1.0 / np.arange(1, n)) / (n - 1)
    return float(np.diff(v).max() / expected)


def _nanmax(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmax(v)) if np.isfinite(v).any() else float("nan")


def _w1_metric(max_values: int, seed: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(a: np.ndarray, b: np.ndarray) -> float:
        r = np.random.default_rng(seed)
        va, vb = np.asarray(a).ravel(), np.asarray(b).ravel()
        if va.size > max_values:
            va = va[r.choice(va.size, max_values, replace=False)]
        if vb.size > max_values:
            vb = vb[r.choice(vb.size, max_values, replace=False)]
        return wasserstein_1d(va, vb)

    return metric


def _observed_rotation(
    obs: _Observed, store: Any, geom: SlitGeometry, cfg: Config, R: int, disc: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """IoU and angle steps of observed rotation sequences: the images made from one raw
    frame (raw at 0° + rotated copies) sorted by angle."""
    if obs.source is None or not obs.is_aug.any():
        return np.zeros(0), np.zeros(0), "unavailable (no is_augmented/source_frame labels)"
    frames = _spread(np.unique(obs.source[obs.is_aug]), cfg.n_rotation_frames)
    truth_rot = obs.truth.get("rotation_deg")
    use_truth = truth_rot is not None and len(truth_rot) == len(store)
    ious, steps = [], []
    members = [np.flatnonzero(obs.source == f) for f in frames]
    allidx = np.concatenate(members)
    crops = geom.crop(_load_resized(store, allidx, R))
    start = 0
    # one rotation sequence per source frame
    for idx in members:
        c = crops[start : start + len(idx)]
        start += len(idx)
        if use_truth:
            ang = np.asarray(truth_rot, dtype=np.float64)[idx]
        else:  # measure each copy against the raw frame
            raw = np.flatnonzero(~obs.is_aug[idx])
            if not raw.size:
                continue
            reg = register_batch(
                c,
                c[raw[0]],
                _grid(cfg.anchor_angle_range_deg, cfg.anchor_angle_step_deg),
                upsample_factor=2,
            )
            ang = reg.angles_deg
        o = np.argsort(ang, kind="stable")
        steps.append(np.diff(ang[o]))
        ious.append(_pair_iou(_binarize(c[o], disc, cfg.binarize_sigma)))
    src = (
        "store truth rotation_deg"
        if use_truth
        else "registration of each copy against its raw frame"
    )
    return (
        np.concatenate(ious) if ious else np.zeros(0),
        np.concatenate(steps) if steps else np.zeros(0),
        f"gaps between sorted angles of the images of one raw frame ({src})",
    )


def _recovery(
    obs: _Observed, slits: dict, sequences: dict, pixel_size: float, cfg: Config
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    d_true = obs.expected_widths() if obs.has_truth else None
    ta = obs.truth_attrs
    if d_true is None and "d1_nm" in ta and "d2_nm" in ta:
        d_true = (float(ta["d1_nm"]), float(ta["d2_nm"]))
    if d_true is not None:
        tol = cfg.slit_tolerance_px
        sw = {}
        for k, name in enumerate(("d1", "d2")):
            gm, om = slits[name]["generated"]["mean"], slits[name]["observed"]["mean"]
            ge, oe = abs(gm - d_true[k]) / pixel_size, abs(om - d_true[k]) / pixel_size
            sw[name] = {
                "truth": d_true[k],
                "generated_mean": gm,
                "observed_mean": om,
                "generated_error_px": ge,
                "observed_error_px": oe,
                "generated_within_tolerance": bool(ge <= tol),
                "observed_within_tolerance": bool(oe <= tol),
            }
        sw["tolerance_px"] = tol
        out["slit_widths"] = sw
    for kind in ("translation", "rotation"):
        s = sequences[kind]
        bound = s["bound"]
        steps = s["steps"]
        out[f"{kind}_smoothness"] = {
            "bound": bound,
            "bound_source": s["bound_source"],
            "unit": s["unit"],
            "max_step": steps["max"],
            "p95_step": steps["p95"],
            "median_step": steps["median"],
            "max_gap_ratio": s["max_gap_ratio"],
            "smooth": bool(np.isfinite(bound) and steps["n"] > 0 and steps["max"] <= bound),
            "jump_free": bool(
                np.isfinite(s["max_gap_ratio"]) and s["max_gap_ratio"] <= cfg.jump_gap_ratio
            ),
        }
    return out

