"""Case-study analysis of a trained generator:

    python scripts/analyze.py dataset=np_diffusion bundle=<run>/generator.pt [gamma=auto|<value>] [sweep=<dir>] [sampler=gaussian]

Sharded Monte Carlo (processes, GPUs, a SLURM array; all with the same settings and out_dir):

    python scripts/analyze.py ... out_dir=<dir> shard=k/n     # one per k = 0..n-1
    python scripts/analyze.py ... out_dir=<dir> merge=true    # then: describe, group, figures

Parses the config and calls :func:`matdyn.analysis.run.run_analysis`, which runs the case
(:func:`matdyn.analysis.case.run_case`) with ``dataset.fit``. Writes figures (PNG + SVG),
variations.csv and summary.json (schema: :class:`matdyn.analysis.case.CaseSummary`) into
the run directory.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.allocator import reuse_freed_memory
from matdyn.cli import entry_point, guarded, hydra_output_dir, project_path
from matdyn.errors import ConfigError


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
@guarded
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.utils import instantiate

    from matdyn.analysis.run import run_analysis
    from matdyn.analysis.shards import check_shard_options
    from matdyn.sampling.shards import ShardReport

    if OmegaConf.is_missing(cfg, "bundle"):
        raise ConfigError("bundle is required: bundle=<run>/generator.pt (written by scripts/train.py)")
    if cfg.sweep and not project_path(str(cfg.sweep)).exists():
        raise ConfigError(f"sweep={cfg.sweep}: no such sweep directory or gamma.json; pass the "
                          "hydra.sweep.dir of scripts/sweep_gamma.py -m, or drop sweep=")
    shard = None if cfg.shard is None else str(cfg.shard)
    check_shard_options(shard, cfg.merge, cfg.block_size)  # bad specs fail before any work
    if (shard is not None or cfg.merge) and not cfg.out_dir:
        raise ConfigError(f"{'shard' if shard is not None else 'merge'} needs out_dir=<dir>, the "
                          "one directory that all shards and the merge share")
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    reuse_freed_memory()  # large decoded batches without page faults (matdyn.allocator)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    out = project_path(cfg.out_dir) if cfg.out_dir else hydra_output_dir()
    summary = run_analysis(
        resolved["dataset"], instantiate(cfg.analysis), cfg.bundle, out,
        gamma=cfg.gamma, sweep=cfg.sweep, sampler=resolved.get("sampler"), seed=int(cfg.seed), device=str(cfg.device),
        precision=str(cfg.get("precision", "fp32")),
        progress=bool(cfg.progress), wandb_cfg=resolved["wandb"], resolved_config=resolved,
        shard=shard, merge=cfg.merge,
        block_size=cfg.block_size,
    )
    if shard is not None:
        print(ShardReport(**summary).line(f"merge: python scripts/analyze.py <same settings> "
                                          f"out_dir={out} merge=true"))
        return
    print(f"summary: {out / 'summary.json'}")
    rec = summary.get("recovery") or {}
    for k, v in rec.items():
        if isinstance(v, (int, float)):
            print(f"  {k}: {v:.4g}")


if __name__ == "__main__":
    main()
