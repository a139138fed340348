"""LightningDataModule serving any dataset store at the resolution a training stage asks for.

Frames are loaded once into RAM (stores in this project are at most a few GB), made square
by a centre crop or pad, resized with antialiasing to the top training resolution and
scaled to [-1, 1] per channel (robust limits: :mod:`matdyn.data.scaling`). Lower stage
resolutions are average-pooled from the top resolution (as progressive GANs downsample
their reals) and cached. The batch sampler reads
the current batch size lazily, so a stage switch (`set_stage`) takes effect at the next
batch without rebuilding the dataloader (Lightning issues #19286, #21448).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from matdyn.data.scaling import PERCENTILES, outlier_message, robust_limits
from matdyn.data.store import StoreMeta, open_store
from matdyn.data.transforms import Fit, is_power_of_two, resize_frames, square_frames  # noqa: F401
from matdyn.errors import ConfigError, StoreError

Norm = Literal["auto", "percentile", "minmax", "norm_term"]
log = logging.getLogger("matdyn.data")


class _StageBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose size is read from the DataModule at every batch."""

    def __init__(self, dm: MicroscopyDataModule) -> None:
        self.dm = dm
        self.epoch = 0

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        _, world = self._rank_world()
        n = max(1, self.dm.n_frames // world)
        return max(1, n // min(self.dm.batch_size, n))

    def __iter__(self) -> Iterator[list[int]]:
        # same permutation on every rank (same seed and epoch); each rank takes its own slice,
        # so DDP processes see disjoint real images (batch_size is per process)
        g = torch.Generator().manual_seed(self.dm.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        rank, world = self._rank_world()
        order = torch.randperm(self.dm.n_frames, generator=g).tolist()
        order = order[rank : len(order) - len(order) % world : world] if world > 1 else order
        i = 0
        while True:
            bs = min(self.dm.batch_size, len(order))
            if i + bs > len(order):
                return  # drop the incomplete tail: minibatch-stddev needs full batches
            yield order[i : i + bs]
            i += bs


class MicroscopyDataModule(pl.LightningDataModule):
    """Serve a dataset store for progressive training.

    Args:
        path: dataset store (zarr) path.
        resolution: top training resolution (power of two); frames are resized to it.
        batch_size: initial batch size (changed by :meth:`set_stage`).
        seed: shuffling seed (epoch e uses a stream derived from seed and e).
        fit: how non-square frames become square: centre ``crop`` or ``pad``.
        normalization: ``percentile`` maps each channel's robust limits (the
            ``percentiles``, default 0.01 % / 99.99 %) to [-1, 1] and clips beyond them, so
            a few outlier pixels cannot dictate the scale (a one-line warning says when they
            would have); ``minmax`` maps each channel's full data range to [-1, 1];
            ``norm_term`` uses the store's ``norm_term`` (the paper authors' convention
            (x - norm) / norm); ``auto`` picks ``norm_term`` when the store has one, else
            ``percentile``.
        max_frames: load only the first frames (quick experiments).
        percentiles: (low, high) percentiles in % for ``percentile`` scaling.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resolution: int,
        batch_size: int = 16,
        seed: int = 0,
        fit: Fit = "crop",
        normalization: Norm = "auto",
        max_frames: int | None = None,
        percentiles: tuple[float, float] = PERCENTILES,
    ) -> None:
        super().__init__()
        if not is_power_of_two(int(resolution)) or resolution < 4:
            raise ConfigError(
                f"resolution {resolution} is not a power of two >= 4; use e.g. 16, 32, 64, 128"
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if fit not in ("crop", "pad"):
            raise ConfigError(f"fit must be 'crop' or 'pad', got {fit!r}")
        if normalization not in ("auto", "percentile", "minmax", "norm_term"):
            raise ConfigError(f"normalization must be auto, percentile, minmax or norm_term, "
                              f"got {normalization!r}")
        lo_p, hi_p = (float(p) for p in percentiles)
        if not 0 <= lo_p < hi_p <= 100:
            raise ConfigError(f"percentiles must be 0 <= low < high <= 100, got {percentiles}")
        self.percentiles = (lo_p, hi_p)
        self.path = str(path)
        self.resolution = int(resolution)
        self.batch_size = int(batch_size)
        self.stage_resolution = int(resolution)
        self.seed = int(seed)
        self.fit: Fit = fit
        self.normalization_mode: Norm = normalization
        self.max_frames = max_frames
        self.meta: StoreMeta | None = None
        self.normalization: dict[str, Any] = {}
        self._data: dict[int, torch.Tensor] = {}
        self._sampler: _StageBatchSampler | None = None

    # -- properties --------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self._require_meta().channels

    @property
    def ndim(self) -> int:
        return self._require_meta().ndim

    @property
    def n_frames(self) -> int:
        return int(self._data[self.resolution].shape[0])

    @property
    def pixel_size(self) -> float:
        """Physical size of one pixel at the top training resolution (store unit)."""
        m = self._require_meta()
        side = min(m.spatial_shape) if self.fit == "crop" else max(m.spatial_shape)
        return m.pixel_size * side / self.resolution

    def _require_meta(self) -> StoreMeta:
        if self.meta is None:
            self.setup("fit")
        assert self.meta is not None
        return self.meta

    # -- loading -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._data:
            return
        store = open_store(self.path)
        self.meta = store.meta
        n = len(store) if self.max_frames is None else min(len(store), int(self.max_frames))
        if n < 2:
            raise StoreError(
                f"{self.path}: {n} frame(s); training needs at least 2 (minibatch statistics)"
            )
        # load and resize in chunks so peak memory stays near the resized dataset size
        chunks = []
        step = max(1, store.images.chunks[0])
        for i in range(0, n, step):
            x = torch.from_numpy(store.load(i, min(n, i + step)))
            chunks.append(resize_frames(square_frames(x, self.fit), self.resolution))
        data = torch.cat(chunks)  # [N, C, *spatial] physical units
        mode = self._resolved_norm(store.meta)
        offset, scale, info = self._norm_params(data, store.meta, mode)
        shape = (1, -1) + (1,) * self.meta.ndim
        data = (data - offset.view(shape)) / scale.view(shape)
        if mode == "percentile":
            data = data.clamp_(-1.0, 1.0)  # outliers saturate; in-range values invert exactly
        self.normalization = {
            "mode": mode,
            "offset": offset.tolist(),
            "scale": scale.tolist(),
            "pixel_size": self.pixel_size,
            "unit": store.meta.unit,
            **info,
        }
        self._data = {self.resolution: data.contiguous()}

    def _resolved_norm(self, meta: StoreMeta) -> str:
        if self.normalization_mode == "auto":
            return "norm_term" if "norm_term" in meta.extra else "percentile"
        return self.normalization_mode

    def _norm_params(self, data: torch.Tensor, meta: StoreMeta,
                     mode: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """offset, scale with x_n = (x - offset) / scale, and what to record beside them."""
        c = data.shape[1]
        if mode == "norm_term":
            if "norm_term" not in meta.extra:
                raise StoreError(f"{self.path}: normalization='norm_term' but the store has no "
                                 "norm_term attribute; use normalization=percentile")
            norm = torch.as_tensor(meta.extra["norm_term"], dtype=torch.float32).flatten()
            norm = norm.expand(c) if norm.numel() == 1 else norm
            # paper authors' convention: x_n = (x - norm) / norm  =>  offset = scale = norm
            return norm.clone(), norm.abs().clamp_min(1e-12).clone(), {}
        step = 256
        arr = data.numpy()
        lims = robust_limits((arr[i: i + step] for i in range(0, len(arr), step)), len(arr),
                             self.percentiles)
        info: dict[str, Any] = {"range": [[lim.vmin, lim.vmax] for lim in lims]}
        if mode == "minmax":
            lo = torch.tensor([lim.vmin for lim in lims], dtype=torch.float32)
            hi = torch.tensor([lim.vmax for lim in lims], dtype=torch.float32)
        else:
            lo = torch.tensor([lim.lo for lim in lims], dtype=torch.float32)
            hi = torch.tensor([lim.hi for lim in lims], dtype=torch.float32)
            info.update(percentiles=list(self.percentiles),
                        limits=[[lim.lo, lim.hi] for lim in lims],
                        clipped=[lim.n_out for lim in lims])
            msg = outlier_message(lims, self.meta.channel_names if self.meta else [],
                                  self.path, self.percentiles)
            if msg:
                log.warning(msg)
        offset = (hi + lo) / 2
        scale = ((hi - lo) / 2).clamp_min(1e-12)
        return offset, scale, info

    def images_at(self, resolution: int) -> torch.Tensor:
        """The whole dataset at `resolution` in [-1, 1] (average-pooled from the top resolution)."""
        self.setup()
        if resolution not in self._data:
            if not is_power_of_two(resolution) or resolution > self.resolution or resolution < 4:
                raise ConfigError(
                    f"stage resolution {resolution} must be a power of two between 4 and "
                    f"the top training resolution {self.resolution}"
                )
            self._data[resolution] = resize_frames(self._data[self.resolution], resolution)
        return self._data[resolution]

    def to_physical(self, x: torch.Tensor) -> torch.Tensor:
        """Map [-1, 1] images back to physical units (inverse of the normalisation)."""
        self.setup()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        off = torch.tensor(self.normalization["offset"], dtype=x.dtype, device=x.device).view(shape)
        sc = torch.tensor(self.normalization["scale"], dtype=x.dtype, device=x.device).view(shape)
        return x * sc + off

    # -- stages --------------------------------------------------------------------------------
    def set_stage(self, resolution: int, batch_size: int) -> None:
        """Serve `batch_size` images at `resolution` from the next batch on."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.images_at(int(resolution))  # validates and caches
        self.stage_resolution = int(resolution)
        self.batch_size = int(batch_size)

    def _collate(self, idx: list[int]) -> torch.Tensor:
        data = self.images_at(self.stage_resolution)
        return data[torch.as_tensor(idx, dtype=torch.long)]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if self._sampler is None:
            self._sampler = _StageBatchSampler(self)
        # num_workers=0 on purpose: data sits in RAM and stage changes must reach the collate
        return DataLoader(range(self.n_frames), batch_sampler=self._sampler, collate_fn=self._collate)

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "stage_resolution": self.stage_resolution,
            "batch_size": self.batch_size,
            "sampler_epoch": self._sampler.epoch if self._sampler else 0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage_resolution = int(state.get("stage_resolution", self.resolution))
        self.batch_size = int(state.get("batch_size", self.batch_size))
        if self._sampler is None:
            self._sampler = _StageBatchSampler(self)
        self._sampler.epoch = int(state.get("sampler_epoch", 0))


def resolution_for(side: int, maximum: int) -> int:
    """Largest power of two <= min(side, maximum) (the default training resolution)."""
    return int(2 ** math.floor(math.log2(max(4, min(side, maximum)))))

