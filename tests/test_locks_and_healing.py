"""Writer locks (one writer per run directory / store; a dead owner's lock is taken over)
and self-healing resumes (an unreadable variations block is recomputed, one log line)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from forkrun import ROOT, run_entry

from matdyn.data.store import StoreWriter
from matdyn.errors import LockedError
from matdyn.locks import dir_lock_path, sibling_lock_path, writer_lock


def test_second_writer_is_refused_naming_the_owner(tmp_path):
    lock = dir_lock_path(tmp_path)
    with writer_lock(lock, f"run directory {tmp_path}"):
        owner = json.loads(lock.read_text())
        assert (owner["pid"], owner["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(LockedError, match=rf"run directory {tmp_path} is being written by pid "
                           rf"{os.getpid()} on {socket.gethostname()} \(since "):
            with writer_lock(lock, f"run directory {tmp_path}"):
                pass
    assert not lock.exists()  # released and removed
    with writer_lock(lock, "again"):
        pass


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    lock = dir_lock_path(tmp_path)
    lock.write_text(json.dumps({"pid": p.pid, "host": socket.gethostname(), "started": 0}))
    with caplog.at_level(logging.INFO, logger="matdyn"), writer_lock(lock, "run x"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert [r for r in caplog.records if f"took over the lock of pid {p.pid}" in r.getMessage()]


def test_killed_holder_releases_its_lock(tmp_path):
    """flock dies with its process: after kill -9 the next writer proceeds at once."""
    lock = dir_lock_path(tmp_path)
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from matdyn.locks import writer_lock\n"
            f"with writer_lock({str(lock)!r}, 'x'):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"held"
    with pytest.raises(LockedError, match=f"pid {p.pid}"):
        with writer_lock(lock, "x"):
            pass
    p.kill()
    p.wait()
    with writer_lock(lock, "x"):
        pass


def test_store_writers_exclude_each_other(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, spatial_shape=(4, 4), channel_names=["a"], pixel_size=1.0) as w:
        w.append(np.zeros((1, 1, 4, 4), np.float32))
        with pytest.raises(LockedError, match=f"store {path} is being written by pid {os.getpid()}"):
            with StoreWriter(path, spatial_shape=(4, 4), channel_names=["a"], pixel_size=1.0):
                pass
    assert path.is_dir() and not sibling_lock_path(path).exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("script,what,args", [
    ("train.py", "run directory", ["dry_run=true"]),
    ("sweep_gamma.py", "γ job folder", ["bundle=g.pt"]),
    ("analyze.py", "analysis folder", ["bundle=g.pt"]),
])
def test_second_writer_of_a_locked_folder_is_one_error_line(tmp_path, script, what, args):
    """Two trainings / γ jobs / analyses into one folder: the second gets one line naming the
    first (the forked child opens the lock file anew, so the parent's lock holds it off)."""
    run = tmp_path / "run"
    with writer_lock(dir_lock_path(run), f"{what} {run}"):
        r = run_entry(script, "dataset=np_diffusion", f"dataset.path={tmp_path}/none.zarr", *args,
                      f"hydra.run.dir={run}")
    assert r.rc == 2 and len(r.error_lines) == 1 and "Traceback" not in r.stderr
    assert r.error_lines[0].startswith(f"error: {what} {run} is being written by pid {os.getpid()}")


def test_unreadable_block_is_recomputed_with_one_log_line(tmp_path, caplog):
    from test_sampling import assert_same, engine

    full = engine(n_refs=8, batch_size=4, block_size=2).run(tmp_path / "run")
    block = tmp_path / "run" / "blocks" / "block_000002.npz"
    data = block.read_bytes()
    block.write_bytes(data[: len(data) // 2])  # truncated, e.g. a copy cut short
    with caplog.at_level(logging.WARNING, logger="matdyn.sampling"):
        healed = engine(n_refs=8, batch_size=4, block_size=2).run(tmp_path / "run")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "block_000002.npz is unreadable" in msgs[0] and "recomputed" in msgs[0]
    assert healed.complete
    assert_same(healed, full)


@pytest.mark.slow
def test_kill9_of_a_sweep_job_then_rerun_gives_the_uninterrupted_numbers(tmp_path):
    """A γ job killed at random points (3 tries, each then re-run into the same folder):
    the lock of the dead job is taken over, its temporaries are removed, and the finished
    record equals that of an uninterrupted job."""
    import random
    import time

    from test_sweep import _tiny_bundle

    bundle = _tiny_bundle(tmp_path / "g.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT))

    def argv(run):
        return [sys.executable, str(ROOT / "scripts" / "sweep_gamma.py"), "dataset=np_diffusion",
                "dataset.synthetic.n_frames=8", "dataset.synthetic.size=48",
                f"dataset.path={tmp_path / 'np.zarr'}", f"bundle={bundle}", "sampler.gamma=0.5",
                "n_refs=256", "n_samples=8", "block_size=4", "batch_size=16", "progress=false",
                f"hydra.run.dir={run}"]

    def record(run):
        rec = json.loads((run / "job.json").read_text())
        return {k: rec[k] for k in ("status", "metrics", "per_dim_distance_mean", "objective")}

    r = subprocess.run(argv(tmp_path / "ref"), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rng = random.Random(3)
    run = tmp_path / "killed"
    blocks = run / "variations" / "blocks"
    done: list[int] = []  # blocks finished when each kill came
    for target in sorted(rng.sample(range(2, 60), 3)):  # kill once this many blocks are done
        p = subprocess.Popen(argv(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None and (len(list(blocks.glob("block_*.npz"))) if blocks.exists() else 0) < target:
            time.sleep(rng.uniform(0.0, 0.05))
        p.kill()
        p.wait()
        done.append(len(list(blocks.glob("block_*.npz"))))
    r = subprocess.run(argv(run), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert record(run) == record(tmp_path / "ref")
    assert all(0 < d < 64 for d in done), done  # every kill landed mid-computation
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == ".matdyn.lock"]
    assert leftovers == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_second_multirun_into_a_locked_sweep_dir_writes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    with writer_lock(dir_lock_path(sweep), f"sweep directory {sweep}"):
        r = run_entry("sweep_gamma.py", "-m", "dataset=np_diffusion", f"dataset.path={tmp_path}/none.zarr",
                      "bundle=g.pt", "sampler.gamma=0.5,1.0", f"hydra.sweep.dir={sweep}")
    assert r.rc == 2 and r.error_lines == [
        f"error: sweep directory {sweep} is being written by pid {os.getpid()} on {socket.gethostname()}"
        f" (since {r.error_lines[0].split('(since ')[1]}"]
    assert "Traceback" not in r.stderr and sorted(os.listdir(sweep)) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_aggregation_refuses_a_sweep_in_progress(tmp_path):
    sweep = tmp_path / "sweep"
    with writer_lock(dir_lock_path(sweep), f"sweep directory {sweep}"):
        r = run_entry("aggregate_sweep.py", f"dir={sweep}", f"hydra.run.dir={tmp_path}/agg")
    assert r.rc == 2 and len(r.error_lines) == 1
    assert r.error_lines[0].startswith(f"error: sweep directory {sweep} is being written by pid {os.getpid()}")


def test_shards_of_one_run_lock_side_by_side(tmp_path):
    """Shards of one analysis / γ job write one folder at once; the same shard twice is refused."""
    from matdyn.errors import LockedError
    from matdyn.locks import dir_lock_path, writer_lock

    assert dir_lock_path(tmp_path, "0/2") != dir_lock_path(tmp_path, "1/2") != dir_lock_path(tmp_path)
    with writer_lock(dir_lock_path(tmp_path, "0/2"), "shard 0/2"):
        with writer_lock(dir_lock_path(tmp_path, "1/2"), "shard 1/2"):
            with pytest.raises(LockedError, match="shard 0/2"):
                with writer_lock(dir_lock_path(tmp_path, "0/2"), "shard 0/2"):
                    pass
