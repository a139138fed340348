"""The γ sweep: latent continuity curves and the choice of the perturbation margin γ
(paper §2.2, §3.3.1 / Fig. 5c, §3.4.1 / Fig. 7d).

One **job** per γ (a Hydra multirun, ``scripts/sweep_gamma.py``) draws M references and N
perturbations ε ~ U[-γ, γ]^d each with the variation engine, measures difference metrics
between every G(z_i + ε_ij) and its reference G(z_i) and writes ``metrics.json``
(:func:`run_gamma_job`). The engine checkpoints into ``<job>/variations`` so a job resumes.

**Aggregation** (:func:`aggregate_sweep`; a Hydra callback at the end of the multirun and
``scripts/aggregate_sweep.py``) reads every job, measures the same metrics between
consecutive *real* frames at the generator's resolution (the baseline,
:mod:`matdyn.analysis.continuity`), draws the continuity curves and picks γ:

* rule ``bound`` (the paper's): the γ at which the typical perturbed-vs-reference
  difference (median over references of each reference's median) reaches the upper bound
  of consecutive experimental differences (§3.3.1: "the entropy difference corresponds
  to the upper bound observed between consecutive experimental frames"), interpolated
  linearly between swept values (first upward crossing);
* rule ``acceptance``: the largest γ whose acceptance rate under the analysis filter
  (metric ≤ bound) is still ≥ a target (last downward crossing).

A choice outside the swept range is clipped to it with a warning. ``calibration=inversion``
also inverts a window of consecutive real frames into the latent space
(:mod:`matdyn.sampling.inversion`) and matches γ to their latent steps (§2.2: "correlating
... with the average latent space distances between adjacent time-step reconstructions").

Everything ends in ``<sweep>/gamma.json`` (written atomically, only when every job is
there) and ``<sweep>/continuity.{png,svg}``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from matdyn.analysis.continuity import ContinuityBaseline, consecutive_differences, summarize
from matdyn.data.frames import FrameSequence, ObservedFrames, consecutive_sequence
from matdyn.descriptors.differences import (
    AreaDifference,
    DensityDifference,
    DifferenceMetric,
    EntropyDifference,
    ShapeDifference,
)
from matdyn.descriptors.particles import Binarizer
from matdyn.errors import AnalysisError, CheckpointError, ConfigError

__all__ = [
    "AggregateSweepCallback",
    "BaselineSpec",
    "CalibrationSpec",
    "FrameSequence",
    "GammaChoice",
    "ResizedFrames",
    "RuleSpec",
    "aggregate_from_config",
    "aggregate_sweep",
    "case_metrics",
    "check_bundle_fits",
    "consecutive_sequence",
    "expected_jobs",
    "gamma_at_acceptance",
    "gamma_at_bound",
    "gamma_from_angle",
    "inversion_calibration",
    "load_jobs",
    "metrics_from_spec",
    "real_baseline",
    "run_gamma_job",
    "run_sweep_job",
    "sweep_config_with_overrides",
    "sweep_name",
]

log = logging.getLogger("matdyn.sweep")

JOB_FORMAT = "matdyn-gamma-job"
GAMMA_FORMAT = "matdyn-gamma"
VERSION = 1
RESULTS_SUBDIR = "variations"
_STATS = ("mean", "median", "p95", "max")


# ----------------------------------------------------------------------------- settings
def _from_mapping(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    """Build a settings dataclass; unknown keys are an error (a typo would change results)."""
    values = dict(values or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**values)


@dataclass(frozen=True)
class RuleSpec:
    """How γ is chosen from the continuity curves.

    name: ``bound`` (paper) or ``acceptance``. metric: the metric whose curve decides
    (``auto``: the case's first metric; ``all``: the smallest γ over all metrics).
    bound_stat: which statistic of the consecutive-frame differences is the bound
    (``max``: the paper's upper bound; ``p95``: robust to outlier pairs). target: the
    acceptance rule's minimum acceptance rate. filter: explicit upper bounds
    ``{metric: value}`` for the acceptance filter (default: the metric's baseline bound).
    interpolate: interpolate linearly between swept γ (else pick a swept value).
    """

    name: str = "bound"
    metric: str = "auto"
    bound_stat: str = "max"  # §3.3.1: "upper bound observed between consecutive frames"
    target: float = 0.5
    filter: Mapping[str, float] | None = None
    interpolate: bool = True

    def __post_init__(self) -> None:
        if self.name not in ("bound", "acceptance"):
            raise ConfigError(f"rule.name must be 'bound' or 'acceptance', got {self.name!r}")
        if self.bound_stat not in ("max", "p95"):
            raise ConfigError(f"rule.bound_stat must be 'max' or 'p95', got {self.bound_stat!r}")
        if not 0.0 < float(self.target) <= 1.0:
            raise ConfigError(f"rule.target must be an acceptance rate in (0, 1], got {self.target!r}")
        if self.filter is not None:
            flt = {str(k): float(v) for k, v in dict(self.filter).items()}
            if not flt or not all(math.isfinite(v) for v in flt.values()):
                raise ConfigError(f"rule.filter must map metric names to finite bounds, got {self.filter!r}")
            object.__setattr__(self, "filter", flt)
        object.__setattr__(self, "target", float(self.target))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> RuleSpec:
        return _from_mapping(cls, values, "rule")


@dataclass(frozen=True)
class CalibrationSpec:
    """Which γ ends up in gamma.json: ``continuity`` (metric curves vs real frames) or
    ``inversion`` (latent steps between inverted consecutive frames; the continuity γ is
    still reported). The other fields set the inversion (see
    :func:`matdyn.sampling.inversion.invert`): ``n_frames`` consecutive frames starting at
    ``start`` (None: a seeded random window), ``stat`` of their consecutive latent steps
    (median, or an upper bound p95 / max) and ``mapping`` from step to γ: ``angular``
    matches the angle between latents (what a pixel-normalising generator sees),
    ``distance`` matches the step length to E‖ε‖/d (the paper's per-dimension margin).
    """

    method: str = "continuity"
    n_frames: int = 32
    start: int | None = None
    stat: str = "median"
    mapping: str = "angular"
    steps: int = 300
    lr: float = 0.05
    restarts: int = 4
    prior_weight: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("continuity", "inversion"):
            raise ConfigError(
                f"calibration.method must be 'continuity' or 'inversion', got {self.method!r}"
            )
        if self.stat not in _STATS:
            raise ConfigError(f"calibration.stat must be one of {_STATS}, got {self.stat!r}")
        if self.mapping not in ("angular", "distance"):
            raise ConfigError(
                f"calibration.mapping must be 'angular' or 'distance', got {self.mapping!r}"
            )
        if int(self.n_frames) < 2:
            raise ConfigError(f"calibration.n_frames must be >= 2, got {self.n_frames!r}")
        if self.start is not None and int(self.start) < 0:
            raise ConfigError(f"calibration.start must be >= 0 or null, got {self.start!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> CalibrationSpec:
        return _from_mapping(cls, values, "calibration")


@dataclass(frozen=True)
class BaselineSpec:
    """Consecutive-frame baseline: frame step, optional cap on frames, frames per read."""

    stride: int = 1
    max_frames: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if int(self.stride) < 1:
            raise ConfigError(f"baseline.stride must be >= 1, got {self.stride!r}")
        if self.max_frames is not None and int(self.max_frames) < 2:
            raise ConfigError(f"baseline.max_frames must be >= 2 or null, got {self.max_frames!r}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"baseline.batch_size must be >= 1, got {self.batch_size!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> BaselineSpec:
        return _from_mapping(cls, values, "baseline")


# ----------------------------------------------------------------------------- metrics
def case_metrics(dataset: str | None, ndim: int) -> list[DifferenceMetric]:
    """The continuity metrics of each case study; the first one decides γ by default.

    * ``np_diffusion``: entropy difference and particle-area difference in px (§3.3.1,
      Fig. 5c); NPs are dark phase dips, so masks threshold the dark side (Otsu).
    * ``ta_chart``: 1 − IoU of the chart masks (§3.2, Fig. 4a compares IOUs).
    * ``brass_clump`` (and other 3D data): 1 − IOU₃D of the clump mask (Otsu on the
      channel sum) and total density difference (§3.4.1, Fig. 7d).
    * other 2D data: entropy and particle-area difference with bright particles.

    >>> [m.name for m in case_metrics("np_diffusion", 2)]
    ['entropy_diff', 'area_diff']
    >>> [m.name for m in case_metrics("mine", 3)]
    ['shape_diff', 'density_diff']
    """
    if ndim not in (2, 3):
        raise ConfigError(f"dataset ndim must be 2 or 3, got {ndim!r}")
    if dataset == "ta_chart" and ndim == 2:
        return [ShapeDifference(Binarizer())]
    if dataset == "brass_clump" or ndim == 3:
        return [ShapeDifference(Binarizer(channel=None)), DensityDifference()]
    dark = dataset == "np_diffusion"
    return [EntropyDifference(), AreaDifference(Binarizer(dark=dark), min_area=2)]


def metrics_from_spec(spec: Any, dataset: str | None, ndim: int) -> list[DifferenceMetric]:
    """``auto``/None -> :func:`case_metrics`; a list of metric objects or of plain
    ``{_target_: ...}`` mappings (built with Hydra's ``instantiate``) -> that list."""
    if spec is None or (isinstance(spec, str) and spec == "auto"):
        return case_metrics(dataset, ndim)
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence):
        raise ConfigError(
            f"metrics must be 'auto' or a list of metric configs with _target_, got {spec!r}"
        )
    out = []
    for item in spec:
        if isinstance(item, Mapping):
            if "_target_" not in item:
                raise ConfigError(f"metric config {dict(item)!r} has no _target_")
            from hydra.utils import instantiate

            item = instantiate(dict(item), _convert_="all")
        if not isinstance(item, DifferenceMetric):
            raise ConfigError(f"{item!r} is not a difference metric (needs name, prepare, compute)")
        out.append(item)
    names = [m.name for m in out]
    if not out or len(set(names)) != len(names):
        raise ConfigError(f"metrics need at least one entry with unique names, got {names}")
    return out


# ----------------------------------------------------------------------------- real frames
ResizedFrames = ObservedFrames  # the shared loader (matdyn.data.frames)


def real_baseline(
    store: Any,
    metrics: Sequence[DifferenceMetric],
    resolution: int,
    *,
    fit: str = "crop",
    spec: BaselineSpec | None = None,
) -> tuple[ContinuityBaseline, FrameSequence]:
    """Metric differences between consecutive real frames at ``resolution`` px."""
    spec = spec or BaselineSpec()
    seq = consecutive_sequence(store.labels, len(store)).head(spec.max_frames)
    src = ResizedFrames(store, seq.indices, resolution, fit)
    base = consecutive_differences(
        src, metrics, stride=int(spec.stride), groups=seq.groups, batch_size=int(spec.batch_size)
    )
    return base, seq


# ----------------------------------------------------------------------------- γ choice
@dataclass(frozen=True)
class GammaChoice:
    """A chosen γ; ``clipped`` is None, "low" or "high" when the crossing lies outside the
    swept range (then ``message`` says what to do)."""

    gamma: float
    clipped: str | None = None
    bracket: tuple[float, float] | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bracket"] = None if self.bracket is None else list(self.bracket)
        return d


def _curve(gammas: Sequence[float], values: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gammas, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if g.ndim != 1 or g.shape != v.shape or g.size == 0:
        raise AnalysisError(f"{what}: need one value per γ, got {g.shape} γ and {v.shape} values")
    order = np.argsort(g, kind="stable")
    g, v = g[order], v[order]
    if np.any(np.diff(g) <= 0):
        raise AnalysisError(f"{what}: swept γ values must be distinct, got {g.tolist()}")
    if not np.all(np.isfinite(v)):
        bad = g[~np.isfinite(v)].tolist()
        raise AnalysisError(f"{what} is not finite at γ = {bad}; check the metric and the generator")
    return g, v


def gamma_at_bound(
    gammas: Sequence[float], typical: Sequence[float], bound: float, *, interpolate: bool = True
) -> GammaChoice:
    """The γ at which the typical difference first reaches ``bound`` (paper §3.3.1).

    Linear interpolation between the last swept γ below the bound and the first at or above
    it; without ``interpolate`` the largest swept γ whose value stays ≤ bound. Clipped to
    the swept range (with a message) when the curve starts above or never reaches it.

    >>> gamma_at_bound([0.5, 1.0, 1.5, 2.0], [0.05, 0.10, 0.15, 0.20], 0.125).gamma
    1.25
    >>> gamma_at_bound([0.5, 1.0], [0.05, 0.10], 0.5).clipped
    'high'
    """
    g, t = _curve(gammas, typical, "typical difference")
    if not math.isfinite(float(bound)):
        raise AnalysisError(f"the consecutive-frame bound is not finite ({bound!r})")
    above = np.flatnonzero(t >= bound)
    if above.size == 0:
        return GammaChoice(
            float(g[-1]), "high", None,
            f"even the largest swept γ = {g[-1]:g} gives a typical difference {t[-1]:.4g} below "
            f"the bound {bound:.4g}; γ clipped to {g[-1]:g}: extend the sweep to larger γ",
        )
    k = int(above[0])
    if k == 0:
        return GammaChoice(
            float(g[0]), "low", None,
            f"already the smallest swept γ = {g[0]:g} gives a typical difference {t[0]:.4g} at or "
            f"above the bound {bound:.4g}; γ clipped to {g[0]:g}: extend the sweep to smaller γ",
        )
    bracket = (float(g[k - 1]), float(g[k]))
    if not interpolate:
        return GammaChoice(float(g[k] if t[k] == bound else g[k - 1]), None, bracket)
    frac = (bound - t[k - 1]) / (t[k] - t[k - 1])
    return GammaChoice(float(g[k - 1] + frac * (g[k] - g[k - 1])), None, bracket)


def gamma_at_acceptance(
    gammas: Sequence[float], acceptance: Sequence[float], target: float, *, interpolate: bool = True
) -> GammaChoice:
    """The largest γ whose acceptance rate is still ≥ ``target``.

    Takes the largest swept γ with acceptance ≥ target and, with ``interpolate``, moves
    linearly towards the next swept γ to where acceptance falls to the target.

    >>> gamma_at_acceptance([0.5, 1.0, 1.5], [0.9, 0.7, 0.3], 0.5).gamma
    1.25
    """
    g, a = _curve(gammas, acceptance, "acceptance rate")
    ok = np.flatnonzero(a >= target)
    if ok.size == 0:
        return GammaChoice(
            float(g[0]), "low", None,
            f"acceptance is below the target {target:g} at every swept γ (at γ = {g[0]:g}: "
            f"{a[0]:.3g}); γ clipped to {g[0]:g}: extend the sweep to smaller γ",
        )
    k = int(ok[-1])
    if k == g.size - 1:
        return GammaChoice(
            float(g[-1]), "high", None,
            f"acceptance at the largest swept γ = {g[-1]:g} is {a[-1]:.3g} >= target {target:g}; "
            f"γ clipped to {g[-1]:g}: extend the sweep to larger γ",
        )
    bracket = (float(g[k]), float(g[k + 1]))
    if not interpolate or a[k] == a[k + 1]:
        return GammaChoice(float(g[k]), None, bracket)
    frac = (a[k] - target) / (a[k] - a[k + 1])
    return GammaChoice(float(g[k] + frac * (g[k + 1] - g[k])), None, bracket)


def gamma_from_angle(angle: float, distribution: str = "uniform") -> float:
    """Scale whose mean angular step atan(component std) equals ``angle`` (radians):
    γ = √3·tan θ for U[-γ, γ], σ = tan θ for N(0, σ²) (inverse of
    :func:`matdyn.descriptors.latent.expected_angular_step`).

    >>> round(gamma_from_angle(math.radians(30.0)), 3)
    1.0
    """
    if not 0.0 < angle < math.pi / 2:
        raise AnalysisError(f"latent angle {angle!r} rad is outside (0, π/2); no γ matches it")
    t = math.tan(angle)
    return math.sqrt(3.0) * t if distribution == "uniform" else t


def _stat(values: np.ndarray, name: str) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    if name == "mean":
        return float(v.mean())
    if name == "median":
        return float(np.median(v))
    if name == "p95":
        return float(np.percentile(v, 95.0))
    return float(v.max())


# ----------------------------------------------------------------------------- bundle checks
def check_bundle_fits(bundle: Any, dataset: Mapping[str, Any], meta: Any = None, path: Any = "") -> None:
    """Refuse a generator whose channels / dimensionality do not match the dataset."""
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
        log.warning("generator %s was trained on store '%s', the sweep compares with '%s'",
                    path, trained, getattr(meta, "name", name))


def _resolve_device(device: str | None) -> str:
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


def _wandb_run(cfg: Mapping[str, Any] | None, **kwargs: Any) -> Any:
    cfg = dict(cfg or {})
    mode = str(cfg.get("mode") or "offline")
    if not cfg.get("wandb", False) or mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    return wandb.init(project=cfg.get("project") or "matdyn", mode=mode, reinit="finish_previous", **kwargs)


# ----------------------------------------------------------------------------- one γ job
def _summary_dict(values: np.ndarray) -> dict[str, float]:
    return summarize(values).as_dict()


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
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the variation engine for one sampler and write ``<out_dir>/metrics.json``.

    The engine checkpoints into ``<out_dir>/variations``: a rerun resumes. Returns the
    summary written to metrics.json (``objective`` = typical value of the first metric).
    """
    from matdyn.io import write_json_atomic
    from matdyn.sampling.engine import VariationEngine
    from matdyn.sampling.reducers import LatentStats, SampleMetrics

    t0 = time.perf_counter()
    if not metrics:
        raise ConfigError("the γ job needs at least one difference metric")
    out = Path(out_dir)
    engine = VariationEngine(
        generator, sampler, n_refs=n_refs, n_samples=n_samples, seed=seed,
        metrics=metrics, reducers=[SampleMetrics(), LatentStats()], batch_size=batch_size,
        block_size=block_size, device=device, progress=progress,
    )
    result = engine.run(out / RESULTS_SUBDIR, resume=True)
    d = engine.latent_dim
    per_metric = {}
    # per metric: all-sample statistics and the per-reference medians
    for m in metrics:
        v = np.asarray(result[f"metrics/{m.name}"], dtype=np.float64)  # [M, N]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
            ref_med = np.nanmedian(v, axis=1)
        s = summarize(v)
        per_metric[m.name] = {
            "typical": _stat(ref_med, "median"),
            "median": s.median,
            "mean": s.mean,
            "p95": s.p95,
            "n_nan": int(np.count_nonzero(~np.isfinite(v))),
            "per_reference_median": _summary_dict(ref_med),
        }
    per_dim = np.asarray(result["latent/per_dim_distance"], dtype=np.float64)
    angle = np.asarray(result["latent/angular_step"], dtype=np.float64)
    first = metrics[0].name
    summary: dict[str, Any] = {
        "format": JOB_FORMAT,
        "version": VERSION,
        "gamma": float(sampler.scale),
        "sampler": repr(sampler),
        "distribution": str(sampler.distribution),
        "latent_dim": d,
        "n_refs": int(n_refs),
        "n_samples": int(n_samples),
        "seed": int(seed),
        "per_dim_distance_mean": float(per_dim.mean()),
        "per_dim_distance_expected": float(sampler.per_dimension_distance(d)),
        "angular_step_mean": float(angle.mean()),
        "angular_step_mean_deg": float(np.degrees(angle.mean())),
        "angular_step_expected_deg": float(np.degrees(sampler.angular_step())),
        "metric_names": [m.name for m in metrics],
        "metric_specs": [repr(m) for m in metrics],
        "metrics": per_metric,
        "objective_metric": first,
        "objective": per_metric[first]["typical"],
        "results_dir": RESULTS_SUBDIR,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    summary.update(dict(extra or {}))
    write_json_atomic(out / "metrics.json", summary)
    return summary


def run_sweep_job(
    dataset: Mapping[str, Any],
    bundle_path: str | os.PathLike,
    sampler: Any,
    out_dir: str | os.PathLike,
    *,
    metrics: Any = "auto",
    n_refs: int = 100,
    n_samples: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    block_size: int | None = None,
    device: str | None = "auto",
    progress: bool = True,
    wandb_cfg: Mapping[str, Any] | None = None,
    group: str | None = None,
    job_overrides: Sequence[str] = (),
    resolved_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Library entry of ``scripts/sweep_gamma.py`` (one γ job)."""
    from matdyn.cli import project_path
    from matdyn.io import file_sha256
    from matdyn.training.bundle import load_generator

    gamma = getattr(sampler, "scale", None)
    if gamma is None or not float(gamma) > 0:
        raise ConfigError(f"the sampler's γ must be > 0, got {gamma!r}")
    bundle_path = project_path(bundle_path)
    bundle = load_generator(bundle_path)
    meta = None
    store_path = project_path(str(dataset.get("path") or ""))
    if dataset.get("path") and store_path.exists():  # only read: parallel jobs never write it
        from matdyn.data.store import open_store

        meta = open_store(store_path, validate=False).meta
    check_bundle_fits(bundle, dataset, meta, bundle_path)
    ms = metrics_from_spec(metrics, dataset.get("name"), int(bundle.ndim))
    dev = _resolve_device(device)
    bundle = bundle.to(dev)
    extra = {
        "dataset": dataset.get("name"),
        "bundle": str(bundle_path),
        "bundle_sha256": file_sha256(bundle_path),
        "resolution": int(bundle.resolution),
        "overrides": [str(o) for o in job_overrides],
        "device": dev,
    }
    out = Path(out_dir)
    log.info("γ job %r: %d refs x %d samples, metrics %s -> %s", sampler, n_refs, n_samples,
             [m.name for m in ms], out)
    run = _wandb_run(wandb_cfg, group=group, job_type="gamma_sweep", name=f"{sampler!r}",
                     dir=str(out), config=dict(resolved_config or {}))
    try:
        summary = run_gamma_job(
            bundle, sampler, ms, out, n_refs=n_refs, n_samples=n_samples, seed=seed,
            batch_size=batch_size, block_size=block_size, device=dev, progress=progress,
            extra=extra,
        )
        if run is not None:
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
    finally:
        if run is not None:
            run.finish()
    return summary


# ----------------------------------------------------------------------------- reading a sweep
@dataclass
class _Job:
    path: Path
    summary: dict[str, Any]

    @property
    def gamma(self) -> float:
        return float(self.summary["gamma"])


def _gamma_of(overrides: Sequence[str]) -> str:
    for o in overrides:
        key, _, value = str(o).partition("=")
        if key.lstrip("+") in ("sampler.gamma", "sampler.sigma", "sampler.scale"):
            return value
    return " ".join(overrides) or "(no overrides)"


def expected_jobs(overrides: Sequence[str], params: Mapping[str, Any] | None = None) -> list[list[str]]:
    """The override list of every job of a basic-sweeper multirun, in job order.

    >>> expected_jobs(["dataset=np_diffusion", "sampler.gamma=0.5,1.0"])
    [['dataset=np_diffusion', 'sampler.gamma=0.5'], ['dataset=np_diffusion', 'sampler.gamma=1.0']]
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = [f"{k}={v}" for k, v in dict(params or {}).items()] + [str(o) for o in overrides]
    parsed = OverridesParser.create().parse_overrides(items)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


def load_jobs(sweep_dir: str | os.PathLike, expected: Sequence[Sequence[str]] | None = None) -> list[_Job]:
    """Every finished job (``metrics.json``) of a sweep directory.

    With ``expected`` (the override lists of the sweep's jobs) every expected job must be
    there: otherwise one AnalysisError line lists the γ that are missing.
    """
    import json

    root = Path(sweep_dir)
    if not root.is_dir():
        raise AnalysisError(f"sweep directory {root} does not exist; pass dir=<multirun dir>")
    found: list[_Job] = []
    for p in sorted(root.glob("*/metrics.json")) + sorted(root.glob("*/*/metrics.json")):
        try:
            s = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise AnalysisError(f"{p} is unreadable ({type(e).__name__}); re-run that job") from None
        if isinstance(s, dict) and s.get("format") == JOB_FORMAT:
            found.append(_Job(p.parent, s))
    if expected is not None:
        have = {tuple(sorted(j.summary.get("overrides") or [])) for j in found}
        want = [list(e) for e in expected]
        missing = [e for e in want if tuple(sorted(e)) not in have]
        if missing:
            gam = ", ".join(_gamma_of(e) for e in missing)
            raise AnalysisError(
                f"sweep {root} is incomplete: {len(missing)} of {len(want)} job(s) have no "
                f"metrics.json (missing γ = {gam}); re-run them into the same directory "
                f"(add hydra.sweep.dir={root}) and aggregate again"
            )
        keep = {tuple(sorted(e)) for e in want}
        found = [j for j in found if tuple(sorted(j.summary.get("overrides") or [])) in keep]
    if not found:
        raise AnalysisError(f"{root} holds no finished γ job (no */metrics.json); run the sweep first")
    return found


# ----------------------------------------------------------------------------- inversion
def inversion_calibration(
    bundle: Any,
    frames: np.ndarray,
    groups: np.ndarray | None,
    spec: CalibrationSpec,
    *,
    gammas: Sequence[float] = (),
    angular_steps: Sequence[float] = (),
    distribution: str = "uniform",
    device: str = "cpu",
) -> dict[str, Any]:
    """γ from the latent steps between inverted consecutive real frames.

    ``frames`` [n, C, *spatial] are in physical units at the generator's resolution; they
    are mapped to the generator's [-1, 1] range with the bundle's normalisation, inverted,
    and the consecutive per-dimension distances on the √d sphere (pairs inside one group)
    summarised by ``spec.stat``. ``gamma_distance`` matches that distance to E‖ε‖/d;
    ``gamma_angular`` matches the angle between the latents to the sweep's measured mean
    angular step (``gammas`` / ``angular_steps``; analytic outside the swept range).
    """
    import torch

    from matdyn.descriptors.latent import expected_per_dimension_distance
    from matdyn.sampling.inversion import gamma_for_distance, invert

    d = int(bundle.latent_dim)
    x = torch.as_tensor(np.asarray(frames, dtype=np.float32), device=device)
    x = (x - bundle.offset.to(x)) / bundle.scale.to(x)  # physical -> [-1, 1]
    gen = bundle.generator

    def g_fn(z: torch.Tensor) -> torch.Tensor:  # unclamped, so gradients reach every pixel
        return gen(z, bundle.stage, bundle.fade_alpha)

    res = invert(
        g_fn, x, d, steps=int(spec.steps), lr=float(spec.lr), restarts=int(spec.restarts),
        prior_weight=float(spec.prior_weight), batch_size=int(spec.batch_size), seed=int(spec.seed),
    )
    dist = np.asarray(res.consecutive_distances(), dtype=np.float64)  # [n-1]
    valid = np.ones(dist.size, dtype=bool) if groups is None else groups[1:] == groups[:-1]
    dist = dist[valid]
    if dist.size == 0:
        raise AnalysisError("the inverted frames hold no consecutive pair; raise calibration.n_frames")
    # angle between latents on the sqrt(d) sphere: chord = 2 sqrt(d) sin(θ/2) = distance · d
    angles = 2.0 * np.arcsin(np.clip(dist * math.sqrt(d) / 2.0, 0.0, 1.0))
    dist_stat, angle_stat = _stat(dist, spec.stat), _stat(angles, spec.stat)
    if distribution == "uniform":
        g_dist = gamma_for_distance(dist_stat, d)
    else:
        g_dist = dist_stat / expected_per_dimension_distance(1.0, d, distribution)
    notes = []
    g_arr = np.asarray(gammas, dtype=np.float64)
    a_arr = np.asarray(angular_steps, dtype=np.float64)
    order = np.argsort(a_arr)
    if a_arr.size >= 2 and a_arr[order][0] <= angle_stat <= a_arr[order][-1]:
        g_ang = float(np.interp(angle_stat, a_arr[order], g_arr[order]))
    else:
        g_ang = gamma_from_angle(angle_stat, distribution)
        notes.append(
            f"the inverted frames' latent angle {math.degrees(angle_stat):.3g}° lies outside the "
            "swept angular steps; gamma_angular uses the analytic atan relation"
        )
    chosen = g_ang if spec.mapping == "angular" else g_dist
    return {
        "gamma": float(chosen),
        "mapping": spec.mapping,
        "gamma_angular": float(g_ang),
        "gamma_distance": float(g_dist),
        "stat": spec.stat,
        "per_dim_distance": dist_stat,
        "angle_deg": math.degrees(angle_stat),
        "n_frames": int(x.shape[0]),
        "n_pairs": int(dist.size),
        "mse_median": float(res.mse.median()),
        "distances": dist.tolist(),
        "settings": asdict(spec),
        "notes": notes,
    }


# ----------------------------------------------------------------------------- aggregation
def aggregate_sweep(
    sweep_dir: str | os.PathLike,
    *,
    dataset: Mapping[str, Any],
    bundle_path: str | os.PathLike,
    metrics: Sequence[DifferenceMetric] | None = None,
    rule: RuleSpec | None = None,
    calibration: CalibrationSpec | None = None,
    baseline: BaselineSpec | None = None,
    expected: Sequence[Sequence[str]] | None = None,
    device: str | None = "auto",
    progress: bool = False,
    wandb_cfg: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read every γ job, compare with consecutive real frames, choose γ and write
    ``<sweep_dir>/gamma.json`` and ``continuity.{png,svg}``. Returns the gamma.json dict."""
    from matdyn.cli import project_path
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import open_store
    from matdyn.io import file_sha256, write_json_atomic
    from matdyn.sampling.engine import load_results
    from matdyn.training.bundle import load_generator
    from matdyn.viz.figures import continuity_curves, save_figure

    t0 = time.perf_counter()
    root = Path(sweep_dir)
    rule = rule or RuleSpec()
    calibration = calibration or CalibrationSpec()
    baseline = baseline or BaselineSpec()
    jobs = load_jobs(root, expected)
    notes: list[str] = []

    # the jobs must describe one generator and one set of metrics
    first = jobs[0].summary
    for key, what in (("bundle_sha256", "generator bundle"), ("metric_specs", "metric settings"),
                      ("distribution", "sampler distribution"), ("latent_dim", "latent size")):
        vals = {repr(j.summary.get(key)) for j in jobs}
        if len(vals) > 1:
            raise AnalysisError(f"the jobs of {root} used different {what}s; aggregate one sweep of one generator")
    bundle_path = project_path(bundle_path)
    sha = file_sha256(bundle_path)
    if first.get("bundle_sha256") and sha != first["bundle_sha256"]:
        raise AnalysisError(
            f"{bundle_path} differs from the bundle the jobs used ({first.get('bundle')}); pass bundle=<that file>"
        )
    bundle = load_generator(bundle_path)
    if metrics is None:
        metrics = case_metrics(dataset.get("name"), int(bundle.ndim))
    metrics = list(metrics)
    if [repr(m) for m in metrics] != list(first.get("metric_specs") or []):
        raise AnalysisError(
            f"the jobs measured {first.get('metric_specs')} but the aggregation builds "
            f"{[repr(m) for m in metrics]}; aggregate with the sweep's metrics setting"
        )
    names = [m.name for m in metrics]

    # per γ: pool the samples of every job with that γ
    by_gamma: dict[float, list[_Job]] = {}
    for j in jobs:
        by_gamma.setdefault(j.gamma, []).append(j)
    gammas = np.array(sorted(by_gamma), dtype=np.float64)
    if gammas.size < 2:
        raise AnalysisError(
            f"{root} holds jobs for {gammas.size} γ value(s) ({gammas.tolist()}); sweep at least two, "
            "e.g. -m sampler.gamma=0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0"
        )
    samples: dict[str, list[np.ndarray]] = {k: [] for k in names}  # per γ, all samples [M*N]
    ref_medians: dict[str, list[np.ndarray]] = {k: [] for k in names}  # per γ, [M]
    margins, angles, expected_margin = [], [], []
    for g in gammas:
        group = by_gamma[float(g)]
        vals = {k: [] for k in names}
        for j in group:
            res = load_results(j.path / str(j.summary.get("results_dir", RESULTS_SUBDIR)))
            if not res.complete:
                raise AnalysisError(f"job {j.path} (γ = {g:g}) has incomplete results; re-run it")
            for k in names:
                vals[k].append(np.asarray(res[f"metrics/{k}"], dtype=np.float64))
        for k in names:
            rows = np.concatenate([v.reshape(v.shape[0], -1) for v in vals[k]], axis=0)  # [M, N]
            samples[k].append(rows.ravel())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ref_medians[k].append(np.nanmedian(rows, axis=1))
        w = np.array([j.summary["n_refs"] for j in group], dtype=np.float64)
        margins.append(float(np.average([j.summary["per_dim_distance_mean"] for j in group], weights=w)))
        angles.append(float(np.average([j.summary["angular_step_mean"] for j in group], weights=w)))
        expected_margin.append(float(group[0].summary.get("per_dim_distance_expected", np.nan)))

    # the real side: consecutive frames at the generator's resolution, same metric objects
    meta = ensure_store(dataset, progress=progress)
    check_bundle_fits(bundle, dataset, meta, bundle_path)
    store = open_store(project_path(dataset["path"]), validate=False)
    fit = str(dataset.get("fit") or "crop")
    base, seq = real_baseline(store, metrics, int(bundle.resolution), fit=fit, spec=baseline)
    bounds = {k: float(getattr(base.summary[k], rule.bound_stat)) for k in names}
    log.info("baseline: %d consecutive pairs (%s) at %d px; bounds (%s) %s", len(base.pairs),
             seq.description, bundle.resolution, rule.bound_stat, bounds)

    # which metric decides, and the acceptance filter
    if rule.metric == "auto":
        deciding = [names[0]]
    elif rule.metric == "all":
        deciding = list(names)
    elif rule.metric in names:
        deciding = [rule.metric]
    else:
        raise ConfigError(f"rule.metric={rule.metric!r} is not one of {names} (or 'auto', 'all')")
    flt = dict(rule.filter) if rule.filter else {k: bounds[k] for k in deciding}
    unknown = sorted(set(flt) - set(names))
    if unknown:
        raise ConfigError(f"rule.filter names metric(s) {unknown} that the sweep did not measure ({names})")

    # per γ: typical differences and acceptance rates
    table = []
    accept_filter = []
    for i, g in enumerate(gammas):
        row: dict[str, Any] = {
            "gamma": float(g),
            "per_dim_distance": margins[i],
            "per_dim_distance_expected": expected_margin[i],
            "angular_step_deg": math.degrees(angles[i]),
            "n_jobs": len(by_gamma[float(g)]),
            "metrics": {},
            "acceptance": {},
        }
        within_all = None
        for k in names:
            v = samples[k][i]
            s = summarize(v)
            row["metrics"][k] = {
                "typical": _stat(ref_medians[k][i], "median"),
                "median": s.median,
                "mean": s.mean,
                "p95": s.p95,
            }
            ok = v <= bounds[k]  # NaN fails
            row["acceptance"][k] = float(ok.mean()) if v.size else float("nan")
            within_all = ok if within_all is None else within_all & ok
        row["acceptance"]["all"] = float(within_all.mean()) if within_all is not None else float("nan")
        keep = np.ones(samples[names[0]][i].size, dtype=bool)
        for k, b in flt.items():
            keep &= samples[k][i] <= b
        row["acceptance"]["filter"] = float(keep.mean())
        accept_filter.append(row["acceptance"]["filter"])
        table.append(row)

    # choose γ by the rule
    per_metric_choice = {}
    if rule.name == "bound":
        for k in deciding:
            typical = [r["metrics"][k]["typical"] for r in table]
            per_metric_choice[k] = gamma_at_bound(gammas, typical, bounds[k], interpolate=rule.interpolate)
        key = min(per_metric_choice, key=lambda k: per_metric_choice[k].gamma)
        choice = per_metric_choice[key]
    else:
        choice = gamma_at_acceptance(gammas, accept_filter, rule.target, interpolate=rule.interpolate)
        key = deciding[0]
    for c in ([choice] if rule.name == "acceptance" else per_metric_choice.values()):
        if c.message:
            warnings.warn(c.message, stacklevel=2)
            log.warning(c.message)
            notes.append(c.message)
    gamma_continuity = choice.gamma

    # optional inversion calibration
    inversion = None
    if calibration.method == "inversion":
        n = min(int(calibration.n_frames), len(seq))
        if calibration.start is not None:
            start = min(int(calibration.start), len(seq) - n)
        else:
            start = int(np.random.default_rng(calibration.seed).integers(0, len(seq) - n + 1))
        win = seq.window(start, n)
        frames = ResizedFrames(store, win.indices, int(bundle.resolution), fit).load()
        dev = _resolve_device(device)
        log.info("inverting %d consecutive frames (%s) on %s", n, seq.description, dev)
        inversion = inversion_calibration(
            bundle.to(dev), frames, win.groups, calibration, gammas=gammas, angular_steps=angles,
            distribution=str(first.get("distribution", "uniform")), device=dev,
        )
        inversion["frames"] = win.indices.tolist()
        for note in inversion["notes"]:
            log.warning(note)
            notes.append(note)
        if not gammas[0] <= inversion["gamma"] <= gammas[-1]:
            msg = (f"the inversion γ = {inversion['gamma']:.4g} lies outside the swept range "
                   f"[{gammas[0]:g}, {gammas[-1]:g}]; its continuity metrics are extrapolated")
            log.warning(msg)
            notes.append(msg)
        gamma = float(inversion["gamma"])
    else:
        gamma = float(gamma_continuity)

    inside = bool(gammas[0] <= gamma <= gammas[-1])
    # the margin is proportional to γ: extrapolate through the origin outside the sweep
    margin_at = float(np.interp(gamma, gammas, margins) if inside
                      else gamma * np.mean(np.asarray(margins) / gammas))
    acceptance_at = float(np.interp(gamma, gammas, accept_filter)) if inside else None

    # figure: metric vs per-dimension margin, consecutive-frame band, chosen γ
    fig = continuity_curves(
        np.asarray(margins),
        {k: _ragged(ref_medians[k]) for k in names},
        baselines={k: (float(base.summary[k].median), bounds[k]) for k in names},
        chosen=margin_at,
        xlabel="sampling margin per dimension (mean ‖ε‖ / d)",
    )
    for ax, k in zip(list(fig.axes), names):
        ax.set_title(f"{k}: bound ({rule.bound_stat}) {bounds[k]:.3g}", fontsize=8)
        legend = ax.get_legend()
        for text in legend.get_texts() if legend is not None else []:
            if text.get_text().startswith("consecutive frames"):
                text.set_text(f"consecutive frames (median–{rule.bound_stat})")
            elif text.get_text().startswith("chosen"):
                text.set_text(f"chosen γ = {gamma:.3g} ({calibration.method})")
        top = ax.secondary_xaxis(
            "top",
            functions=(lambda m: np.interp(m, margins, gammas), lambda g: np.interp(g, gammas, margins)),
        )
        top.set_xlabel("γ", fontsize=8)
    figure_paths = save_figure(fig, root / "continuity")

    out: dict[str, Any] = {
        "format": GAMMA_FORMAT,
        "version": VERSION,
        "gamma": gamma,
        "rule": rule.name,
        "rule_settings": asdict(rule),
        "metric": key,
        "bound": bounds[key],
        "bound_stat": rule.bound_stat,
        "bounds": bounds,
        "calibration": calibration.method,
        "continuity": {
            "gamma": float(gamma_continuity),
            **{f"choice_{k}": c.as_dict() for k, c in per_metric_choice.items()},
            **({"choice": choice.as_dict()} if rule.name == "acceptance" else {}),
        },
        "inversion": inversion,
        "per_dim_distance": margin_at,
        "acceptance": {"filter": flt, "at_gamma": acceptance_at, "target": rule.target},
        "per_gamma": table,
        "baseline": {
            "summary": base.as_dict(),
            "n_pairs": int(len(base.pairs)),
            "frames": seq.description,
            "stride": int(baseline.stride),
            "resolution": int(bundle.resolution),
        },
        "metrics": names,
        "metric_specs": [repr(m) for m in metrics],
        "jobs": [{"dir": str(j.path.relative_to(root)), "gamma": j.gamma} for j in jobs],
        "sweep_dir": str(root),
        "bundle": str(bundle_path),
        "bundle_sha256": sha,
        "dataset": dataset.get("name"),
        "store": str(store.path),
        "figure": [p.name for p in figure_paths],
        "warnings": notes,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    write_json_atomic(root / "gamma.json", out)

    group = (wandb_cfg or {}).get("group") or sweep_name(dataset.get("name"), root)
    run = _wandb_run(wandb_cfg, group=group, job_type="gamma_aggregate", name="aggregate", dir=str(root))
    if run is not None:
        try:
            import wandb

            run.log({"sweep/continuity": wandb.Image(str(root / "continuity.png"))})
            rows = [[r["gamma"], r["per_dim_distance"], k, r["metrics"][k]["typical"],
                     r["acceptance"][k], r["acceptance"]["filter"]] for r in table for k in names]
            run.log({"sweep/per_gamma": wandb.Table(
                columns=["gamma", "per_dim_distance", "metric", "typical", "acceptance",
                         "acceptance_filter"], data=rows)})
            run.summary.update({"sweep/gamma": gamma, "sweep/gamma_continuity": gamma_continuity,
                                "sweep/bound": bounds[key]})
            if inversion is not None:
                run.summary.update({"sweep/gamma_inversion": inversion["gamma"]})
        finally:
            run.finish()
    return out


def _ragged(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack rows of unequal length into [G, max_len], NaN-padded."""
    width = max(r.size for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out


# ----------------------------------------------------------------------------- Hydra glue
def aggregate_from_config(
    sweep_dir: str | os.PathLike,
    cfg: Mapping[str, Any],
    expected: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """:func:`aggregate_sweep` from a resolved sweep config (a plain dict, ``conf/sweep.yaml``)."""
    bundle = cfg.get("bundle")
    if bundle in (None, "", "???"):
        raise ConfigError("bundle is not set; pass bundle=<run>/generator.pt")
    dataset = dict(cfg["dataset"])
    ndim = int(dataset.get("ndim") or 2)
    return aggregate_sweep(
        sweep_dir,
        dataset=dataset,
        bundle_path=bundle,
        metrics=metrics_from_spec(cfg.get("metrics", "auto"), dataset.get("name"), ndim),
        rule=RuleSpec.from_mapping(cfg.get("rule")),
        calibration=CalibrationSpec.from_mapping(cfg.get("calibration")),
        baseline=BaselineSpec.from_mapping(cfg.get("baseline")),
        expected=expected,
        device=cfg.get("device", "auto"),
        progress=bool(cfg.get("progress", False)),
        wandb_cfg=cfg.get("logger"),
    )


def plain_sweep_config(config: Any) -> tuple[dict[str, Any], list[list[str]] | None]:
    """(resolved config without ``hydra``, expected job overrides) of a multirun config."""
    from omegaconf import OmegaConf

    hydra_node = OmegaConf.select(config, "hydra")
    expected = None
    if hydra_node is not None:
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
        task = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params, resolve=False) if params is not None else None
        if sweeper.endswith("BasicSweeper"):
            expected = expected_jobs([str(t) for t in task], params)
    body = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    return OmegaConf.to_container(body, resolve=True), expected  # type: ignore[return-value]


def sweep_config_with_overrides(
    sweep_dir: str | os.PathLike, cli_config: Any, overrides: Sequence[str]
) -> tuple[dict[str, Any], list[list[str]] | None]:
    """The settings a sweep ran with (its ``multirun.yaml``), with the keys named in
    ``overrides`` (command-line overrides of ``scripts/aggregate_sweep.py``) taken from
    ``cli_config`` instead; returns :func:`plain_sweep_config` of the result."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        raise AnalysisError(
            f"{path} not found; dir= must be a multirun directory written by "
            "scripts/sweep_gamma.py -m"
        )
    saved = OmegaConf.load(path)
    # command-line keys win over the saved sweep settings (group choices replace the node)
    for o in OverridesParser.create().parse_overrides([str(x) for x in overrides]):
        key = o.key_or_group.replace("/", ".")
        if key == "dir" or key == "hydra" or key.startswith("hydra."):
            continue
        if o.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(saved, parent) if parent else saved
            if node is not None and leaf in node:
                node.pop(leaf)
            continue
        value = OmegaConf.select(cli_config, key)
        OmegaConf.update(saved, key, value, merge=False, force_add=True)
    return plain_sweep_config(saved)


class _CallbackBase:
    pass


try:  # Hydra is a dependency of the scripts, not of the library
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = _CallbackBase  # type: ignore[misc,assignment]


class AggregateSweepCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """Hydra callback (``hydra.callbacks`` in conf/sweep.yaml): aggregates the sweep when
    all its jobs have returned. Errors print ``error: ...`` and exit with status 2."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from matdyn.cli import matdyn_cause, project_path

        try:
            from omegaconf import OmegaConf

            sweep_dir = project_path(str(OmegaConf.select(config, "hydra.sweep.dir")))
            cfg, expected = plain_sweep_config(config)
            out = aggregate_from_config(sweep_dir, cfg, expected)
        except Exception as e:
            cause = matdyn_cause(e)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr, flush=True)
            sys.exit(2)
        print(f"gamma: {out['gamma']:.4g} ({out['calibration']}) -> {sweep_dir / 'gamma.json'}")

