"""One γ job of the latent continuity sweep (paper §3.3.1 Fig. 5c, §3.4.1 Fig. 7d):

    python scripts/sweep_gamma.py -m dataset=np_diffusion bundle=<run>/generator.pt \
        sampler.gamma=0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0

Each job runs in a folder named by its sampler value (``uniform=0.5``; gaussian:
``gaussian=<sigma>``) and writes its record ``job.json`` (γ, sampler specification, bundle
sha256, store identity, metrics) and its resumable ``variations/``. At the end of the
multirun a callback aggregates every finished job of the sweep directory into gamma.json
and continuity.{png,svg}. Re-running any γ values into the same ``hydra.sweep.dir``
resumes or adds those jobs. ``shard=k/n`` computes only the k-th of n contiguous groups of
reference blocks of each job (e.g. ``-m sampler.gamma=... shard=0/4,1/4,2/4,3/4`` or one
SLURM array task per shard); the shards of a γ share its folder, and the aggregation
(callback or ``scripts/aggregate_sweep.py``) finishes each job once all its shards are in,
naming the missing ones otherwise. Options: conf/sweep.yaml.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.allocator import reuse_freed_memory
from matdyn.cli import entry_point, guarded, hydra_output_dir, project_path
from matdyn.errors import ConfigError


def _plain(value: object) -> object:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@guarded
def main(cfg: DictConfig) -> float:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from matdyn.gamma import run_sweep_job, sweep_name
    from matdyn.sampling.shards import ShardReport

    if OmegaConf.is_missing(cfg, "bundle"):
        raise ConfigError("bundle is required: bundle=<run>/generator.pt (written by scripts/train.py)")
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    reuse_freed_memory()  # large decoded batches without page faults (matdyn.allocator)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_root = project_path(hc.sweep.dir if multirun else hc.runtime.output_dir)
    if cfg.shard is not None and not multirun and OmegaConf.is_missing(cfg, "dir"):
        raise ConfigError("shard=k/n needs one folder for all shards: run with -m and a fixed "
                          "hydra.sweep.dir=<dir>, or give a lone job dir=<job folder>")
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset["path"] = str(project_path(str(dataset.get("path") or "")))
    summary = run_sweep_job(
        dataset, project_path(cfg.bundle), OmegaConf.to_container(cfg.sampler, resolve=True),
        hydra_output_dir(), sweep_dir=sweep_root if multirun else None,
        metrics=_plain(cfg.metrics), n_refs=int(cfg.n_refs),
        n_samples=int(cfg.n_samples), seed=int(cfg.seed), batch_size=int(cfg.batch_size),
        block_size=None if cfg.block_size is None else int(cfg.block_size),
        device=str(cfg.device), precision=str(cfg.get("precision", "fp32")),
        progress=bool(cfg.progress),
        wandb_cfg=OmegaConf.to_container(cfg.logger, resolve=True),
        group=cfg.logger.group or sweep_name(cfg.dataset.name, sweep_root),
        overrides=list(hc.overrides.task), shard=None if cfg.shard is None else str(cfg.shard),
    )
    if "shard_report" in summary:
        callback = bool(OmegaConf.select(hc, "callbacks.aggregate.enabled", default=False))
        merge = ("the aggregation callback merges at the end of this multirun" if multirun and callback else
                 f"merge: python scripts/aggregate_sweep.py dir={sweep_root}")
        print(f"γ = {summary['gamma']:g} " + ShardReport(**summary["shard_report"]).line(merge))
    if summary["status"] != "done":
        return float("nan")
    print(f"γ = {summary['gamma']:g}: {summary['objective_metric']} typical "
          f"{summary['objective']:.4g}, per-dim distance {summary['per_dim_distance_mean']:.4g}")
    return float(summary["objective"])


if __name__ == "__main__":
    main()
