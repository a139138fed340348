"""The variation step of a case study, whole or in shards (paper §2.2 Monte Carlo, spread
over processes, GPUs or a SLURM array).

* :func:`variation_step` — what :func:`~matdyn.analysis.case.run_case` calls: the case's
  :class:`~matdyn.analysis.case.VariationPlan` through the
  :class:`~matdyn.sampling.engine.VariationEngine` into ``<out_dir>/variations``
  (resumable blocks). With ``merge=True`` it first requires every block to be there
  (the merge of a sharded run: nothing is computed, missing shards are named).
* :func:`run_case_shard` — one shard ``k/n``: the case's ``observe`` step (the only one the
  variation plan may depend on) and the shard's blocks, written into the shared
  ``<out_dir>/variations``; no fidelity, tables, figures or summary. Shard k takes the
  k-th of n contiguous, near-equal groups of reference blocks
  (:mod:`matdyn.sampling.shards`).

A sharded run followed by the merge (``run_case(..., merge=True)`` into the same
``out_dir``) writes the same ``variations.csv`` and ``summary.json`` (up to ``elapsed_s``
and ``provenance``) as one process: the random streams depend on (seed, reference) only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.errors import ConfigError

__all__ = ["check_shard_options", "run_case_shard", "variation_step"]

log = logging.getLogger("matdyn.analysis")


def _engine(case: Any, ctx: Any, observed: Any, block_size: int | None) -> Any:
    from matdyn.sampling.engine import VariationEngine

    plan = case.variations(ctx, observed)
    return VariationEngine(ctx.generator, ctx.sampler, n_refs=plan.n_refs,
                           n_samples=plan.n_samples, seed=ctx.seed, metrics=list(plan.metrics),
                           reducers=list(plan.reducers), batch_size=plan.batch_size,
                           block_size=block_size, progress=ctx.progress)


def variation_step(case: Any, ctx: Any, observed: Any, *, merge: bool = False,
                   block_size: int | None = None) -> Any:
    """The case's variations as a :class:`~matdyn.sampling.engine.VariationResult` from
    ``<ctx.out_dir>/variations`` (finished blocks are reused, missing ones computed).

    ``merge=True``: compute nothing; AnalysisError naming the missing shards / references
    unless every block is already there. ``block_size``: references per checkpoint block
    (None: the engine's default, about 4 batches of images).
    """
    from matdyn.sampling.shards import require_complete

    engine = _engine(case, ctx, observed, block_size)
    out = ctx.out_dir / "variations"
    if merge:
        require_complete(out, f"the {ctx.name} analysis")
    return engine.run(out)


def run_case_shard(
    case: str | Any,
    generator: Any,
    store: Any,
    cfg: Any = None,
    *,
    out_dir: str | Path,
    shard: str | tuple[int, int],
    gamma: Any = "auto",
    sweep: Any = None,
    seed: int = 0,
    fit: str = "crop",
    progress: bool = True,
    sampler: Mapping[str, Any] | None = None,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Compute shard ``k/n`` of a case's variations into ``<out_dir>/variations``.

    Same arguments as :func:`~matdyn.analysis.case.run_case` plus ``shard`` ("k/n", integers
    0 <= k < n) and ``block_size``; every shard and the merge need the same settings and
    ``out_dir`` (the engine refuses a directory holding another run). Returns the
    :class:`~matdyn.sampling.shards.ShardReport` as a dict (``line``: one sentence saying
    what was done and what is left). Raises ConfigError for a bad shard spec.
    """
    from matdyn.analysis.case import make_context
    from matdyn.sampling.shards import run_shard
    from matdyn.sampling.streams import parse_shard

    parse_shard(shard)
    inst, ctx, _ = make_context(case, generator, store, cfg, out_dir=out_dir, gamma=gamma,
                                sweep=sweep, seed=seed, fit=fit, progress=progress,
                                sampler=sampler)
    observed = inst.observe(ctx)
    engine = _engine(inst, ctx, observed, block_size)
    _, report = run_shard(engine, ctx.out_dir / "variations", shard)
    log.info("analysis %s shard %s: %d block(s) computed", ctx.name, report.shard, report.blocks_run)
    return report.as_dict()


def check_shard_options(shard: Any, merge: Any, block_size: Any = None) -> None:
    """ConfigError for a bad ``shard`` spec, ``shard`` together with ``merge``, or a
    ``block_size`` that is not a positive integer."""
    from matdyn.sampling.streams import parse_shard

    if shard is not None:
        parse_shard(shard)
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 1):
        raise ConfigError(f"block_size must be a positive integer or null, got {block_size!r}")
    if not isinstance(merge, bool):
        raise ConfigError(f"merge must be true or false, got {merge!r}")
    if merge and shard is not None:
        raise ConfigError(f"merge=true and shard={shard} exclude each other: run the shards "
                          "first, then the merge without shard")
