"""scripts/bench.py's side-by-side with the authors' TF PGGAN (issue 15): anchor parsing,
ratios, and a smoke run of the anchor section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from matdyn.benchmarks import anchor_ratios, read_anchor, wgan_gp_step
from matdyn.models import Discriminator, Generator

ROOT = Path(__file__).resolve().parents[1]
TF_LINE = {"tf": "2.15.1", "train": {"16": {"fade": 15.0, "stable": 12.0}},
           "gen": {"64": 32.0, "128": 20.0}}


def test_anchor_ratios_divide_matdyn_by_the_anchor(tmp_path):
    p = tmp_path / "tf.json"
    p.write_text("some log line\n" + json.dumps(TF_LINE) + "\n")
    anchor = read_anchor(str(p))
    assert anchor["train"] == {16: {"fade": 15.0, "stable": 12.0}} and anchor["gen"][128] == 20.0
    train = {16: {"fade": {"resolution": 16, "eager": {"img_s": 30.0}},
                  "stable": {"resolution": 16, "eager": {"img_s": 6.0}}},
             32: {"fade": {"eager": {"img_s": 1.0}}}}  # no anchor at 32 px: left out
    gen = {64: {"batch": 256, "bundle": {"img_s": 48.0}, "eager": {"img_s": 16.0}}}
    r = anchor_ratios(anchor, train, gen)
    assert r["train"] == {16: {"fade": {"eager": 2.0}, "stable": {"eager": 0.5}}}
    assert r["gen"] == {64: {"bundle": 1.5, "eager": 0.5}}


def test_a_file_that_is_not_an_anchor_is_refused(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"train": {"16": {"fade": 1.0}}}\n')  # no "stable"
    with pytest.raises(ValueError, match="not a tf_bench.py result"):
        read_anchor(str(p))


def test_bench_smoke_reports_ratios_to_the_anchor(tmp_path):
    tf = dict(TF_LINE, train={"8": {"fade": 100.0, "stable": 100.0}}, gen={"16": 1000.0})
    p = tmp_path / "tf.json"
    p.write_text(json.dumps(tf))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke",
                        "--sections", "anchor", "--anchor", str(p), "--threads", "1",
                        "--gen-variants", "eager,bundle", "--train-variants", "eager"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)["anchor"]
    ratio = out["ratio_to_anchor"]
    measured = out["train"]["8"]["stable"]["eager"]["img_s"]
    assert ratio["train"]["8"]["stable"]["eager"] == pytest.approx(measured / 100.0)
    assert set(ratio["gen"]["16"]) == {"eager", "bundle"}
    assert "16" not in ratio["train"]  # no anchor number at 16 px for training


def test_bench_refuses_a_bad_anchor_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json\n")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke",
                        "--sections", "anchor", "--anchor", str(bad)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]]
    assert r.stderr.startswith("error: ") and "not a tf_bench.py result" in r.stderr


@pytest.mark.parametrize("args,word", [(["--train-variants", "eager,bf16_chanels_last"], "training variant"),
                                       (["--gen-variants", "bundel"], "generator variant"),
                                       (["--sections", "train,ceilling"], "section")])
def test_bench_refuses_an_unknown_name_before_measuring(args, word):
    """A misspelt variant was timed silently as eager fp32 (training) or ended in a traceback
    (generation): now one error line, exit 2, and no JSON on stdout."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", *args],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: unknown {word} ")


class _AutocastProbe(pl.Callback):
    """Records, for every critic call during training, whether bf16 autocast was on."""

    def __init__(self) -> None:
        self.states: list[bool] = []

    def on_fit_start(self, trainer, module) -> None:
        module.discriminator.head.register_forward_pre_hook(  # every critic call, compiled or not
            lambda *_: self.states.append(torch.is_autocast_enabled("cpu")))


def test_bench_step_runs_the_critic_under_the_autocast_that_training_uses(tmp_path):
    """bf16 numbers in the benchmark must time what trainer.precision=bf16-mixed runs: every
    critic call of a training step (real, fake, gradient penalty, generator step) under
    autocast. The benchmark's penalty ran in fp32 until 2026-12-01 (issue 15)."""
    from test_training import _cfg, _write_store

    from matdyn.training.app import build

    store = _write_store(tmp_path / "s.zarr", 16, 1, (8, 8))
    probe = _AutocastProbe()
    cfg = _cfg(store, "trainer.precision=bf16-mixed", "model.filters=[8,8]",
               stages="[[4,8,0,8],[8,8,8,8]]")
    parts = build(cfg, tmp_path / "run", cuda=False, extra_callbacks=[probe])
    parts["trainer"].fit(parts["module"], datamodule=parts["dm"])
    assert len(probe.states) == 12 and all(probe.states)  # 3 steps × 4 critic calls

    calls: list[bool] = []
    G, D = Generator(32, 1, 2, [8, 8]), Discriminator(1, 2, [8, 8])
    D.head.register_forward_pre_hook(lambda *_: calls.append(torch.is_autocast_enabled("cpu")))
    og, od = (torch.optim.Adam(m.parameters(), 1e-3) for m in (G, D))
    wgan_gp_step(G, D, og, od, torch.randn(4, 1, 8, 8), 1, 1.0, bf16=True)
    assert calls == [True] * 4
    calls.clear()
    wgan_gp_step(G, D, og, od, torch.randn(4, 1, 8, 8), 1, 1.0, bf16=False)
    assert calls == [False] * 4


def test_ray_benchmark_follows_every_particle_of_its_grid():
    from matdyn.benchmarks import bench_rays

    r = bench_rays(size=32, per_side=2, n_refs=1, n_rays=4, repeats=1)
    # 4 particles ≥ 10 px apart, moved ≤ 2√2 px by γ = 2 in 25 steps: none is lost
    assert r["particles"] == 4 and r["steps"] == 25 and r["lost_fraction_at_max_gamma"] == 0.0
    assert r["s_per_reference"] > 0


def test_bench_particles_section_times_the_fidelity_locator():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke",
                        "--sections", "particles", "--threads", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)["particles"]
    assert out["frames"] == 50
    assert 0 < out["mask_centres_s_per_1000"] < out["dark_particle_centres_s_per_1000"]
