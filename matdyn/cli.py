"""Helpers shared by the thin Hydra entry points in `scripts/` (no Hydra state read here)."""

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
    """An absolute path: ``~`` expanded, a relative path taken from the current directory.

    Reads no Hydra state: every entry point runs with ``hydra.job.chdir=false``, so the
    current directory is where the command ran. Entry points (``scripts/``) resolve the
    config's paths with this (or ``hydra.utils.to_absolute_path``) and hand absolute paths
    to the library.

    >>> project_path("/a/b")
    PosixPath('/a/b')
    """
    return Path(os.path.abspath(os.path.expanduser(str(p))))


def hydra_output_dir() -> Path | None:
    """The running Hydra job's output dir (None outside Hydra). For ``scripts/`` only: the
    library never reads Hydra state, it is handed this path."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # pragma: no cover
        pass
    return None
