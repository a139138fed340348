"""Difference metrics between images and their reference images.

A metric compares each image of a batch [B, C, *spatial] with one of K reference images
[K, C, *spatial] (``ref_slots[b]`` says which). It works in two steps so that reference
descriptors are computed once per reference, not once per sample::

    state = metric.prepare(references)               # e.g. reference entropies [K]
    values = metric.compute(images, state, ref_slots)  # [B] float64

``compare(images, references)`` does both for pairwise batches (consecutive real frames).
The same objects serve the variation engine (G(z_i + ε_ij) vs G(z_i)) and the
consecutive-frame baseline, so both sides of the γ choice use identical settings.

Metrics share intermediate results through an optional ``cache`` dict that belongs to one
batch of images (masks from equal :class:`Binarizer` objects are computed once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from matdyn.descriptors.composition import channel_mass, mass_deviation
from matdyn.descriptors.entropy import shannon_entropy_batch
from matdyn.descriptors.overlap import iou_batch
from matdyn.descriptors.particles import Binarizer, particle_totals
from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "AreaDifference",
    "DensityDifference",
    "DifferenceMetric",
    "EntropyDifference",
    "IoU",
    "MassDeviation",
    "MetricFilter",
    "ShapeDifference",
    "SquaredDifference",
    "cached_masks",
]


@runtime_checkable
class DifferenceMetric(Protocol):
    """What the engine and the continuity baseline need from a metric."""

    name: str

    def prepare(self, references: np.ndarray, cache: dict | None = None) -> Any: ...

    def compute(
        self, images: np.ndarray, state: Any, ref_slots: np.ndarray, cache: dict | None = None
    ) -> np.ndarray: ...


def cached_masks(binarizer: Binarizer, images: np.ndarray, cache: dict | None) -> np.ndarray:
    """``binarizer(images)``, memoised in ``cache`` (one dict per image batch).

    >>> cache = {}
    >>> m = cached_masks(Binarizer(threshold=0.5), np.ones((1, 1, 2, 2)), cache)
    >>> m is cached_masks(Binarizer(threshold=0.5), np.ones((1, 1, 2, 2)), cache)
    True
    """
    if cache is None:
        return binarizer(images)
    key = ("mask", binarizer)
    if key not in cache:
        cache[key] = binarizer(images)
    return cache[key]


def _check(images: np.ndarray, ref_slots: np.ndarray, n_refs: int) -> np.ndarray:
    slots = np.asarray(ref_slots, dtype=np.int64)
    if slots.shape != (np.shape(images)[0],):
        raise AnalysisError(
            f"ref_slots {slots.shape} must have one entry per image ({np.shape(images)[0]})"
        )
    if slots.size and (slots.min() < 0 or slots.max() >= n_refs):
        raise AnalysisError(f"ref_slots out of range 0..{n_refs - 1}")
    return slots


class _Metric:
    name: str

    def prepare(self, references: np.ndarray, cache: dict | None = None) -> Any:
        raise NotImplementedError

    def compute(
        self, images: np.ndarray, state: Any, ref_slots: np.ndarray, cache: dict | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def compare(self, images: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Pairwise: image b vs reference b, both [B, C, *spatial] -> [B]."""
        state = self.prepare(references)
        return self.compute(images, state, np.arange(np.shape(images)[0]))


@dataclass(frozen=True)
class EntropyDifference(_Metric):
    """|H(x) - H(x_ref)|, image entropy in bits after quantising to ``bins`` levels (§3.3.1).

    ``value_range=None`` bins each image over its own min..max; give the data range (e.g.
    (-1, 1) for raw generator output) to bin all images alike. Paper filter: ≤ 0.2 (§3.3.2).

    >>> ref = np.zeros((1, 1, 2, 2)); ref[0, 0, 0, 0] = 1.0
    >>> EntropyDifference(bins=4).compare(np.zeros((1, 1, 2, 2)), ref).round(4).tolist()
    [0.8113]
    """

    bins: int = 256
    value_range: tuple[float, float] | None = None
    name: str = "entropy_diff"

    def __post_init__(self) -> None:
        if isinstance(self.bins, bool) or int(self.bins) != self.bins or self.bins < 1:
            raise ConfigError(
                f"EntropyDifference.bins must be a positive integer, got {self.bins!r}"
            )
        if self.value_range is not None:  # a plain tuple, also when built by Hydra from a list
            lo, hi = (float(v) for v in self.value_range)
            if not hi > lo:
                raise ConfigError(
                    f"EntropyDifference.value_range needs high > low, got {self.value_range!r}"
                )
            object.__setattr__(self, "value_range", (lo, hi))

    def _entropy(self, images: np.ndarray, cache: dict | None) -> np.ndarray:
        key = ("entropy", self.bins, self.value_range)
        if cache is not None and key in cache:
            return cache[key]
        h = shannon_entropy_batch(images, bins=self.bins, value_range=self.value_range)
        if cache is not None:
            cache[key] = h
        return h

    def prepare(self, references: np.ndarray, cache: dict | None = None) -> np.ndarray:
        return self._entropy(references, cache)

    def compute(self, images, state, ref_slots, cache=None):
        slots = _check(images, ref_slots, len(state))
        return np.abs(self._entropy(images, cache) - state[slots])


@dataclass(frozen=True)
class AreaDifference(_Metric):
    """|A(x) - A(x_ref)|, total particle area after binarising (§3.3.1, "< 200 px" at γ = 1).

    In px by default; with ``pixel_size`` in physical units (pixel_size² per px, nm² for
    frames in nm). Particles under ``min_area`` px are ignored.

    >>> ref = np.zeros((1, 1, 4, 4)); ref[0, 0, :2, :2] = 1.0
    >>> AreaDifference(Binarizer(threshold=0.5)).compare(np.zeros((1, 1, 4, 4)), ref).tolist()
    [4.0]
    """

    binarizer: Binarizer = field(default_factory=Binarizer)
    min_area: int = 1
    connectivity: int | None = None
    pixel_size: float | None = None
    name: str = "area_diff"

    def _area(self, images: np.ndarray, cache: dict | None) -> np.ndarray:
        key = ("area", self.binarizer, self.min_area, self.connectivity, self.pixel_size)
        if cache is not None and key in cache:
            return cache[key]
        masks = cached_masks(self.binarizer, images, cache)
        t = particle_totals(
            masks,
            min_area=self.min_area,
            connectivity=self.connectivity,
            pixel_size=self.pixel_size,
        )
        area = (t.area_px if t.area is None else t.area).astype(np.float64)
        if cache is not None:
            cache[key] = area
        return area

    def prepare(self, references, cache=None):
        return self._area(references, cache)

    def compute(self, images, state, ref_slots, cache=None):
        slots = _check(images, ref_slots, len(state))
        return np.abs(self._area(images, cache) - state[slots])


@dataclass(frozen=True)
class IoU(_Metric):
    """IoU (IOU₃D for volumes) of the masks of x and x_ref; a similarity, 1 = identical.

    >>> ref = np.zeros((1, 1, 2, 2)); ref[0, 0, 0] = 1.0
    >>> IoU(Binarizer(threshold=0.5)).compare(np.ones((1, 1, 2, 2)), ref).tolist()
    [0.5]
    """

    binarizer: Binarizer = field(default_factory=Binarizer)
    name: str = "iou"

    def prepare(self, references, cache=None):
        return cached_masks(self.binarizer, references, cache)

    def compute(self, images, state, ref_slots, cache=None):
        slots = _check(images, ref_slots, len(state))
        masks = cached_masks(self.binarizer, images, cache)
        return iou_batch(masks, state[slots])


@dataclass(frozen=True)
class ShapeDifference(IoU):
    """1 - IOU₃D, the paper's shape difference (§3.4.1; filter IOU₃D ≥ 0.5 ⇔ ≤ 0.5).

    >>> ref = np.zeros((1, 1, 2, 2, 2)); ref[0, 0, 0] = 1.0
    >>> ShapeDifference(Binarizer(threshold=0.5)).compare(np.ones((1, 1, 2, 2, 2)), ref).tolist()
    [0.5]
    """

    name: str = "shape_diff"

    def compute(self, images, state, ref_slots, cache=None):
        return 1.0 - super().compute(images, state, ref_slots, cache)


@dataclass(frozen=True)
class MassDeviation(_Metric):
    """|M - M_ref| / M_ref of the total mass (``channel=None``) or of one channel (§3.4.2).

    >>> ref = np.ones((1, 2, 2, 2, 2))
    >>> MassDeviation().compare(1.2 * ref, ref).round(6).tolist()
    [0.2]
    """

    channel: int | None = None
    name: str = "mass_dev"

    def _mass(self, images: np.ndarray, cache: dict | None) -> np.ndarray:
        key = ("mass",)
        if cache is not None and key in cache:
            return cache[key]
        m = channel_mass(images)
        if cache is not None:
            cache[key] = m
        return m

    def prepare(self, references, cache=None):
        return self._mass(references, cache)

    def compute(self, images, state, ref_slots, cache=None):
        slots = _check(images, ref_slots, len(state))
        mass = self._mass(images, cache)
        if self.channel is None:
            return mass_deviation(mass, state[slots])
        if not -mass.shape[1] <= self.channel < mass.shape[1]:
            raise ConfigError(
                f"MassDeviation.channel={self.channel} but images have {mass.shape[1]} channels"
            )
        return mass_deviation(mass, state[slots], per_channel=True)[:, self.channel]


@dataclass(frozen=True)
class DensityDifference(_Metric):
    """Σ_v |ρ - ρ_ref| / Σ_v ρ_ref of the channel-summed density, voxel-wise (Fig. 7d).

    >>> ref = np.ones((1, 1, 2, 2))
    >>> DensityDifference().compare(np.zeros((1, 1, 2, 2)), ref).tolist()
    [1.0]
    """

    name: str = "density_diff"

    def prepare(self, references, cache=None):
        refs = np.asarray(references)
        rho = refs.sum(axis=1, dtype=np.float64).reshape(refs.shape[0], -1)  # [K, P]
        return rho, np.abs(rho).sum(axis=1)

    def compute(self, images, state, ref_slots, cache=None):
        rho_ref, norm = state
        slots = _check(images, ref_slots, len(norm))
        x = np.asarray(images)
        rho = x.sum(axis=1, dtype=np.float64).reshape(x.shape[0], -1)
        diff = np.abs(rho - rho_ref[slots]).sum(axis=1)
        out = np.where(diff > 0, np.inf, 0.0)
        return np.divide(diff, norm[slots], out=out, where=norm[slots] > 0)


@dataclass(frozen=True)
class SquaredDifference(_Metric):
    """Mean squared voxel difference after Gaussian smoothing: ⟨(g_σ * (x − x_ref))²⟩ over
    voxels, summed over channels, in intensity units² (issue 12: the γ ↔ Δt calibration).

    Why squared: for frame noise independent of the scene, E‖a − b‖² is the motion part
    plus 2σ²_noise per voxel *exactly* (no cross term), so the Δt → 0 intercept of the lag
    curve is the noise and can be subtracted; and for a particle displaced by δ smaller
    than its size, ‖f(x + δ) − f(x)‖² ≈ ½|δ|²‖∇f‖² (isotropic δ), so the motion part grows
    in proportion to the MSD on both sides of the match (observed lags, generated
    variations). An absolute (L1) difference grows like |δ| and mixes with noise
    non-linearly, so a straight-line intercept removes motion along with the noise.
    ``sigma`` (voxels, 0 = none) damps voxel-scale changes that are not motion: frame noise
    and the texture a generator redraws in a latent neighbourhood.

    >>> ref = np.zeros((1, 1, 4, 4)); img = ref.copy(); img[0, 0, 0, 0] = 2.0
    >>> SquaredDifference().compare(img, ref).tolist()
    [0.25]
    """

    sigma: float = 0.0
    name: str = "sq_diff"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ConfigError(f"SquaredDifference sigma must be >= 0 voxels, got {self.sigma!r}")

    def _smooth(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.sigma == 0:
            return x
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(x, sigma=(0, 0) + (float(self.sigma),) * (x.ndim - 2))

    def prepare(self, references, cache=None):
        return self._smooth(references)

    def compute(self, images, state, ref_slots, cache=None):
        slots = _check(images, ref_slots, len(state))
        d = self._smooth(images) - state[slots]
        d *= d
        return d.reshape(d.shape[0], d.shape[1], -1).mean(axis=2, dtype=np.float64).sum(axis=1)


@dataclass(frozen=True)
class MetricFilter:
    """Keep samples whose metrics lie within inclusive bounds; NaN fails.

    ``upper={"entropy_diff": 0.2}`` is the NP filter (§3.3.2); ``upper={"mass_dev": 0.2},
    lower={"iou": 0.5}`` the brass filter (§3.4.2).

    >>> f = MetricFilter(upper={"entropy_diff": 0.2})
    >>> f({"entropy_diff": np.array([0.1, 0.2, 0.3, np.nan])}).tolist()
    [True, True, False, False]
    """

    upper: Mapping[str, float] | None = None
    lower: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        for attr in ("upper", "lower"):  # plain dicts, also when built by Hydra
            bound = getattr(self, attr)
            object.__setattr__(
                self, attr, None if bound is None else {str(k): float(v) for k, v in bound.items()}
            )
        for bound in (self.upper, self.lower):
            for k, v in (bound or {}).items():
                if not np.isfinite(float(v)):
                    raise ConfigError(f"MetricFilter bound for {k!r} must be finite, got {v!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """Metric names the filter reads."""
        return tuple(sorted(set(self.upper or {}) | set(self.lower or {})))

    def __call__(self, metrics: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in self.names if n not in metrics]
        if missing:
            raise ConfigError(
                f"MetricFilter needs metrics {missing}, available: {sorted(metrics)}; "
                "add the matching difference metric to the engine"
            )
        n = len(next(iter(metrics.values()))) if metrics else 0
        keep = np.ones(n, dtype=bool)
        for k, v in (self.upper or {}).items():
            keep &= np.asarray(metrics[k]) <= v  # NaN compares False
        for k, v in (self.lower or {}).items():
            keep &= np.asarray(metrics[k]) >= v
        return keep
