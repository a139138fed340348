"""Directory outputs are replaced atomically and what killed writers leave is cleaned up
(issue 13): faults injected between the steps of a swap, and real ``kill -9`` of a writer
at random points while a reader checks the store at the path continuously."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from matdyn.data.store import StoreWriter, open_store, validate_store
from matdyn.errors import StoreError
from matdyn.io import _HOST_TAG, atomic_write_text, clean_stale_siblings, replace_dir

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, value: float, n: int = 6, overwrite: bool = True) -> None:
    with StoreWriter(path, spatial_shape=(8, 8), channel_names=["phase"], pixel_size=1.0,
                     overwrite=overwrite) as w:
        w.append(np.full((n, 1, 8, 8), value, np.float32))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _siblings(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path.parent) if n != path.name)


def test_replace_dir_swaps_in_one_step(tmp_path):
    _write(tmp_path / "s.zarr", 1.0)
    _write(tmp_path / "s.zarr", 2.0)
    assert float(open_store(tmp_path / "s.zarr").load().mean()) == 2.0
    assert _siblings(tmp_path / "s.zarr") == []  # no temp, old copy or lock left


def test_fault_after_the_exchange_leaves_the_new_store(tmp_path, monkeypatch):
    """Killed right after the exchange (the old store not yet deleted): the new store is at
    the path; the old one, under its temporary name, is removed by the next writer."""
    import matdyn.io as mio

    path = tmp_path / "s.zarr"
    _write(path, 1.0)

    monkeypatch.setattr(mio, "_remove", lambda p: None)  # the writer dies before deleting
    _write(path, 2.0)
    monkeypatch.undo()
    assert float(open_store(path).load().mean()) == 2.0
    left = _siblings(path)
    assert len(left) == 1 and left[0].startswith(".s.zarr.tmp-")
    # as if the writer had died: its token names a dead process
    dead = f".s.zarr.tmp-{_dead_pid()}-{_HOST_TAG}-0123abcd"
    os.rename(tmp_path / left[0], tmp_path / dead)
    assert float(open_store(tmp_path / dead, validate=False).load().mean()) == 1.0  # the old one
    _write(path, 3.0)
    assert _siblings(path) == [] and float(open_store(path).load().mean()) == 3.0


def test_two_rename_fallback_crash_is_repaired(tmp_path, monkeypatch, caplog):
    """Where RENAME_EXCHANGE is unsupported: a crash between 'old aside' and 'new in' leaves
    no store at the path; the next run moves the old copy back (one log line)."""
    import matdyn.io as mio

    path = tmp_path / "s.zarr"
    _write(path, 1.0)
    monkeypatch.setattr(mio, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def replace(a, b):
        if Path(b) == path:  # 'new in', after 'old aside'
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(a, b)

    monkeypatch.setattr(mio.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _write(path, 2.0)
    monkeypatch.undo()
    assert not path.exists()
    pid = _dead_pid()
    for n in _siblings(path):  # the writer "died": its names carry a dead PID
        os.rename(tmp_path / n, tmp_path / n.replace(f"-{os.getpid()}-", f"-{pid}-"))
    with caplog.at_level(logging.WARNING, logger="matdyn"):
        removed = clean_stale_siblings(path)
    assert float(open_store(path).load().mean()) == 1.0
    assert [r.getMessage() for r in caplog.records if "restored the previous copy" in r.getMessage()]
    assert _siblings(path) == [] and not any(p.exists() for p in removed)


def test_fallback_swap_without_fault(tmp_path, monkeypatch):
    import matdyn.io as mio

    monkeypatch.setattr(mio, "_exchange", lambda a, b: False)
    _write(tmp_path / "s.zarr", 1.0)
    _write(tmp_path / "s.zarr", 2.0)
    assert float(open_store(tmp_path / "s.zarr").load().mean()) == 2.0
    assert _siblings(tmp_path / "s.zarr") == []


def test_live_writers_temporaries_are_kept(tmp_path):
    """Only names of dead owners are removed: a running writer's temporary stays."""
    path = tmp_path / "s.zarr"
    live = tmp_path / f".s.zarr.tmp-{os.getpid()}-{_HOST_TAG}-0123abcd"
    dead = tmp_path / f".s.zarr.tmp-{_dead_pid()}-{_HOST_TAG}-0123abcd"
    other_host = tmp_path / ".s.zarr.tmp-1-ffffff-0123abcd"
    for d in (live, dead, other_host):
        d.mkdir()
    legacy = tmp_path / ".s.zarr.old-0123abcd"  # matdyn <= 2026-11: no owner in the name
    legacy.mkdir()
    staging_lock = tmp_path / f"..s.zarr.tmp-{_dead_pid()}-{_HOST_TAG}-0123abcd.lock"
    staging_lock.write_text("{}")
    clean_stale_siblings(path)
    assert live.exists() and other_host.exists() and not dead.exists() and not legacy.exists()
    assert not staging_lock.exists()


def test_stale_file_temporaries_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "summary.json"
    stale = tmp_path / f".summary.json.{_dead_pid()}-{_HOST_TAG}.0123abcd.tmp"
    live = tmp_path / f".summary.json.{os.getpid()}-{_HOST_TAG}.0123abcd.tmp"
    stale.write_text("half")
    live.write_text("half")
    legacy = tmp_path / f".summary.json.{_dead_pid()}.0123abcd.tmp"
    legacy.write_text("half")
    atomic_write_text(target, "{}")
    assert not stale.exists() and not legacy.exists() and live.exists() and target.read_text() == "{}"
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_replace_dir_onto_missing_path(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("x")
    replace_dir(tmp_path / "new", tmp_path / "dst")
    assert (tmp_path / "dst" / "f").read_text() == "x" and not (tmp_path / "new").exists()


def test_all_zero_chunk_is_written_and_a_missing_one_is_an_error(tmp_path):
    """zarr 3 skips chunks equal to the fill value by default; the writer stores every chunk
    (an all-zero frame chunk is data), and a deleted chunk is an error, never zeros."""
    _write(tmp_path / "z.zarr", 0.0, overwrite=False)
    assert float(np.abs(open_store(tmp_path / "z.zarr").load()).sum()) == 0.0
    (tmp_path / "z.zarr" / "images" / "c" / "0" / "0" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"1 chunk\(s\) of 'images' are missing \(first: frames 0..5\)"):
        validate_store(tmp_path / "z.zarr", check_values=False)


WRITER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from matdyn.data.store import StoreWriter
i = 0
while True:
    v = float(i % 2) + 1.0
    with StoreWriter({path!r}, spatial_shape=(16, 16), channel_names=["phase"], pixel_size=1.0,
                     overwrite=True) as w:
        for _ in range(4):
            w.append(np.full((8, 1, 16, 16), v, np.float32))
    print(v, flush=True)
    i += 1
"""


@pytest.mark.slow
def test_kill9_during_overwrites_never_leaves_the_path_without_a_complete_store(tmp_path):
    """A writer overwrites the store in a loop; it is killed with SIGKILL at random points
    (8 tries) while this process validates the store at the path continuously. Every read
    finds a complete store with uniform values; the next writer cleans up after the dead."""
    path = tmp_path / "s.zarr"
    _write(path, 1.0, n=32)
    rng = random.Random(13)
    reads = 0
    for _ in range(8):
        p = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(path))],
                             stdout=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert p.stdout is not None
        p.stdout.readline()  # one full overwrite done: it is in its loop now
        deadline = time.monotonic() + rng.uniform(0.05, 1.0)
        while time.monotonic() < deadline:
            validate_store(path, check_values=False)  # raises if the path lacks a store
            reads += 1
        p.kill()
        p.wait()
        frames = open_store(path).load()
        assert frames.shape == (32, 1, 16, 16) and np.unique(frames).size == 1
    _write(path, 5.0, n=32)  # the next writer takes the lock over and removes the leftovers
    assert _siblings(path) == [] and float(open_store(path).load().mean()) == 5.0
    assert reads > 8


@pytest.mark.slow
@pytest.mark.parametrize("script", ["import_data.py", "make_data.py"])
def test_kill9_of_an_overwriting_entry_point(tmp_path, script):
    """``import_data overwrite=true`` / ``make_data force=true`` killed at random points
    (4 tries): the path always holds a complete store (old or new, uniform content), and the
    next run completes and leaves no temporary, old copy or lock behind."""
    path = tmp_path / "data" / "s.zarr"
    np.save(tmp_path / "a.npy", np.full((40, 64, 64), 1.0, np.float32))
    np.save(tmp_path / "b.npy", np.full((40, 64, 64), 2.0, np.float32))
    base = [f"hydra.run.dir={tmp_path}/run", "progress=false"]
    if script == "import_data.py":
        def args(i):
            return [f"src={tmp_path}/{'ab'[i % 2]}.npy", f"out={path}", "pixel_size=1", "overwrite=true"]
    else:
        def args(i):
            return ["dataset=np_diffusion", "dataset.synthetic.n_frames=24",
                    f"dataset.synthetic.seed={i}", f"dataset.path={path}", "force=true"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "scripts" / script)]
    assert subprocess.run([*cmd, *args(0), *base], env=env, capture_output=True).returncode == 0
    rng = random.Random(7)
    for i in range(1, 5):
        p = subprocess.Popen([*cmd, *args(i), *base], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        p.kill()
        p.wait()
        store = open_store(path)  # complete: validates every chunk and value
        if script == "import_data.py":
            assert np.unique(store.load()).size == 1
    r = subprocess.run([*cmd, *args(9), *base], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _siblings(path) == [] and len(open_store(path)) == (40 if script == "import_data.py" else 24)
