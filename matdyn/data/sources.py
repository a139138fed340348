"""Resolve a dataset config to a store on disk, generating the synthetic stand-in on first use."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.data.store import StoreMeta, open_store, validate_store
from matdyn.errors import ConfigError, StoreError

log = logging.getLogger("matdyn.data")


def synthetic_fingerprint(kwargs: Mapping[str, Any]) -> str:
    """Content hash of a synthetic generator's settings (target + kwargs)."""
    kw = plain_config(dict(kwargs))
    blob = json.dumps({k: kw[k] for k in sorted(kw)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plain_config(obj: Any) -> Any:
    """A config value as plain Python: DictConfig/ListConfig (at any depth) -> dict/list.

    Hydra overrides such as ``'+dataset.synthetic.lane_offsets_px=[35.0,55.0]'`` arrive as
    OmegaConf containers; library code (JSON attrs, numpy) needs plain lists and dicts.
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return obj
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Mapping):
        return {k: plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_config(v) for v in obj)
    return obj


def _instantiate_generator(spec: Mapping[str, Any], path: Path, progress: bool) -> None:
    from hydra.utils import instantiate

    # _convert_="all": the generator gets plain lists/dicts, never ListConfig/DictConfig
    instantiate(plain_config(dict(spec)), path=str(path), overwrite=True, progress=progress,
                _convert_="all")


def ensure_store(
    dataset: Mapping[str, Any],
    *,
    path: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> StoreMeta:
    """Make sure the store of a dataset config exists and matches it; return its metadata.

    ``source: synthetic`` generates the stand-in (and says so in one log line) when the
    store is missing, was made with other generator settings, or ``force`` is set.
    ``source: store`` only checks the existing store. The store's channel count must match
    ``dataset.channels``.
    """
    from matdyn.cli import project_path

    ds = plain_config(dict(dataset))
    target = project_path(path or ds.get("path") or "")
    if not str(ds.get("path") or path or ""):
        raise ConfigError("dataset.path is empty; set dataset.path=<store.zarr>")
    source = ds.get("source", "store")
    if source == "synthetic":
        spec = dict(ds.get("synthetic") or {})
        if "_target_" not in spec:
            raise ConfigError(f"dataset '{ds.get('name')}' has source=synthetic but no synthetic._target_")
        fp = synthetic_fingerprint(spec)
        fresh = False
        if target.exists() and not force:
            try:
                meta = validate_store(target, check_values=False)
                fresh = meta.extra.get("synthetic_fingerprint") == fp
            except StoreError:
                fresh = False
        if not fresh:
            log.info("generating synthetic stand-in '%s' at %s (%s)", ds.get("name"), target,
                     ", ".join(f"{k}={v}" for k, v in spec.items() if k != "_target_"))
            _instantiate_generator(spec, target, progress)
            import zarr

            g = zarr.open_group(str(target), mode="r+")
            extra = dict(g.attrs.get("extra", {}) or {})
            extra["synthetic_fingerprint"] = fp
            g.attrs["extra"] = extra
    elif source != "store":
        raise ConfigError(f"dataset.source must be 'synthetic' or 'store', got {source!r}")
    meta = open_store(target, validate=False).meta
    want = ds.get("channels")
    if want is not None and int(want) != meta.channels:
        raise StoreError(
            f"{target}: store has {meta.channels} channel(s) {list(meta.channel_names)} but dataset "
            f"'{ds.get('name')}' expects {want}; pick the matching dataset config or set dataset.channels"
        )
    want_nd = ds.get("ndim")
    if want_nd is not None and int(want_nd) != meta.ndim:
        raise StoreError(
            f"{target}: store holds {meta.ndim}D frames but dataset '{ds.get('name')}' is {want_nd}D"
        )
    return meta
