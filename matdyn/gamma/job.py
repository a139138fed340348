"""One γ job of the sweep (paper §3.3.1 / Fig. 5c, §3.4.1 / Fig. 7d).

A job draws M references z_i and N perturbations ε_ij from one sampler with the variation
engine, measures difference metrics between every G(z_i + ε_ij) and its reference G(z_i)
and writes its record ``<job folder>/job.json`` (:mod:`matdyn.gamma.records`): first with
``status: running`` and the job's identity (γ, sampler specification, bundle sha256,
store identity, counts, metrics), then with ``status: done`` and the metric summaries.
The engine checkpoints into ``<job folder>/variations``, so re-running the same job into
the same folder resumes it; a folder holding another job refuses with one line.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matdyn.descriptors.differences import DifferenceMetric
from matdyn.errors import CheckpointError, ConfigError
from matdyn.gamma.continuity import metrics_from_spec, summarize, sweep_particles_dark
from matdyn.gamma.records import (
    JOB_FORMAT,
    JOB_RECORD,
    JOB_VERSION,
    RESULTS_SUBDIR,
    build_sampler,
    check_job_folder,
    check_siblings,
    sampler_spec,
    scan_jobs,
    store_identity,
)
from matdyn.gamma.rules import statistic
from matdyn.locks import locks_output_dir

__all__ = ["check_bundle_fits", "finish_job_record", "finish_sharded_jobs", "resolve_device",
           "run_gamma_job", "run_sweep_job", "sweep_name", "wandb_run"]

log = logging.getLogger("matdyn.gamma")


# ----------------------------------------------------------------------------- helpers
def check_bundle_fits(bundle: Any, dataset: Mapping[str, Any], meta: Any = None, path: Any = "") -> None:
    """Refuse (CheckpointError) a generator whose channels / dimensionality do not match the
    dataset config or the store's metadata ``meta``, or that was trained on another store
    (by the store name the bundle records)."""
    name = dataset.get("name")
    for what, got, want in (
        ("channel(s)", getattr(bundle, "channels", None), dataset.get("channels")),
        ("spatial dims (ndim)", getattr(bundle, "ndim", None), dataset.get("ndim")),
        ("channel(s)", getattr(bundle, "channels", None), getattr(meta, "channels", None)),
        ("spatial dims (ndim)", getattr(bundle, "ndim", None), getattr(meta, "ndim", None)),
    ):
        if got is not None and want is not None and int(got) != int(want):
            raise CheckpointError(
                f"generator {path} makes images with {got} {what} but dataset '{name}' has {want}; "
                "pass the bundle trained on this dataset (bundle=...) or the matching dataset=..."
            )
    trained = (getattr(bundle, "meta", None) or {}).get("name")
    if trained and name and meta is not None and trained != getattr(meta, "name", trained):
        raise CheckpointError(
            f"{path} was trained on store '{trained}' but the sweep compares with store "
            f"'{getattr(meta, 'name', name)}'; pass the bundle and dataset that belong together")


def resolve_device(device: str | None) -> str:
    """``auto``/None -> "cuda" when visible, else "cpu"; anything else unchanged."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def sweep_name(dataset: str | None, sweep_dir: str | os.PathLike) -> str:
    """W&B group of a sweep: ``sweep-<dataset>-<sweep dir name>``.

    >>> sweep_name("np_diffusion", "outputs/sweeps/np_diffusion/2026-01-01_10-00-00")
    'sweep-np_diffusion-2026-01-01_10-00-00'
    """
    return f"sweep-{dataset or 'data'}-{Path(sweep_dir).name}"


def wandb_run(cfg: Mapping[str, Any] | None, **kwargs: Any) -> Any:
    """A W&B run for the sweep's ``logger`` settings, or None when logging is off."""
    cfg = dict(cfg or {})
    mode = str(cfg.get("mode") or "offline")
    if not cfg.get("wandb", False) or mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    return wandb.init(project=cfg.get("project") or "matdyn", mode=mode, reinit="finish_previous", **kwargs)


# ----------------------------------------------------------------------------- one γ job
def _metric_summary(values: np.ndarray) -> dict[str, Any]:
    """All-sample statistics and per-reference medians of one metric [M, N]."""
    v = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        ref_med = np.nanmedian(v, axis=1)
    s = summarize(v)
    return {
        "typical": statistic(ref_med, "median"),
        "median": s.median,
        "mean": s.mean,
        "p95": s.p95,
        "n_nan": int(np.count_nonzero(~np.isfinite(v))),
        "per_reference_median": summarize(ref_med).as_dict(),
    }


def run_gamma_job(
    generator: Any,
    sampler: Any,
    metrics: Sequence[DifferenceMetric],
    out_dir: str | os.PathLike,
    *,
    n_refs: int = 100,
    n_samples: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    block_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
    record: Mapping[str, Any] | None = None,
    shard: str | None = None,
) -> dict[str, Any]:
    """Run the variation engine for one sampler and write ``<out_dir>/job.json``.

    ``record`` adds identity fields (bundle, store, ...) to the job record. Returns the
    finished record (``objective`` = typical value of the first metric). With ``shard="k/n"``
    only that shard's references are computed (:func:`matdyn.sampling.shards.run_shard`);
    the record stays ``status: running`` until the last shard's blocks are in, and the
    returned record then carries ``shard_report`` (what this shard did, what is left).
    """
    from matdyn.io import write_json_atomic
    from matdyn.sampling.engine import VariationEngine
    from matdyn.sampling.reducers import LatentStats, SampleMetrics
    from matdyn.sampling.shards import require_complete, run_shard

    t0 = time.perf_counter()
    if not metrics:
        raise ConfigError("the γ job needs at least one difference metric")
    out = Path(out_dir)
    rec: dict[str, Any] = {
        "format": JOB_FORMAT, "version": JOB_VERSION, "status": "running",
        "gamma": float(sampler.scale), "sampler": sampler_spec(sampler),
        "distribution": str(sampler.distribution), "n_refs": int(n_refs),
        "n_samples": int(n_samples), "seed": int(seed),
        "metric_names": [m.name for m in metrics], "metric_specs": [repr(m) for m in metrics],
        **dict(record or {}),
    }
    engine = VariationEngine(  # checks the counts before anything is written
        generator, sampler, n_refs=n_refs, n_samples=n_samples, seed=seed,
        metrics=metrics, reducers=[SampleMetrics(), LatentStats()], batch_size=batch_size,
        block_size=block_size, device=device, progress=progress,
    )
    if not (shard is not None and (out / JOB_RECORD).is_file()):
        write_json_atomic(out / JOB_RECORD, rec)  # a shard never overwrites a finished record
    if shard is None:
        result = engine.run(out / RESULTS_SUBDIR, resume=True)
    else:
        _, report = run_shard(engine, out / RESULTS_SUBDIR, shard)
        if not report.complete:
            return {**rec, "shard_report": report.as_dict()}
        result = require_complete(out / RESULTS_SUBDIR)
        rec["shard_report"] = report.as_dict()
    done = finish_job_record(rec, result, sampler, engine.latent_dim, t0)
    write_json_atomic(out / JOB_RECORD, {k: v for k, v in done.items() if k != "shard_report"})
    return done


def finish_job_record(rec: Mapping[str, Any], result: Any, sampler: Any, latent_dim: int,
                      t0: float) -> dict[str, Any]:
    """The ``status: done`` job record: ``rec`` plus the metric summaries of a complete
    engine ``result`` (``metrics/<name>`` [M, N], ``latent/...`` [M, N])."""
    names = list(rec["metric_names"])
    per_metric = {k: _metric_summary(result[f"metrics/{k}"]) for k in names}  # [M, N] each
    per_dim = np.asarray(result["latent/per_dim_distance"], dtype=np.float64)
    angle = np.asarray(result["latent/angular_step"], dtype=np.float64)
    return {
        **rec,
        "status": "done",
        "latent_dim": int(latent_dim),
        "per_dim_distance_mean": float(per_dim.mean()),
        "per_dim_distance_expected": float(sampler.per_dimension_distance(latent_dim)),
        "angular_step_mean": float(angle.mean()),
        "angular_step_mean_deg": float(np.degrees(angle.mean())),
        "angular_step_expected_deg": float(np.degrees(sampler.angular_step())),
        "metrics": per_metric,
        "objective_metric": names[0],
        "objective": per_metric[names[0]]["typical"],
        "results_dir": RESULTS_SUBDIR,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


def finish_sharded_jobs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The merge step of a sharded sweep: every unfinished job of ``sweep_dir`` whose
    results are complete gets its ``status: done`` record (the job folders it finished are
    returned). AnalysisError (one line) naming γ and the missing shards / references when a
    sharded job (one with shard records) is incomplete; other unfinished jobs are left to
    :func:`~matdyn.gamma.records.finished_jobs`, which names them."""
    from matdyn.io import write_json_atomic
    from matdyn.sampling.results import _read_manifest
    from matdyn.sampling.shards import SHARDS_SUBDIR, require_complete

    finished = []
    for job in scan_jobs(sweep_dir):
        res_dir = job.results_dir
        if job.done or not (res_dir / "manifest.json").is_file():
            continue
        if not any((res_dir / SHARDS_SUBDIR).glob("shard_*.json")):
            continue
        t0 = time.perf_counter()
        root = Path(sweep_dir)
        result = require_complete(
            res_dir, f"γ job {job.path.name} (γ = {job.gamma:g})",
            then=f"run those shards with hydra.sweep.dir={root}, then aggregate again "
                 f"(python scripts/aggregate_sweep.py dir={root})")
        latent_dim = int(_read_manifest(res_dir)["fingerprint"]["latent_dim"])
        rec = finish_job_record(job.data, result, build_sampler(job.data["sampler"]), latent_dim, t0)
        write_json_atomic(job.path / JOB_RECORD, rec)
        log.info("merged the shards of γ job %s", job.path.name)
        finished.append(job.path)
    return finished


def _open_store_meta(dataset: Mapping[str, Any]) -> Any:
    """The store's metadata when it exists (read only: parallel jobs never write it), after
    the full validation (NaN/inf, missing or unreadable chunks: one-line StoreError)."""
    path = Path(str(dataset.get("path") or ""))
    if not dataset.get("path") or not path.exists():
        return None
    from matdyn.data.store import open_store

    return open_store(path).meta


def _log_job(run: Any, summary: Mapping[str, Any]) -> None:
    import wandb

    rows = [[summary["gamma"], k, v["typical"], v["median"], v["mean"], v["p95"]]
            for k, v in summary["metrics"].items()]
    run.log({"sweep/table": wandb.Table(
        columns=["gamma", "metric", "typical", "median", "mean", "p95"], data=rows)})
    run.summary.update({f"sweep/{k}/{s}": v[s] for k, v in summary["metrics"].items()
                        for s in ("typical", "median", "mean", "p95")})
    run.summary.update({"sweep/gamma": summary["gamma"],
                        "sweep/per_dim_distance": summary["per_dim_distance_mean"],
                        "sweep/angular_step_deg": summary["angular_step_mean_deg"]})


@locks_output_dir("γ job folder")  # one job per folder (matdyn.locks)
def run_sweep_job(
    dataset: Mapping[str, Any],
    bundle_path: str | os.PathLike,
    sampler: Any,
    out_dir: str | os.PathLike,
    *,
    sweep_dir: str | os.PathLike | None = None,
    metrics: Any = "auto",
    n_refs: int = 100,
    n_samples: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    block_size: int | None = None,
    device: str | None = "auto",
    precision: str = "fp32",
    progress: bool = True,
    wandb_cfg: Mapping[str, Any] | None = None,
    group: str | None = None,
    overrides: Sequence[str] = (),
    shard: str | None = None,
) -> dict[str, Any]:
    """One γ job from plain settings (library entry of ``scripts/sweep_gamma.py``).

    ``dataset``: resolved dataset config with an absolute ``path``; ``sampler``: a sampler
    object or its specification ``{_target_: ..., gamma: ...}``; ``sweep_dir``: the
    directory holding the sweep's job folders (None for a lone job). Refuses (ConfigError,
    one line) a job folder holding another job, and a sweep directory whose other jobs used
    another bundle or store. Returns the finished job record; with ``shard="k/n"`` (k-th of n
    contiguous groups of reference blocks, :mod:`matdyn.sampling.shards`) the record of this
    shard's part (``shard_report``), finished only when the last shard's blocks are in.
    """
    from matdyn.io import file_sha256
    from matdyn.sampling.streams import parse_shard
    from matdyn.training.bundle import load_generator

    if shard is not None:
        parse_shard(shard)  # a bad spec fails before the bundle is read

    sampler = build_sampler(sampler) if isinstance(sampler, Mapping) else sampler
    gamma = getattr(sampler, "scale", None)
    if gamma is None or not float(gamma) > 0:
        raise ConfigError(f"the sampler's γ must be > 0, got {gamma!r}")
    bundle_path = Path(bundle_path).absolute()
    bundle = load_generator(bundle_path, precision=precision)
    meta = _open_store_meta(dataset)
    check_bundle_fits(bundle, dataset, meta, bundle_path)
    ms = metrics_from_spec(metrics, dataset.get("name"), int(bundle.ndim),
                           dark=sweep_particles_dark(dataset) if meta is not None else None)
    dev = resolve_device(device)
    out = Path(out_dir)
    identity = {
        "gamma": float(gamma), "sampler": sampler_spec(sampler), "seed": int(seed),
        "n_refs": int(n_refs), "n_samples": int(n_samples), "metric_specs": [repr(m) for m in ms],
        "dataset": dataset.get("name"), "dataset_config": dict(dataset),
        "store": store_identity(dataset, meta), "bundle": str(bundle_path),
        "bundle_sha256": file_sha256(bundle_path), "resolution": int(bundle.resolution),
        "metrics_config": metrics, "device": dev,
        "overrides": [str(o) for o in overrides if not str(o).startswith("shard=")],
    }
    resumed = check_job_folder(out, identity)
    if sweep_dir is not None:
        check_siblings(sweep_dir, identity, out)
    log.info("γ job %r (%s): %d refs x %d samples, metrics %s -> %s", sampler,
             "resuming" if resumed else "new", n_refs, n_samples, [m.name for m in ms], out)
    run = wandb_run(wandb_cfg, group=group, job_type="gamma_sweep", name=f"{sampler!r}",
                    dir=str(out), config=identity)
    try:
        summary = run_gamma_job(
            bundle.to(dev), sampler, ms, out, n_refs=n_refs, n_samples=n_samples, seed=seed,
            batch_size=batch_size, block_size=block_size, device=dev, progress=progress,
            record=identity, shard=shard,
        )
        if run is not None and summary["status"] == "done":
            _log_job(run, summary)
    finally:
        if run is not None:
            run.finish()
    return summary
