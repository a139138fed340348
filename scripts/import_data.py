"""Import your own frames into a store:

    python scripts/import_data.py src=frames/ out=outputs/data/mine.zarr pixel_size=40.58 unit=nm
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import guarded, project_path
from matdyn.data.importers import import_frames
from matdyn.data.store import open_store


@hydra.main(version_base="1.3", config_path="../conf", config_name="import_data")
@guarded
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    out = import_frames(
        project_path(c["src"]), project_path(c["out"]), pixel_size=float(c["pixel_size"]),
        unit=c["unit"], channel_names=c["channel_names"], ndim=int(c["ndim"]),
        frame_interval=c["frame_interval"], time_unit=c["time_unit"], pattern=c["pattern"],
        h5_key=c["h5_key"], name=c["name"], overwrite=bool(c["overwrite"]),
        progress=bool(c["progress"]),
    )
    print(open_store(out))


if __name__ == "__main__":
    main()
