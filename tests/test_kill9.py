"""kill -9 at random points of a training, an analysis and the pipeline driver (issue 13):
each is re-run until it completes, and its final result equals that of an uninterrupted run,
with no temporary file, staging folder or lock file left behind.

Entry points run in forked children (``tests/forkrun.py``: no second import of torch and
Lightning), in their own process group so ``killpg`` also takes the processes they start.
All slow: each runs the entry point several times."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from forkrun import run_entry, start_entry

pytestmark = pytest.mark.slow


def _killed(script: str, args: list[str], log: Path, when: Callable[[], bool],
            delay: float, timeout: float = 300) -> bool:
    """Start ``script``, wait until ``when()`` holds, then ``delay`` seconds, and kill -9 its
    process group. True when the kill landed (the run had not finished by itself)."""
    pid = start_entry(script, *args, log=log)
    t0 = time.monotonic()
    try:
        while not when():
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return False  # finished (or failed) before the kill point
            assert time.monotonic() - t0 < timeout, log.with_name(log.name + ".err").read_text()[-2000:]
            time.sleep(0.01)
        time.sleep(delay)
        done = os.waitpid(pid, os.WNOHANG) != (0, 0)
        if not done:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return not done
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)  # any process the child started
        except ProcessLookupError:
            pass


def _leftovers(root: Path) -> list[str]:
    """Temporary files, staging/old siblings and lock files under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".lock")) or ".tmp-" in p.name or ".old-" in p.name)


# -- training ---------------------------------------------------------------------------------
TRAIN_STAGES = "[[4,8,0,160],[8,4,80,80],[16,8,160,160]]"  # 20 + 40 + 40 = 100 iterations


def _train_args(store: Path, run: Path, *extra: str) -> list[str]:
    return ["model=pggan2d", f"dataset.path={store}", "dataset.source=store", "dataset.name=tiny",
            "dataset.ndim=2", "dataset.channels=1", "schedule=quick", "dataset.pixel_size=2.0",
            "dataset.channel_names=null", f"+schedule.datasets.tiny.stages={TRAIN_STAGES}",
            "model.filters=[16,16,8]", "~logger", "trainer.enable_progress_bar=false",
            "resolution=16", "eval_frames=0", "num_threads=1",
            "callbacks.checkpoint.every_n_train_steps=6", f"hydra.run.dir={run}", *extra]


def _images_seen(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=True)["matdyn"]["progress"]["images_seen"])
    except FileNotFoundError:
        return -1


def test_kill9_training_then_resume_equals_the_uninterrupted_run(tmp_path):
    from test_resume import assert_same_training
    from test_training import _write_store

    store = _write_store(tmp_path / "tiny2d.zarr", 40, 1, (20, 20))
    ref = run_entry("train.py", *_train_args(store, tmp_path / "ref"))
    assert ref.rc == 0, ref.stderr[-3000:]
    run, rng = tmp_path / "run", random.Random(13)
    last = run / "checkpoints" / "last.ckpt"
    seen = []  # images_seen of the checkpoint each kill left
    # kill at random moments: once the checkpoint has reached a random position (of 640 images)
    for k, target in enumerate(sorted(rng.sample(range(8, 560, 8), 3))):
        resume = [f"ckpt_path={run}"] if last.exists() else []
        landed = _killed("train.py", _train_args(store, run, *resume), tmp_path / f"log{k}",
                         lambda t=target: _images_seen(last) >= t, rng.uniform(0.0, 0.3))
        assert landed, f"kill {k} came after the run had finished"
        seen.append(_images_seen(last))
    print(f"kills at images_seen >= targets; checkpoints left: {seen}")
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] < 640, seen
    again = run_entry("train.py", *_train_args(store, run, f"ckpt_path={run}"))
    assert again.rc == 0, again.stderr[-3000:]
    assert_same_training(tmp_path / "ref", run)
    assert _leftovers(run) == []


# -- analysis ---------------------------------------------------------------------------------
def _summary(path: Path) -> dict:
    s = json.loads(path.read_text())
    return {k: v for k, v in s.items() if k not in ("elapsed_s", "provenance")}


def test_kill9_analysis_then_rerun_gives_the_same_summary(tmp_path):
    from test_shards import ANALYZE_TINY

    from matdyn.checks.tasks import tiny_bundle

    bundle = tiny_bundle(tmp_path / "g.pt")
    args = [f"bundle={bundle}", f"dataset.path={tmp_path / 'np.zarr'}", *ANALYZE_TINY]
    t0 = time.monotonic()
    ref = run_entry("analyze.py", *args, f"out_dir={tmp_path / 'ref'}", f"hydra.run.dir={tmp_path / 'h0'}")
    duration = time.monotonic() - t0
    assert ref.rc == 0, ref.stderr[-3000:]
    out, rng = tmp_path / "run", random.Random(7)
    landed = [_killed("analyze.py", [*args, f"out_dir={out}", f"hydra.run.dir={tmp_path / f'h{k + 1}'}"],
                      tmp_path / f"log{k}", lambda: True, rng.uniform(0.05, 0.9) * duration)
              for k in range(3)]
    print(f"kills landed mid-run: {landed}")
    assert sum(landed) >= 2, landed  # most kills came mid-run (timing on a busy machine varies)
    again = run_entry("analyze.py", *args, f"out_dir={out}", f"hydra.run.dir={tmp_path / 'h9'}")
    assert again.rc == 0, again.stderr[-3000:]
    assert _summary(out / "summary.json") == _summary(tmp_path / "ref" / "summary.json")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert _leftovers(out) == []


# -- pipeline driver --------------------------------------------------------------------------
# bundle_sha256: torch.save writes a random serialization_id into every file, so two saves of
# equal tensors never hash alike (the generators are compared tensor by tensor instead)
_VOLATILE = {"elapsed_s", "seconds", "finished", "provenance", "bundle_sha256"}


def _stable(path: Path, out: Path) -> object:
    """A JSON output with the run's own folder and timings taken out."""
    def strip(x: object) -> object:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in _VOLATILE}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(path.read_text().replace(str(out), "<out>")))


def test_kill9_pipeline_driver_then_rerun_gives_the_same_results(tmp_path):
    """reproduce.py (tiny np_diffusion settings of tests/test_report.py) killed with its
    running step at random moments, then re-run: every step resumes or reruns, and the
    trained generator, the sweep's gamma.json, the analysis summary and the report's numbers
    equal those of an uninterrupted run."""
    from test_report import TINY

    def argv(out: Path) -> list[str]:
        return ["--cases", "np_diffusion", "--out", str(out), *(f"--extra={e}" for e in TINY)]

    t0 = time.monotonic()
    ref = run_entry("reproduce.py", *argv(tmp_path / "ref"))
    duration = time.monotonic() - t0
    assert ref.rc == 0, ref.stderr[-3000:]
    out, rng = tmp_path / "run", random.Random(11)
    landed = [_killed("reproduce.py", argv(out), tmp_path / f"log{k}", lambda: True,
                      rng.uniform(0.1, 0.6) * duration) for k in range(3)]
    print(f"kills landed mid-run: {landed}")
    assert sum(landed) >= 2, landed
    again = run_entry("reproduce.py", *argv(out))
    assert again.rc == 0, again.stderr[-3000:]
    a, b = tmp_path / "ref" / "np_diffusion", out / "np_diffusion"
    ga = torch.load(a / "train" / "generator.pt", weights_only=True)["state_dict"]
    gb = torch.load(b / "train" / "generator.pt", weights_only=True)["state_dict"]
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    for rel in ("train/summary.json", "sweep/gamma.json", "analysis/summary.json"):
        assert _stable(b / rel, out) == _stable(a / rel, tmp_path / "ref"), rel
    report = [(tmp_path / d / "report.md").read_text().replace(str(tmp_path / d), "<out>")
              for d in ("ref", "run")]
    cut = [r[: r.index("| step | seconds |")] for r in report]  # the timing table differs
    assert cut[0] == cut[1]
    assert _leftovers(out) == []
