"""Aggregate a γ sweep (what the sweep's callback does at the end of the multirun):

    python scripts/aggregate_sweep.py dir=outputs/sweeps/np_diffusion/<time> \
        [rule.bound_stat=p95] [rule.name=acceptance rule.target=0.4] [calibration=inversion]

The jobs are found by their records (``<dir>/*/job.json``), which also name the dataset,
the generator bundle and the metrics; the rule, calibration and baseline settings come from
conf/sweep.yaml and the command line. Writes gamma.json and continuity.{png,svg} into the
sweep directory. Jobs split with ``shard=k/n`` are merged first (their ``job.json`` is
finished once every shard's blocks are in; missing shards are one ``error:`` line).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import entry_point, guarded, project_path
from matdyn.errors import ConfigError
from matdyn.locks import dir_lock_path, writer_lock


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@guarded
def main(cfg: DictConfig) -> None:
    from matdyn.gamma.hydra_glue import aggregate_from_config, plain_config

    if OmegaConf.is_missing(cfg, "dir"):
        raise ConfigError("dir is required: dir=<sweep directory of scripts/sweep_gamma.py -m>")
    sweep_dir = project_path(str(cfg.dir))
    plain = plain_config(cfg)
    if not OmegaConf.is_missing(cfg, "bundle"):
        plain["bundle"] = str(project_path(str(cfg.bundle)))
    if not sweep_dir.is_dir():
        raise ConfigError(f"dir={cfg.dir}: no such sweep directory; pass the hydra.sweep.dir of "
                          "scripts/sweep_gamma.py -m")
    with writer_lock(dir_lock_path(sweep_dir), f"sweep directory {sweep_dir}"):  # not mid-sweep
        out = aggregate_from_config(sweep_dir, plain)
    print(f"gamma: {out['gamma']:.4g} ({out['calibration']}, rule {out['rule']}, "
          f"{out['metric']} bound {out['bound']:.4g}) -> {sweep_dir / 'gamma.json'}")
    if out.get("inversion"):
        print(f"  continuity γ {out['continuity']['gamma']:.4g}, inversion γ {out['inversion']['gamma']:.4g}")


if __name__ == "__main__":
    main()
