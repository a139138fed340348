"""Case-study analysis of a trained generator:

    python scripts/analyze.py dataset=np_diffusion bundle=<run>/generator.pt [gamma=auto|<value>] [sweep=<dir>] [sampler=gaussian]

Parses the config and calls :func:`matdyn.analysis.run.run_analysis`, which runs the case
(:func:`matdyn.analysis.case.run_case`) with ``dataset.fit``. Writes figures (PNG + SVG),
variations.csv and summary.json (schema: :class:`matdyn.analysis.case.CaseSummary`) into
the run directory.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import entry_point, guarded, hydra_output_dir, project_path
from matdyn.errors import ConfigError


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
@guarded
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.utils import instantiate

    from matdyn.analysis.run import run_analysis

    if OmegaConf.is_missing(cfg, "bundle"):
        raise ConfigError("bundle is required: bundle=<run>/generator.pt (written by scripts/train.py)")
    if cfg.sweep and not project_path(str(cfg.sweep)).exists():
        raise ConfigError(f"sweep={cfg.sweep}: no such sweep directory or gamma.json; pass the "
                          "hydra.sweep.dir of scripts/sweep_gamma.py -m, or drop sweep=")
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    summary = run_analysis(
        resolved["dataset"], instantiate(cfg.analysis), cfg.bundle, hydra_output_dir(),
        gamma=cfg.gamma, sweep=cfg.sweep, sampler=resolved.get("sampler"), seed=int(cfg.seed), device=str(cfg.device),
        progress=bool(cfg.progress), wandb_cfg=resolved["wandb"], resolved_config=resolved,
    )
    print(f"summary: {hydra_output_dir() / 'summary.json'}")
    rec = summary.get("recovery") or {}
    for k, v in rec.items():
        if isinstance(v, (int, float)):
            print(f"  {k}: {v:.4g}")


if __name__ == "__main__":
    main()
