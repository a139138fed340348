"""Small file helpers shared by every writer: JSON-able conversion and the one atomic writer
(:func:`atomic_writer`: temporary sibling file, then ``os.replace``, so a crash never leaves
half a file; ordinary permissions). Zarr stores are directories and are swapped into place by
``matdyn.data.store.StoreWriter`` (write a temporary directory, then rename)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

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


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit it replaces ``path``
    (``os.replace``), on an exception it is removed and ``path`` is untouched.

    The one atomic writer of matdyn: every file the package writes goes through it. The file
    gets the permissions of any ordinary new file (``0o666`` less the umask), unlike
    ``tempfile.mkstemp``'s 0600. ``fsync=True`` flushes to disk before the rename (checkpoints,
    result blocks). ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with atomic_writer(pathlib.Path(d) / "a.txt", "w") as f:
    ...         _ = f.write("hi")
    ...     (pathlib.Path(d) / "a.txt").read_text()
    'hi'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # "x": a new file created with the usual permissions (0o666 & ~umask)
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` all or nothing (:func:`atomic_writer`)."""
    with atomic_writer(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` all or nothing (:func:`atomic_writer`)."""
    with atomic_writer(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """JSON of `obj` (numpy values converted; other objects as str) written atomically."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, default=str))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
