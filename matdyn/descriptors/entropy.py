"""Image Shannon entropy, exact and batched.

Two definitions live here, and they differ on float images:

* :func:`shannon_entropy` is scikit-image's ``skimage.measure.shannon_entropy``:
  ``-sum p_k log2 p_k`` over the *distinct values present* in the image. On integer images
  this is the usual grey-level entropy. On float images almost every pixel value is
  distinct, so the result is close to ``log2(n_pixels)`` whatever the image shows: use it
  on integer (already quantised) images only.
* :func:`shannon_entropy_batch` quantises each image to ``bins`` levels first (uniform bins
  over ``value_range`` or over each image's own min..max) and then applies the same
  formula, vectorised over the batch with one ``bincount``. On an image quantised with
  :func:`quantize` it equals :func:`shannon_entropy` exactly (up to float rounding). The
  paper's entropy differences (§3.3.1) and our continuity baseline use this one.
"""

from __future__ import annotations

import math

import numpy as np

from matdyn.errors import AnalysisError, ConfigError

__all__ = ["quantize", "shannon_entropy", "shannon_entropy_batch"]


def _as_batch(images: np.ndarray) -> np.ndarray:
    """View a batch [B, ...] as [B, P] (no copy when contiguous)."""
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0 or images[0].size == 0:
        raise AnalysisError(
            f"entropy needs a non-empty batch of images [B, ...], got shape {images.shape}; "
            "add a leading batch axis with image[None]"
        )
    return images.reshape(images.shape[0], -1)


def _check_bins(bins: int, value_range: tuple[float, float] | None) -> None:
    if int(bins) != bins or bins < 1:
        raise ConfigError(f"bins must be a positive integer, got {bins!r}")
    if value_range is not None:
        lo, hi = value_range
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ConfigError(f"value_range must be finite with high > low, got {value_range!r}")


def shannon_entropy(image: np.ndarray, base: float = 2.0) -> float:
    """Shannon entropy over the distinct values of ``image`` (scikit-image's definition).

    ``S = -sum_k p_k log(p_k) / log(base)`` where ``p_k`` is the fraction of pixels equal to
    the k-th distinct value. On float images this counts unique floats; quantise first
    (:func:`quantize`) or use :func:`shannon_entropy_batch`.

    >>> shannon_entropy(np.array([[0, 0], [1, 1]]))
    1.0
    >>> shannon_entropy(np.zeros((4, 4)))
    0.0
    """
    values = np.asarray(image).ravel()
    if values.size == 0:
        raise AnalysisError("shannon_entropy needs a non-empty image")
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    return float(abs(-(p * np.log(p)).sum() / math.log(base)))


def quantize(
    images: np.ndarray, bins: int = 256, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Quantise each image of a batch [B, ...] to integer levels 0..bins-1.

    Bins are uniform over ``value_range`` (values outside are clipped into the end bins) or,
    when it is None, over each image's own min..max. Bin k holds values in
    ``[lo + k*w, lo + (k+1)*w)`` with ``w = (hi - lo) / bins``; the maximum falls in the
    last bin. A constant image maps to level 0.

    >>> quantize(np.array([[0.0, 0.5, 1.0]]), bins=2)
    array([[0, 1, 1]])
    >>> quantize(np.array([[0.0, 0.5, 1.0]]), bins=4, value_range=(0.0, 2.0))
    array([[0, 1, 2]])
    """
    _check_bins(bins, value_range)
    x = _as_batch(images).astype(np.float64)  # [B, P]
    if value_range is None:
        lo = x.min(axis=1, keepdims=True)
        width = x.max(axis=1, keepdims=True) - lo
    else:
        lo = np.full((x.shape[0], 1), float(value_range[0]))
        width = np.full((x.shape[0], 1), float(value_range[1]) - float(value_range[0]))
    scale = np.divide(bins, width, out=np.zeros_like(width), where=width > 0)
    x -= lo
    x *= scale
    np.floor(x, out=x)
    np.clip(x, 0, bins - 1, out=x)
    return x.astype(np.int64).reshape(np.shape(images))


def shannon_entropy_batch(
    images: np.ndarray,
    bins: int | None = 256,
    value_range: tuple[float, float] | None = None,
    base: float = 2.0,
) -> np.ndarray:
    """Shannon entropy of every image in a batch [B, ...], vectorised; returns [B] float64.

    With ``bins`` (default 256, as in our CPU prototype) each image is quantised by
    :func:`quantize` and the histogram of all images is taken by one ``bincount``; the
    result equals ``shannon_entropy(quantize(images, bins, value_range)[b])``. With
    ``bins=None`` the distinct values of each image are counted (scikit-image's definition,
    exact for integer images) by a row-wise sort.

    >>> imgs = np.array([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.1], [0.2, 0.3]]])
    >>> shannon_entropy_batch(imgs, bins=4).round(6)
    array([1., 2.])
    >>> shannon_entropy_batch(np.array([[1, 1, 2, 7]]), bins=None).round(6)
    array([1.5])
    """
    if bins is None:
        flat = _as_batch(images)
        n_img, n_pix = flat.shape
        s = np.sort(flat, axis=1)
        starts = np.ones((n_img, n_pix), dtype=bool)
        np.not_equal(s[:, 1:], s[:, :-1], out=starts[:, 1:])
        rows, cols = np.nonzero(starts)  # run starts, row-major
        ends = np.empty_like(cols)
        ends[:-1] = cols[1:]
        ends[-1] = n_pix
        last_in_row = np.empty(rows.size, dtype=bool)
        last_in_row[:-1] = rows[1:] != rows[:-1]
        last_in_row[-1] = True
        ends[last_in_row] = n_pix
        p = (ends - cols) / n_pix
    else:
        q = quantize(images, bins, value_range).reshape(np.shape(images)[0], -1)
        n_img, n_pix = q.shape
        q += (np.arange(n_img, dtype=np.int64) * bins)[:, None]
        counts = np.bincount(q.ravel(), minlength=n_img * bins)
        nz = np.flatnonzero(counts)
        rows = nz // bins
        p = counts[nz] / n_pix
    h = np.bincount(rows, weights=-p * np.log(p), minlength=n_img) / math.log(base)
    return np.abs(h)  # abs turns -0.0 into 0.0 for constant images
