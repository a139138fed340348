"""Advisory writer locks for run directories and stores (issue 13).

A writer holds ``fcntl.flock`` on a lock file that records its owner (PID, host, start time,
command). The kernel drops the lock when the process dies, also on ``kill -9``, so a lock
left by a dead writer is simply taken over (one log line). A second live writer gets one
line naming the owner (:class:`LockedError`, exit status 2 at the entry points).

Lock files: ``<run dir>/.matdyn.lock`` for a directory written in place (training run,
γ job, analysis), ``<parent>/.<name>.lock`` for a path that is replaced as a whole (a
store: its directory is swapped, so the lock lives beside it).

``flock`` is advisory: it keeps matdyn writers apart, not other programs. On network file
systems it works where the server supports locks (NFSv4, Lustre with ``flock`` mounts).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from matdyn.errors import LockedError

log = logging.getLogger("matdyn")
__all__ = ["LockedError", "dir_lock_path", "locks_output_dir", "sibling_lock_path", "writer_lock"]


def dir_lock_path(directory: str | os.PathLike, shard: str | None = None) -> Path:
    """Lock file of a directory written in place; ``shard`` (``"k/n"`` or a list of them):
    the lock of that shard only, so the shards of one run write one directory side by side
    (each shard writes only its own blocks, :mod:`matdyn.sampling.shards`)."""
    if shard is None or str(shard) in ("", "None"):
        return Path(directory) / ".matdyn.lock"
    tag = "-".join(filter(None, re.split(r"[^0-9A-Za-z]+", str(shard))))
    return Path(directory) / f".matdyn.shard-{tag}.lock"


def sibling_lock_path(path: str | os.PathLike) -> Path:
    """Lock file of a path replaced as a whole (a store)."""
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def _owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"pid {owner.get('pid')} on {owner.get('host')} (since {since})"


def _try_lock(lock: Path) -> tuple[int | None, dict]:
    """(fd holding the lock, previous owner) or (None, current owner)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            return None, owner
        try:  # the holder before us may have unlinked the file: lock the one at the path
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _owner(fd)
        os.close(fd)


@contextlib.contextmanager
def writer_lock(lock: str | os.PathLike, what: str, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the advisory lock file ``lock`` while writing ``what`` (a run directory or store).

    ``wait`` > 0: wait up to that many seconds for another writer (one log line), then fail.
    Raises :class:`LockedError` naming the owner (PID, host, start) when the lock is held.
    A lock file left by a dead process is taken over (one log line).
    """
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline, told = time.monotonic() + max(0.0, wait), False
    while True:
        fd, owner = _try_lock(lock)
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise LockedError(
                f"{what} is being written by {_describe(owner)} (lock {lock}); wait for it to "
                "finish or choose another output location")
        if not told:
            log.info("waiting for %s, which is writing %s", _describe(owner), what)
            told = True
        time.sleep(0.2)
    if owner and owner.get("pid") != os.getpid():
        log.info("%s: took over the lock of %s, which ended without releasing it", what,
                 _describe(owner))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
          "argv": sys.argv[:8]}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while holding it: a waiter re-checks the inode (_try_lock)
        os.close(fd)


def locks_output_dir(what: str, arg: str = "out_dir", position: int = 3):
    """Decorator: the function holds the writer lock of its output directory (argument
    ``arg``, or positional ``position``) while it runs; ``what`` names it in the message,
    e.g. ``"analysis folder"``."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def locked(*args, **kwargs):
            out = kwargs[arg] if arg in kwargs else args[position]
            shard = kwargs.get("shard")
            label = f"{what} {out}" + (f" (shard {shard})" if shard is not None else "")
            with writer_lock(dir_lock_path(out, shard), label):
                return fn(*args, **kwargs)

        return locked

    return wrap
