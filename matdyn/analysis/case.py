"""One shape for every case study: the :class:`Case` protocol and :func:`run_case`.

A case study (paper §3.2-3.4) is a sequence of steps on a trained generator and the
dataset store it was trained on::

    observe     observed frames prepared exactly as in training (``dataset.fit``)
    fidelity    generated vs observed, every number with its real-vs-real baseline
    variations  the sampler's latent Monte Carlo: metrics + reducers (VariationEngine)
    describe    a feature table in physical units (one row per variation / trace)
    group       clustering or embedding of that table
    recover     scores against the planted truth (only when the store has truth)
    figures     the paper's figures from the pieces above

A case implements the steps (:class:`Case`); :func:`run_case` owns everything the cases
share: the checks of generator and store, the sampler (``_sampler``: the ONE place
where γ becomes a sampler), seed-addressable generation (:meth:`CaseContext.generate`,
:meth:`CaseContext.fidelity_latents`), the variation engine, filter-rejection summaries
(:func:`rejection_summary`), summary statistics (:func:`stats`, missing values None),
the table (CSV) and figure writing (:meth:`CaseContext.save`, one helper), W&B keys
(``analysis/<case>/<key>``, :meth:`CaseContext.log`) and the versioned summary
(:class:`CaseSummary`, ``schema_version``).

A new case is a package under ``matdyn/analysis/cases/`` that calls
:func:`register_case` on import, plus ``conf/analysis/<name>.yaml`` whose ``_target_``
is its Config dataclass.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import to_jsonable, write_json_atomic

__all__ = [
    "SCHEMA_VERSION", "Case", "at_least", "one_of", "positive_ints", "CaseContext",
    "CaseSummary", "Table", "VariationPlan", "case_names", "fmt_stats", "get_case",
    "make_context", "register_case", "rejection_summary", "run_case", "stats",
]

#: version of the summary.json layout written by :func:`run_case`
SCHEMA_VERSION = 1

#: salt of the fidelity latents: z_fid = randn(n, d) from seed * FIDELITY_SALT + 7
FIDELITY_SALT = 1_000_003

_NM_PER_UNIT = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "A": 0.1, "Å": 0.1}


# ----------------------------------------------------------------------------- helpers
def finite_or_none(x: Any) -> float | None:
    """A JSON-friendly float: None for None, NaN and ±inf."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def stats(values: Any) -> dict[str, Any]:
    """n, mean, std, median, min, p95, max of the finite values (None when there are none).

    >>> stats([1.0, 3.0, float("nan")])["mean"], stats([])["mean"]
    (2.0, None)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0} | dict.fromkeys(("mean", "std", "median", "min", "p95", "max"))
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
            "median": float(np.median(v)), "min": float(v.min()),
            "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def fmt_stats(s: Mapping[str, Any]) -> str:
    """'min a / median b / max c' of a :func:`stats` dict (nan when missing)."""
    def g(k: str) -> float:
        return float("nan") if s.get(k) is None else float(s[k])

    return f"min {g('min'):.3g} / median {g('median'):.3g} / max {g('max'):.3g}"


def rejection_summary(rejected: Any, threshold: Any, kind: str,
                      metric: Any | None = None) -> dict[str, Any]:
    """Rejection rates of one filter: ``rejected`` [M, N] bool (sample j of reference i).

    Returns threshold, kind, ``rejection_rate_overall``, the per-reference rates
    (``rejection_rate_per_reference`` and its min/median/max) and, when given, the
    :func:`stats` of the filtered metric.
    """
    rej = np.asarray(rejected, dtype=bool)
    if rej.ndim != 2 or rej.size == 0:
        raise AnalysisError(f"rejection mask must be [M, N] with M, N > 0, got {rej.shape}")
    per = rej.mean(axis=1)
    out: dict[str, Any] = {
        "threshold": threshold,
        "kind": kind,
        "rejection_rate_overall": float(rej.mean()),
        "rejection_rate_per_reference_summary": {
            "min": float(per.min()), "median": float(np.median(per)), "max": float(per.max())},
        "rejection_rate_per_reference": [float(v) for v in per],
    }
    if metric is not None:
        out["metric"] = stats(metric)
    return out


def _clean(value: Any) -> Any:
    """JSON-able copy with every non-finite float as None."""
    value = to_jsonable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def config_dict(cfg: Any) -> dict[str, Any]:
    """A case config as a plain dict (dataclass fields, tuples as lists)."""
    return _clean(asdict(cfg)) if is_dataclass(cfg) else _clean(dict(cfg or {}))


def positive_ints(cfg: Any, names: Sequence[str]) -> None:
    """ConfigError unless every field ``names`` of ``cfg`` is an integer >= 1."""
    at_least(cfg, dict.fromkeys(names, 1))


def at_least(cfg: Any, bounds: Mapping[str, int]) -> None:
    """ConfigError unless each field is an integer >= its bound (``analysis.<name>``)."""
    for name, lo in bounds.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer)) or int(v) != v \
                or v < lo:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            raise ConfigError(f"analysis.{name} must be {what}, got {v!r}")


def one_of(cfg: Any, name: str, allowed: Sequence[Any]) -> None:
    """ConfigError unless field ``name`` is one of ``allowed``."""
    v = getattr(cfg, name)
    if v not in allowed:
        shown = ", ".join("null" if a is None else repr(a) for a in allowed)
        raise ConfigError(f"analysis.{name} must be one of {shown}, got {v!r}")


# ----------------------------------------------------------------------------- context
@dataclass
class CaseContext:
    """What every step sees: inputs, geometry, units, seeds and the writers."""

    name: str
    generator: Any
    store: Any
    cfg: Any
    out_dir: Path
    sampler: Any
    gamma: float
    seed: int
    fit: str
    resolution: int
    latent_dim: int
    pixel_size: float  # physical size of one generated pixel (``unit``), fit-aware
    unit: str
    progress: bool = True
    log_fn: Callable[[Mapping[str, Any]], None] | None = None
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # --- units
    @property
    def nm(self) -> float | None:
        """nm per ``unit`` (None when the unit is not a length we know)."""
        return _NM_PER_UNIT.get(self.unit)

    # --- observed frames, generated frames
    def observed(self, indices: Any):
        """:class:`matdyn.data.frames.ObservedFrames` of ``indices`` at the generator's
        resolution, squared with the run's ``fit`` (exactly as training prepared them)."""
        from matdyn.data.frames import ObservedFrames

        return ObservedFrames(self.store, indices, self.resolution, self.fit)

    @property
    def device(self) -> torch.device:
        if isinstance(self.generator, torch.nn.Module):
            for p in self.generator.parameters():
                return p.device
        return torch.device("cpu")

    def generate(self, z: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Physical-unit images [N, C, R, ...] float32 for latents z [N, d] (``.sample``
        when the generator has it, as the variation engine uses); AnalysisError on a wrong
        shape or NaN/inf."""
        fn = self.generator.sample if callable(getattr(self.generator, "sample", None)) \
            else self.generator
        out = []
        with torch.inference_mode():
            # one generator call per batch of latents
            for a in range(0, z.shape[0], int(batch_size)):
                x = fn(z[a : a + batch_size].to(self.device))
                out.append(x.detach().to("cpu", torch.float32).numpy())
        arr = np.concatenate(out)
        want = (self.store.meta.channels,) + (self.resolution,) * self.store.meta.ndim
        if arr.shape[1:] != want:
            raise AnalysisError(f"the generator returned images of shape {arr.shape[1:]}, "
                                f"expected {want} from its channels and resolution; check the bundle")
        if not np.isfinite(arr).all():
            raise AnalysisError("the generator produced NaN/inf images; check the bundle")
        return arr

    def fidelity_latents(self, n: int) -> torch.Tensor:
        """z ~ N(0, I) [n, d] for the fidelity comparison, addressable by the run's seed
        (the same n latents for every case and every rerun)."""
        g = torch.Generator().manual_seed(int(self.seed) * FIDELITY_SALT + 7)
        return torch.randn(int(n), self.latent_dim, generator=g)

    def variation_latents(self, index: int, n_samples: int):
        """(z_i, ε_i) of reference ``index`` exactly as the engine drew them."""
        from matdyn.sampling.engine import variation_latents

        return variation_latents(self.seed, int(index), int(n_samples), self.latent_dim,
                                 self.sampler)

    # --- writers
    def save(self, fig: Any, name: str, title: str | None = None) -> None:
        """Write ``figures/<name>.png`` and ``.svg`` (the one figure-saving helper)."""
        from matdyn.viz.figures import save_figure

        if title:
            fig.suptitle(title, fontsize=9)
            fig.tight_layout()
        for p in save_figure(fig, self.out_dir / "figures" / name):
            self.figures.append(str(p.relative_to(self.out_dir)))

    def log(self, values: Mapping[str, Any]) -> None:
        """Log scalars under ``analysis/<case>/<key>`` (None, bools and non-numbers skipped)."""
        if self.log_fn is None:
            return
        out = {}
        for k, v in values.items():
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) \
                    and math.isfinite(float(v)):
                out[f"analysis/{self.name}/{k}"] = float(v)
        if out:
            self.log_fn(out)

    def vary(self, plan: VariationPlan, sampler: Any = None, subdir: str = "variations") -> Any:
        """Run the variation engine for ``plan`` with ``sampler`` (default: the run's) into
        ``out_dir/<subdir>`` (resumable); returns its VariationResult."""
        from matdyn.sampling.engine import VariationEngine

        engine = VariationEngine(self.generator, sampler or self.sampler, n_refs=plan.n_refs,
                                 n_samples=plan.n_samples, seed=self.seed,
                                 metrics=list(plan.metrics), reducers=list(plan.reducers),
                                 batch_size=plan.batch_size, progress=self.progress)
        return engine.run(self.out_dir / subdir)

    def note(self, text: str) -> None:
        """A remark for the reader of ``summary.json`` (``notes``)."""
        self.notes.append(str(text))


# ----------------------------------------------------------------------------- protocol
@dataclass
class VariationPlan:
    """What the variation step streams: counts, metrics and reducers for the engine."""

    n_refs: int
    n_samples: int
    metrics: Sequence[Any] = ()
    reducers: Sequence[Any] = ()
    batch_size: int = 64


@dataclass
class Table:
    """The feature table of ``describe``: one row per described item, physical units."""

    frame: Any  # pandas.DataFrame
    units: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Case(Protocol):
    """The steps of one case study; an instance lives for one run and may keep state.

    Class attributes: ``name`` (the registry key), ``channels``, ``ndim`` and ``what``
    (the frames it needs, for the one-line shape error). Each step may add entries to
    the summary by returning a dict (``fidelity``, ``filters``, ``group``, ``recover``)
    or through :meth:`sections`. ``variations`` may use only what ``observe`` set (a shard runs no other step).
    """

    name: str
    channels: int
    ndim: int
    what: str

    def observe(self, ctx: CaseContext) -> Any: ...

    def fidelity(self, ctx: CaseContext, observed: Any) -> dict[str, Any]: ...

    def variations(self, ctx: CaseContext, observed: Any) -> VariationPlan: ...

    def filters(self, ctx: CaseContext, result: Any) -> dict[str, Any]: ...

    def describe(self, ctx: CaseContext, observed: Any, result: Any) -> Table: ...

    def group(self, ctx: CaseContext, table: Table) -> dict[str, Any]: ...

    def recover(self, ctx: CaseContext, observed: Any, table: Table) -> dict[str, Any]: ...

    def figures(self, ctx: CaseContext, observed: Any, result: Any, table: Table) -> None: ...

    def sections(self, ctx: CaseContext) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------- registry
_REGISTRY: dict[str, tuple[Callable[[Any], Case], type | None]] = {}
_BUILTIN = ("np_diffusion", "ta_chart", "brass_clump")


def register_case(name: str, factory: Callable[[Any], Case], config: type | None = None) -> None:
    """Make ``run_case(name, ...)`` build its case with ``factory(cfg)``; ``config`` is the
    case's Config dataclass (lets :func:`get_case` find a case from a config object)."""
    _REGISTRY[str(name)] = (factory, config)


def _load_builtin(name: str) -> None:
    if name in _BUILTIN and name not in _REGISTRY:
        importlib.import_module(f"matdyn.analysis.cases.{name}")


def case_names() -> list[str]:
    """Registered case names (the built-in ones included)."""
    for n in _BUILTIN:
        _load_builtin(n)
    return sorted(_REGISTRY)


def get_case(name_or_config: Any) -> tuple[str, Callable[[Any], Case]]:
    """(name, factory) of a case given its name or an instance of its Config."""
    if isinstance(name_or_config, str):
        _load_builtin(name_or_config)
        if name_or_config not in _REGISTRY:
            raise ConfigError(f"unknown analysis case {name_or_config!r}; registered: "
                              f"{case_names()} (a new case calls register_case on import)")
        return name_or_config, _REGISTRY[name_or_config][0]
    importlib.import_module(type(name_or_config).__module__)
    for n, (factory, cls) in _REGISTRY.items():
        if cls is not None and isinstance(name_or_config, cls):
            return n, factory
    raise ConfigError(f"analysis config {type(name_or_config).__name__} belongs to no "
                      f"registered case ({case_names()}); check analysis._target_")


# ----------------------------------------------------------------------------- summary
@dataclass
class CaseSummary:
    """The versioned ``summary.json`` of one case run: the same keys for every case.

    ``provenance`` holds what the entry point knows (bundle path and sha256, store path,
    the resolved Hydra config) so any figure can be regenerated. ``sections`` (fidelity,
    filters, recovery, ... and case-specific results such as ``slit_widths``) are written
    at the top level next to the fixed keys; a section may not shadow a fixed key. Missing
    values (NaN, inf) are written as null. Bump :data:`SCHEMA_VERSION` when a fixed key
    changes.
    """

    case: str
    gamma: float
    gamma_source: str
    sampler: dict[str, Any]
    seed: int
    fit: str
    resolution: int
    pixel_size: float
    unit: str
    counts: dict[str, Any]
    figures: list[str]
    table: str | None
    table_units: dict[str, str]
    config: dict[str, Any]
    notes: list[str]
    elapsed_s: float
    provenance: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "sections"}
        clash = set(d) & set(self.sections)
        if clash:
            raise AnalysisError(f"case {self.case!r} returned summary sections that shadow "
                                f"fixed keys: {sorted(clash)}")
        return _clean(d | dict(self.sections))


# ----------------------------------------------------------------------------- run
def _sampler(gamma: Any, sweep: Any, case: str, sampler_cfg: Mapping[str, Any] | None = None,
             **identity: Any) -> tuple[Any, float, str]:
    """(sampler, its scale γ, where it came from) — the ONE place the analysis gets its
    sampler: :func:`matdyn.gamma.as_resolved` (a sampler, a ResolvedSampler, or γ / sweep /
    ``sampler_cfg`` through :func:`~matdyn.gamma.resolve_sampler`)."""
    from matdyn.gamma import as_resolved

    r = as_resolved(gamma, sweep, case, sampler_cfg, **identity)
    return r.sampler, r.gamma, r.source


def _check_inputs(case: Case, generator: Any, store: Any) -> tuple[int, int]:
    from matdyn.analysis.cases import require_shapes

    require_shapes(generator, store, case=case.name, channels=case.channels, ndim=case.ndim,
                   what=case.what)
    res, dim = getattr(generator, "resolution", None), getattr(generator, "latent_dim", None)
    if not isinstance(res, int) or not isinstance(dim, int) or res < 8 or dim < 1:
        raise AnalysisError(f"the generator needs integer resolution >= 8 and latent_dim >= 1, "
                            f"got {res!r} and {dim!r}; pass a GeneratorBundle")
    return res, dim


def _pixel_size(generator: Any, store: Any, res: int, fit: str) -> tuple[float, str, list[str]]:
    """Size of one generated pixel, its unit and notes: the bundle's when it records one
    (training wrote it with its own ``fit``), else the store's after ``fit`` + resize."""
    from matdyn.data.frames import working_pixel_size

    meta = store.meta
    derived = working_pixel_size(meta.pixel_size, meta.spatial_shape, res, fit)
    norm = dict(getattr(generator, "normalization", {}) or {})
    unit = str(norm.get("unit") or meta.unit)
    ps = norm.get("pixel_size")
    if ps is None:
        return float(derived), unit, []
    notes = []
    if abs(float(ps) / derived - 1.0) > 0.01:
        notes.append(f"bundle pixel_size {float(ps):.4g} {unit} differs from the store's "
                     f"{derived:.4g} {unit} at {res} px with fit={fit}; using the bundle's "
                     "(was the generator trained with another dataset.fit?)")
    return float(ps), unit, notes


def _validate(cfg: Any, gamma: float, seed: Any) -> None:
    if callable(getattr(cfg, "validate", None)):
        cfg.validate()
    if not (math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"gamma must be a number > 0, got {gamma!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _write_table(ctx: CaseContext, table: Table | None) -> str | None:
    from matdyn.io import atomic_write_text

    if table is None or table.frame is None:
        return None
    atomic_write_text(ctx.out_dir / "variations.csv", table.frame.to_csv(index=False))
    return "variations.csv"


def _log_filters(ctx: CaseContext, filters: Mapping[str, Any]) -> None:
    for fname, f in filters.items():
        if isinstance(f, Mapping) and "rejection_rate_overall" in f:
            per = f.get("rejection_rate_per_reference_summary", {})
            ctx.log({f"filters/{fname}/rejection_rate": f["rejection_rate_overall"]}
                    | {f"filters/{fname}/rejection_rate_ref_{k}": v for k, v in per.items()})
            if isinstance(f.get("threshold"), (int, float)):
                ctx.log({f"filters/{fname}/threshold": f["threshold"]})


def _log_numbers(ctx: CaseContext, prefix: str, d: Mapping[str, Any], depth: int = 2) -> None:
    """Log the numbers of a summary section (nested up to ``depth`` levels)."""
    for k, v in d.items():
        if isinstance(v, Mapping) and depth > 1:
            _log_numbers(ctx, f"{prefix}/{k}", v, depth - 1)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            ctx.log({f"{prefix}/{k}": v})


def make_context(case: str | Any, generator: Any, store: Any, cfg: Any = None, *,
                 out_dir: str | Path, gamma: Any = "auto", sweep: Any = None, seed: int = 0,
                 fit: str = "crop", progress: bool = True,
                 log: Callable[[Mapping[str, Any]], None] | None = None,
                 sampler: Mapping[str, Any] | None = None,
                 ) -> tuple[Case, CaseContext, str]:
    """(case instance, its context, where γ came from) after every input check of
    :func:`run_case` (same arguments); creates ``out_dir``."""
    from matdyn.data.frames import check_fit

    name, factory = get_case(case if cfg is None or isinstance(case, str) else cfg)
    cfg = case if cfg is None and not isinstance(case, str) else cfg
    inst = factory(cfg)
    cfg = getattr(inst, "cfg", cfg)
    sampler, g, gamma_source = _sampler(gamma, sweep, name, sampler)
    _validate(cfg, g, seed)
    res, dim = _check_inputs(inst, generator, store)
    fit = check_fit(fit)
    ps, unit, notes = _pixel_size(generator, store, res, fit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = CaseContext(name, generator, store, cfg, out, sampler, g, int(seed), fit, res, dim,
                      ps, unit, progress, log, notes=notes)
    return inst, ctx, gamma_source


def run_case(
    case: str | Any,
    generator: Any,
    store: Any,
    cfg: Any = None,
    *,
    out_dir: str | Path,
    gamma: Any = "auto",
    sweep: Any = None,
    seed: int = 0,
    fit: str = "crop",
    progress: bool = True,
    log: Callable[[Mapping[str, Any]], None] | None = None,
    provenance: Mapping[str, Any] | None = None,
    sampler: Mapping[str, Any] | None = None,
    merge: bool = False,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Run one case study end to end; write ``figures/``, ``variations.csv``,
    ``variations/`` (resumable engine blocks) and ``summary.json`` into ``out_dir``.

    Args:
        case: a registered case name, or its Config instance (then ``cfg`` may be None).
        generator: a generator bundle (``resolution``, ``latent_dim``, ``channels``,
            ``ndim``, ``sample(z)`` in physical units).
        store: the dataset store it was trained on.
        cfg: the case's Config dataclass (None: its defaults).
        gamma: a number, "auto" (``sweep``'s gamma.json, else the paper's γ), a sampler or a
            :class:`~matdyn.gamma.ResolvedSampler` (what ``run_analysis`` passes).
        sampler: the sampler family ``{_target_: ..., ...}`` for a number or "auto"
            without a sweep (default uniform, Eq. 2); see :func:`matdyn.gamma.resolve_sampler`.
        fit: ``dataset.fit`` of training ("crop" / "pad"): observed frames and pixel sizes.
        log: receives ``{"analysis/<case>/<key>": float}`` (e.g. W&B's ``run.log``).
        provenance: written as ``summary["provenance"]`` (bundle, store, resolved config).
        merge: finish a sharded run (:func:`matdyn.analysis.shards.run_case_shard`): use the
            shards' blocks in ``out_dir/variations``, compute none; AnalysisError naming the
            missing shards otherwise. block_size: references per engine block.

    Returns the summary dict (:class:`CaseSummary` layout). Raises ConfigError /
    AnalysisError with a one-line message on bad input or a failing check.
    """
    from matdyn.gamma.records import sampler_spec

    t0 = time.perf_counter()
    inst, ctx, gamma_source = make_context(case, generator, store, cfg, out_dir=out_dir,
                                           gamma=gamma, sweep=sweep, seed=seed, fit=fit,
                                           progress=progress, log=log, sampler=sampler)
    observed = inst.observe(ctx)
    fidelity = inst.fidelity(ctx, observed)
    from matdyn.analysis.shards import variation_step

    result = variation_step(inst, ctx, observed, merge=merge, block_size=block_size)
    filters = inst.filters(ctx, result)
    _log_filters(ctx, filters)
    table = inst.describe(ctx, observed, result)
    grouping = inst.group(ctx, table)
    recovery = inst.recover(ctx, observed, table) if store.truth else None
    inst.figures(ctx, observed, result, table)
    table_rel = _write_table(ctx, table)
    from matdyn.gamma import gamma_rule_status
    rule = gamma_rule_status(gamma_source)  # said in the summary; a note when γ was clipped
    ctx.notes.extend([rule["note"]] if rule["gamma_rule_met"] is False else [])
    sections = {"fidelity": fidelity, "filters": filters, "gamma_rule": rule, **grouping,
                **inst.sections(ctx)}
    if recovery is not None:
        sections["recovery"] = recovery
        _log_numbers(ctx, "recovery", recovery, depth=3)
    _log_numbers(ctx, "fidelity", fidelity)
    summary = CaseSummary(
        case=ctx.name, gamma=ctx.gamma, gamma_source=gamma_source, sampler=sampler_spec(ctx.sampler, strict=False),
        seed=ctx.seed, fit=ctx.fit, resolution=ctx.resolution, pixel_size=ctx.pixel_size,
        unit=ctx.unit, counts=getattr(inst, "counts", {}), figures=ctx.figures, table=table_rel,
        table_units=table.units if table is not None else {}, config=config_dict(ctx.cfg),
        notes=ctx.notes, elapsed_s=round(time.perf_counter() - t0, 2),
        provenance=dict(provenance or {}), sections=sections,
    ).as_dict()
    write_json_atomic(ctx.out_dir / "summary.json", summary)
    return summary
