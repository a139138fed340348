"""Checkpoint files: atomic writes and readable errors.

Lightning's own ``_atomic_save`` (2.6) writes a temporary file in the *system* temp dir and
then moves it; when that dir sits on another filesystem than the run dir, the move falls
back to a copy and a kill mid-copy leaves a truncated ``last.ckpt``. ``AtomicCheckpointIO``
writes into a temporary sibling file and renames it with ``os.replace`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from matdyn.errors import CheckpointError
from matdyn.training.bundle import _read, atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is None and "://" not in str(path):  # a local path
            atomic_torch_save(checkpoint, path)
        else:  # remote filesystems: Lightning's fsspec transaction
            super().save_checkpoint(checkpoint, path, storage_options)


def load_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Read a ``.ckpt`` file, or a run dir / checkpoints dir meaning its ``last.ckpt``
    (weights_only); CheckpointError if it is missing, unreadable or not matdyn's."""
    p = Path(path).expanduser()
    if p.is_dir():
        for cand in (p / "checkpoints" / "last.ckpt", p / "last.ckpt"):
            if cand.is_file():
                p = cand
                break
        else:
            raise CheckpointError(
                f"{path} is a directory without checkpoints/last.ckpt; pass a run dir that has "
                "trained at least one checkpoint interval, or a .ckpt file"
            )
    ckpt = _read(p, "checkpoint")
    if "matdyn" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is not a matdyn training checkpoint (no matdyn state)")
    return p, ckpt
