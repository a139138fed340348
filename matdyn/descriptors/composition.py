"""Compositional descriptors of multi-channel images/volumes (brass clumps, paper §3.4).

Inputs are batches [B, C, *spatial] of per-channel densities (Cu, Cu₂S, CuS for XAFS-CT).
All deviations are relative fractions (multiply by 100 for the paper's percentages).
"""

from __future__ import annotations

import numpy as np

from matdyn.errors import AnalysisError

__all__ = [
    "channel_iqr",
    "channel_mass",
    "density_difference",
    "iqr_variance",
    "mass_deviation",
]


def _check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim not in (4, 5) or x.shape[0] == 0:
        raise AnalysisError(
            f"expected a batch [B, C, H, W] or [B, C, D, H, W], got shape {x.shape}; "
            "add batch/channel axes with x[None] / x[:, None]"
        )
    return x


def _mask_batch(mask: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Broadcast a mask [*spatial] or [B, *spatial] to [B, P] bool."""
    m = np.asarray(mask, dtype=bool)
    spatial = images.shape[2:]
    if m.shape == spatial:
        m = np.broadcast_to(m, (images.shape[0],) + spatial)
    if m.shape != (images.shape[0],) + spatial:
        raise AnalysisError(f"mask shape {m.shape} does not fit images {images.shape}")
    return m.reshape(images.shape[0], -1)


def _relative(diff: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|diff| / |ref| with 0/0 = 0 and x/0 = inf."""
    diff, ref = np.abs(diff), np.abs(ref)
    out = np.where(diff > 0, np.inf, 0.0)
    return np.divide(diff, ref, out=out, where=ref > 0)


def channel_mass(
    images: np.ndarray, mask: np.ndarray | None = None, voxel_size: float | None = None
) -> np.ndarray:
    """Total mass (sum of density) per channel of each image -> [B, C] float64.

    Optionally only inside ``mask`` ([*spatial] or [B, *spatial]) and scaled by the voxel
    volume ``voxel_size**ndim`` (physical units; 0.65 µm voxels for the brass case).

    >>> x = np.ones((1, 2, 2, 2)); x[0, 1] *= 3
    >>> channel_mass(x).tolist()
    [[4.0, 12.0]]
    >>> channel_mass(x, mask=np.eye(2, dtype=bool), voxel_size=0.5).tolist()
    [[0.5, 1.5]]
    """
    x = _check_images(images)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    if mask is None:
        mass = flat.sum(axis=-1, dtype=np.float64)
    else:
        m = _mask_batch(mask, x).astype(flat.dtype)
        mass = np.einsum("bcp,bp->bc", flat, m, dtype=np.float64)
    if voxel_size is not None:
        mass = mass * float(voxel_size) ** (x.ndim - 2)
    return mass


def mass_deviation(
    mass: np.ndarray, reference: np.ndarray, *, per_channel: bool = False
) -> np.ndarray:
    """Relative deviation of mass from a reference mass, |M - M_ref| / M_ref.

    ``mass`` is [B, C] (from :func:`channel_mass`), ``reference`` [C] or [B, C]. By default
    the total over channels is compared -> [B] (the paper's "compositional mass deviation",
    filter ≤ 20 %, §3.4.2); ``per_channel=True`` gives [B, C].

    >>> mass_deviation(np.array([[1.0, 2.0], [2.0, 2.0]]), np.array([1.0, 2.0])).tolist()
    [0.0, 0.3333333333333333]
    >>> mass_deviation(np.array([[1.5, 2.0]]), np.array([1.0, 2.0]), per_channel=True).tolist()
    [[0.5, 0.0]]
    """
    mass = np.asarray(mass, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if mass.ndim != 2 or ref.shape[-1] != mass.shape[1] or ref.ndim > 2:
        raise AnalysisError(
            f"mass_deviation: mass {mass.shape} and reference {ref.shape} do not match"
        )
    if per_channel:
        return _relative(mass - ref, np.broadcast_to(ref, mass.shape))
    total, ref_total = mass.sum(axis=1), ref.sum(axis=-1)
    return _relative(total - ref_total, np.broadcast_to(ref_total, total.shape))


def density_difference(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Voxel-wise total density difference, sum_v |ρ(v) - ρ_ref(v)| / sum_v |ρ_ref(v)| -> [B].

    ρ is the density summed over channels. ``reference`` is [C, *spatial] (shared) or a
    batch [B, C, *spatial]. This is the paper's "total compositional density difference"
    of the continuity curve (Fig. 7d).

    >>> ref = np.ones((1, 2, 2))
    >>> x = np.stack([ref, 2 * ref, ref * 0])
    >>> density_difference(x, ref).tolist()
    [0.0, 1.0, 1.0]
    """
    x = _check_images(images)
    ref = np.asarray(reference)
    if ref.shape != x.shape and ref.shape != x.shape[1:]:
        raise AnalysisError(
            f"density_difference: reference {ref.shape} does not fit images {x.shape}"
        )
    n = x.shape[0]
    rho = x.sum(axis=1, dtype=np.float64).reshape(n, -1)
    rho_ref = ref.sum(axis=-x.ndim + 1, dtype=np.float64).reshape(-1, rho.shape[1])
    diff = np.abs(rho - rho_ref).sum(axis=1)
    return _relative(diff, np.broadcast_to(np.abs(rho_ref).sum(axis=1), diff.shape))


def channel_iqr(images: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Interquartile range (p75 - p25, linear interpolation) of the values of each channel.

    Optionally only over voxels inside ``mask`` ([*spatial] or [B, *spatial]); an empty
    mask gives NaN. Returns [B, C] float64. Matches ``np.percentile(..., [25, 75])``.

    >>> x = np.arange(8, dtype=float).reshape(1, 2, 2, 2)
    >>> channel_iqr(x).tolist()
    [[1.5, 1.5]]
    >>> channel_iqr(x, mask=np.array([[True, True], [True, False]])).tolist()
    [[1.0, 1.0]]
    """
    x = _check_images(images)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).astype(np.float64)
    if mask is None:
        q25, q75 = np.percentile(flat, [25.0, 75.0], axis=-1)
        return q75 - q25
    m = _mask_batch(mask, x)
    flat[~np.broadcast_to(m[:, None, :], flat.shape)] = np.nan
    flat.sort(axis=-1)  # NaNs go last
    count = np.broadcast_to(m.sum(axis=1)[:, None], (n, c))
    out = []
    for q in (0.25, 0.75):
        pos = (count - 1) * q
        lo = np.floor(pos).astype(np.int64).clip(0)
        hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
        t = pos - lo
        a = np.take_along_axis(flat, lo[..., None], axis=-1)[..., 0]
        b = np.take_along_axis(flat, hi[..., None], axis=-1)[..., 0]
        # same lerp as numpy: stable at both ends of the interval
        v = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
        out.append(np.where(count > 0, v, np.nan))
    return out[1] - out[0]


def iqr_variance(iqr: np.ndarray, keep: np.ndarray | None = None, ddof: int = 0) -> np.ndarray:
    """Variance over samples of per-channel IQRs: [N, C] (+ keep [N]) -> [C].

    The brass-clump descriptor [Var(IQR_Cu), Var(IQR_Cu2S), Var(IQR_CuS)] of one material
    variation (paper §3.4.2), over its valid samples. NaN when fewer than ``ddof + 1``
    samples are kept.

    >>> iqr_variance(np.array([[1.0, 0.0], [3.0, 0.0], [9.0, 9.0]]), keep=np.array([1, 1, 0], bool)).tolist()
    [1.0, 0.0]
    """
    v = np.asarray(iqr, dtype=np.float64)
    if v.ndim != 2:
        raise AnalysisError(f"iqr_variance takes IQRs [N, C], got shape {v.shape}")
    if keep is not None:
        v = v[np.asarray(keep, dtype=bool)]
    if v.shape[0] <= ddof:
        return np.full(v.shape[1], np.nan)
    return v.var(axis=0, ddof=ddof)
