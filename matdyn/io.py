"""Small file helpers shared by every writer: JSON-able conversion and atomic writes
(temporary sibling file, then ``os.replace``, so a crash never leaves half a file)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Recursive copy with numpy scalars/arrays turned into Python types and keys into str.

    >>> to_jsonable({"a": np.float32(1.5), 2: (np.arange(2), None)})
    {'a': 1.5, '2': [[0, 1], None]}
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """JSON of `obj` (numpy values converted; other objects as str) written atomically."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, default=str))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
