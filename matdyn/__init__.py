"""matdyn: material dynamics from microscopy snapshots with a progressive-growing WGAN-GP
and latent-space Monte Carlo (Dao et al., Digital Discovery 2025).

Heavy submodules (torch, Lightning) are imported lazily so `import matdyn` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_generator", "open_store"]


def __getattr__(name: str) -> Any:
    if name == "load_generator":
        from matdyn.training.bundle import load_generator

        return load_generator
    if name == "open_store":
        from matdyn.data.store import open_store

        return open_store
    raise AttributeError(f"module 'matdyn' has no attribute {name!r}")
