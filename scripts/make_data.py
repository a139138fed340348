"""Generate a synthetic stand-in store: python scripts/make_data.py dataset=np_diffusion"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import entry_point, guarded, project_path
from matdyn.data.sources import ensure_store
from matdyn.data.store import open_store

log = logging.getLogger("matdyn")


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="make_data")
@guarded
def main(cfg: DictConfig) -> None:
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    ds["path"] = str(project_path(ds["path"]))  # the library gets absolute paths
    ensure_store(ds, force=bool(cfg.force), progress=bool(cfg.progress))
    store = open_store(ds["path"])
    print(store)


if __name__ == "__main__":
    main()
