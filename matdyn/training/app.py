"""Build and run a training job from the composed Hydra config (``conf/train.yaml``).

This is the one place that reads the config tree and turns it into typed objects: the
model (``conf/model``, ``_target_: PGGANModule``), the callbacks (``conf/callbacks``), the
logger and the Trainer are built by ``hydra.utils.instantiate`` in :func:`build`, with the
values that come from the data (ndim, channels, the profile's widths) passed at instantiate
time. The library underneath never sees a DictConfig. ``scripts/train.py`` makes the
config's paths absolute and wraps :func:`run_training`.

Profiles. ``schedule=auto`` picks ``profile`` (set by the ``conf/experiment`` presets) or,
when that is null, ``paper`` when CUDA is visible and ``quick`` otherwise, and says so in the
first log line. A profile (``conf/schedule/<name>.yaml``) gives per-stage
filter widths, batch sizes and image counts, with per-dataset entries keyed by
``dataset.name``; see :func:`matdyn.training.schedule.build_stages`. The top resolution is
``dataset.train_resolution`` (paper) or ``dataset.quick_resolution`` (quick) unless
``resolution`` is set.

Multi-GPU / multi-node (DDP). ``trainer=ddp`` selects ``ddp_find_unused_parameters_true``
(every stage is built up front, so the layers of later stages are unused until then).
Lightning starts the other local ranks by re-running this script with the parent's
``hydra.run.dir`` appended to the command line, so all ranks share the parent's run dir.
On several nodes start the same command on every node with ``trainer.num_nodes=N`` and
``trainer.devices=<gpus per node>``; under SLURM use ``srun`` (Lightning reads the SLURM
variables), otherwise export ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` yourself, and
pass the same ``hydra.run.dir=<shared path>`` on every node so they share one run dir.
Only global rank 0 writes checkpoints, sample grids and the generator bundle. Schedule batch
sizes are per process; ``images_seen`` counts images over all processes.

Resume. ``ckpt_path=<file.ckpt | run dir>`` restores weights, EMA, both optimisers and
``images_seen`` (hence stage and fade_alpha) and the data order's position; the resumed run
is bit-identical to an uninterrupted one on the same device and thread count, also from a
mid-epoch checkpoint (per-step random streams, see matdyn/training/module.py;
tests/test_resume.py). ``init_from=<file.ckpt>`` loads G/D/EMA weights only and starts the
schedule from zero.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from matdyn.allocator import reuse_freed_memory
from matdyn.errors import CheckpointError, ConfigError
from matdyn.io import write_json_atomic
from matdyn.models.layers import UPSAMPLE_MODES

log = logging.getLogger("matdyn.train")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def resolve_profile(schedule: Mapping[str, Any], cuda: bool | None = None,
                    profile: str | None = None) -> tuple[str, dict, str]:
    """(profile name, profile dict, message) for a schedule config.

    ``schedule=auto`` holds both profiles and picks ``profile`` (``paper`` | ``quick``, what
    ``conf/experiment/*`` presets set) or, when that is null, ``paper`` if CUDA is visible
    and ``quick`` otherwise; keys added on the auto node itself override the picked profile's.
    A named schedule must agree with ``profile`` when both are set.
    """
    sched = _plain(schedule)
    name = sched.get("name")
    if name == "auto":
        cuda = torch.cuda.is_available() if cuda is None else cuda
        chosen = profile or ("paper" if cuda else "quick")
        if chosen not in sched:
            raise ConfigError(f"schedule=auto has no '{chosen}' profile; use schedule=paper or quick")
        why = f"profile={profile}" if profile else ("CUDA is visible" if cuda else "no CUDA device visible")
        # keys added on schedule=auto itself (e.g. +schedule.datasets.<name>.stages=...) apply
        # to the profile it picks
        own = {k: v for k, v in sched.items() if k not in ("name", "paper", "quick")}
        picked = OmegaConf.to_container(OmegaConf.merge(sched[chosen], own)) if own else sched[chosen]
        return chosen, picked, f"schedule: auto -> {chosen} ({why})"
    if name is None:
        raise ConfigError("schedule config has no name; use schedule=paper, quick or auto")
    if profile and profile != name:
        raise ConfigError(f"schedule={name} but profile={profile}; drop one of them "
                          f"(schedule=auto follows profile)")
    return name, sched, f"schedule: {name}"


def _value(node: DictConfig, key: str) -> Any:
    """node[key], or None when unset or when its interpolation (e.g. ${dataset.ndim} for a
    dataset config without that key) does not resolve: the data then decide."""
    try:
        return node.get(key)
    except Exception:  # omegaconf InterpolationResolutionError and friends
        return None


def _top_resolution(cfg: DictConfig, profile: str) -> int:
    if cfg.get("resolution") is not None:
        return int(cfg.resolution)
    key = "train_resolution" if profile == "paper" else "quick_resolution"
    value = cfg.dataset.get(key) or cfg.dataset.get("train_resolution")
    if value is None:
        raise ConfigError(f"dataset '{cfg.dataset.get('name')}' sets no {key}; set resolution=<px>")
    return int(value)


def resolve_channels_last(value: Any, cuda: bool, ndim: int, precision: str = "32-true") -> bool:
    """``perf.channels_last``: true / false, or ``auto`` = on for 2D; for 3D only on CUDA with
    16-bit mixed precision. Quick CPU A/B (busy 2-core machine, WGAN-GP steps): 2D +35-50 %
    at 32-64 px, +-2 % at 16 px; 3D at 16 px -2 % to -26 % (slower channels_last_3d
    backward). CUDA choices follow the usual tensor-core advice, not measured here.

    >>> resolve_channels_last("auto", cuda=False, ndim=2)
    True
    >>> resolve_channels_last("auto", cuda=False, ndim=3)
    False
    """
    if isinstance(value, bool):
        return value
    if value == "auto":
        return ndim == 2 or (bool(cuda) and "16" in str(precision))
    raise ConfigError(f"perf.channels_last must be true, false or auto, got {value!r}")


def _trains_on_cuda(cfg: DictConfig, cuda: bool | None) -> bool:
    """True when the trainer will run on CUDA (``cuda`` overrides detection)."""
    return (torch.cuda.is_available() if cuda is None else bool(cuda)) and \
        str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")


def resolve_training_precision(value: Any, cuda: bool) -> str:
    """``trainer.precision``: any Lightning precision (``32-true``, ``bf16-mixed``, ...) as is,
    or ``auto`` = ``bf16-mixed`` when training runs on a CPU with native bf16 (AVX-512 BF16 /
    AMX, aarch64 bf16: :func:`matdyn.checks.capabilities`, detected at run time), else
    ``32-true``. On CUDA ``auto`` stays ``32-true``: bf16 training was not measured on a GPU
    (none was lent; ``trainer.precision=bf16-mixed`` opts in).

    ``32-true`` stays the default (issues 14, 15; conf/trainer/default.yaml). On the NP
    stand-in (quick profile, 116k images, scripts/study_profile.py, two training seeds)
    bf16-mixed gave generators within fp32's seed-to-seed spread: SWD 2.02× / 1.31× its
    real-vs-real baseline (fp32 1.39× / 1.79×), frame diversity 0.75 / 0.91 (fp32 0.89 /
    0.88), every planted region ≥ 0.93 of the observed particles per frame. Its training step
    runs 1.9–2.1× as fast as the fp32 one on an AVX-512-BF16 CPU (16–64 px; README,
    Performance). Two seeds on one layout are too few to change everyone's default; ``auto``
    opts in, and the NP quick preset (``conf/experiment/np_diffusion_quick.yaml``, the demo)
    does: its 166k-image profile was chosen from bf16 runs (issue 11, session 8).

    >>> resolve_training_precision("32-true", cuda=False)
    '32-true'
    >>> resolve_training_precision("auto", cuda=True)
    '32-true'
    """
    value = str(value)
    if value != "auto":
        return value
    if cuda:
        return "32-true"
    from matdyn.checks.hardware import capabilities

    return "bf16-mixed" if capabilities().bf16_cpu else "32-true"


def _logger_ready(node: Any) -> None:
    """Fail early, in one line, when W&B online logging has no credentials."""
    if not str(node.get("_target_", "")).endswith("WandbLogger"):
        return
    mode = str(node.get("mode") or os.environ.get("WANDB_MODE") or "offline")
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        import wandb

        if not wandb.login(prompt=False):  # checks stored credentials, no network
            raise ConfigError("W&B online logging needs an API key: run `wandb login` or set "
                              "WANDB_API_KEY, or use logger.mode=offline")


def _data(cfg: DictConfig, top: int) -> Any:
    """The DataModule at the top resolution, after making sure the store exists and agrees
    with the dataset config (``ensure_store``)."""
    from matdyn.data.datamodule import MicroscopyDataModule
    from matdyn.data.sources import ensure_store

    ds = cfg.dataset
    meta = ensure_store(_plain(ds), progress=bool(cfg.get("progress", True)))
    fit = str(ds.get("fit", "crop"))
    side = min(meta.spatial_shape) if fit == "crop" else max(meta.spatial_shape)
    if top > side:  # frames would be upsampled: detail the data do not have (issue 13)
        fits = 1 << (side.bit_length() - 1)
        raise ConfigError(f"resolution {top} is above the data's {side} px (frames "
                          f"{'x'.join(map(str, meta.spatial_shape))}, fit={fit}) and would upsample "
                          f"them; set resolution={fits} (or smaller) or use larger frames")
    dm = MicroscopyDataModule(
        Path(str(ds.path)).expanduser().absolute(), resolution=top, batch_size=1,
        seed=int(cfg.seed), fit=ds.get("fit", "crop"),
        normalization=ds.get("normalization", "auto"), max_frames=ds.get("max_frames"),
        transform=str(ds.get("transform") or "none"),
    )
    dm.setup("fit")
    return dm


def _model_kwargs(cfg: DictConfig, dm: Any, n_stages: int, prof_filters: list[int],
                  extras: Mapping[str, Any], cuda: bool | None) -> dict[str, Any]:
    """The model arguments that come from the data, the schedule profile and the run
    (passed at instantiate time, like edm's ``interface_kwargs``); the config's ``ndim`` and
    ``channels`` state what it expects and are checked against the data here."""
    m, ds = cfg.model, cfg.dataset
    ndim = _value(m, "ndim")
    if ndim is not None and int(ndim) != dm.ndim:
        raise ConfigError(f"model is {ndim}D but dataset '{ds.name}' is {dm.ndim}D; use "
                          f"model=pggan (follows the data) or model=pggan{dm.ndim}d")
    channels = _value(m, "channels")
    channels = dm.channels if channels is None else int(channels)
    if channels != dm.channels:
        raise ConfigError(f"model.channels={channels} but the dataset store has {dm.channels} "
                          f"channel(s); set model.channels={dm.channels}")
    filters = [int(f) for f in (_plain(m.get("filters")) or prof_filters)]
    if len(filters) < n_stages:
        raise ConfigError(f"model.filters has {len(filters)} widths but the schedule needs "
                          f"{n_stages} stages; give one width per stage from 4 px")
    up = m.get("upsample", "nearest")
    if up not in UPSAMPLE_MODES:
        raise ConfigError(f"model.upsample must be one of {UPSAMPLE_MODES}, got {up!r}")
    floor = m.get("output_floor")
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int | float)
                              or not -1.0 <= float(floor) < 1.0):
        raise ConfigError(f"model.output_floor must lie in [-1, 1) (data scaled to [-1, 1]) or "
                          f"be null, got {floor!r}")
    ema_decay = m.get("ema_decay")
    ema_from = extras.get("ema_from") or "start"
    if ema_from not in EMA_FROM:
        raise ConfigError(f"schedule.ema_from (or schedule.datasets.<name>.ema_from) must be one "
                          f"of {EMA_FROM}, got {ema_from!r}")
    perf = cfg.get("perf") or {}
    on_cuda = _trains_on_cuda(cfg, cuda)
    precision = str(cfg.trainer.get("precision", "32-true"))
    compile_nets = perf.get("compile", False)
    if not isinstance(compile_nets, bool):
        raise ConfigError(f"perf.compile must be true or false, got {compile_nets!r}")
    return {
        "ndim": dm.ndim, "channels": channels, "filters": filters[:n_stages],
        "ema_decay": float(extras.get("ema_decay", 0.999) if ema_decay is None else ema_decay),
        "ema_start_stage": n_stages - 1 if ema_from == "top_stable" else 0,
        "seed": int(cfg.seed), "compile": compile_nets,
        "channels_last": resolve_channels_last(perf.get("channels_last", False), on_cuda,
                                               dm.ndim, precision),
    }


def _resume(cfg: DictConfig, module: Any) -> Path | None:
    """``ckpt_path`` (full resume: checked for the same architecture) or ``init_from``
    (weights only, loaded into ``module`` now); returns the checkpoint to resume from."""
    from matdyn.training.checkpoint import load_checkpoint

    if cfg.get("ckpt_path") and cfg.get("init_from"):
        raise ConfigError("set either ckpt_path (resume) or init_from (weights only), not both")
    if cfg.get("init_from"):
        src, ckpt = load_checkpoint(str(cfg.init_from))
        module.load_weights(ckpt, source=str(src))
    if not cfg.get("ckpt_path"):
        return None
    ckpt_path, ckpt = load_checkpoint(str(cfg.ckpt_path))
    old = ckpt.get("hyper_parameters") or {}
    for key in ("latent_dim", "channels", "ndim", "filters", "normalize_latents", "mbstd_group",
                "upsample", "output_floor"):
        if key in old and old[key] != module.hparams.get(key):
            raise CheckpointError(
                f"{ckpt_path} was trained with {key}={old[key]} but this config gives "
                f"{module.hparams[key]}; resume with the run's settings (see its plan.json)"
            )
    return ckpt_path


def _lr_decay(extras: Mapping[str, Any]) -> dict[str, Any]:
    """Schedule keys ``lr_decay_images`` (default 0: constant rates) and ``lr_final_scale``
    (default 0.1) as ProgressiveSchedule arguments; non-numbers raise ConfigError."""
    try:
        n = int(extras.get("lr_decay_images") or 0)
        scale = float(extras.get("lr_final_scale", 0.1) if n else 1.0)
    except (TypeError, ValueError):
        raise ConfigError(f"schedule lr_decay_images / lr_final_scale must be numbers, got "
                          f"{extras.get('lr_decay_images')!r} / {extras.get('lr_final_scale')!r}") from None
    return {"lr_decay_images": n, "lr_final_scale": scale}


#: when the generator EMA starts (schedule key ``ema_from``): ``start`` (PGGAN: every step) or
#: ``top_stable`` (the top stage's stable phase; before it g_ema is the generator itself)
EMA_FROM = ("start", "top_stable")
#: run-dir defaults of the callbacks in conf/callbacks/ whose path is left null there
_CALLBACK_DIRS = {"checkpoint": ("dirpath", "checkpoints"), "samples": ("out_dir", "samples")}


def _callback_kwargs(name: str, node: Any, run_dir: Path) -> dict[str, Any]:
    if name in _CALLBACK_DIRS:
        key, sub = _CALLBACK_DIRS[name]
        if node.get(key) is None:
            return {key: str(run_dir / sub)}
    return {}


def build(
    cfg: DictConfig, run_dir: Path, cuda: bool | None = None, extra_callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """Validate the config and build every object; returns them in a dict (plan included).
    ``cuda`` overrides CUDA detection for ``schedule=auto``; ``extra_callbacks`` are appended.

    The one instantiation site of training: the model (``conf/model``), callbacks
    (``conf/callbacks``), logger and trainer are built here with ``hydra.utils.instantiate``,
    the values that come from the data passed at instantiate time."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from matdyn.training.checkpoint import AtomicCheckpointIO
    from matdyn.training.schedule import ProgressiveSchedule, build_stages, total_images

    # Lightning warnings that do not apply here: the schedule follows images_seen, not epochs
    # or batch indices, so resuming mid-epoch is exact; and checkpoints taken after the
    # optimiser steps are what we want (they match the incremented images_seen).
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message=".*manual optimization and every_n_train_steps")
    profile_name, profile, message = resolve_profile(cfg.schedule, cuda, cfg.get("profile"))
    log.info(message)
    asked = str(cfg.trainer.get("precision", "32-true"))
    precision = resolve_training_precision(asked, _trains_on_cuda(cfg, cuda))
    if precision != asked:
        cfg = OmegaConf.merge(cfg, {"trainer": {"precision": precision}})
        log.info(f"precision: {asked} -> {precision} "
                 f"({'native bf16 on this CPU' if precision == 'bf16-mixed' else 'no native bf16 or CUDA'})")
    top = _top_resolution(cfg, profile_name)
    dm = _data(cfg, top)
    stages, prof_filters, extras = build_stages(profile, str(cfg.dataset.name), dm.ndim, top,
                                                 n_frames=dm.n_frames)
    model_kw = _model_kwargs(cfg, dm, len(stages), prof_filters, extras, cuda)
    dm.set_stage(stages[0].resolution, stages[0].batch_size)

    # every object from its config, the data-derived values passed here
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = instantiate(cfg.model, **model_kw, _convert_="all")
    ckpt_path = _resume(cfg, module)
    cb_cfg = cfg.get("callbacks") or {}
    lr_decay = _lr_decay(extras)
    callbacks = [ProgressiveSchedule(stages, **lr_decay),
                 *(instantiate(node, **_callback_kwargs(name, node, run_dir), _convert_="all")
                   for name, node in cb_cfg.items() if node and "_target_" in node),
                 *extra_callbacks]
    logger: Any = False
    if cfg.get("logger"):
        _logger_ready(cfg.logger)
        logger = instantiate(cfg.logger, save_dir=str(run_dir), _convert_="all")
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger,
                          plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir),
                          _convert_="all")
    plan = {
        "profile": profile_name, "dataset": str(cfg.dataset.name), "resolution": top,
        "ndim": dm.ndim, "channels": dm.channels, "frames": dm.n_frames,
        "filters": model_kw["filters"], "ema_decay": model_kw["ema_decay"],
        "ema_start_stage": model_kw["ema_start_stage"], **lr_decay,
        "stages": [s.__dict__ for s in stages], "total_images": total_images(stages),
        "generator_parameters": sum(p.numel() for p in module.generator.parameters()),
        "critic_parameters": sum(p.numel() for p in module.discriminator.parameters()),
        "ckpt_path": str(ckpt_path) if ckpt_path else None,
        "perf": {"channels_last": model_kw["channels_last"], "compile": model_kw["compile"],
                 "precision": str(cfg.trainer.get("precision", "32-true"))},
    }
    return {"dm": dm, "module": module, "trainer": trainer, "ckpt_path": ckpt_path,
            "plan": plan, "callbacks": callbacks}


def run_training(
    cfg: DictConfig,
    run_dir: str | os.PathLike,
    cuda: bool | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> Path | None:
    """Train per ``cfg`` into ``run_dir``; return the generator bundle path (rank 0) or None."""
    from matdyn.training.bundle import save_bundle

    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists() and not cfg.get("ckpt_path") and not cfg.get("dry_run"):
        # refuse rather than resume silently: the config may differ from the checkpoint's,
        # and a fresh start would overwrite the earlier run's checkpoints (issue 13)
        raise ConfigError(f"{run_dir} holds the checkpoint of an earlier run ({last}); resume it "
                          f"with ckpt_path={run_dir}, or train into another hydra.run.dir")
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    reuse_freed_memory()  # no page faults on every large activation (matdyn.allocator)
    if torch.cuda.is_available() and cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.matmul_precision))
    parts = build(cfg, run_dir, cuda, extra_callbacks)
    trainer, module, plan = parts["trainer"], parts["module"], parts["plan"]
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "plan.json", plan)
        log.info("plan: %s px, %d stages, %d images, G %d / D %d parameters -> %s",
                 plan["resolution"], len(plan["stages"]), plan["total_images"],
                 plan["generator_parameters"], plan["critic_parameters"], run_dir)
    if cfg.get("dry_run"):
        print(json.dumps(plan, indent=2))
        return None
    try:
        trainer.fit(module, datamodule=parts["dm"], ckpt_path=parts["ckpt_path"], weights_only=True)
        # the final state, whatever the checkpoint interval. (Ctrl-C / SIGTERM end the process
        # inside fit; resume then continues from the last periodic checkpoint.)
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in trainer.loggers):
            import wandb

            wandb.finish()
    if not trainer.is_global_zero:
        return None
    out = save_bundle(
        run_dir / "generator.pt", module.g_ema, module.stage, fade_alpha=module.fade_alpha,
        normalization=module.data_info.get("normalization"), meta=module.data_info.get("meta"),
        extra={"images_seen": module.images_seen, "profile": plan["profile"],
               "train_resolution": plan["resolution"]},
    )
    print(f"generator bundle: {out}")
    return out

