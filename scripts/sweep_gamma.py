"""One γ job of the latent continuity sweep (paper §3.3.1 Fig. 5c, §3.4.1 Fig. 7d):

    python scripts/sweep_gamma.py -m dataset=np_diffusion bundle=<run>/generator.pt \
        sampler.gamma=0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0

Each job writes metrics.json (and its resumable variations/) into its job directory; at the
end of the multirun a callback writes gamma.json and continuity.{png,svg} into the sweep
directory. Options: conf/sweep.yaml.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import guarded, hydra_output_dir
from matdyn.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@guarded
def main(cfg: DictConfig) -> float:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import instantiate

    from matdyn.analysis.sweep import run_sweep_job, sweep_name

    if OmegaConf.is_missing(cfg, "bundle"):
        raise ConfigError("bundle is required: bundle=<run>/generator.pt (written by scripts/train.py)")
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    hc = HydraConfig.get()
    sweep_root = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.runtime.output_dir
    resolved = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "dir"]),
                                      resolve=True)
    summary = run_sweep_job(
        resolved["dataset"], cfg.bundle, instantiate(cfg.sampler), hydra_output_dir(),
        metrics=resolved["metrics"], n_refs=int(cfg.n_refs), n_samples=int(cfg.n_samples),
        seed=int(cfg.seed), batch_size=int(cfg.batch_size),
        block_size=None if cfg.block_size is None else int(cfg.block_size),
        device=str(cfg.device), progress=bool(cfg.progress), wandb_cfg=resolved["logger"],
        group=cfg.logger.group or sweep_name(cfg.dataset.name, sweep_root),
        job_overrides=list(hc.overrides.task), resolved_config=resolved,
    )
    print(f"γ = {summary['gamma']:g}: {summary['objective_metric']} typical "
          f"{summary['objective']:.4g}, per-dim distance {summary['per_dim_distance_mean']:.4g}")
    return float(summary["objective"])


if __name__ == "__main__":
    main()
