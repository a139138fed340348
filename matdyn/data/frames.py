"""Observed frames prepared exactly as training prepares them — the one loader that the
training evaluation, the γ sweep and every case analysis use.

Training (:class:`matdyn.data.datamodule.MicroscopyDataModule`) makes each frame square
(``fit="crop"``: centre crop to the short side; ``fit="pad"``: pad to the long side with the
frame mean) and resizes it to the generator's resolution with antialiasing
(:func:`matdyn.data.transforms.resize_frames`). Comparing generated and observed frames is
only fair when both went through the same geometry, and physical sizes measured on them
only convert with the pixel size of that geometry (:func:`working_pixel_size`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "FrameSequence",
    "ObservedFrames",
    "check_fit",
    "consecutive_sequence",
    "load_observed",
    "working_pixel_size",
]

FITS = ("crop", "pad")


def check_fit(fit: str | None) -> str:
    """``fit`` checked against the allowed values ("crop", "pad"); None means "crop"."""
    fit = "crop" if fit is None else str(fit)
    if fit not in FITS:
        raise ConfigError(f"dataset.fit must be 'crop' or 'pad', got {fit!r}")
    return fit


def working_pixel_size(pixel_size: float, spatial_shape: tuple[int, ...] | list[int],
                       resolution: int, fit: str = "crop") -> float:
    """Physical size of one pixel (voxel) after squaring with ``fit`` and resizing to
    ``resolution`` px per side (same unit as ``pixel_size``).

    >>> working_pixel_size(10.0, (250, 500), 125, "crop")   # crop keeps 250 px
    20.0
    >>> working_pixel_size(10.0, (250, 500), 125, "pad")    # pad makes 500 px
    40.0
    """
    fit = check_fit(fit)
    side = min(spatial_shape) if fit == "crop" else max(spatial_shape)
    return float(pixel_size) * float(side) / float(resolution)


class ObservedFrames:
    """Frames ``indices`` of a store, in that order, made square with ``fit`` and resized
    to ``resolution``: ``load(start, stop)`` -> float32 [n, C, R, R(, R)] in the store's
    physical units. Each storage chunk is read at most once per call.
    """

    def __init__(self, store: Any, indices: Any, resolution: int, fit: str = "crop") -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.resolution = int(resolution)
        self.fit = check_fit(fit)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(store)):
            raise AnalysisError(
                f"frame indices out of range for a store of {len(store)} frames"
            )

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def pixel_size(self) -> float:
        """Pixel size of the prepared frames (store unit per px)."""
        m = self.store.meta
        return working_pixel_size(m.pixel_size, m.spatial_shape, self.resolution, self.fit)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        if idx.size == 0:
            return self.store.load(0, 0)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if hi - lo <= 4 * idx.size:  # dense enough: read the span, then pick
            return self.store.load(lo, hi)[idx - lo]
        uniq = np.unique(idx)
        block = np.asarray(self.store.images.oindex[uniq], dtype=np.float32)
        return block[np.searchsorted(uniq, idx)]

    def load(self, start: int = 0, stop: int | None = None, *, chunk: int = 256) -> np.ndarray:
        """Prepared frames ``indices[start:stop]`` -> float32 [n, C, R, ...]."""
        import torch

        from matdyn.data.transforms import resize_frames, square_frames

        idx = self.indices[start:stop]
        if idx.size == 0:
            m = self.store.meta
            return np.zeros((0, m.channels) + (self.resolution,) * m.ndim, np.float32)
        out = []
        # a block of frames at a time, so memory stays bounded on long selections
        for a in range(0, idx.size, chunk):
            x = torch.from_numpy(np.ascontiguousarray(self._read(idx[a : a + chunk])))
            x = resize_frames(square_frames(x, self.fit), self.resolution)  # type: ignore[arg-type]
            out.append(x.numpy().astype(np.float32, copy=False))
        return np.concatenate(out)


def load_observed(store: Any, indices: Any, resolution: int, fit: str = "crop") -> np.ndarray:
    """Shortcut: ``ObservedFrames(store, indices, resolution, fit).load()``."""
    return ObservedFrames(store, indices, resolution, fit).load()


@dataclass(frozen=True)
class FrameSequence:
    """Store frames in temporal order; consecutive entries of one group are compared."""

    indices: np.ndarray  # [n] store frame indices
    groups: np.ndarray | None  # [n] group ids (pairs never cross groups) or None
    description: str

    def __len__(self) -> int:
        return int(self.indices.size)

    def head(self, n: int | None) -> FrameSequence:
        if n is None or n >= len(self):
            return self
        g = None if self.groups is None else self.groups[:n]
        return FrameSequence(self.indices[:n], g, self.description)

    def window(self, start: int, n: int) -> FrameSequence:
        g = None if self.groups is None else self.groups[start : start + n]
        return FrameSequence(self.indices[start : start + n], g, self.description)


def consecutive_sequence(labels: Mapping[str, np.ndarray], n_frames: int) -> FrameSequence:
    """Which frames are consecutive in time, from the store's per-frame labels.

    ``is_augmented`` (Ta chart): only the original, non-augmented frames, in store order.
    ``particle_id`` (brass clumps, with ``stage_days``): frames sorted by particle, then
    stage; only consecutive stages of the same particle are compared. Otherwise: all
    frames in store order (a time series such as the NP video).

    >>> s = consecutive_sequence({"particle_id": np.array([1, 0, 1, 0]),
    ...                           "stage_days": np.array([3, 3, 0, 0])}, 4)
    >>> s.indices.tolist(), s.groups.tolist()
    ([3, 1, 2, 0], [0, 0, 1, 1])
    """
    idx = np.arange(int(n_frames))
    groups = None
    parts = []
    if "is_augmented" in labels:
        aug = np.asarray(labels["is_augmented"]).astype(bool)
        idx = idx[~aug[idx]]
        parts.append("non-augmented frames")
    if "particle_id" in labels:
        pid = np.asarray(labels["particle_id"])[idx]
        if "stage_days" in labels:
            order = np.lexsort((np.asarray(labels["stage_days"])[idx], pid))
            parts.append("consecutive stages of each particle")
        else:
            order = np.argsort(pid, kind="stable")
            parts.append("consecutive frames of each particle")
        idx, groups = idx[order], pid[order]
    if idx.size < 2:
        raise AnalysisError(
            f"only {idx.size} usable frame(s) for consecutive differences; the store needs "
            "at least two consecutive frames"
        )
    return FrameSequence(idx, groups, ", ".join(parts) or "all frames in store order")
