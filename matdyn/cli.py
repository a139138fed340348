"""Helpers shared by the thin Hydra entry points in `scripts/`."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from matdyn.errors import MatdynError

T = TypeVar("T")
log = logging.getLogger("matdyn")


def guarded(task: Callable[..., T]) -> Callable[..., T]:
    """Turn a MatdynError into one `error: ...` line on stderr and exit status 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return task(*args, **kwargs)
        except MatdynError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper


def project_path(p: str | os.PathLike) -> Path:
    """Resolve a config path: absolute stays, relative is taken from where the command ran."""
    p = Path(os.path.expanduser(str(p)))
    if p.is_absolute():
        return p
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd) / p
    except Exception:  # pragma: no cover - hydra not in use
        pass
    return Path.cwd() / p


def hydra_output_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # pragma: no cover
        pass
    return None
