"""WGAN-GP losses, the progressive schedule, Lightning training (2D, 3D, resume, DDP),
the generator bundle and bad-input errors. Tiny stores (<= 16 px, 8-16 filters)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from matdyn.data.store import StoreWriter
from matdyn.errors import CheckpointError, ConfigError, MatdynError, StoreError
from matdyn.models import Generator
from matdyn.training.app import build, resolve_profile, run_training
from matdyn.training.bundle import export_bundle, load_generator
from matdyn.training.checkpoint import AtomicCheckpointIO
from matdyn.training.losses import critic_loss, drift_penalty, generator_loss, gradient_penalty
from matdyn.training.schedule import (
    build_stages,
    schedule_position,
    total_images,
    validate_schedule,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PY = sys.executable
STAGES_2D = "[[4,8,0,32],[8,8,64,32],[16,8,32,32]]"  # 4 -> 8 -> 16 px, 192 images


def _write_store(path: Path, n: int, channels: int, spatial: tuple[int, ...], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with StoreWriter(path, spatial_shape=spatial, channel_names=[f"c{i}" for i in range(channels)],
                     pixel_size=2.0, unit="nm", frame_interval=1.0, time_unit="s",
                     source="test", name=path.stem) as w:
        w.append((3.0 + rng.normal(size=(n, channels, *spatial))).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def store2d(tmp_path_factory) -> Path:  # 40 frames: 5 batches of 8 per epoch
    return _write_store(tmp_path_factory.mktemp("s2") / "tiny2d.zarr", 40, 1, (20, 20))


@pytest.fixture(scope="module")
def store3d(tmp_path_factory) -> Path:
    return _write_store(tmp_path_factory.mktemp("s3") / "tiny3d.zarr", 12, 3, (16, 16, 16))


def _cfg(store: Path, *overrides: str, ndim: int = 2, channels: int = 1, stages: str = STAGES_2D,
         logger: str | None = None):
    base = [
        f"model=pggan{ndim}d", f"dataset.path={store}", "dataset.source=store", "dataset.name=tiny",
        f"dataset.ndim={ndim}", f"dataset.channels={channels}", "schedule=quick",
        "dataset.pixel_size=2.0", "dataset.channel_names=null",  # the tiny stores' metadata
        f"+schedule.datasets.tiny.stages={stages}", "model.filters=[16,16,8]", f"logger={logger}" if logger else "~logger",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        f"resolution={4 * 2 ** (stages.count('[') - 2)}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=base + list(overrides))


class Probe(pl.Callback):
    """Records (images_seen, stage, fade_alpha, batch resolution) before every batch."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, float, int]] = []
        self.d_steps: list[float] = []

    def on_train_batch_start(self, trainer, m, batch, batch_idx) -> None:
        self.rows.append((m.images_seen, m.stage, m.fade_alpha, batch.shape[-1]))
        state = trainer.optimizers[1].state.get(m.discriminator.head[-1].weight, {})
        self.d_steps.append(float(state.get("step", 0)))


# -- losses ----------------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    real, fake = torch.randn(5, 2, 4, 4), torch.randn(5, 2, 4, 4)
    for norm in (3.0, 1.0, 0.5):
        w = torch.randn(2, 4, 4)
        w = w * norm / w.norm()

        def critic(x, w=w):  # D(x) = w . x: gradient w everywhere, ||grad|| = ||w||
            return (x * w).flatten(1).sum(1)

        gp = gradient_penalty(critic, real, fake, weight=10.0)
        assert gp.item() == pytest.approx(10.0 * (norm - 1.0) ** 2, rel=1e-5, abs=1e-6)
    # the penalty is differentiable w.r.t. the critic's parameters (create_graph)
    w = torch.full((2, 4, 4), 0.5, requires_grad=True)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    gp.backward()
    # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||, ||w|| = sqrt(32 * 0.25)
    n = math.sqrt(8.0)
    assert torch.allclose(w.grad, torch.full_like(w, 20 * (n - 1) * 0.5 / n), atol=1e-5)


def test_wasserstein_and_drift_terms():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert critic_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_loss(fake).item() == pytest.approx(0.5)
    assert drift_penalty(real).item() == pytest.approx(1e-3 * 5.0)


# -- schedule ----------------------------------------------------------------------------------

def test_schedule_position_visits_every_stage_in_order():
    stages = validate_schedule([(4, 8, 0, 50), (8, 8, 100, 50), (16, 4, 80, 40)], 16)
    total = total_images(stages)
    assert total == 320
    seen = []
    for n in range(total + 10):
        stage, alpha = schedule_position(n, stages)
        seen.append(stage)
        if stage == 0:
            assert alpha == 1.0
        elif n < 50 + 100 and stage == 1:
            assert alpha == pytest.approx((n - 50) / 100)  # fade-in: 0 -> 1
        elif stage == 2 and 200 <= n < 280:
            assert alpha == pytest.approx((n - 200) / 80)
        else:
            assert alpha == 1.0  # stabilisation
    assert seen == sorted(seen) and set(seen) == {0, 1, 2}
    assert schedule_position(50, stages) == (1, 0.0) and schedule_position(10**9, stages) == (2, 1.0)


@pytest.mark.parametrize(
    "stages,top,match",
    [
        ([(4, 8, 0, 10), (16, 8, 10, 10)], 16, "skips a resolution"),
        ([(8, 8, 0, 10)], 8, "stage 0 must be 4"),
        ([(4, 8, 0, 10), (8, 8, 10, 10)], 16, "ends at 8 px"),
        ([(4, 8, 5, 10)], 4, "nothing to fade from"),
        ([(4, 8, 0, 10)], 12, "not a power of two"),
        ([(4, 0, 0, 10)], 4, "batch_size"),
        ([(4, 8, 0, 0)], 4, "positive sum"),
        ([(4, 8)], 4, "is not \\[resolution"),
        ([], 4, "no stages"),
    ],
)
def test_schedule_validation_errors(stages, top, match):
    with pytest.raises(ConfigError, match=match):
        validate_schedule(stages, top)


def test_every_dataset_and_profile_resolves():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for ds in ("np_diffusion", "ta_chart", "brass_clump"):
            for sched in ("paper", "quick", "auto"):
                cfg = compose("train", overrides=[f"dataset={ds}", f"schedule={sched}",
                                                  "trainer=ddp", "logger=wandb"])
                name, prof, msg = resolve_profile(cfg.schedule, cuda=False)
                assert name == ("quick" if sched == "auto" else sched) and name in msg
                top = cfg.dataset.train_resolution if name == "paper" else cfg.dataset.quick_resolution
                stages, filters, extras = build_stages(prof, ds, cfg.dataset.ndim, top)
                assert stages[-1].resolution == top and len(filters) == len(stages)
                # the chart's quick profile trains without EMA, the NP one averages in the top
                # stage's stable phase only (conf/schedule/quick.yaml, issue 11)
                assert 0 <= extras["ema_decay"] < 1
                assert (extras["ema_decay"] == 0) == (ds == "ta_chart" and name == "quick")
                top_only = ds == "np_diffusion" and name == "quick"
                assert (extras.get("ema_from") == "top_stable") == top_only
                assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"
                assert cfg.model.ndim == cfg.dataset.ndim  # the default model follows the data
                assert cfg.logger.mode in ("offline", "disabled")  # honours WANDB_MODE
        assert resolve_profile(cfg.schedule, cuda=True)[0] == "paper"
        cfg = compose("train", overrides=["dataset=ta_chart", "schedule=paper"])
        _, filters, _ = build_stages(cfg.schedule, "ta_chart", 2, 128)
        assert filters == [512, 512, 512, 512, 256, 128]  # paper §S1 widths x1
        stages, filters, _ = build_stages(cfg.schedule, "np_diffusion", 2, 128)
        assert filters == [256, 256, 256, 256, 128, 64]  # x0.5
        # per-case batch sizes of paper Section S1 (issue #3)
        assert [s.batch_size for s in stages] == [16, 16, 16, 16, 8, 4]
        chart, _, _ = build_stages(cfg.schedule, "ta_chart", 2, 256)
        assert [s.batch_size for s in chart] == [32, 32, 32, 32, 32, 16, 8]
        cfg3 = compose("train", overrides=["dataset=brass_clump", "schedule=paper"])
        clumps, _, _ = build_stages(cfg3.schedule, "brass_clump", 3, 32)
        assert [s.batch_size for s in clumps] == [8, 8, 4, 2]
        # W&B is the default logger (tests run with WANDB_MODE=disabled, set in conftest.py)
        assert cfg.logger._target_.endswith("WandbLogger") and cfg.perf.compile is False


# -- training ----------------------------------------------------------------------------------

def _metrics(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_2d_through_two_transitions_and_bundle(store2d, tmp_path):
    cfg = _cfg(store2d, logger="csv")
    out = run_training(cfg, tmp_path, cuda=False)
    assert out == tmp_path / "generator.pt" and out.is_file()
    rows = _metrics(tmp_path)
    stages = [float(r["train/stage"]) for r in rows if r.get("train/stage")]
    assert stages[0] == 0 and stages[-1] == 2 and sorted(stages) == stages and 1.0 in stages
    for key in ("train/loss_d", "train/loss_g", "train/gp", "train/wdist"):
        vals = [float(r[key]) for r in rows if r.get(key)]
        assert vals and all(math.isfinite(v) for v in vals)
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "samples").glob("*.png")) == \
        ["stage0", "stage1", "stage2"]
    assert (tmp_path / "plan.json").is_file()

    # the bundle: plain types only, reproduces the EMA generator of the last checkpoint exactly
    raw = torch.load(out, weights_only=True)
    assert raw["stage"] == 2 and raw["resolution"] == 16 and raw["extra"]["images_seen"] == 192
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    hp = ckpt["hyper_parameters"]
    g = Generator(hp["latent_dim"], hp["channels"], hp["ndim"], hp["filters"])
    g.load_state_dict({k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("g_ema.")})
    bundle = load_generator(out)
    assert not bundle.training
    assert (bundle.latent_dim, bundle.channels, bundle.ndim, bundle.resolution) == (32, 1, 2, 16)
    assert bundle.meta["pixel_size"] == 2.0 and bundle.meta["channel_names"] == ["c0"]
    assert all(v.is_contiguous() for v in raw["state_dict"].values())  # trained channels_last
    assert json.loads((tmp_path / "plan.json").read_text())["perf"]["channels_last"] is True  # auto, 2D
    z = torch.randn(6, 32)
    with torch.no_grad():
        x = bundle(z)  # memory_format auto: channels_last, equal up to float rounding
        exact = load_generator(out, memory_format="contiguous")(z)
        assert torch.equal(exact, g(z, 2, 1.0).clamp(-1, 1))
        assert torch.allclose(x, exact, atol=1e-4) and x.dtype == torch.float32
        norm = raw["normalization"]
        assert torch.allclose(bundle.sample(z), x * norm["scale"][0] + norm["offset"][0])
    # export from the Lightning checkpoint gives the same generator
    again = load_generator(export_bundle(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "g2.pt"))
    with torch.no_grad():
        assert torch.equal(again(z), x)


def test_train_3d_through_two_transitions(store3d, tmp_path):
    stages = "[[4,4,0,12],[8,4,12,12],[16,4,12,12]]"
    # densities: the floored output (issue 11) travels through training and both bundle paths
    cfg = _cfg(store3d, "model.filters=[8,8,4]", "model.output_floor=-1.0", ndim=3, channels=3,
               stages=stages, logger="csv")
    out = run_training(cfg, tmp_path, cuda=False)
    rows = _metrics(tmp_path)
    assert {float(r["train/stage"]) for r in rows if r.get("train/stage")} == {0.0, 1.0, 2.0}
    assert all(math.isfinite(float(r["train/loss_d"])) for r in rows if r.get("train/loss_d"))
    bundle = load_generator(out)
    z = torch.randn(2, 32)
    with torch.no_grad():
        x = bundle(z)
    assert x.shape == (2, 3, 16, 16, 16) and x.abs().max() <= 1.0
    assert bundle.generator.output_floor == -1.0 and x.min() >= -1.0
    again = load_generator(export_bundle(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "g2.pt"))
    assert again.generator.output_floor == -1.0
    with torch.no_grad():
        assert torch.equal(again(z), x)
    assert len(list((tmp_path / "samples").glob("stage2_16px*.png"))) == 1


def test_resume_mid_fade_in_continues_exactly(store2d, tmp_path):
    # run 1: checkpoint every 2 iterations (4 optimiser steps), "killed" after 7 iterations;
    # the last checkpoint is from iteration 6: 48 images, stage 1 (8 px) at alpha 16/64
    cfg = _cfg(store2d, "trainer.max_steps=14", "callbacks.checkpoint.every_n_train_steps=4")
    parts = build(cfg, tmp_path / "run1", cuda=False)
    assert isinstance(parts["trainer"].strategy.checkpoint_io, AtomicCheckpointIO)
    parts["trainer"].fit(parts["module"], datamodule=parts["dm"])
    assert parts["module"].images_seen == 56
    progress = torch.load(tmp_path / "run1/checkpoints/last.ckpt", weights_only=True)["matdyn"]["progress"]
    assert progress["images_seen"] == 48 and progress["stage"] == 1 and progress["fade_alpha"] == 0.25

    # run 2: resume from the run dir; same position, optimiser state restored, no stage repeated
    cfg = _cfg(store2d, f"ckpt_path={tmp_path / 'run1'}")
    probe = Probe()
    parts = build(cfg, tmp_path / "run2", cuda=False, extra_callbacks=[probe])
    parts["trainer"].fit(parts["module"], datamodule=parts["dm"], ckpt_path=parts["ckpt_path"],
                         weights_only=True)
    first = probe.rows[0]
    assert first == (48, 1, 0.25, 8) and probe.d_steps[0] == 6.0
    seen = [r[0] for r in probe.rows]
    assert seen == list(range(48, 192, 8))  # every batch once, nothing skipped or repeated
    assert [r[1] for r in probe.rows] == sorted(r[1] for r in probe.rows) and probe.rows[-1][1] == 2
    assert parts["module"].images_seen == 192

    # init_from: the same weights, a fresh schedule
    cfg = _cfg(store2d, f"init_from={tmp_path / 'run1/checkpoints/last.ckpt'}")
    parts = build(cfg, tmp_path / "run3", cuda=False)
    sd = torch.load(tmp_path / "run1/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, sd[k]) for k, v in parts["module"].state_dict().items())
    assert parts["module"].images_seen == 0 and parts["ckpt_path"] is None


DDP_SCRIPT = """
import os, torch, hydra, pytorch_lightning as pl
from pathlib import Path
from hydra.core.hydra_config import HydraConfig
from matdyn.cli import guarded
from matdyn.training.app import run_training

class Dump(pl.Callback):
    def on_train_end(self, trainer, m):
        torch.save({{"sd": m.state_dict(), "progress": m.progress(), "world": trainer.world_size}},
                   Path(HydraConfig.get().runtime.output_dir) / f"rank{{trainer.global_rank}}.pt")

@hydra.main(version_base="1.3", config_path="{conf}", config_name="train")
@guarded
def main(cfg):
    torch.set_num_threads(1)
    run_training(cfg, Path(HydraConfig.get().runtime.output_dir), cuda=False, extra_callbacks=[Dump()])

if __name__ == "__main__":
    main()
"""


def test_ddp_two_cpu_processes_stay_in_sync(store2d, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(conf=CONF)))
    run_dir = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = [PY, str(script), f"hydra.run.dir={run_dir}", "trainer=ddp", "trainer.accelerator=cpu",
           "trainer.devices=2", "model=pggan2d", f"dataset.path={store2d}", "dataset.source=store",
           "dataset.name=tiny", "dataset.channels=1", "dataset.pixel_size=2.0",
           "dataset.channel_names=null", "resolution=8", "schedule=quick",
           "+schedule.datasets.tiny.stages=[[4,4,0,16],[8,4,16,16]]", "model.filters=[8,8]",
           "~logger", "trainer.enable_progress_bar=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both ranks wrote into the parent's run dir
    r0, r1 = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # 2 processes x batch 4 per step: 48 images = 6 steps, across the 4 -> 8 px transition
    assert r0["progress"] == r1["progress"] and r0["progress"]["images_seen"] == 48
    assert r0["progress"]["stage"] == 1
    assert all(torch.equal(v, r1["sd"][k]) for k, v in r0["sd"].items())
    assert (run_dir / "generator.pt").is_file() and "generator bundle:" in proc.stdout


# -- bad input ---------------------------------------------------------------------------------

def test_speed_options_keep_parameters_and_state_dict_keys():
    from matdyn.training.app import resolve_channels_last
    from matdyn.training.module import PGGANModule

    plain = PGGANModule(8, 1, 2, [8, 8])
    fast = PGGANModule(8, 1, 2, [8, 8], channels_last=True, compile=True)  # compiles lazily
    assert list(fast.state_dict()) == list(plain.state_dict())  # no compiled-module prefixes
    assert fast.generator.blocks[0][1].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.g_ema.to_image[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert "channels_last" not in fast.hparams and "compile" not in fast.hparams  # runtime only
    assert fast.sample(2).is_contiguous()
    vol = PGGANModule(8, 3, 3, [4, 4], channels_last=True)
    assert vol.discriminator.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert resolve_channels_last("auto", cuda=False, ndim=2)
    assert not resolve_channels_last("auto", cuda=False, ndim=3)
    assert resolve_channels_last("auto", cuda=True, ndim=3, precision="bf16-mixed")
    assert resolve_channels_last(False, cuda=True, ndim=2) is False
    with pytest.raises(ConfigError, match="perf.channels_last"):
        resolve_channels_last("yes", cuda=False, ndim=2)


def test_bad_inputs_give_one_line_errors(store2d, store3d, tmp_path):
    cases = [
        (_cfg(store2d, "model.channels=2"), ConfigError, "channel"),
        (_cfg(store2d, "resolution=12"), ConfigError, "power of two"),
        (_cfg(store2d, "model.upsample=cubic"), ConfigError, "model.upsample must be one of"),
        (_cfg(store2d, "model.output_floor=2.0"), ConfigError, "model.output_floor must lie"),
        # every dataset key that describes the data is checked against the store
        (_cfg(store2d, "dataset.pixel_size=40.58"), StoreError, "set dataset.pixel_size=2.0"),
        (_cfg(store2d, "dataset.unit=um"), StoreError, "store has unit=nm"),
        (_cfg(store2d, "dataset.channel_names=[phase]"), StoreError, "channel_names=['c0']"),
        (_cfg(store2d, "model=pggan", "dataset.ndim=3"), StoreError, "ndim=2"),
        (_cfg(store2d, stages="[[4,8,0,32],[16,8,32,32]]"), ConfigError, "skips"),
        (_cfg(store3d, "model=pggan2d", "model.filters=[8,8]", ndim=3, channels=3,
              stages="[[4,4,0,8],[8,4,8,8]]"), ConfigError, "pggan3d"),
        (_cfg(store2d, f"ckpt_path={tmp_path / 'nope.ckpt'}"), CheckpointError, "not found"),
        (_cfg(store2d, f"ckpt_path={tmp_path}"), CheckpointError, "last.ckpt"),
    ]
    # a checkpoint of another architecture
    run_training(_cfg(store2d, "model.filters=[8,8]", stages="[[4,8,0,8],[8,8,8,8]]"),
                 tmp_path / "small", cuda=False)
    cases.append((_cfg(store2d, f"ckpt_path={tmp_path / 'small'}", stages="[[4,8,0,8],[8,8,8,8]]"),
                  CheckpointError, "filters=[8, 8]"))
    cases.append((_cfg(store2d, f"init_from={tmp_path / 'small'}"), CheckpointError, "does not fit"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cases.append((_cfg(store2d, f"init_from={bad}"), CheckpointError, "not a readable"))
    one = _write_store(tmp_path / "one.zarr", 1, 1, (8, 8))
    cases.append((_cfg(one, stages="[[4,8,0,8],[8,8,8,8]]"), MatdynError, "frame"))
    for cfg, err, match in cases:
        with pytest.raises(err) as info:
            build(cfg, tmp_path / "never", cuda=False)
        msg = str(info.value)
        assert "\n" not in msg and (match is None or match in msg), msg
    assert not (tmp_path / "never").exists()


def test_bundle_errors(store2d, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_generator(junk)
    torch.save({"state_dict": {}, "epoch": 1}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match="export_bundle"):
        load_generator(tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match="not a matdyn training checkpoint"):
        export_bundle(tmp_path / "lightning.ckpt", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(3)}, path)
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # the write fails half-way
        io.save_checkpoint({"w": torch.zeros(3), "bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))  # intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left


def test_dry_run_writes_the_plan_only(store2d, tmp_path, capsys):
    assert run_training(_cfg(store2d, "dry_run=true"), tmp_path, cuda=False) is None
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["total_images"] == 192 and plan["filters"] == [16, 16, 8]
    assert plan["profile"] == "quick" and '"total_images": 192' in capsys.readouterr().out
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "generator.pt").exists()


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_the_cpus_bf16_support(store2d, tmp_path, monkeypatch, native):
    """trainer.precision=auto: bf16-mixed on a CPU with native bf16, else 32-true (detected at
    run time, recorded in the plan); 32-true, the default, is never changed."""
    import dataclasses

    import matdyn.checks.hardware as hw

    real = hw.capabilities()
    monkeypatch.setattr(hw, "capabilities", lambda: dataclasses.replace(real, bf16_cpu=native))
    parts = build(_cfg(store2d, "trainer.precision=auto"), tmp_path / "auto", cuda=False)
    want = "bf16-mixed" if native else "32-true"
    assert parts["plan"]["perf"]["precision"] == want
    assert str(parts["trainer"].precision) == want
    parts = build(_cfg(store2d), tmp_path / "default", cuda=False)
    assert parts["plan"]["perf"]["precision"] == "32-true"


def test_script_prints_error_and_exits_2(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = [PY, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={tmp_path / 'run'}",
           "dataset.source=store", f"dataset.path={tmp_path / 'missing.zarr'}", "~logger"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "missing.zarr" in last
    assert "Traceback" not in proc.stderr


def test_profile_picks_the_auto_profile_and_auto_keys_apply_to_it():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=np_diffusion_paper",
                                          "+schedule.datasets.np_diffusion.stages=[[4,8,0,48]]"])
        named = compose("train", overrides=["schedule=quick", "profile=paper"])
    # the preset's profile wins over CUDA detection; keys added on `auto` reach the profile
    name, prof, msg = resolve_profile(cfg.schedule, cuda=False, profile=cfg.profile)
    assert (name, msg) == ("paper", "schedule: auto -> paper (profile=paper)")
    assert prof["datasets"]["np_diffusion"]["stages"] == [[4, 8, 0, 48]]
    assert prof["datasets"]["np_diffusion"]["batch_size_2d"] == [16, 16, 16, 16, 8, 4]  # kept
    assert prof["ema_decay"] == 0.999
    with pytest.raises(ConfigError, match="schedule=quick but profile=paper"):
        resolve_profile(named.schedule, cuda=False, profile=named.profile)


def test_ema_from_top_stable_follows_the_generator_until_then():
    """ema_start_stage (schedule ``ema_from: top_stable``): before the stable phase of that
    stage g_ema is the generator itself; from then on it lags by the decay."""
    from matdyn.training.module import PGGANModule

    m = PGGANModule(8, 1, 2, [8, 8], ema_decay=0.9, ema_start_stage=1)
    m.generator_steps = 1000  # past the warm-up

    def step() -> float:
        with torch.no_grad():
            for p in m.generator.parameters():
                p.add_(1.0)
        m.update_ema()
        p, q = next(m.generator.parameters()), next(m.g_ema.parameters())
        return float((p - q).detach().abs().max())

    for stage, alpha in ((0, 1.0), (1, 0.5)):  # stage 0, then the fade-in of stage 1
        m.stage, m.fade_alpha = stage, alpha
        assert step() == 0.0
    m.stage, m.fade_alpha = 1, 1.0  # stable phase of the top stage: averaging starts
    assert step() == pytest.approx(0.9, rel=1e-5)  # g_ema moved by (1 - 0.9) of the step
    with pytest.raises(ConfigError):
        PGGANModule(8, 1, 2, [8, 8], ema_start_stage=-1)
    plain = PGGANModule(8, 1, 2, [8, 8], ema_decay=0.9)  # default: from the start (PGGAN)
    plain.generator_steps = 1000
    for p in plain.generator.parameters():
        p.data.add_(1.0)
    plain.update_ema()
    p, q = next(plain.generator.parameters()), next(plain.g_ema.parameters())
    assert float((p - q).detach().abs().max()) == pytest.approx(0.9, rel=1e-5)


def test_lr_decay_lowers_both_rates_in_the_last_images_and_resumes_exactly(store2d, tmp_path):
    """Schedule keys lr_decay_images / lr_final_scale: both Adam rates stay at their configured
    value until the last lr_decay_images images, then fall linearly to lr_final_scale of it; a
    run resumed inside the decay uses the same rates as an unbroken one (and ends identical)."""
    decay = ["+schedule.datasets.tiny.lr_decay_images=32", "+schedule.datasets.tiny.lr_final_scale=0.25"]

    class Rates(pl.Callback):
        def __init__(self) -> None:
            self.rows: list[tuple[int, float, float]] = []

        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx) -> None:
            g, d = (o.param_groups[0]["lr"] for o in trainer.optimizers)
            self.rows.append((m.images_seen - 8, g, d))  # the rates this batch trained with

    whole = Rates()
    parts = build(_cfg(store2d, *decay), tmp_path / "whole", cuda=False, extra_callbacks=[whole])
    assert parts["plan"]["lr_decay_images"] == 32 and parts["plan"]["lr_final_scale"] == 0.25
    parts["trainer"].fit(parts["module"], datamodule=parts["dm"])
    total = parts["module"].images_seen  # 192 images
    by_seen = {n: (g, d) for n, g, d in whole.rows}
    assert all(by_seen[n] == (1e-3, 1e-3) for n in range(0, total - 32 + 1, 8))
    assert by_seen[total - 16] == pytest.approx((1e-3 * 0.625, 1e-3 * 0.625))  # half-way: 1 - 0.75 / 2
    assert by_seen[total - 8][0] == pytest.approx(1e-3 * (1 - 0.75 * 24 / 32))
    assert [g for _, g, _ in whole.rows] == sorted((g for _, g, _ in whole.rows), reverse=True)
    final = {k: v.clone() for k, v in parts["module"].state_dict().items()}

    # killed after 168 images (inside the decay), then resumed from its checkpoint
    cfg = _cfg(store2d, *decay, "trainer.max_steps=42", "callbacks.checkpoint.every_n_train_steps=42")
    parts = build(cfg, tmp_path / "part", cuda=False)
    parts["trainer"].fit(parts["module"], datamodule=parts["dm"])
    assert parts["module"].images_seen == 168
    resumed = Rates()
    parts = build(_cfg(store2d, *decay, f"ckpt_path={tmp_path / 'part'}"), tmp_path / "rest",
                  cuda=False, extra_callbacks=[resumed])
    parts["trainer"].fit(parts["module"], datamodule=parts["dm"], ckpt_path=parts["ckpt_path"],
                         weights_only=True)
    assert resumed.rows == [r for r in whole.rows if r[0] >= 168] and len(resumed.rows) == 3
    assert all(torch.equal(v, final[k]) for k, v in parts["module"].state_dict().items())

    with pytest.raises(ConfigError, match="lr_decay_images"):
        build(_cfg(store2d, "+schedule.datasets.tiny.lr_decay_images=100000"), tmp_path / "bad",
              cuda=False)
    with pytest.raises(ConfigError, match="lr_final_scale"):
        build(_cfg(store2d, *decay[:1], "+schedule.datasets.tiny.lr_final_scale=0"),
              tmp_path / "bad2", cuda=False)
