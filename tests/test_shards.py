"""Sharded Monte Carlo from the command line (issue 14): ``analyze.py shard=k/n`` + ``merge=true``
and ``sweep_gamma.py shard=k/n`` + the aggregation give the single-process tables and
summaries bit for bit; bad shard specs and missing shards are one ``error:`` line (exit 2).
Tiny bundle (16 px) and tiny synthetic NP store, like tests/test_sweep.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matdyn.analysis.shards import check_shard_options
from matdyn.errors import AnalysisError, ConfigError
from matdyn.sampling.shards import fmt_ranges, require_complete, run_shard

ROOT = Path(__file__).resolve().parents[1]

#: analysis settings a random-init 16 px generator survives (as matdyn.checks.tasks)
ANALYZE_TINY = ["dataset=np_diffusion", "dataset.synthetic.n_frames=16", "dataset.synthetic.size=48",
                "analysis.n_refs=4", "analysis.n_samples=8", "analysis.n_fidelity=16",
                "analysis.baseline_frames=12", "analysis.depth_frames=8", "analysis.swd_patches=64",
                "analysis.swd_directions=8", "analysis.swd_repeats=1", "analysis.baseline_repeats=1",
                "analysis.n_show=2", "analysis.entropy_threshold=10", "analysis.min_kept=2",
                "analysis.noise_corr_ratio=0", "progress=false", "block_size=1"]  # 4 blocks


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def _summary(path: Path) -> dict:
    """summary.json without what legitimately differs (timing, paths and resolved config)."""
    s = json.loads(path.read_text())
    return {k: v for k, v in s.items() if k not in ("elapsed_s", "provenance")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from matdyn.checks.tasks import tiny_bundle

    tmp = tmp_path_factory.mktemp("shards")
    return tmp, tiny_bundle(tmp / "g.pt")


@pytest.fixture(scope="module")
def analysis(tiny):
    """One single-process analysis and the same analysis as 2 shards (one multirun) + merge."""
    tmp, bundle = tiny
    args = [f"bundle={bundle}", f"dataset.path={tmp / 'np.zarr'}", *ANALYZE_TINY]
    single = _run("analyze.py", *args, f"out_dir={tmp / 'single'}", f"hydra.run.dir={tmp / 'h1'}")
    assert single.returncode == 0, single.stderr[-3000:]
    shards = _run("analyze.py", "-m", *args, "shard=0/2,1/2", f"out_dir={tmp / 'sharded'}",
                  f"hydra.sweep.dir={tmp / 'h2'}")
    assert shards.returncode == 0, shards.stderr[-3000:]
    return tmp, bundle, args, shards


# ----------------------------------------------------------------------------- library
def test_ranges_and_options():
    assert fmt_ranges([7, 0, 1, 2, 5, 8]) == "0-2, 5, 7-8" and fmt_ranges([]) == ""
    check_shard_options("3/4", False, 2)
    with pytest.raises(ConfigError, match="exclude each other"):
        check_shard_options("0/2", True)
    with pytest.raises(ConfigError, match="merge must be true or false"):
        check_shard_options(None, "yes")
    with pytest.raises(ConfigError, match="block_size must be a positive integer"):
        check_shard_options(None, False, 0)
    for bad, msg in (("4/4", "out of range"), ("0/0", "n >= 1"), ("1.5/4", "look like 'k/n'"),
                     ("2", "look like 'k/n'")):
        with pytest.raises(ConfigError, match=msg):
            check_shard_options(bad, False)


def test_engine_shards_report_what_is_left(tmp_path):
    import torch

    from matdyn.descriptors.differences import EntropyDifference
    from matdyn.sampling import SampleMetrics, UniformSampler, VariationEngine

    class Gen(torch.nn.Module):
        latent_dim = 4

        def forward(self, z):
            return torch.tanh(z[:, :1, None, None].repeat(1, 1, 8, 8) + z[:, 1:2, None, None])

    def engine():
        return VariationEngine(Gen(), UniformSampler(0.5), n_refs=7, n_samples=3, seed=1,
                               metrics=[EntropyDifference(bins=16)], reducers=[SampleMetrics()],
                               block_size=2, progress=False)

    out = tmp_path / "v"
    with pytest.raises(AnalysisError, match="holds no variation results"):
        require_complete(out)
    _, rep = run_shard(engine(), out, "2/3")  # 4 blocks over 3 shards: [0, 1], [2], [3]
    assert (rep.references, rep.blocks_run, rep.complete) == ("6", 1, False)
    assert rep.missing == "shards 0/3, 1/3: references 0-5 of 7 (3 of 4 blocks)"
    assert "left: shards 0/3, 1/3" in rep.line()
    with pytest.raises(AnalysisError, match=r"missing shards 0/3, 1/3: references 0-5 of 7"):
        require_complete(out)
    run_shard(engine(), out, "0/3")
    _, rep = run_shard(engine(), out, "1/3")
    assert rep.complete and "all 4 blocks of the run are done" in rep.line()
    _, again = run_shard(engine(), out, "1/3")  # a re-run shard resumes: nothing computed
    assert (again.blocks_run, again.blocks_skipped) == (0, 1)
    single = engine().run(tmp_path / "single")
    merged = require_complete(out)
    assert np.array_equal(merged["metrics/entropy_diff"], single["metrics/entropy_diff"])


# ----------------------------------------------------------------------------- analyze.py
# The two CLI tests below share a fixture of three analyze.py runs (~30 s with them): slow set.
# The fast set keeps the library-level guarantee (test_engine_shards_report_what_is_left: shards
# merged equal the single run, missing shards named) and the option checks above.
@pytest.mark.slow
def test_two_shards_and_merge_equal_the_single_process_analysis(analysis):
    tmp, _, args, shards = analysis
    assert "shard 0/2: references 0-1" in shards.stdout and "left: shard 1/2" in shards.stdout
    assert "all 4 blocks of the run are done" in shards.stdout
    assert not (tmp / "sharded" / "summary.json").exists()  # shards write no summary
    merge = _run("analyze.py", *args, f"out_dir={tmp / 'sharded'}", "merge=true",
                 f"hydra.run.dir={tmp / 'h3'}")
    assert merge.returncode == 0, merge.stderr[-3000:]
    a, b = tmp / "single", tmp / "sharded"
    assert (a / "variations.csv").read_bytes() == (b / "variations.csv").read_bytes()
    assert _summary(a / "summary.json") == _summary(b / "summary.json")
    assert sorted(p.name for p in (b / "variations" / "shards").iterdir()) == [
        "shard_0_of_2.json", "shard_1_of_2.json"]


@pytest.mark.slow
def test_merge_refuses_missing_shards_and_bad_specs(analysis):
    from forkrun import run_entry  # a forked child: the exit status and stderr of a real run

    tmp, _, args, _ = analysis
    env = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    broken = tmp / "broken"
    shutil.copytree(tmp / "sharded" / "variations", broken / "variations")
    (broken / "variations" / "blocks" / "block_000003.npz").unlink()  # shard 1/2's last block
    res = run_entry("analyze.py", *args, f"out_dir={broken}", "merge=true",
                    f"hydra.run.dir={tmp / 'h4'}", env=env)
    assert res.rc == 2 and "Traceback" not in res.stderr
    assert len(res.error_lines) == 1
    assert "missing shard 1/2: references 3 of 4 (1 of 4 blocks)" in res.error_lines[0]
    assert not (broken / "summary.json").exists()
    for spec, msg in (("2/2", "out of range"), ("x/2", "must look like 'k/n'")):
        res = run_entry("analyze.py", *args, f"out_dir={tmp / 'bad'}", f"shard={spec}",
                        f"hydra.run.dir={tmp / 'h5'}", env=env)
        assert res.rc == 2 and len(res.error_lines) == 1 and msg in res.error_lines[0], res.stderr[-2000:]
    assert not (tmp / "bad").exists()  # refused before anything was written
    res = run_entry("analyze.py", *args, "shard=0/2", f"hydra.run.dir={tmp / 'h5'}", env=env)  # no out_dir
    assert res.rc == 2 and "shard needs out_dir=<dir>" in res.error_lines[0]


# ----------------------------------------------------------------------------- sweep_gamma.py
def _sweep_args(tmp: Path, bundle: Path) -> list[str]:
    return ["-m", "dataset=np_diffusion", f"bundle={bundle}", "dataset.synthetic.n_frames=8",
            "dataset.synthetic.size=48", f"dataset.path={tmp / 'np8.zarr'}", "n_refs=4",
            "n_samples=4", "progress=false", "block_size=1", "sampler.gamma=0.5,1.0"]


def _job(path: Path) -> dict:
    # the store identity gains the frame count once the store exists (first aggregation)
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("elapsed_s", "store")}


@pytest.mark.slow  # ~20 s; the 4-shard joblib sweep is in the slow set too
def test_sharded_sweep_equals_single_process_and_names_missing_shards(tiny):
    tmp, bundle = tiny
    single, sharded = tmp / "sweep_single", tmp / "sweep_sharded"
    proc = _run("sweep_gamma.py", *_sweep_args(tmp, bundle), f"hydra.sweep.dir={single}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # shard 0/2 of both γ, aggregation off: the jobs stay unfinished, the aggregation says why
    proc = _run("sweep_gamma.py", *_sweep_args(tmp, bundle), "shard=0/2", f"hydra.sweep.dir={sharded}",
                "hydra.callbacks.aggregate.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "γ = 0.5 shard 0/2: references 0-1" in proc.stdout
    assert f"merge: python scripts/aggregate_sweep.py dir={sharded}" in proc.stdout
    assert json.loads((sharded / "uniform=0.5" / "job.json").read_text())["status"] == "running"
    agg = _run("aggregate_sweep.py", f"dir={sharded}")
    err = _errors(agg)
    assert agg.returncode == 2 and len(err) == 1, agg.stderr[-2000:]
    assert "γ job uniform=0.5 (γ = 0.5)" in err[0] and "missing shard 1/2: references 2-3 of 4" in err[0]
    # the other shard, aggregated by the callback
    proc = _run("sweep_gamma.py", *_sweep_args(tmp, bundle), "shard=1/2", f"hydra.sweep.dir={sharded}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("uniform=0.5", "uniform=1.0"):
        assert _job(single / job / "job.json") == _job(sharded / job / "job.json")
    a, b = (json.loads((d / "gamma.json").read_text()) for d in (single, sharded))
    assert {k: v for k, v in a.items() if k not in ("elapsed_s", "sweep_dir")} == \
        {k: v for k, v in b.items() if k not in ("elapsed_s", "sweep_dir")}


@pytest.mark.slow
def test_four_shards_with_joblib(analysis, tiny):
    """Issue 14's done-when: 4 shards through the joblib launcher, analysis and sweep."""
    tmp, bundle, args, _ = analysis
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    out = tmp / "four"
    proc = _run("analyze.py", "-m", *args, "shard=0/4,1/4,2/4,3/4", f"out_dir={out}", *joblib,
                f"hydra.sweep.dir={tmp / 'h6'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run("analyze.py", *args, f"out_dir={out}", "merge=true", f"hydra.run.dir={tmp / 'h7'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp / "single" / "variations.csv").read_bytes() == (out / "variations.csv").read_bytes()
    assert _summary(tmp / "single" / "summary.json") == _summary(out / "summary.json")

    single, sharded = tmp / "sweep_single4", tmp / "sweep_four"
    proc = _run("sweep_gamma.py", *_sweep_args(tmp, bundle), f"hydra.sweep.dir={single}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run("sweep_gamma.py", *_sweep_args(tmp, bundle), "shard=0/4,1/4,2/4,3/4", *joblib,
                f"hydra.sweep.dir={sharded}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("uniform=0.5", "uniform=1.0"):
        assert _job(single / job / "job.json") == _job(sharded / job / "job.json")
    a, b = (json.loads((d / "gamma.json").read_text()) for d in (single, sharded))
    assert a["gamma"] == b["gamma"] and a["per_gamma"] == b["per_gamma"]
