"""Hydra glue of the γ sweep: the callback that aggregates at the end of a multirun and the
translation of a (resolved, plain) sweep config into :func:`matdyn.gamma.aggregate_sweep`.

Only the config it is handed is read: no Hydra global state, no ``hydra._internal``, no
``multirun.yaml``. The sweep's jobs are found by their records
(:mod:`matdyn.gamma.records`), so the aggregation covers every finished job of the
directory, whichever multirun (or re-run of a subset of γ) wrote it.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.gamma.aggregate import aggregate_sweep
from matdyn.gamma.specs import BaselineSpec, CalibrationSpec, RuleSpec

__all__ = ["AggregateSweepCallback", "SweepLockCallback", "aggregate_from_config",
           "keep_earlier_multirun", "plain_config"]


def plain_config(config: Any) -> dict[str, Any]:
    """A sweep config as a resolved plain dict, without the ``hydra`` node."""
    from omegaconf import OmegaConf

    body = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    return OmegaConf.to_container(body, resolve=True)  # type: ignore[return-value]


def aggregate_from_config(sweep_dir: str | os.PathLike, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`~matdyn.gamma.aggregate_sweep` with the ``rule``, ``calibration``, ``baseline``,
    ``device``, ``progress`` and ``logger`` settings of a plain sweep config
    (``conf/sweep.yaml``). Dataset, bundle and metrics come from the job records; a
    ``bundle`` given here must be the recorded one."""
    bundle = cfg.get("bundle")
    return aggregate_sweep(
        sweep_dir,
        rule=RuleSpec.from_mapping(cfg.get("rule")),
        calibration=CalibrationSpec.from_mapping(cfg.get("calibration")),
        baseline=BaselineSpec.from_mapping(cfg.get("baseline")),
        bundle_path=None if bundle in (None, "", "???") else Path(str(bundle)).absolute(),
        device=cfg.get("device", "auto"),
        progress=bool(cfg.get("progress", False)),
        wandb_cfg=cfg.get("logger"),
    )


def keep_earlier_multirun(sweep_dir: str | os.PathLike, new_yaml: str) -> Path | None:
    """Before a multirun into an existing sweep directory: keep the earlier ``multirun.yaml``
    (which Hydra is about to overwrite) as ``multirun.<n>.yaml``, n = 1, 2, ... oldest first,
    so that the directory states every multirun that wrote jobs into it (e.g. two γ lists;
    issue 13). Nothing is kept when the earlier file equals ``new_yaml`` (the same multirun
    re-run). Returns the kept file, or None. Never overwrites a kept file (``os.link``)."""
    d = Path(sweep_dir)
    cur = d / "multirun.yaml"
    try:
        old = cur.read_text()
    except FileNotFoundError:
        return None
    if old == new_yaml:
        return None
    n = 1
    while True:
        kept = d / f"multirun.{n}.yaml"
        try:
            os.link(cur, kept)  # atomic and no-clobber: concurrent shards get distinct numbers
        except FileExistsError:
            if kept.read_text() == old:  # kept already by a concurrent multirun
                break
            n += 1
            continue
        except FileNotFoundError:  # moved meanwhile by a concurrent multirun (another shard)
            return None
        break
    # Hydra rewrites multirun.yaml in place: drop this name so that the kept link stays as is
    cur.unlink(missing_ok=True)
    return kept


class _CallbackBase:
    pass


try:  # Hydra is a dependency of the scripts, not of the library
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = _CallbackBase  # type: ignore[misc,assignment]


class AggregateSweepCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """Hydra callback (``hydra.callbacks`` in conf/sweep.yaml): aggregates the sweep
    directory when the multirun's jobs have returned. Errors print ``error: ...`` and exit
    with status 2."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from omegaconf import OmegaConf

        from matdyn.cli import fail, user_error_message

        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
        try:
            out = aggregate_from_config(sweep_dir, plain_config(config))
        except Exception as e:
            # Hydra turns an exception of a callback into a warning and exit 0 (a sweep that
            # "succeeded" without gamma.json): exit here instead, 2 for input, 1 for a bug
            msg = user_error_message(e)
            if msg is None:
                traceback.print_exc()
                sys.exit(1)
            fail(f"aggregating {sweep_dir}: {msg}")
        print(f"gamma: {out['gamma']:.4g} ({out['calibration']}) -> {sweep_dir / 'gamma.json'}")


class SweepLockCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """Hydra callback (``hydra.callbacks.lock``, before ``aggregate``): the multirun holds the
    writer lock of its sweep directory (:mod:`matdyn.locks`) from before Hydra writes
    ``multirun.yaml`` until after the aggregation. A second multirun into the same directory
    meanwhile ends with one ``error:`` line naming the first (exit 2) and writes nothing. A
    later multirun (e.g. other γ values) keeps the earlier ``multirun.yaml`` as
    ``multirun.<n>.yaml`` (:func:`keep_earlier_multirun`).
    Jobs in worker processes (joblib, submitit) do not take it: the launching process does."""

    def __init__(self) -> None:
        import contextlib

        self._held = contextlib.ExitStack()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        import atexit

        from omegaconf import OmegaConf

        from matdyn.cli import fail
        from matdyn.locks import LockedError, dir_lock_path, writer_lock

        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
        # a sharded multirun (e.g. one SLURM array task per shard) locks its shards only
        shard = next((o.split("=", 1)[1] for o in OmegaConf.select(config, "hydra.overrides.task") or []
                      if str(o).split("=", 1)[0].lstrip("+~") == "shard" and "=" in str(o)), None)
        label = f"sweep directory {sweep_dir}" + (f" (shard {shard})" if shard else "")
        try:
            self._held.enter_context(writer_lock(dir_lock_path(sweep_dir, shard), label))
        except LockedError as e:  # Hydra would turn an exception here into a warning
            fail(str(e))
        # the sweeper saves this very config as multirun.yaml (OmegaConf.save, unresolved)
        keep_earlier_multirun(sweep_dir, OmegaConf.to_yaml(config))
        atexit.register(self._held.close)  # also when a job's failure ends the multirun

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._held.close()

    # the joblib launcher pickles the callbacks into its workers: they hold no lock
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
