"""Aggregation of a γ sweep into ``gamma.json`` and the continuity figure.

:func:`aggregate_sweep` finds the sweep's jobs by scanning their records
(:func:`matdyn.gamma.records.finished_jobs`; jobs split into shards are finished first by
:func:`matdyn.gamma.job.finish_sharded_jobs`, which names missing shards), pools the samples of every job with one γ,
measures the same metrics between consecutive *real* frames at the generator's resolution
(the baseline, :func:`matdyn.gamma.continuity.real_baseline`), draws the continuity curves
and picks γ with the rule of :class:`~matdyn.gamma.specs.RuleSpec`
(:mod:`matdyn.gamma.rules`); ``calibration.method=inversion`` then matches γ to the latent
steps of inverted consecutive frames (:mod:`matdyn.gamma.inversion`).

``<sweep>/gamma.json`` (written atomically) records the chosen γ, the sampler's full
specification with that γ (``sampler``), the generator bundle and its sha256, the store
identity, the per-γ table and the baseline; :func:`matdyn.gamma.resolve_sampler` reads it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma.continuity import (
    metrics_from_spec,
    real_baseline,
    summarize,
    sweep_particles_dark,
)
from matdyn.gamma.inversion import inversion_calibration
from matdyn.gamma.job import (
    check_bundle_fits,
    finish_sharded_jobs,
    resolve_device,
    sweep_name,
    wandb_run,
)
from matdyn.gamma.records import (
    GAMMA_FORMAT,
    GAMMA_VERSION,
    JobRecord,
    finished_jobs,
    identity_conflicts,
    scale_param,
    store_identity,
)
from matdyn.gamma.rules import GammaChoice, gamma_at_acceptance, gamma_at_bound, statistic
from matdyn.gamma.specs import BaselineSpec, CalibrationSpec, RuleSpec
from matdyn.io import write_json_atomic

__all__ = ["aggregate_sweep"]

log = logging.getLogger("matdyn.gamma")


@dataclass
class _Pooled:
    """Per swept γ (ascending): pooled samples [M*N] and per-reference medians [M] per metric."""

    gammas: np.ndarray
    samples: dict[str, list[np.ndarray]] = field(default_factory=dict)
    ref_medians: dict[str, list[np.ndarray]] = field(default_factory=dict)
    margins: list[float] = field(default_factory=list)
    angles: list[float] = field(default_factory=list)
    expected_margin: list[float] = field(default_factory=list)
    n_jobs: list[int] = field(default_factory=list)


def _pool(jobs: Sequence[JobRecord], names: Sequence[str]) -> _Pooled:
    """Pool the engine results of every job with the same γ."""
    from matdyn.sampling.engine import load_results

    by_gamma: dict[float, list[JobRecord]] = {}
    for j in jobs:
        by_gamma.setdefault(j.gamma, []).append(j)
    pooled = _Pooled(np.array(sorted(by_gamma), dtype=np.float64),
                     {k: [] for k in names}, {k: [] for k in names})
    if pooled.gammas.size < 2:
        raise AnalysisError(
            f"{jobs[0].path.parent} holds jobs for {pooled.gammas.size} γ value(s) "
            f"({pooled.gammas.tolist()}); sweep at least two, e.g. -m sampler.gamma=0.5,1.0,1.5,2.0"
        )
    # per γ: concatenate the references of its jobs, then summarise
    for g in pooled.gammas:
        group = by_gamma[float(g)]
        vals: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for j in group:
            res = load_results(j.results_dir)
            if not res.complete:
                raise AnalysisError(f"job {j.path} (γ = {g:g}) has incomplete results; re-run it")
            for k in names:
                vals[k].append(np.asarray(res[f"metrics/{k}"], dtype=np.float64))
        for k in names:
            rows = np.concatenate([v.reshape(v.shape[0], -1) for v in vals[k]], axis=0)  # [M, N]
            pooled.samples[k].append(rows.ravel())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pooled.ref_medians[k].append(np.nanmedian(rows, axis=1))
        w = np.array([j.data["n_refs"] for j in group], dtype=np.float64)
        pooled.margins.append(float(np.average([j.data["per_dim_distance_mean"] for j in group], weights=w)))
        pooled.angles.append(float(np.average([j.data["angular_step_mean"] for j in group], weights=w)))
        pooled.expected_margin.append(float(group[0].data.get("per_dim_distance_expected", np.nan)))
        pooled.n_jobs.append(len(group))
    return pooled


def _deciding(rule: RuleSpec, names: Sequence[str], bounds: Mapping[str, float]) -> tuple[list[str], dict[str, float]]:
    """(metrics whose curve decides, acceptance filter {metric: upper bound})."""
    if rule.metric == "auto":
        deciding = [names[0]]
    elif rule.metric == "all":
        deciding = list(names)
    elif rule.metric in names:
        deciding = [rule.metric]
    else:
        raise ConfigError(f"rule.metric={rule.metric!r} is not one of {list(names)} (or 'auto', 'all')")
    flt = dict(rule.filter) if rule.filter else {k: bounds[k] for k in deciding}
    unknown = sorted(set(flt) - set(names))
    if unknown:
        raise ConfigError(f"rule.filter names metric(s) {unknown} that the sweep did not measure ({list(names)})")
    return deciding, flt


def _table(p: _Pooled, names: Sequence[str], bounds: Mapping[str, float],
           flt: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per γ: typical differences, sample statistics and acceptance rates."""
    table = []
    for i, g in enumerate(p.gammas):
        row: dict[str, Any] = {
            "gamma": float(g), "per_dim_distance": p.margins[i],
            "per_dim_distance_expected": p.expected_margin[i],
            "angular_step_deg": math.degrees(p.angles[i]), "n_jobs": p.n_jobs[i],
            "metrics": {}, "acceptance": {},
        }
        within_all = np.ones(p.samples[names[0]][i].size, dtype=bool)
        for k in names:
            v = p.samples[k][i]
            s = summarize(v)
            row["metrics"][k] = {"typical": statistic(p.ref_medians[k][i], "median"),
                                 "median": s.median, "mean": s.mean, "p95": s.p95}
            ok = v <= bounds[k]  # NaN fails
            row["acceptance"][k] = float(ok.mean()) if v.size else float("nan")
            within_all &= ok
        row["acceptance"]["all"] = float(within_all.mean())
        keep = np.ones(within_all.size, dtype=bool)
        for k, b in flt.items():
            keep &= p.samples[k][i] <= b
        row["acceptance"]["filter"] = float(keep.mean())
        table.append(row)
    return table


def _choose(rule: RuleSpec, gammas: np.ndarray, table: Sequence[Mapping[str, Any]],
            bounds: Mapping[str, float], deciding: Sequence[str]
            ) -> tuple[GammaChoice, str, dict[str, GammaChoice]]:
    """(choice, deciding metric, per-metric choices of the bound rule)."""
    per_metric: dict[str, GammaChoice] = {}
    if rule.name == "bound":
        for k in deciding:
            typical = [r["metrics"][k]["typical"] for r in table]
            per_metric[k] = gamma_at_bound(gammas, typical, bounds[k], interpolate=rule.interpolate)
        key = min(per_metric, key=lambda k: per_metric[k].gamma)
        return per_metric[key], key, per_metric
    accept = [r["acceptance"]["filter"] for r in table]
    return gamma_at_acceptance(gammas, accept, rule.target, interpolate=rule.interpolate), deciding[0], {}


def _invert(store: Any, seq: Any, bundle: Any, fit: str, calibration: CalibrationSpec,
            p: _Pooled, distribution: str, device: str | None, notes: list[str]) -> dict[str, Any]:
    """Inversion calibration on a window of consecutive frames (notes appended to ``notes``)."""
    from matdyn.data.frames import ObservedFrames

    n = min(int(calibration.n_frames), len(seq))
    if calibration.start is not None:
        start = min(int(calibration.start), len(seq) - n)
    else:
        start = int(np.random.default_rng(calibration.seed).integers(0, len(seq) - n + 1))
    win = seq.window(start, n)
    frames = ObservedFrames(store, win.indices, int(bundle.resolution), fit).load()
    dev = resolve_device(device)
    log.info("inverting %d consecutive frames (%s) on %s", n, seq.description, dev)
    inv = inversion_calibration(bundle.to(dev), frames, win.groups, calibration, gammas=p.gammas,
                                angular_steps=p.angles, distribution=distribution, device=dev)
    inv["frames"] = win.indices.tolist()
    notes.extend(inv["notes"])
    g = p.gammas
    if not g[0] <= inv["gamma"] <= g[-1]:
        notes.append(f"the inversion γ = {inv['gamma']:.4g} lies outside the swept range "
                     f"[{g[0]:g}, {g[-1]:g}]; its continuity metrics are extrapolated")
    return inv


def _figure(root: Path, p: _Pooled, names: Sequence[str], base: Any, bounds: Mapping[str, float],
            rule: RuleSpec, method: str, gamma: float, margin_at: float) -> list[Path]:
    """continuity.{png,svg}: metric vs per-dimension margin, consecutive-frame band, chosen γ."""
    from matdyn.viz.figures import continuity_curves, save_figure

    fig = continuity_curves(
        np.asarray(p.margins),
        {k: _ragged(p.ref_medians[k]) for k in names},
        baselines={k: (float(base.summary[k].median), bounds[k]) for k in names},
        chosen=margin_at,
        xlabel="sampling margin per dimension (mean ‖ε‖ / d)",
    )
    margins, gammas = p.margins, p.gammas
    for ax, k in zip(list(fig.axes), names):
        ax.set_title(f"{k}: bound ({rule.bound_stat}) {bounds[k]:.3g}", fontsize=8)
        legend = ax.get_legend()
        for text in legend.get_texts() if legend is not None else []:
            if text.get_text().startswith("consecutive frames"):
                text.set_text(f"consecutive frames (median–{rule.bound_stat})")
            elif text.get_text().startswith("chosen"):
                text.set_text(f"chosen γ = {gamma:.3g} ({method})")
        top = ax.secondary_xaxis(
            "top",
            functions=(lambda m: np.interp(m, margins, gammas), lambda g: np.interp(g, gammas, margins)),
        )
        top.set_xlabel("γ", fontsize=8)
    return save_figure(fig, root / "continuity")


def _ragged(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack rows of unequal length into [G, max_len], NaN-padded."""
    width = max(r.size for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out


def _log_wandb(run: Any, out: Mapping[str, Any], root: Path) -> None:
    import wandb

    names, table = out["metrics"], out["per_gamma"]
    run.log({"sweep/continuity": wandb.Image(str(root / "continuity.png"))})
    rows = [[r["gamma"], r["per_dim_distance"], k, r["metrics"][k]["typical"],
             r["acceptance"][k], r["acceptance"]["filter"]] for r in table for k in names]
    run.log({"sweep/per_gamma": wandb.Table(
        columns=["gamma", "per_dim_distance", "metric", "typical", "acceptance",
                 "acceptance_filter"], data=rows)})
    run.summary.update({"sweep/gamma": out["gamma"], "sweep/gamma_continuity": out["continuity"]["gamma"],
                        "sweep/bound": out["bound"]})
    if out["inversion"] is not None:
        run.summary.update({"sweep/gamma_inversion": out["inversion"]["gamma"]})


@dataclass
class _Sweep:
    """A sweep's jobs with the generator, store and metrics they were measured with."""

    root: Path
    jobs: list[JobRecord]
    dataset: dict[str, Any]
    bundle_path: Path
    bundle_sha256: str
    bundle: Any
    metrics: list[Any]
    store: Any
    store_identity: dict[str, Any]


def _open_sweep(root: Path, dataset: Mapping[str, Any] | None, bundle_path: Any,
                progress: bool) -> _Sweep:
    """Read the job records and open (and check) the bundle, the metrics and the store."""
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import open_store
    from matdyn.io import file_sha256
    from matdyn.training.bundle import load_generator

    finish_sharded_jobs(root)  # the merge step of sharded jobs
    jobs = finished_jobs(root)
    first = jobs[0].data
    dataset = dict(dataset if dataset is not None else first["dataset_config"])
    bundle_path = Path(bundle_path or first["bundle"]).absolute()
    sha = file_sha256(bundle_path)
    if sha != first["bundle_sha256"]:
        raise AnalysisError(f"{bundle_path} differs from the bundle the jobs used ({first['bundle']}); "
                            "pass bundle=<that file>")
    bundle = load_generator(bundle_path)
    metrics = metrics_from_spec(first.get("metrics_config", "auto"), dataset.get("name"),
                                int(bundle.ndim), dark=sweep_particles_dark(dataset))
    if [repr(m) for m in metrics] != list(first["metric_specs"]):
        raise AnalysisError(f"the jobs measured {first['metric_specs']} but the aggregation builds "
                            f"{[repr(m) for m in metrics]}; aggregate with the sweep's metrics setting")
    meta = ensure_store(dataset, progress=progress)
    check_bundle_fits(bundle, dataset, meta, bundle_path)
    store = open_store(Path(str(dataset["path"])).absolute())  # NaN/inf, missing chunks
    ident = store_identity(dataset, meta)
    diff = identity_conflicts(first["store"], ident)
    if diff:
        raise AnalysisError(f"store {store.path} differs from the one the jobs recorded (in {diff}); "
                            "aggregate with the sweep's dataset")
    return _Sweep(root, jobs, dataset, bundle_path, sha, bundle, metrics, store, ident)


@dataclass
class _Decision:
    """Everything the rule (and the optional inversion) decided about one sweep."""

    bounds: dict[str, float]
    flt: dict[str, float]
    table: list[dict[str, Any]]
    choice: GammaChoice
    key: str
    per_metric: dict[str, GammaChoice]
    inversion: dict[str, Any] | None
    gamma: float
    margin_at: float
    notes: list[str]


def _decide(sw: _Sweep, p: _Pooled, base: Any, seq: Any, rule: RuleSpec,
            calibration: CalibrationSpec, device: str | None) -> _Decision:
    """Bounds from the baseline, the per-γ table, the rule's γ and the calibrated γ."""
    names = [m.name for m in sw.metrics]
    bounds = {k: float(getattr(base.summary[k], rule.bound_stat)) for k in names}
    log.info("baseline: %d consecutive pairs (%s) at %d px; bounds (%s) %s", len(base.pairs),
             seq.description, sw.bundle.resolution, rule.bound_stat, bounds)
    deciding, flt = _deciding(rule, names, bounds)
    table = _table(p, names, bounds, flt)
    choice, key, per_metric = _choose(rule, p.gammas, table, bounds, deciding)
    notes = [c.message for c in ([choice] if rule.name == "acceptance" else per_metric.values()) if c.message]
    inversion = None
    if calibration.method == "inversion":
        distribution = str(sw.jobs[0].data.get("distribution", "uniform"))
        fit = str(sw.dataset.get("fit") or "crop")
        inversion = _invert(sw.store, seq, sw.bundle, fit, calibration, p, distribution, device, notes)
    gamma = float(inversion["gamma"] if inversion is not None else choice.gamma)
    for note in notes:
        warnings.warn(note, stacklevel=3)
        log.warning(note)
    g = p.gammas
    # the margin is proportional to γ: extrapolate through the origin outside the sweep
    margin_at = float(np.interp(gamma, g, p.margins) if g[0] <= gamma <= g[-1]
                      else gamma * np.mean(np.asarray(p.margins) / g))
    return _Decision(bounds, flt, table, choice, key, per_metric, inversion, gamma, margin_at, notes)


def rule_met(choice: GammaChoice, per_metric: Mapping[str, GammaChoice], key: str,
             rule_name: str) -> dict[str, Any]:
    """``gamma_rule_met`` (False when the rule's crossing lies outside the swept range and
    γ was clipped) and ``gamma_rule_note`` (what to do), for gamma.json."""
    c = choice if rule_name == "acceptance" else per_metric.get(key, choice)
    return {"gamma_rule_met": c.clipped is None, "gamma_rule_note": c.message}


def _gamma_record(sw: _Sweep, p: _Pooled, base: Any, seq: Any, rule: RuleSpec,
                  calibration: CalibrationSpec, baseline: BaselineSpec, d: _Decision,
                  figure_paths: Sequence[Path]) -> dict[str, Any]:
    """The contents of gamma.json (format :data:`GAMMA_FORMAT` v:data:`GAMMA_VERSION`)."""
    choice, key, per_metric, gamma, bounds = d.choice, d.key, d.per_metric, d.gamma, d.bounds
    names, root, g = [m.name for m in sw.metrics], sw.root, p.gammas
    inside = bool(g[0] <= gamma <= g[-1])
    accept = [r["acceptance"]["filter"] for r in d.table]
    sampler = dict(sw.jobs[0].data["sampler"])
    sampler[scale_param(sampler)] = gamma
    return {
        "format": GAMMA_FORMAT, "version": GAMMA_VERSION, "gamma": gamma, "sampler": sampler,
        "distribution": sw.jobs[0].data.get("distribution"),
        "rule": rule.name, "rule_settings": asdict(rule), "metric": key, "bound": bounds[key],
        "bound_stat": rule.bound_stat, "bounds": bounds, "calibration": calibration.method,
        "continuity": {"gamma": float(choice.gamma),
                       **{f"choice_{k}": c.as_dict() for k, c in per_metric.items()},
                       **({"choice": choice.as_dict()} if rule.name == "acceptance" else {})},
        "inversion": d.inversion,
        **rule_met(choice, per_metric, key, rule.name),
        "per_dim_distance": d.margin_at,
        "acceptance": {"filter": d.flt, "at_gamma": float(np.interp(gamma, g, accept)) if inside else None,
                       "target": rule.target},
        "per_gamma": d.table,
        "baseline": {"summary": base.as_dict(), "n_pairs": int(len(base.pairs)), "frames": seq.description,
                     "stride": int(baseline.stride), "resolution": int(sw.bundle.resolution)},
        "metrics": names, "metric_specs": [repr(m) for m in sw.metrics],
        "jobs": [{"dir": str(j.path.relative_to(root)), "gamma": j.gamma, "seed": j.data.get("seed")}
                 for j in sw.jobs],
        "sweep_dir": str(root), "bundle": str(sw.bundle_path), "bundle_sha256": sw.bundle_sha256,
        "dataset": sw.dataset.get("name"), "store": sw.store_identity,
        "figure": [q.name for q in figure_paths], "warnings": d.notes,
    }


def aggregate_sweep(
    sweep_dir: str | os.PathLike,
    *,
    rule: RuleSpec | None = None,
    calibration: CalibrationSpec | None = None,
    baseline: BaselineSpec | None = None,
    dataset: Mapping[str, Any] | None = None,
    bundle_path: str | os.PathLike | None = None,
    device: str | None = "auto",
    progress: bool = False,
    wandb_cfg: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read every finished γ job of ``sweep_dir``, compare with consecutive real frames,
    choose γ and write ``<sweep_dir>/gamma.json`` and ``continuity.{png,svg}``.

    ``dataset`` / ``bundle_path`` default to what the job records name (a given bundle must
    have the recorded sha256). Raises AnalysisError / ConfigError (one line) for unfinished
    or inconsistent jobs and bad settings; nothing is written then. Returns gamma.json.
    """
    t0 = time.perf_counter()
    root = Path(sweep_dir).absolute()
    rule, calibration, baseline = rule or RuleSpec(), calibration or CalibrationSpec(), baseline or BaselineSpec()
    sw = _open_sweep(root, dataset, bundle_path, progress)
    p = _pool(sw.jobs, [m.name for m in sw.metrics])
    fit = str(sw.dataset.get("fit") or "crop")
    base, seq = real_baseline(sw.store, sw.metrics, int(sw.bundle.resolution), fit=fit, spec=baseline)
    d = _decide(sw, p, base, seq, rule, calibration, device)
    figure_paths = _figure(root, p, [m.name for m in sw.metrics], base, d.bounds, rule,
                           calibration.method, d.gamma, d.margin_at)
    out = _gamma_record(sw, p, base, seq, rule, calibration, baseline, d, figure_paths)
    out["elapsed_s"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(root / "gamma.json", out)
    group = (wandb_cfg or {}).get("group") or sweep_name(sw.dataset.get("name"), root)
    run = wandb_run(wandb_cfg, group=group, job_type="gamma_aggregate", name="aggregate", dir=str(root))
    if run is not None:
        try:
            _log_wandb(run, out, root)
        finally:
            run.finish()
    return out
