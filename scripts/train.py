"""Train a progressive-growing WGAN-GP: ``python scripts/train.py [dataset=...] [schedule=...]``.

See conf/train.yaml for the options and matdyn/training/app.py for resume, init_from and
multi-GPU / multi-node use. Bad input ends with one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from matdyn.cli import guarded, hydra_output_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@guarded
def main(cfg: DictConfig) -> None:
    from matdyn.training.app import run_training

    run_training(cfg, hydra_output_dir())


if __name__ == "__main__":
    main()
