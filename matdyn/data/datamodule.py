"""LightningDataModule serving any dataset store at the resolution a training stage asks for.

Frames are loaded once into RAM (stores in this project are at most a few GB), made square
by a centre crop or pad, resized with antialiasing to the top training resolution and
scaled to [-1, 1] per channel (robust limits: :mod:`matdyn.data.scaling`). Lower stage
resolutions are average-pooled from the top resolution (as progressive GANs downsample
their reals) and cached.

Batches are drawn when Lightning hands them to the model (``on_before_batch_transfer``), not
when its loop prefetches them: the dataloader yields placeholders, and the hook takes the
next indices from :class:`FrameOrder` at the current stage's resolution and batch size. So a
stage switch (`set_stage`) takes effect at the very next batch without rebuilding the
dataloader (Lightning issues #19286, #21448), even the batch that straddles the switch, and
the order's position saved in a checkpoint (``state_dict``) is exactly the batches trained
on: a resumed run, mid-epoch included, sees the frames an uninterrupted one would (issue 13).
Used on its own (no Trainer attached), the dataloader draws real batches at once.
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

from matdyn.data.scaling import PERCENTILES, Transform, outlier_message, robust_limits, untransform
from matdyn.data.store import StoreMeta, open_store
from matdyn.data.transforms import Fit, is_power_of_two, resize_frames, square_frames  # noqa: F401
from matdyn.errors import ConfigError, StoreError

Norm = Literal["auto", "percentile", "minmax", "norm_term"]
log = logging.getLogger("matdyn.data")


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class FrameOrder:
    """The shuffled frame order as a pure function of (seed, epoch, position): nothing random
    is carried between batches, so a checkpoint's ``(epoch, offset)`` resumes it exactly.

    Epoch ``e`` is ``torch.randperm(n_frames)`` from a generator seeded with
    ``seed * 1_000_003 + e``, the same on every rank; rank ``r`` of ``w`` takes every ``w``-th
    frame from ``r`` (DDP processes see disjoint frames; batch sizes are per process). Batches
    are consecutive slices of this rank's order; an incomplete tail is dropped (minibatch
    standard deviation needs full batches) and the next batch opens epoch ``e + 1``. A run
    resumed with another number of processes keeps (epoch, offset) but slices the epoch
    differently, so its order is then no longer the uninterrupted run's.
    """

    def __init__(self, n_frames: int, seed: int, epoch: int = 0, offset: int = 0) -> None:
        self.n_frames, self.seed = int(n_frames), int(seed)
        self.epoch, self.offset = int(epoch), int(offset)
        self._cache: tuple[tuple[int, int, int], list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        """This rank's frame indices for ``epoch``."""
        rank, world = _rank_world()
        key = (int(epoch), rank, world)
        if self._cache is None or self._cache[0] != key:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
            full = torch.randperm(self.n_frames, generator=g).tolist()
            self._cache = (key, full[rank: len(full) - len(full) % world: world] if world > 1 else full)
        return self._cache[1]

    def batches_per_epoch(self, batch_size: int) -> int:
        n = max(1, self.n_frames // _rank_world()[1])
        return max(1, n // min(int(batch_size), n))

    def take(self, batch_size: int) -> list[int]:
        """The next ``min(batch_size, frames per rank)`` indices; advances the position."""
        order = self.order(self.epoch)
        bs = min(int(batch_size), len(order))
        if self.offset + bs > len(order):
            self.epoch, self.offset = self.epoch + 1, 0
            order = self.order(self.epoch)
        self.offset += bs
        return order[self.offset - bs: self.offset]


class _Pending:
    """A placeholder batch: the DataModule draws the real one when Lightning uses it."""


_PENDING = _Pending()


class _StepSampler(Sampler[list[int]]):
    """One placeholder per training batch; an epoch of Lightning's loop is one pass over the
    frames at the batch size of its start (the data order itself lives in :class:`FrameOrder`)."""

    def __init__(self, dm: MicroscopyDataModule) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.order.batches_per_epoch(self.dm.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(len(self)):
            yield [0]


class MicroscopyDataModule(pl.LightningDataModule):
    """Serve a dataset store for progressive training.

    Args:
        path: dataset store (zarr) path.
        resolution: top training resolution (power of two); frames are resized to it.
        batch_size: initial batch size (changed by :meth:`set_stage`).
        seed: shuffling seed (epoch e uses a stream derived from seed and e; :class:`FrameOrder`).
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
        transform: ``none`` (the paper's: values scaled as they are) or ``sqrt``: every
            value x >= 0 becomes sqrt(x) before the scaling, and generated values come back
            as the square. For densities and counts (the brass-clump volumes): the square
            root stabilises the variance of count-like data (Anscombe 1948, Biometrika 35,
            246) and widens the low end, so a faint haze the generator adds where the data
            hold ~0 shrinks quadratically on the way back. Data with a negative value raise
            ConfigError (one line naming the channel and its minimum).
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
        transform: Transform = "none",
    ) -> None:
        super().__init__()
        if transform not in ("none", "sqrt"):
            raise ConfigError(f"transform must be none or sqrt, got {transform!r}")
        self.transform: Transform = transform
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
        self._order_state: tuple[int, int] = (0, 0)  # (epoch, offset) until the data are loaded
        self._order: FrameOrder | None = None

    # -- properties --------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self._require_meta().channels

    @property
    def ndim(self) -> int:
        return self._require_meta().ndim

    @property
    def order(self) -> FrameOrder:
        """The frame order and its position (epoch, offset); saved in checkpoints."""
        if self._order is None:
            self.setup()
            self._order = FrameOrder(self.n_frames, self.seed, *self._order_state)
        return self._order

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
        if self.transform == "sqrt":
            data = self._sqrt(data, store.meta.channel_names)
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
            "transform": self.transform,
            **info,
        }
        self._data = {self.resolution: data.contiguous()}

    def _sqrt(self, data: torch.Tensor, names: Any) -> torch.Tensor:
        """sqrt of every value; one ConfigError line when a channel holds a negative value."""
        low = data.transpose(0, 1).reshape(data.shape[1], -1).amin(dim=1)
        bad = [(str(names[c]) if names and c < len(names) else f"#{c}", float(v))
               for c, v in enumerate(low.tolist()) if v < 0]
        if bad:
            what = ", ".join(f"{n} (minimum {v:.4g})" for n, v in bad)
            raise ConfigError(f"{self.path}: dataset.transform=sqrt needs values >= 0; negative in "
                              f"channel {what}; use transform=none")
        return data.sqrt_()

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
        return untransform(x * sc + off, self.transform)

    # -- stages --------------------------------------------------------------------------------
    def set_stage(self, resolution: int, batch_size: int) -> None:
        """Serve `batch_size` images at `resolution` from the next batch on."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.images_at(int(resolution))  # validates and caches
        self.stage_resolution = int(resolution)
        self.batch_size = int(batch_size)

    def next_indices(self) -> list[int]:
        """This rank's next batch of frame indices (advances :attr:`order`)."""
        return self.order.take(self.batch_size)

    def next_batch(self) -> torch.Tensor:
        """The next batch [B, C, R...] in [-1, 1] at the current stage resolution."""
        idx = torch.as_tensor(self.next_indices(), dtype=torch.long)
        return self.images_at(self.stage_resolution)[idx]

    def _collate(self, _: list[int]) -> torch.Tensor | _Pending:
        return _PENDING if self.trainer is not None else self.next_batch()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.next_batch() if isinstance(batch, _Pending) else batch

    def train_dataloader(self) -> DataLoader:
        self.setup()
        # num_workers=0 on purpose: data sit in RAM, and batches are drawn at use time
        return DataLoader(range(self.n_frames), batch_sampler=_StepSampler(self),
                          collate_fn=self._collate)

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        epoch, offset = ((self._order.epoch, self._order.offset) if self._order is not None
                         else self._order_state)
        return {"stage_resolution": self.stage_resolution, "batch_size": self.batch_size,
                "order_epoch": int(epoch), "order_offset": int(offset)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage_resolution = int(state.get("stage_resolution", self.resolution))
        self.batch_size = int(state.get("batch_size", self.batch_size))
        # checkpoints from before the order's offset was saved resume at their epoch's start
        self._order_state = (int(state.get("order_epoch", state.get("sampler_epoch", 0))),
                             int(state.get("order_offset", 0)))
        self._order = None


def resolution_for(side: int, maximum: int) -> int:
    """Largest power of two <= min(side, maximum) (the default training resolution)."""
    return int(2 ** math.floor(math.log2(max(4, min(side, maximum)))))

