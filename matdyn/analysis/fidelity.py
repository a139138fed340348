"""Fidelity of generated images: distribution distances with real-vs-real baselines.

Three families, each paired with a baseline that splits the *real* set in two random
halves and computes the same metric, so that a number can be read against the noise
floor of the data itself (:func:`split_half_baseline` and the ``*_baseline`` helpers):

* :func:`wasserstein_1d` / :func:`property_wasserstein`: 1D Wasserstein (earth mover's)
  distance between property samples (particle areas, voxel intensities; the paper reports
  0.068 for NP areas, §3.3.1, and 0.006-0.017 for Cu-state intensities, §3.4.1).
  ``normalize`` fixes the unit of the answer:

  - ``None``: the property's own unit (nm², radians, ...);
  - ``"std"``: both samples divided by the real sample's standard deviation, so the result
    is in units of the real spread (shift by one real σ → 1.0);
  - ``"range"``: both samples mapped to [0, 1] by the min and max of the *pooled* samples
    (our reading of the paper's normalisation; 1.0 = the whole observed range).

* :func:`sliced_wasserstein`: multi-scale sliced Wasserstein distance on Laplacian-pyramid
  patches (Karras et al., ICLR 2018, "Progressive growing of GANs", §5 and App. D), for
  2D images [N, C, H, W] and 3D volumes [N, C, D, H, W] with any channel count, seeded.

* :func:`two_point_correlation`: S₂(r) of binarised microstructures via FFT
  autocorrelation (periodic or zero-padded), radially averaged; :func:`s2_distance`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "wasserstein_1d",
    "property_wasserstein",
    "laplacian_pyramid",
    "SWDResult",
    "sliced_wasserstein",
    "binarize",
    "two_point_correlation",
    "s2_distance",
    "split_half_baseline",
    "wasserstein_baseline",
    "swd_baseline",
    "s2_baseline",
]

T = TypeVar("T")


# ----------------------------------------------------------------------------- 1D Wasserstein


def _values(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise AnalysisError(f"{name} is empty; a Wasserstein distance needs at least one value")
    if not np.isfinite(arr).all():
        raise AnalysisError(f"{name} contains NaN/inf; drop them before comparing distributions")
    return arr


def wasserstein_1d(real: Any, generated: Any, normalize: str | None = None) -> float:
    """1D Wasserstein distance between two samples (see module docstring for ``normalize``).

    >>> round(wasserstein_1d([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]), 9)
    3.0
    >>> round(wasserstein_1d([0.0, 2.0], [1.0, 3.0], normalize="std"), 9)   # shift 1, real std 1
    1.0
    >>> round(wasserstein_1d([0.0, 1.0], [1.0, 2.0], normalize="range"), 9)  # pooled range 0..2
    0.5
    """
    u, v = _values(real, "real sample"), _values(generated, "generated sample")
    if normalize is None:
        pass
    elif normalize == "std":
        sd = float(u.std())
        if sd <= 0:
            raise AnalysisError("real sample has zero spread; use normalize='range' or None")
        u, v = u / sd, v / sd
    elif normalize == "range":
        lo, hi = min(u.min(), v.min()), max(u.max(), v.max())
        if hi <= lo:
            return 0.0
        u, v = (u - lo) / (hi - lo), (v - lo) / (hi - lo)
    else:
        raise ConfigError(f"normalize must be None, 'std' or 'range', got {normalize!r}")
    return float(wasserstein_distance(u, v))


def property_wasserstein(
    real: Mapping[str, Any], generated: Mapping[str, Any], normalize: str | None = None
) -> dict[str, float]:
    """:func:`wasserstein_1d` for every property present in both mappings.

    >>> property_wasserstein({"area": [1, 2]}, {"area": [2, 3], "extra": [0]})
    {'area': 1.0}
    """
    common = [k for k in real if k in generated]
    if not common:
        raise AnalysisError("real and generated share no property names; check the descriptor keys")
    return {k: wasserstein_1d(real[k], generated[k], normalize) for k in common}


# ------------------------------------------------------------------ sliced Wasserstein (PGGAN)

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _as_nc(images: Any, name: str) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim not in (4, 5) or arr.shape[0] == 0:
        raise AnalysisError(
            f"{name} must be [N, C, H, W] or [N, C, D, H, W] with N >= 1, got shape {arr.shape}; "
            "add a channel axis with x[:, None]"
        )
    if not np.isfinite(arr).all():
        raise AnalysisError(f"{name} contain NaN/inf values")
    return arr


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    for ax in range(2, x.ndim):
        x = ndimage.convolve1d(x, kernel, axis=ax, mode="mirror")  # keeps constants exact
    return x


def _downsample(x: np.ndarray) -> np.ndarray:
    x = _blur(x, _BINOMIAL)
    return x[(slice(None), slice(None)) + (slice(None, None, 2),) * (x.ndim - 2)]


def _upsample(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(x.shape[:2] + tuple(2 * s for s in x.shape[2:]))
    out[(slice(None), slice(None)) + (slice(None, None, 2),) * (x.ndim - 2)] = x
    out = _blur(out, 2.0 * _BINOMIAL)  # zero insertion halves the mean per axis
    return out[(slice(None), slice(None)) + tuple(slice(0, s) for s in shape)]


def laplacian_pyramid(images: Any, min_size: int = 16) -> list[np.ndarray]:
    """Laplacian pyramid of [N, C, *spatial], finest level first; the last level is the
    coarsest Gaussian level (≥ ``min_size`` per axis). Levels sum back to the input.

    >>> x = np.random.default_rng(0).random((2, 1, 32, 32))
    >>> pyr = laplacian_pyramid(x, min_size=8)
    >>> [p.shape[-1] for p in pyr]
    [32, 16, 8]
    """
    x = _as_nc(images, "images")
    levels: list[np.ndarray] = []
    while min(x.shape[2:]) // 2 >= min_size:
        down = _downsample(x)
        levels.append(x - _upsample(down, x.shape[2:]))
        x = down
    levels.append(x)
    return levels


def _patches(level: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random patches [n, C * size**d] from a level [N, C, *spatial]."""
    spatial = level.shape[2:]
    img = rng.integers(0, level.shape[0], n)
    corners = [rng.integers(0, s - size + 1, n) for s in spatial]
    off = np.arange(size)
    d = len(spatial)
    # broadcastable index grids: one axis per spatial dimension of the patch
    idx = []
    for k, c in enumerate(corners):
        shape = [n] + [1] * d
        shape[1 + k] = size
        idx.append((c[:, None] + off[None, :]).reshape(shape))
    n_idx = img.reshape([n] + [1] * d)
    # channels last, so advanced indexing over (N, *spatial) yields [n, *patch, C]
    patch = np.moveaxis(level, 1, -1)[(n_idx, *idx)]
    return patch.reshape(n, -1)


def _swd(a: np.ndarray, b: np.ndarray, n_dirs: int, n_repeats: int, rng) -> float:
    dim = a.shape[1]
    total = 0.0
    # each repeat: fresh random unit directions, compare sorted projections
    for _ in range(n_repeats):
        dirs = rng.standard_normal((dim, n_dirs))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        pa = np.sort(a @ dirs, axis=0)
        pb = np.sort(b @ dirs, axis=0)
        total += float(np.abs(pa - pb).mean())
    return total / n_repeats


@dataclass(frozen=True)
class SWDResult:
    """Per-level sliced Wasserstein distances (finest first) and their average."""

    levels: np.ndarray  # [L]
    sizes: tuple[tuple[int, ...], ...]  # spatial size of each level

    @property
    def mean(self) -> float:
        return float(self.levels.mean())


def sliced_wasserstein(
    real: Any,
    generated: Any,
    *,
    n_patches: int = 4096,
    patch_size: int = 7,
    n_directions: int = 128,
    n_repeats: int = 4,
    min_size: int = 16,
    normalize: str = "reference",
    seed: int = 0,
) -> SWDResult:
    """Multi-scale sliced Wasserstein distance (Karras et al. 2018) between two image sets.

    Per Laplacian-pyramid level (down to ``min_size``): ``n_patches`` random
    ``patch_size``-wide patches (7×7 or 7×7×7, all channels) from each set; each channel
    normalised by a per-level mean and std; ``n_repeats`` × ``n_directions`` random unit
    directions; the distance is the mean absolute difference of the sorted projections.
    ``normalize="reference"`` (default) uses the *real* set's per-level statistics for
    both sets, so global intensity and contrast changes count; ``"per_set"`` normalises
    each set by its own statistics as the PGGAN code does (blind to a global affine
    intensity change). Sets may differ in size. Same ``seed`` → same result.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((8, 1, 32, 32))
    >>> far = sliced_wasserstein(x, x + 1.0, n_patches=512).mean
    >>> near = sliced_wasserstein(x, x, n_patches=512).mean
    >>> near < far
    True
    """
    a_img, b_img = _as_nc(real, "real images"), _as_nc(generated, "generated images")
    if a_img.shape[1:] != b_img.shape[1:]:
        raise AnalysisError(
            f"real and generated images differ in [C, *spatial]: {a_img.shape[1:]} vs {b_img.shape[1:]}"
        )
    if min(a_img.shape[2:]) < patch_size or min_size < patch_size:
        raise ConfigError(
            f"patches of {patch_size} px need images and min_size >= {patch_size}; got "
            f"spatial {a_img.shape[2:]}, min_size {min_size}"
        )
    if normalize not in ("reference", "per_set"):
        raise ConfigError(f"normalize must be 'reference' or 'per_set', got {normalize!r}")
    rng = np.random.default_rng(seed)
    pyr_a, pyr_b = laplacian_pyramid(a_img, min_size), laplacian_pyramid(b_img, min_size)
    n_ch = a_img.shape[1]
    out, sizes = [], []
    # one distance per pyramid level
    for la, lb in zip(pyr_a, pyr_b):
        pa = _patches(la, n_patches, patch_size, rng).reshape(n_patches, -1, n_ch)
        pb = _patches(lb, n_patches, patch_size, rng).reshape(n_patches, -1, n_ch)
        mu_a, sd_a = pa.mean(axis=(0, 1)), pa.std(axis=(0, 1))
        if normalize == "reference":
            mu_b, sd_b = mu_a, sd_a
        else:
            mu_b, sd_b = pb.mean(axis=(0, 1)), pb.std(axis=(0, 1))
        pa = (pa - mu_a) / np.where(sd_a > 0, sd_a, 1.0)
        pb = (pb - mu_b) / np.where(sd_b > 0, sd_b, 1.0)
        out.append(
            _swd(pa.reshape(n_patches, -1), pb.reshape(n_patches, -1), n_directions, n_repeats, rng)
        )
        sizes.append(tuple(la.shape[2:]))
    return SWDResult(np.asarray(out), tuple(sizes))


# -------------------------------------------------------------- two-point correlation S2(r)


def binarize(images: Any, threshold: float | None = None) -> np.ndarray:
    """Boolean phase indicator ``images > threshold``; Otsu's threshold when None.

    >>> binarize(np.array([[0.1, 0.9], [0.2, 0.8]])).astype(int).tolist()
    [[0, 1], [0, 1]]
    """
    arr = np.asarray(images, dtype=np.float64)
    if threshold is None:
        from skimage.filters import threshold_otsu

        threshold = float(threshold_otsu(arr))
    return arr > threshold


def _radial_bins(lags: list[np.ndarray], r_max: int) -> np.ndarray:
    grids = np.meshgrid(*lags, indexing="ij")
    dist = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids))
    r = np.floor(dist + 0.5).astype(np.int64)
    r[r > r_max] = -1
    return r


def two_point_correlation(
    binary: Any, *, batch: bool = False, periodic: bool = True, r_max: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged two-point correlation S₂(r) = P(x and x + r both in the phase).

    ``binary``: one 2D image or 3D volume (0/1 or bool), or with ``batch=True`` a batch
    [N, *spatial] whose S₂ is pooled (pair-weighted). Autocorrelation via FFT: periodic
    boundaries, or zero-padding with each lag normalised by its number of pixel pairs
    (``periodic=False``). Lags are binned to the nearest integer radius ≤ ``r_max``
    (default half the smallest side). Returns ``(r, s2)``: ``s2[0]`` is the volume fraction
    φ, and S₂ → φ² at large r in a random medium.

    >>> m = np.zeros((8, 8), bool); m[:, :4] = True          # stripes 4 px wide, period 8
    >>> r, s2 = two_point_correlation(m)
    >>> float(s2[0]), r.tolist()
    (0.5, [0, 1, 2, 3, 4])
    """
    arr = np.asarray(binary)
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise AnalysisError(
                "two_point_correlation needs a binary (0/1 or bool) array; use binarize() first"
            )
        arr = arr.astype(bool)
    stack = arr if batch else arr[None]
    if stack.ndim not in (3, 4) or stack.shape[0] == 0:
        raise AnalysisError(
            f"expected one [H, W] / [D, H, W] array, or a batch [N, ...] with batch=True; got "
            f"shape {arr.shape} (batch={batch})"
        )
    spatial = stack.shape[1:]
    if min(spatial) < 2:
        raise AnalysisError(f"S2 needs at least 2 pixels per axis, got spatial shape {spatial}")
    r_max = min(spatial) // 2 if r_max is None else int(r_max)
    x = stack.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    if periodic:
        f = np.fft.rfftn(x, axes=axes)
        corr = np.fft.irfftn(np.abs(f) ** 2, s=spatial, axes=axes).sum(axis=0)
        pairs = np.full(spatial, float(np.prod(spatial) * len(x)))
        lags = [np.where(np.arange(n) <= n // 2, np.arange(n), np.arange(n) - n) for n in spatial]
    else:
        padded = tuple(2 * n for n in spatial)
        f = np.fft.rfftn(x, s=padded, axes=axes)
        corr = np.fft.irfftn(np.abs(f) ** 2, s=padded, axes=axes).sum(axis=0)
        ones = np.fft.rfftn(np.ones(spatial), s=padded)
        pairs = np.round(np.fft.irfftn(np.abs(ones) ** 2, s=padded)) * len(x)
        lags = [np.where(np.arange(p) < p // 2, np.arange(p), np.arange(p) - p) for p in padded]
    rbin = _radial_bins(lags, r_max)
    ok = rbin >= 0
    num = np.bincount(rbin[ok], weights=corr[ok], minlength=r_max + 1)
    den = np.bincount(rbin[ok], weights=pairs[ok], minlength=r_max + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = num / den
    return np.arange(r_max + 1), s2


def s2_distance(s2_a: Any, s2_b: Any) -> float:
    """Root-mean-square difference of two S₂ curves over their common radii (probability
    units, like S₂ itself); NaN radii (no pairs) are skipped.

    >>> round(s2_distance([0.5, 0.3, 0.25], [0.5, 0.3, 0.28]), 6)
    0.017321
    """
    a, b = np.asarray(s2_a, dtype=np.float64).ravel(), np.asarray(s2_b, dtype=np.float64).ravel()
    n = min(len(a), len(b))
    d = a[:n] - b[:n]
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise AnalysisError("S2 curves share no finite radii")
    return float(np.sqrt(np.mean(d**2)))


# ------------------------------------------------------------------- real-vs-real baselines


def split_half_baseline(
    data: Any, metric: Callable[[Any, Any], T], *, n_repeats: int = 1, seed: int = 0
) -> list[T]:
    """``metric(half_a, half_b)`` on ``n_repeats`` random halvings of the real set (first axis).

    >>> x = np.arange(100.0)
    >>> vals = split_half_baseline(x, wasserstein_1d, n_repeats=3)
    >>> len(vals), all(0 <= v < 20 for v in vals)
    (3, True)
    """
    arr = np.asarray(data)
    return [metric(arr[a], arr[b]) for a, b in split_half_indices(arr.shape[0], n_repeats, seed)]


def split_half_indices(n: int, n_repeats: int = 1, seed: int = 0
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The halvings of :func:`split_half_baseline`: ``n_repeats`` pairs of disjoint index
    arrays of ``n // 2`` each, one random permutation of ``range(n)`` per repeat from one
    stream seeded by ``seed``.

    >>> [(len(a), len(b)) for a, b in split_half_indices(5, 2)]
    [(2, 2), (2, 2)]
    """
    if n < 2:
        raise AnalysisError("a split-half baseline needs at least 2 real samples")
    rng = np.random.default_rng(seed)
    half = n // 2
    return [(p[:half], p[half : 2 * half]) for p in (rng.permutation(n) for _ in range(n_repeats))]


def wasserstein_baseline(
    real: Any, normalize: str | None = None, *, n_repeats: int = 5, seed: int = 0
) -> float:
    """Mean split-half :func:`wasserstein_1d` of a real property sample.

    >>> float(wasserstein_baseline(np.zeros(10)))
    0.0
    """
    vals = split_half_baseline(
        _values(real, "real sample"),
        lambda a, b: wasserstein_1d(a, b, normalize),
        n_repeats=n_repeats,
        seed=seed,
    )
    return float(np.mean(vals))


def swd_baseline(real: Any, *, n_repeats: int = 5, seed: int = 0, **swd_kwargs: Any) -> SWDResult:
    """Split-half :func:`sliced_wasserstein` of a real image set, levels averaged over
    ``n_repeats`` random halvings (one halving's value varied by ±8 % (sd) on 1000 frames of an
    NP stand-in, issue 11; five halve that)."""
    vals = split_half_baseline(
        _as_nc(real, "real images"),
        lambda a, b: sliced_wasserstein(a, b, seed=seed, **swd_kwargs),
        n_repeats=n_repeats,
        seed=seed,
    )
    return SWDResult(np.mean([v.levels for v in vals], axis=0), vals[0].sizes)


def s2_baseline(
    real_binary: Any, *, periodic: bool = True, n_repeats: int = 5, seed: int = 0
) -> float:
    """Mean split-half :func:`s2_distance` of a batch of real binary images [N, *spatial]."""

    def metric(a: np.ndarray, b: np.ndarray) -> float:
        return s2_distance(_batch_s2(a, periodic=periodic)[1], _batch_s2(b, periodic=periodic)[1])

    return float(np.mean(split_half_baseline(real_binary, metric, n_repeats=n_repeats, seed=seed)))


def _batch_s2(batch: np.ndarray, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    return two_point_correlation(batch, periodic=periodic, batch=True)
