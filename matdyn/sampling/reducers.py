"""Reducers: what the variation engine does with each batch of generated images.

Protocol (all hooks optional, see :class:`Reducer`)::

    start(info)           once per run, before the first block: validate, open sinks
    begin_block(block)    per block of K references: block.images [K, C, *sp] = G(z_i), ...
    update(batch)         per batch of perturbed images (any number, in sample order)
    end_block() -> dict   per-reference outputs of the block, every array's first axis = K
    close()               once at the end, also after an error

A reducer keeps state for the *current block only*: the engine writes every ``end_block``
dict to the results directory (the checkpoint) and assembles ``result["<name>/<key>"]``
arrays [M, ...] from the blocks. So memory does not grow with M, a resumed or sharded
run produces exactly the same arrays, and reducers never see persistence.

Order inside a block is fixed: samples arrive sorted by (reference, j), and every
accumulation below runs in that order, so results do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matdyn.descriptors.composition import channel_iqr, iqr_variance
from matdyn.descriptors.differences import MetricFilter, cached_masks
from matdyn.descriptors.particles import Binarizer
from matdyn.errors import ConfigError

__all__ = [
    "FilteredMean",
    "IQRVariance",
    "LatentStats",
    "ReferenceBlock",
    "Reducer",
    "RunInfo",
    "SampleMetrics",
    "VariationBatch",
    "ZarrImageSink",
]

KeepFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class RunInfo:
    """Facts about a run, given to :meth:`Reducer.start`."""

    n_refs: int  # M, all references of the run (not only this shard)
    n_samples: int  # N perturbed images per reference
    latent_dim: int
    image_shape: tuple[int, ...]  # (C, *spatial)
    metric_names: tuple[str, ...]
    seed: int


@dataclass
class ReferenceBlock:
    """K consecutive references and their images; ``states`` = metric.prepare(images)."""

    index: int
    ref_indices: np.ndarray  # [K] int64, global reference indices (consecutive)
    latents: np.ndarray  # [K, d] float32, z_i
    images: np.ndarray  # [K, C, *spatial] float32, G(z_i)
    states: dict[str, Any] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)  # memoised masks etc. of the reference images

    def __len__(self) -> int:
        return int(self.ref_indices.size)


@dataclass
class VariationBatch:
    """B perturbed images of one block, rows sorted by (reference, sample)."""

    block: ReferenceBlock
    ref_indices: np.ndarray  # [B] int64 global i
    sample_indices: np.ndarray  # [B] int64 j in 0..N-1
    ref_slots: np.ndarray  # [B] int64 row of block.images / block.latents
    images: np.ndarray  # [B, C, *spatial] float32, G(z_i + ε_ij)
    perturbations: np.ndarray  # [B, d] float32, ε_ij
    metrics: dict[str, np.ndarray]  # name -> [B] float64, difference vs G(z_i)
    cache: dict = field(default_factory=dict)  # memoised masks etc. of ``images``

    def __len__(self) -> int:
        return int(self.ref_indices.size)


class Reducer:
    """Base class with no-op hooks. Subclasses set ``name`` (unique per run) and
    ``requires`` (metric names they read from ``batch.metrics``)."""

    name: str = "reducer"
    requires: tuple[str, ...] = ()

    def start(self, info: RunInfo) -> None:
        """Called once before the first block."""

    def begin_block(self, block: ReferenceBlock) -> None:
        """Called with the reference images of a new block."""

    def update(self, batch: VariationBatch) -> None:
        """Called for every batch of perturbed images of the current block."""

    def end_block(self) -> dict[str, np.ndarray]:
        """Per-reference outputs of the finished block (first axis K)."""
        return {}

    def close(self) -> None:
        """Called once at the end of a run, also after an error."""

    def fingerprint(self) -> str:
        """Text that must match when a run resumes from a results directory."""
        return repr(self)


def _keep(keep: MetricFilter | KeepFn | None, batch: VariationBatch) -> np.ndarray:
    if keep is None:
        return np.ones(len(batch), dtype=bool)
    mask = np.asarray(keep(batch.metrics), dtype=bool)
    if mask.shape != (len(batch),):
        raise ConfigError(f"keep predicate returned shape {mask.shape}, expected ({len(batch)},)")
    return mask


def _requires(keep: MetricFilter | KeepFn | None) -> tuple[str, ...]:
    return tuple(getattr(keep, "names", ()))


class SampleMetrics(Reducer):
    """Per-sample difference metrics: ``metrics/<name>`` [M, N] float64 (NaN = not computed).

    ``names=None`` keeps every metric of the engine.
    """

    def __init__(self, names: Sequence[str] | None = None, name: str = "metrics") -> None:
        self.names = None if names is None else tuple(names)
        self.name = name
        self.requires = self.names or ()
        self._arrays: dict[str, np.ndarray] = {}

    def start(self, info: RunInfo) -> None:
        self._names = self.names if self.names is not None else info.metric_names
        self._n = info.n_samples

    def begin_block(self, block: ReferenceBlock) -> None:
        self._arrays = {k: np.full((len(block), self._n), np.nan) for k in self._names}

    def update(self, batch: VariationBatch) -> None:
        for k, arr in self._arrays.items():
            arr[batch.ref_slots, batch.sample_indices] = batch.metrics[k]

    def end_block(self) -> dict[str, np.ndarray]:
        out, self._arrays = self._arrays, {}
        return out

    def __repr__(self) -> str:
        return f"SampleMetrics(names={self.names!r}, name={self.name!r})"


class FilteredMean(Reducer):
    """Pixel-wise mean of the retained samples of each reference (paper §3.3.2).

    Outputs ``mean`` [M, C, *sp] float32, ``n_kept`` [M] and, with ``store_reference``,
    ``reference`` [M, C, *sp]. ``include_reference`` averages G(z_i) in too (it belongs to
    the variation V_i, Eq. 3, and keeps the mean defined when no sample passes); otherwise
    a reference with no retained sample gets a NaN image.
    """

    def __init__(
        self,
        keep: MetricFilter | KeepFn | None = None,
        include_reference: bool = True,
        store_reference: bool = True,
        name: str = "mean",
    ) -> None:
        self.keep = keep
        self.include_reference = bool(include_reference)
        self.store_reference = bool(store_reference)
        self.name = name
        self.requires = _requires(keep)

    def begin_block(self, block: ReferenceBlock) -> None:
        self._block = block
        self._sum = np.zeros(block.images.shape, dtype=np.float64)  # [K, C, *sp]
        if self.include_reference:
            self._sum += block.images
        self._kept = np.zeros(len(block), dtype=np.int64)

    def update(self, batch: VariationBatch) -> None:
        keep = _keep(self.keep, batch)
        # add one image at a time, in sample order: the sums do not depend on batching
        for row in np.flatnonzero(keep):
            self._sum[batch.ref_slots[row]] += batch.images[row]
        np.add.at(self._kept, batch.ref_slots[keep], 1)

    def end_block(self) -> dict[str, np.ndarray]:
        count = self._kept + int(self.include_reference)
        shape = (-1,) + (1,) * (self._sum.ndim - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self._sum / count.reshape(shape)).astype(np.float32)
        out = {"mean": mean, "n_kept": self._kept}
        if self.store_reference:
            out["reference"] = self._block.images
        self._sum = self._block = None  # type: ignore[assignment]
        return out

    def __repr__(self) -> str:
        return (
            f"FilteredMean(keep={self.keep!r}, include_reference={self.include_reference}, "
            f"store_reference={self.store_reference}, name={self.name!r})"
        )


class IQRVariance(Reducer):
    """Per-sample channel IQRs and their variance over the retained samples (paper §3.4.2).

    Outputs ``iqr`` [M, N, C] (NaN for rejected samples), ``kept`` [M, N] bool,
    ``n_kept`` [M] and ``iqr_var`` [M, C] = [Var(IQR_c)]_c. With ``mask`` the IQR is
    taken inside each sample's own mask (e.g. the clump, ``Binarizer(channel=None)``).
    """

    def __init__(
        self,
        keep: MetricFilter | KeepFn | None = None,
        mask: Binarizer | None = None,
        ddof: int = 0,
        name: str = "iqr",
    ) -> None:
        self.keep = keep
        self.mask = mask
        self.ddof = int(ddof)
        self.name = name
        self.requires = _requires(keep)

    def start(self, info: RunInfo) -> None:
        self._n, self._c = info.n_samples, info.image_shape[0]

    def begin_block(self, block: ReferenceBlock) -> None:
        self._iqr = np.full((len(block), self._n, self._c), np.nan)
        self._kept = np.zeros((len(block), self._n), dtype=bool)

    def update(self, batch: VariationBatch) -> None:
        keep = _keep(self.keep, batch)
        if not keep.any():
            return
        rows = np.flatnonzero(keep)
        images = batch.images if rows.size == len(batch) else batch.images[rows]
        if self.mask is None:
            vals = channel_iqr(images)
        else:
            masks = cached_masks(self.mask, batch.images, batch.cache)
            vals = channel_iqr(images, mask=masks if rows.size == len(batch) else masks[rows])
        self._iqr[batch.ref_slots[rows], batch.sample_indices[rows]] = vals
        self._kept[batch.ref_slots[rows], batch.sample_indices[rows]] = True

    def end_block(self) -> dict[str, np.ndarray]:
        var = np.stack([iqr_variance(v, k, self.ddof) for v, k in zip(self._iqr, self._kept)])
        return {
            "iqr": self._iqr,
            "kept": self._kept,
            "n_kept": self._kept.sum(axis=1),
            "iqr_var": var,
        }

    def __repr__(self) -> str:
        return f"IQRVariance(keep={self.keep!r}, mask={self.mask!r}, ddof={self.ddof}, name={self.name!r})"


class LatentStats(Reducer):
    """Reference latents ``z`` [M, d], the paper's per-dimension distance mean‖ε‖/d [M] and
    the mean angular step between z and z + ε [M] (radians)."""

    def __init__(self, name: str = "latent") -> None:
        self.name = name

    def start(self, info: RunInfo) -> None:
        self._n, self._d = info.n_samples, info.latent_dim

    def begin_block(self, block: ReferenceBlock) -> None:
        self._z = block.latents.astype(np.float64)
        self._norm = np.full((len(block), self._n), np.nan)
        self._angle = np.full((len(block), self._n), np.nan)

    def update(self, batch: VariationBatch) -> None:
        eps = batch.perturbations.astype(np.float64)
        z = self._z[batch.ref_slots]
        zp = z + eps
        cos = np.sum(z * zp, axis=1) / (np.linalg.norm(z, axis=1) * np.linalg.norm(zp, axis=1))
        self._norm[batch.ref_slots, batch.sample_indices] = np.linalg.norm(eps, axis=1)
        self._angle[batch.ref_slots, batch.sample_indices] = np.arccos(np.clip(cos, -1.0, 1.0))

    def end_block(self) -> dict[str, np.ndarray]:
        return {
            "z": self._z.astype(np.float32),
            "per_dim_distance": self._norm.mean(axis=1) / self._d,
            "angular_step": self._angle.mean(axis=1),
        }

    def __repr__(self) -> str:
        return f"LatentStats(name={self.name!r})"


class ZarrImageSink(Reducer):
    """Writes every image to a zarr array [M, 1 + N, C, *spatial]: index 0 is G(z_i),
    1 + j is G(z_i + ε_ij). One chunk never spans two references, so shards can write into
    the same array. Re-running a block rewrites the same values."""

    def __init__(
        self,
        path: str | Path,
        dtype: str = "float32",
        chunk_samples: int = 16,
        name: str = "images",
    ) -> None:
        if np.dtype(dtype).kind != "f":
            raise ConfigError(f"ZarrImageSink.dtype must be a float type, got {dtype!r}")
        if chunk_samples < 1:
            raise ConfigError(f"ZarrImageSink.chunk_samples must be >= 1, got {chunk_samples}")
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.chunk_samples = int(chunk_samples)
        self.name = name
        self.array: Any = None

    def start(self, info: RunInfo) -> None:
        import zarr

        shape = (info.n_refs, 1 + info.n_samples) + tuple(info.image_shape)
        try:
            arr = zarr.open_array(str(self.path), mode="r+")
        except FileNotFoundError:
            chunks = (1, min(self.chunk_samples, shape[1])) + tuple(info.image_shape)
            try:
                arr = zarr.create_array(
                    store=str(self.path),
                    shape=shape,
                    chunks=chunks,
                    dtype=self.dtype,
                    fill_value=np.nan,
                )
            except zarr.errors.ContainsArrayError:  # another shard created it meanwhile
                arr = zarr.open_array(str(self.path), mode="r+")
        if tuple(arr.shape) != shape or np.dtype(arr.dtype) != self.dtype:
            raise ConfigError(
                f"zarr sink {self.path} holds {arr.shape} {arr.dtype}, this run needs {shape} "
                f"{self.dtype}; choose another path or delete it"
            )
        self.array = arr

    def begin_block(self, block: ReferenceBlock) -> None:
        i0 = int(block.ref_indices[0])
        self.array[i0 : i0 + len(block), 0] = block.images.astype(self.dtype, copy=False)

    def update(self, batch: VariationBatch) -> None:
        images = batch.images.astype(self.dtype, copy=False)
        # rows of one reference are contiguous and have consecutive j
        cuts = np.flatnonzero(np.diff(batch.ref_slots)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(batch)]):
            i, j0 = int(batch.ref_indices[a]), int(batch.sample_indices[a])
            self.array[i, 1 + j0 : 1 + j0 + (b - a)] = images[a:b]

    def __repr__(self) -> str:
        return (
            f"ZarrImageSink(path={str(self.path)!r}, dtype={self.dtype.name!r}, name={self.name!r})"
        )
