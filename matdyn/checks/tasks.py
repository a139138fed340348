"""What each GPU check does (``check_<name>(ctx)``; the runner is :mod:`matdyn.checks.gpu`).

Training, the γ sweep and the analysis run through their command-line entry points
(``scripts/train.py``, ``scripts/sweep_gamma.py``, ``scripts/analyze.py``) with Hydra
overrides, so the checks exercise exactly what a user runs and survive refactors of the
library underneath. A check passes by returning, fails by raising :class:`CheckFailed`, and
is not run (hardware or software missing) by raising :class:`CheckNotRun`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from matdyn.checks.base import ROOT, CheckFailed, CheckNotRun, Context, last_error_line
from matdyn.checks.inference import check_bundle_auto, check_inference

__all__ = ["check_analyze", "check_bundle_auto", "check_ddp", "check_env", "check_inference",
           "check_sweep", "check_train_bf16", "check_train_compile", "check_train_fp32"]

#: the NP-diffusion generator / critic widths per stage, 4 .. 128 px, 1 channel
#: (conf/schedule/paper.yaml filters_2d cut at dataset np_diffusion train_resolution 128;
#: paper Section S1: 0.5 x [512, 512, 512, 512, 256, 128])
NP_FILTERS = (256, 256, 256, 256, 128, 64)
#: paper Section S1 batch sizes per stage for NP diffusion (conf/schedule/paper.yaml)
NP_BATCH = (16, 16, 16, 16, 8, 4)
TINY_FILTERS = (16, 16, 8, 8, 8, 8)
PY = sys.executable


def _fmt(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def write_random_store(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """A 1-channel 2D store of ``n`` random ``size``² frames (training needs no structure)."""
    import numpy as np

    from matdyn.data.store import StoreWriter

    rng = np.random.default_rng(seed)
    with StoreWriter(path, spatial_shape=(size, size), channel_names=["phase"], pixel_size=40.58,
                     unit="nm", frame_interval=1.0, time_unit="s", source="gpu-check",
                     name=path.stem) as w:
        w.append((3.0 + rng.normal(size=(n, 1, size, size))).astype(np.float32))
    return path


# ------------------------------------------------------------------------------------ env
def check_env(ctx: Context) -> None:
    """Versions and run-time capabilities; fails only if CUDA was asked for and is absent."""
    import torch

    from matdyn.checks.hardware import capabilities

    caps = capabilities().as_dict()
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("pytorch_lightning", "hydra", "omegaconf", "zarr", "numpy", "triton"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    ctx.record(**caps, versions=versions, cpu_threads=torch.get_num_threads(),
               cuda_runtime=getattr(torch.version, "cuda", None))
    if caps["cuda"]:
        free, total = torch.cuda.mem_get_info()
        ctx.record(cuda_mem_free_gib=round(free / 2**30, 1), cuda_mem_total_gib=round(total / 2**30, 1))
    if ctx.device == "cuda" and not caps["cuda"]:
        raise CheckFailed("CUDA was asked for but torch.cuda.is_available() is False")


# ------------------------------------------------------------------------------- training
def _train_cmd(ctx: Context, run: Path, store: Path, stages: list[list[int]], filters, extra=()):
    top = stages[-1][0]
    return [PY, ROOT / "scripts" / "train.py", f"hydra.run.dir={run}", "model=pggan2d",
            f"dataset.path={store}", "dataset.source=store", "dataset.name=gpucheck",
            "dataset.ndim=2", "dataset.channels=1", "schedule=paper",
            f"+schedule.datasets.gpucheck.stages={_fmt(_fmt(s) for s in stages)}",
            f"model.filters={_fmt(filters)}", f"resolution={top}", "logger=csv",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "eval_frames=0",
            "progress=false", f"trainer.accelerator={'gpu' if ctx.device == 'cuda' else 'cpu'}",
            *extra]


def _stages(n: int, phase_batches: int = 2, batch=NP_BATCH) -> list[list[int]]:
    """(resolution, batch, fade_images, stable_images) for stages 0..n-1: every fade and
    stable phase ``phase_batches`` batches long (stage 0 has no fade)."""
    return [[4 * 2**k, batch[k], 0 if k == 0 else phase_batches * batch[k],
             phase_batches * batch[k]] for k in range(n)]


def _metrics(run: Path) -> list[dict[str, str]]:
    paths = sorted(run.glob("csv/version_*/metrics.csv"))
    if not paths:
        raise CheckFailed(f"no metrics.csv under {run}/csv (logger=csv)")
    with open(paths[-1]) as f:
        return list(csv.DictReader(f))


def _check_training_log(ctx: Context, run: Path, n_stages: int) -> None:
    rows = _metrics(run)
    losses = {}
    for key in ("train/loss_d", "train/loss_g", "train/gp", "train/wdist"):
        vals = [float(r[key]) for r in rows if r.get(key)]
        if not vals:
            raise CheckFailed(f"{key} was never logged")
        bad = [v for v in vals if not math.isfinite(v)]
        if bad:
            raise CheckFailed(f"{key}: {len(bad)} of {len(vals)} values not finite")
        losses[key.split("/")[1]] = {"first": vals[0], "last": vals[-1], "n": len(vals)}
    stages = sorted({int(float(r["train/stage"])) for r in rows if r.get("train/stage")})
    alphas = [float(r["train/fade_alpha"]) for r in rows if r.get("train/fade_alpha")]
    ctx.record(losses=losses, stages_seen=stages, fading_steps=sum(0 < a < 1 for a in alphas))
    if stages != list(range(n_stages)):
        raise CheckFailed(f"stages seen {stages}, expected 0..{n_stages - 1}")
    if not any(0 < a < 1 for a in alphas):
        raise CheckFailed("no step with 0 < fade_alpha < 1: no fade-in was trained")


def _check_bundle_on_cpu(ctx: Context, bundle: Path, top: int) -> None:
    import torch

    from matdyn.training.bundle import load_generator

    g = load_generator(bundle, map_location="cpu")
    with torch.inference_mode():
        x = g(torch.randn(4, g.latent_dim, generator=torch.Generator().manual_seed(0)))
    ctx.record(bundle_resolution=g.resolution, bundle_output_std=float(x.std()))
    if tuple(x.shape) != (4, 1, top, top):
        raise CheckFailed(f"bundle generated {tuple(x.shape)}, expected (4, 1, {top}, {top})")
    if not torch.isfinite(x).all():
        raise CheckFailed("the bundle loaded on the CPU generates non-finite pixels")


def _train(ctx: Context, precision: str, compile: bool, n_stages: int, timeout: float = 900) -> None:
    filters = TINY_FILTERS if ctx.tiny else NP_FILTERS
    n_stages = min(n_stages, 3) if ctx.tiny else n_stages
    stages = _stages(n_stages, batch=(8,) * 6 if ctx.tiny else NP_BATCH)
    top = stages[-1][0]
    store = write_random_store(ctx.workdir / "train.zarr", 32, top)
    run = ctx.workdir / "run"
    extra = [f"trainer.precision={precision}", f"perf.compile={str(compile).lower()}"]
    ctx.record(stages=stages, filters=list(filters[:n_stages]), precision=precision, compile=compile)
    proc = ctx.run(_train_cmd(ctx, run, store, stages, filters[:n_stages], extra), timeout,
                   log="train.log")
    out = proc.stdout + proc.stderr
    m = re.search(r"GPU available: (\w+).*?used: (\w+)", out)
    ctx.record(train_exit=proc.returncode, gpu_used=(m.group(2) == "True") if m else None)
    if proc.returncode != 0:
        raise CheckFailed(f"scripts/train.py exit {proc.returncode}: {last_error_line(out)}")
    if ctx.device == "cuda" and m and m.group(2) != "True":
        raise CheckFailed("Lightning did not use the GPU (log says 'GPU ... used: False')")
    plan = json.loads((run / "plan.json").read_text())
    ctx.record(plan_perf=plan.get("perf"), total_images=plan.get("total_images"),
               generator_parameters=plan.get("generator_parameters"))
    _check_training_log(ctx, run, n_stages)
    _check_bundle_on_cpu(ctx, run / "generator.pt", top)


def check_train_fp32(ctx: Context) -> None:
    """4 -> 128 px at the NP widths in fp32: every fade-in, finite losses, CPU bundle."""
    _train(ctx, "32-true", False, len(NP_FILTERS))


def check_train_bf16(ctx: Context) -> None:
    """The same as train_fp32 with bf16-mixed autocast (not_run without native bf16)."""
    from matdyn.checks.hardware import capabilities

    if not capabilities().bf16(ctx.device):
        raise CheckNotRun(f"no native bf16 on {ctx.device} (matdyn.checks.capabilities)")
    _train(ctx, "bf16-mixed", False, len(NP_FILTERS))


def check_train_compile(ctx: Context) -> None:
    """4 -> 8 px (stage 0, stage 1's fade-in, then its stable phase) with perf.compile=true.
    Two stages, not three: graphs are compiled per stage (minutes on a CPU, ~10-60 s a
    stage on a GPU machine's CPU), and one transition already exercises the recompile."""
    from matdyn.checks.hardware import capabilities

    if not capabilities().compile(ctx.device):
        what = "Triton" if ctx.device == "cuda" else "a C++ compiler"
        raise CheckNotRun(f"torch.compile cannot work on {ctx.device} here ({what} or "
                          "TorchDynamo support missing)")
    _train(ctx, "32-true", True, 2)


# ------------------------------------------------------------------------------------ DDP
DDP_SCRIPT = """
import torch, hydra, pytorch_lightning as pl
from matdyn.cli import guarded, hydra_output_dir
from matdyn.training.app import run_training

class Dump(pl.Callback):
    def on_train_end(self, trainer, m):
        sd = {{k: v.detach().cpu() for k, v in m.state_dict().items()}}
        torch.save({{"sd": sd, "progress": m.progress(), "world": trainer.world_size,
                    "device": str(m.device)}}, hydra_output_dir() / f"rank{{trainer.global_rank}}.pt")

@hydra.main(version_base="1.3", config_path="{conf}", config_name="train")
@guarded
def main(cfg):
    torch.set_num_threads(1)
    run_training(cfg, hydra_output_dir(), extra_callbacks=[Dump()])

if __name__ == "__main__":
    main()
"""


def check_ddp(ctx: Context) -> None:
    """2 DDP processes across the 4 -> 8 px transition: equal progress and parameters."""
    import torch

    gpus = torch.cuda.device_count() if ctx.device == "cuda" else 0
    accel, backend = ("gpu", "nccl") if gpus >= 2 else ("cpu", "gloo")
    script = ctx.workdir / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(conf=ROOT / "conf")))
    store = write_random_store(ctx.workdir / "ddp.zarr", 16, 8)
    run = ctx.workdir / "run"
    # NP widths where a GPU machine runs it (NCCL, or gloo on its many cores); narrow on a
    # CPU-only machine, where this check must stay short (what it tests is the same)
    filters = NP_FILTERS[:2] if ctx.device == "cuda" and not ctx.tiny else (16, 16)
    cmd = [PY, script, f"hydra.run.dir={run}", "trainer=ddp", f"trainer.accelerator={accel}",
           "trainer.devices=2", "model=pggan2d", f"dataset.path={store}", "dataset.source=store",
           "dataset.name=gpucheck", "dataset.channels=1", "resolution=8", "schedule=quick",
           "+schedule.datasets.gpucheck.stages=[[4,4,0,16],[8,4,16,16]]",
           f"model.filters={_fmt(filters)}", "~logger", "trainer.enable_progress_bar=false",
           "eval_frames=0", "progress=false"]
    ctx.record(backend=backend, accelerator=accel, visible_gpus=gpus, filters=list(filters))
    # gloo on the loopback interface: a VM's host name need not resolve (single-node check)
    env = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    proc = ctx.run(cmd, timeout=600, env=env, log="ddp.log")
    if proc.returncode != 0:
        raise CheckFailed(f"DDP run exit {proc.returncode}: {last_error_line(proc.stdout + proc.stderr)}")
    ranks = []
    for r in (0, 1):
        path = run / f"rank{r}.pt"
        if not path.is_file():
            raise CheckFailed(f"rank {r} wrote no state ({path.name}); did both ranks start?")
        ranks.append(torch.load(path, weights_only=True))
    r0, r1 = ranks
    diff = max(float((v.float() - r1["sd"][k].float()).abs().max()) for k, v in r0["sd"].items()
               if v.is_floating_point())
    ctx.record(world=[r0["world"], r1["world"]], progress=r0["progress"],
               rank_devices=[r0["device"], r1["device"]], max_abs_param_diff=diff,
               n_tensors=len(r0["sd"]))
    if r0["world"] != 2 or r1["world"] != 2:
        raise CheckFailed(f"world sizes {r0['world']}, {r1['world']}; expected 2")
    if r0["progress"] != r1["progress"]:
        raise CheckFailed(f"ranks disagree on progress: {r0['progress']} vs {r1['progress']}")
    if r0["progress"]["stage"] != 1 or r0["progress"]["images_seen"] != 48:
        raise CheckFailed(f"expected stage 1 after 48 images, got {r0['progress']}")
    if set(r0["sd"]) != set(r1["sd"]) or any(not torch.equal(v, r1["sd"][k])
                                             for k, v in r0["sd"].items()):
        raise CheckFailed(f"parameters differ between ranks after the transition (max {diff:.3g})")


# ------------------------------------------------------------------------ sweep, analysis
def tiny_bundle(path: Path) -> Path:
    """A random-init 16 px, 1-channel generator bundle (what the sweep test uses)."""
    import torch

    from matdyn.models import Generator
    from matdyn.training.bundle import save_bundle

    torch.manual_seed(0)
    g = Generator(latent_dim=8, channels=1, ndim=2, filters=[16, 16, 8])
    return save_bundle(path, g, stage=2, meta={"name": "np_diffusion"})


def _np_store_args(ctx: Context, n_frames: int) -> list[str]:
    return ["dataset=np_diffusion", f"dataset.synthetic.n_frames={n_frames}",
            "dataset.synthetic.size=48", f"dataset.path={ctx.workdir / 'np.zarr'}"]


def check_sweep(ctx: Context) -> None:
    """scripts/sweep_gamma.py -m with two γ and the aggregation, device=<ctx.device>."""
    bundle = tiny_bundle(ctx.workdir / "g.pt")
    out = ctx.workdir / "multirun"
    cmd = [PY, ROOT / "scripts" / "sweep_gamma.py", "-m", f"bundle={bundle}",
           *_np_store_args(ctx, 8), "n_refs=4", "n_samples=4", "progress=false",
           "sampler.gamma=0.5,1.0", f"hydra.sweep.dir={out}", f"device={ctx.device}"]
    proc = ctx.run(cmd, timeout=600, log="sweep.log")
    if proc.returncode != 0:
        raise CheckFailed(f"sweep_gamma.py exit {proc.returncode}: "
                          f"{last_error_line(proc.stdout + proc.stderr)}")
    jobs = [json.loads(p.read_text()) for p in sorted(out.glob("*/job.json"))]
    devices = sorted({str(j["device"]) for j in jobs if "device" in j})
    g = json.loads((out / "gamma.json").read_text()) if (out / "gamma.json").is_file() else {}
    ctx.record(jobs=len(jobs), job_devices=devices, gamma=g.get("gamma"))
    if len(jobs) != 2:
        raise CheckFailed(f"{len(jobs)} job.json records, expected 2")
    if devices and devices != [ctx.device]:
        raise CheckFailed(f"jobs ran on {devices}, not {ctx.device}")
    if not isinstance(g.get("gamma"), (int, float)) or not math.isfinite(g["gamma"]):
        raise CheckFailed(f"gamma.json holds no finite gamma: {g.get('gamma')!r}")


#: analysis settings that a random-init 16 px generator survives (counts tiny, filters open)
ANALYZE_TINY = ["analysis.n_refs=4", "analysis.n_samples=8", "analysis.n_fidelity=16",
                "analysis.baseline_frames=12", "analysis.depth_frames=8",
                "analysis.swd_patches=64", "analysis.swd_directions=8", "analysis.swd_repeats=1",
                "analysis.baseline_repeats=1", "analysis.n_show=2",
                "analysis.entropy_threshold=10", "analysis.min_kept=2",
                "analysis.noise_corr_ratio=0", "analysis.msd_samples=4",
                "analysis.floor_samples=4", "analysis.tracking_frames=16"]


def check_analyze(ctx: Context) -> None:
    """scripts/analyze.py (NP case, γ = paper's) with device=<ctx.device> on a tiny store."""
    bundle = tiny_bundle(ctx.workdir / "g.pt")
    out = ctx.workdir / "analysis"
    cmd = [PY, ROOT / "scripts" / "analyze.py", f"bundle={bundle}", *_np_store_args(ctx, 16),
           *ANALYZE_TINY, f"device={ctx.device}", "progress=false", f"hydra.run.dir={out}"]
    proc = ctx.run(cmd, timeout=600, log="analyze.log")
    if proc.returncode != 0:
        raise CheckFailed(f"analyze.py exit {proc.returncode}: "
                          f"{last_error_line(proc.stdout + proc.stderr)}")
    path = out / "summary.json"
    if not path.is_file():
        raise CheckFailed(f"analyze.py wrote no {path.name}")
    s: dict[str, Any] = json.loads(path.read_text())
    dev = (s.get("config") or {}).get("device")
    ctx.record(summary_keys=len(s), config_device=dev, elapsed_s=s.get("elapsed_s"),
               n_traces=(s.get("recovery") or {}).get("n_traces"))
    if dev not in (None, ctx.device):
        raise CheckFailed(f"summary.json says device {dev!r}, asked for {ctx.device!r}")
