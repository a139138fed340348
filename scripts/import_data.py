"""Import your own frames into a store:

    python scripts/import_data.py src=frames/ out=outputs/data/mine.zarr pixel_size=40.58 unit=nm

Prints one summary line (frames, channels, spatial shape, dtype, value range, axis order
used) and, when a few outlier pixels would dominate min/max scaling, one `warning:` line.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from matdyn.cli import entry_point, guarded, project_path
from matdyn.data.importers import ImportSummary, import_frames
from matdyn.errors import ConfigError


def _opt_list(c: dict, key: str) -> list | None:
    v = c.get(key)
    if v is None:
        return None
    if isinstance(v, (str, int, float)):
        v = [v]
    if not isinstance(v, list):
        raise ConfigError(f"{key} must be a list, e.g. {key}=[a,b]; got {v!r}")
    return v


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="import_data")
@guarded
def main(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set; pass e.g. src=frames/ out=outputs/data/"
                          "mine.zarr pixel_size=40.58")
    c = OmegaConf.to_container(cfg, resolve=True)  # plain Python from here on
    try:
        channels = [int(i) for i in _opt_list(c, "channels") or []] or None
    except (TypeError, ValueError):
        raise ConfigError(f"channels must be indices, e.g. channels=[0]; got {c['channels']!r}") from None
    summary = ImportSummary()
    import_frames(
        project_path(str(c["src"])), project_path(str(c["out"])), pixel_size=c["pixel_size"],
        unit=str(c["unit"]), channel_names=_opt_list(c, "channel_names"), ndim=_int(c, "ndim"),
        frame_interval=c["frame_interval"], time_unit=str(c["time_unit"]), pattern=_opt_str(c, "pattern"),
        h5_key=str(c["h5_key"]), axes=None if c.get("axes") is None else str(c["axes"]),
        grey=bool(c.get("grey", False)), channels=channels, name=_opt_str(c, "name"),
        overwrite=bool(c["overwrite"]), progress=bool(c["progress"]), summary=summary,
    )
    print(summary.line(), flush=True)
    if summary.warning:
        print(f"warning: {summary.warning}", file=sys.stderr, flush=True)


def _opt_str(c: dict, key: str) -> str | None:
    return None if c.get(key) is None else str(c[key])


def _int(c: dict, key: str) -> int:
    try:
        return int(c[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be an integer, got {c[key]!r}") from None


if __name__ == "__main__":
    main()
