"""Aggregate a γ sweep (what the sweep's callback does at the end of the multirun):

    python scripts/aggregate_sweep.py dir=outputs/sweeps/np_diffusion/<time> \
        [rule.bound_stat=p95] [rule.name=acceptance rule.target=0.4] [calibration=inversion]

Settings come from the sweep's multirun.yaml; options given here override them. Writes
gamma.json and continuity.{png,svg} into the sweep directory.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import guarded, project_path
from matdyn.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@guarded
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from matdyn.analysis.sweep import aggregate_from_config, sweep_config_with_overrides

    if OmegaConf.is_missing(cfg, "dir"):
        raise ConfigError("dir is required: dir=<multirun directory of scripts/sweep_gamma.py -m>")
    sweep_dir = project_path(str(cfg.dir))
    plain, expected = sweep_config_with_overrides(sweep_dir, cfg, list(HydraConfig.get().overrides.task))
    out = aggregate_from_config(sweep_dir, plain, expected)
    print(f"gamma: {out['gamma']:.4g} ({out['calibration']}, rule {out['rule']}, "
          f"{out['metric']} bound {out['bound']:.4g}) -> {sweep_dir / 'gamma.json'}")
    if out.get("inversion"):
        print(f"  continuity γ {out['continuity']['gamma']:.4g}, inversion γ {out['inversion']['gamma']:.4g}")


if __name__ == "__main__":
    main()
