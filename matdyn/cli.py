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


def matdyn_cause(err: BaseException | None) -> MatdynError | None:
    """The MatdynError behind ``err``, following explicit ``raise ... from`` links.

    Hydra's ``instantiate`` re-raises constructor errors as ``InstantiationException(...)
    from err``; this finds our error inside such wrappers (None if there is none).
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MatdynError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def guarded(task: Callable[..., T]) -> Callable[..., T]:
    """Turn a MatdynError (also one wrapped by Hydra's instantiate) into one
    `error: ...` line on stderr and exit status 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return task(*args, **kwargs)
        except Exception as e:
            cause = matdyn_cause(e)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr, flush=True)
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
