"""Shared test setup: one torch thread (small ops collapse with 2 threads on a shared
machine, see ENV_FACTS), W&B disabled, non-interactive matplotlib."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:  # torch is optional for the pure-numpy tests
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
