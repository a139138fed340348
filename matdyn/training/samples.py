"""Sample grids written at the end of every stage: a PNG in the run dir and, when the
logger takes images (W&B, TensorBoard), a logged image.

2D: a grid of samples per channel. 3D: one row per sample with, for each channel, the
middle slice along the first spatial axis and the maximum projection along it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch


def _tile(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """[n, h, w] -> one [rows·(h+pad), ncols·(w+pad)] image, background 1 (white)."""
    n, h, w = images.shape
    rows = math.ceil(n / ncols)
    out = np.ones((rows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return out


def sample_grid(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images [N, C, H, W] or volumes [N, C, D, H, W] in [-1, 1] -> a grey grid in [0, 1]."""
    a = np.asarray(x.detach().float().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    a = np.clip((a + 1.0) / 2.0, 0.0, 1.0)
    n, c = a.shape[:2]
    if a.ndim == 4:  # [N, C, H, W]: a square-ish grid per channel, channels side by side
        ncols = math.ceil(math.sqrt(n))
        grids = [_tile(a[:, ch], ncols) for ch in range(c)]
    else:  # [N, C, D, H, W]: per channel, columns (mid-slice, max projection)
        mid = a[:, :, a.shape[2] // 2]  # [N, C, H, W]
        mip = a.max(axis=2)  # [N, C, H, W]
        grids = [_tile(np.stack([mid[:, ch], mip[:, ch]], 1).reshape(-1, *mid.shape[2:]), 2)
                 for ch in range(c)]
    gap = np.ones((grids[0].shape[0], 3), dtype=np.float32)
    parts = [p for g in grids for p in (g, gap)][:-1]
    return np.concatenate(parts, axis=1)


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # upscale tiny grids so a 4 px stage is still visible
    k = max(1, 256 // max(grid.shape))
    plt.imsave(path, np.kron(grid, np.ones((k, k), dtype=np.float32)), cmap="gray", vmin=0, vmax=1)
    return path


class StageSamples(pl.Callback):
    """At each stage end, draw ``n`` EMA-generator samples (fixed seed) at alpha 1."""

    def __init__(self, out_dir: str | Path, n: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.n = n
        self.seed = seed
        self._stage: int | None = None
        self.written: list[Path] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stage = pl_module.stage

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        if self._stage is not None and pl_module.stage != self._stage:
            self._write(trainer, pl_module, self._stage)
        self._stage = pl_module.stage

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, pl_module.stage)

    @torch.no_grad()
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: int) -> None:
        if not trainer.is_global_zero:
            return
        n = self.n if pl_module.hparams.ndim == 2 else min(self.n, 8)
        grid = sample_grid(pl_module.sample(n, seed=self.seed, stage=stage, fade_alpha=1.0))
        res = 4 * 2**stage
        path = save_png(grid, self.out_dir / f"stage{stage}_{res}px_kimg{pl_module.images_seen // 1000:05d}.png")
        self.written.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key="samples", images=[grid], caption=[f"stage {stage} ({res} px)"],
                                 step=trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("samples", grid[None], trainer.global_step)
