"""Small file helpers shared by every writer: JSON-able conversion and the one atomic writer
(:func:`atomic_writer`: temporary sibling file, then ``os.replace``, so a crash never leaves
half a file; ordinary permissions) and the one directory swap (:func:`replace_dir`: a complete
new directory exchanged with the old one in a single ``renameat2(RENAME_EXCHANGE)``, so at
every instant the path holds the complete old or the complete new directory).

Temporary names carry the writer's PID and a host tag (:func:`temp_token`); what a killed
writer left behind is removed by the next writer of the same path
(:func:`clean_stale_siblings`, and :func:`atomic_writer` for files)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger("matdyn")
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_RENAME_EXCHANGE = 2  # linux/fs.h


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
    _clean_stale_files(path)
    tmp = path.with_name(f".{path.name}.{temp_token()}.{uuid.uuid4().hex[:8]}.tmp")
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


def temp_token() -> str:
    """``<pid>-<host tag>``: who owns a temporary name (see :func:`is_stale_token`)."""
    return f"{os.getpid()}-{_HOST_TAG}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale_token(token: str) -> bool:
    """True for a ``<pid>-<host tag>`` of this host whose process is gone. Names of other
    hosts (a shared file system) are left alone: their owners may still be running. A bare
    ``<pid>`` (names written before the host tag, matdyn <= 2026-11) counts as this host's."""
    m = re.fullmatch(r"(\d+)(?:-([0-9a-f]{6}))?", token)
    return bool(m) and m.group(2) in (None, _HOST_TAG) and not pid_alive(int(m.group(1)))


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p, ignore_errors=True)


def _clean_stale_files(path: Path) -> None:
    """Remove ``.<name>.<pid>-<host>.<hex>.tmp`` siblings of ``path`` left by killed writers."""
    prefix = f".{path.name}."
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for n in names:
        parts = n[len(prefix):-4].split(".")
        if len(parts) == 2 and is_stale_token(parts[0]):
            (path.parent / n).unlink(missing_ok=True)


def clean_stale_siblings(path: str | os.PathLike) -> list[Path]:
    """Remove what killed writers of the directory ``path`` left next to it: ``.<name>.tmp-*``
    (a half-written new directory) and ``.<name>.old-*`` (an old one being deleted), when
    their owner PID on this host is gone. If ``path`` itself is missing but an ``.old-*``
    copy survived (a crash inside the two-rename fallback of :func:`replace_dir`), that copy
    is moved back first (one log line). Returns the removed paths."""
    path = Path(path)
    # also "..<name>.tmp-<owner>-<hex>.tmp-<owner>-<hex>": a writer's own temporary directory
    # next to a staging directory (matdyn.data.sources generates into one), and the staging
    # directory's lock file "..<name>.tmp-<owner>-<hex>.lock" (matdyn.locks)
    tok = r"(\d+-[0-9a-f]{6})-[0-9a-f]{8}"
    pat = re.compile(rf"\.+{re.escape(path.name)}\.(tmp|old)-{tok}(\.(tmp|old)-{tok})?(\.lock)?")
    try:
        found = [(m, path.parent / n) for n in sorted(os.listdir(path.parent))
                 if (m := pat.fullmatch(n))]
    except OSError:
        return []
    stale = [(m.group(1) if m.group(3) is None else "nested", p) for m, p in found
             if is_stale_token(m.group(2))]
    # names of matdyn <= 2026-11 carry no owner; the callers hold the path's writer lock, so
    # no current writer can own one
    legacy = re.compile(rf"\.{re.escape(path.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    with contextlib.suppress(OSError):
        stale += [("legacy", path.parent / n) for n in sorted(os.listdir(path.parent))
                  if legacy.fullmatch(n)]
    if not os.path.lexists(path):
        for kind, p in stale:
            if kind == "old":
                os.replace(p, path)
                log.warning("%s: restored the previous copy from %s (a replacement was interrupted)",
                            path, p.name)
                break
    removed = []
    for _, p in stale:
        if os.path.lexists(p):
            _remove(p)
            removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux ``renameat2``); False where the
    system or file system cannot (then nothing changed)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the complete directory ``new`` at ``path``; an old ``path`` is deleted afterwards.

    With an existing ``path`` both are swapped in one ``renameat2(RENAME_EXCHANGE)`` (Linux
    >= 3.15; ext4, xfs, btrfs, tmpfs), so a reader or a ``kill -9`` at any instant finds
    the complete old or the complete new directory at ``path``; the old one, now at the
    temporary name, is removed after. Where the exchange is unsupported (other systems,
    some network file systems) it falls back to two renames (old aside, new in); a crash
    between them is repaired by the next :func:`clean_stale_siblings`. ``new`` must be a
    sibling of ``path`` (same file system)."""
    new, path = Path(new), Path(path)
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    if _exchange(new, path):
        _remove(new)  # the old directory, now under the temporary name
        return
    old = path.with_name(f".{path.name}.old-{temp_token()}-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    os.replace(new, path)
    _remove(old)
