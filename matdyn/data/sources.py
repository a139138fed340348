"""Resolve a dataset config to a store on disk, generating the synthetic stand-in on first use."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.data.store import StoreMeta, open_store, validate_store
from matdyn.errors import ConfigError, StoreError
from matdyn.io import clean_stale_siblings, replace_dir, temp_token
from matdyn.locks import sibling_lock_path, writer_lock

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


#: how long ensure_store waits for another process generating the same store
_GENERATE_WAIT_S = 6 * 3600.0


def _fresh(target: Path, fingerprint: str) -> bool:
    """The store at ``target`` exists and was made with these generator settings."""
    if not target.exists():
        return False
    try:
        return validate_store(target, check_values=False).extra.get("synthetic_fingerprint") == fingerprint
    except StoreError:
        return False


def _check_replaceable(target: Path) -> None:
    """ConfigError unless the path is free or holds a stand-in made by matdyn (a store with a
    synthetic fingerprint): an imported store or any other folder is never replaced by a
    generated one (``dataset.path=<your store>`` with the dataset's default
    ``source: synthetic`` used to overwrite it)."""
    if not target.exists():
        return
    try:
        made = "synthetic_fingerprint" in validate_store(target, check_values=False).extra
    except StoreError:
        made = False
    if not made:
        raise ConfigError(
            f"dataset.path={target} holds data that matdyn did not generate (an imported store "
            "or another folder), and dataset.source=synthetic would replace it with the "
            "synthetic stand-in; set dataset.source=store to use it, or choose another "
            "dataset.path for the stand-in")


def _generate_into(spec: Mapping[str, Any], target: Path, fingerprint: str, progress: bool) -> None:
    """Generate the stand-in in a hidden sibling, stamp its fingerprint there, then swap it
    in with :func:`matdyn.io.replace_dir`: the path always holds a complete store (the old
    one or the new one), never one without its fingerprint or half-written attrs."""
    import zarr

    clean_stale_siblings(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{temp_token()}-{uuid.uuid4().hex[:8]}")
    try:
        _instantiate_generator(spec, staging, progress)
        g = zarr.open_group(str(staging), mode="r+")
        extra = dict(g.attrs.get("extra", {}) or {})
        extra["synthetic_fingerprint"] = fingerprint
        g.attrs["extra"] = extra
        if g.attrs.get("name") == staging.stem:  # a generator that names the store by its path
            g.attrs["name"] = target.stem
        replace_dir(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


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
    ``source: store`` only checks the existing store. The store must agree with the dataset's
    description of the data (:func:`check_dataset_keys`).
    """
    ds = plain_config(dict(dataset))
    target = Path(os.path.abspath(os.path.expanduser(str(path or ds.get("path") or ""))))
    if not str(ds.get("path") or path or ""):
        raise ConfigError("dataset.path is empty; set dataset.path=<store.zarr>")
    source = ds.get("source", "store")
    if source == "synthetic":
        spec = dict(ds.get("synthetic") or {})
        if "_target_" not in spec:
            raise ConfigError(f"dataset '{ds.get('name')}' has source=synthetic but no synthetic._target_")
        fp = synthetic_fingerprint(spec)
        if force or not _fresh(target, fp):
            # one generator per path; others wait for it, then find the store fresh
            with writer_lock(sibling_lock_path(target), f"store {target}", wait=_GENERATE_WAIT_S):
                if force or not _fresh(target, fp):
                    _check_replaceable(target)
                    log.info("%s synthetic stand-in '%s' at %s (%s)",
                             "replacing the store made with other settings by the" if
                             target.exists() else "generating", ds.get("name"), target,
                             ", ".join(f"{k}={v}" for k, v in spec.items() if k != "_target_"))
                    _generate_into(spec, target, fp, progress)
    elif source != "store":
        raise ConfigError(f"dataset.source must be 'synthetic' or 'store', got {source!r}")
    meta = open_store(target, validate=False).meta
    check_dataset_keys(ds, meta, target)
    return meta


def check_dataset_keys(dataset: Mapping[str, Any], meta: StoreMeta, where: str | os.PathLike = "store") -> None:
    """Check the dataset config's description of the data against the store's metadata.

    Keys (``conf/dataset/*.yaml``): ``ndim`` (2 images / 3 volumes), ``channels``,
    ``channel_names``, ``pixel_size`` (physical size of a pixel/voxel, in ``unit``; relative
    tolerance 1e-6) and ``unit``. A key set to null (or absent) is not checked: the store's
    value is used. Raises StoreError, one line naming the key and the fix, on disagreement.
    """
    name = dataset.get("name")

    def fail(key: str, have: Any, want: Any) -> StoreError:
        return StoreError(f"{where}: store has {key}={have} but dataset '{name}' says {want}; "
                          f"set dataset.{key}={have} (or null to take the store's) or pick "
                          "the matching dataset config")

    checks = {
        "ndim": (meta.ndim, lambda v: int(v) == meta.ndim),
        "channels": (meta.channels, lambda v: int(v) == meta.channels),
        "channel_names": (list(meta.channel_names),
                          lambda v: [str(c) for c in v] == list(meta.channel_names)),
        "pixel_size": (meta.pixel_size, lambda v: math.isclose(float(v), meta.pixel_size, rel_tol=1e-6)),
        "unit": (meta.unit, lambda v: str(v) == meta.unit),
    }
    for key, (have, agrees) in checks.items():
        want = dataset.get(key)
        if want is not None and not agrees(want):
            raise fail(key, have, want)
