"""What a γ sweep writes down, and how it is found again.

* The **sampler specification**: ``{"_target_": "matdyn.sampling.samplers.UniformSampler",
  "gamma": 0.5}`` — class path plus every constructor argument — so that the analysis can
  build exactly the sampler the sweep measured (:func:`sampler_spec`, :func:`build_sampler`).
* The **store identity**: absolute path, source, the synthetic generator's fingerprint and,
  once the store exists, its frame count, frame shape and channel names
  (:func:`store_identity`).
* One **job record** per γ job, ``<job folder>/job.json`` (:data:`JOB_RECORD`): written with
  ``status: running`` before the variations start and rewritten with ``status: done`` and the
  job's metrics at the end (both atomically). A sweep's jobs are found by scanning these
  records (:func:`scan_jobs`, :func:`finished_jobs`), never from Hydra's folder numbers or
  ``multirun.yaml``; a job folder holding a record of another job refuses to be reused
  (:func:`check_job_folder`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import to_jsonable

__all__ = [
    "GAMMA_FORMAT",
    "GAMMA_VERSION",
    "JOB_FORMAT",
    "JOB_RECORD",
    "JOB_VERSION",
    "RESULTS_SUBDIR",
    "JobRecord",
    "build_sampler",
    "check_job_folder",
    "check_siblings",
    "finished_jobs",
    "identity_conflicts",
    "read_json_record",
    "sampler_spec",
    "scale_param",
    "scan_jobs",
    "store_identity",
]

JOB_FORMAT = "matdyn-gamma-job"
JOB_VERSION = 2  # 2: job.json with sampler spec, store identity, status (value-named folders)
GAMMA_FORMAT = "matdyn-gamma"
GAMMA_VERSION = 2  # 2: full sampler spec, bundle sha256 and store identity
JOB_RECORD = "job.json"
RESULTS_SUBDIR = "variations"
#: constructor arguments that hold a sampler's scale (γ for uniform, σ for gaussian)
SCALE_PARAMS = ("gamma", "sigma", "scale")
#: keys a job folder's record must share with the job re-run into it
_JOB_KEYS = ("sampler", "seed", "n_refs", "n_samples", "metric_specs")


# ----------------------------------------------------------------------------- sampler spec
def sampler_spec(sampler: Any, strict: bool = True) -> dict[str, Any]:
    """Full specification of a sampler object: ``_target_`` and constructor arguments.

    A sampler that does not keep its arguments as attributes raises ConfigError, or with
    ``strict=False`` gives ``{"_target_": ..., "repr": repr(sampler)}``.

    >>> from matdyn.sampling.samplers import GaussianSampler
    >>> sampler_spec(GaussianSampler(sigma=0.3))
    {'_target_': 'matdyn.sampling.samplers.GaussianSampler', 'sigma': 0.3}
    """
    cls = type(sampler)
    spec: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(sampler, name):
            if not strict:
                return {"_target_": spec["_target_"], "repr": repr(sampler)}
            raise ConfigError(f"{cls.__name__} does not keep its argument {name!r} as an attribute, "
                              f"so its specification cannot be recorded; store it as self.{name}")
        spec[name] = to_jsonable(getattr(sampler, name))
    return spec


def scale_param(spec: Mapping[str, Any]) -> str:
    """Name of the argument that holds the sampler's scale (``gamma``, ``sigma`` or ``scale``).

    >>> scale_param({"_target_": "x.UniformSampler", "gamma": 1.0})
    'gamma'
    """
    names = [k for k in SCALE_PARAMS if k in spec]
    if len(names) != 1:
        raise ConfigError(f"sampler spec {dict(spec)!r} needs exactly one scale argument "
                          f"out of {list(SCALE_PARAMS)}")
    return names[0]


def build_sampler(spec: Mapping[str, Any], scale: float | None = None) -> Any:
    """The sampler a specification describes, with its scale replaced by ``scale`` if given.

    Raises ConfigError for a spec without ``_target_``, a target that is not importable or
    not a :class:`~matdyn.sampling.samplers.PerturbationSampler`, or bad arguments.

    >>> build_sampler({"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": 1.0}, 0.5)
    UniformSampler(gamma=0.5)
    """
    from matdyn.sampling.samplers import PerturbationSampler

    spec = dict(spec)
    target = str(spec.pop("_target_", "") or "")
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not (inspect.isclass(cls) and issubclass(cls, PerturbationSampler)):
        raise ConfigError(f"sampler _target_ {target!r} is not a PerturbationSampler class "
                          "(e.g. matdyn.sampling.samplers.UniformSampler)")
    if scale is not None:
        params = [k for k in SCALE_PARAMS if k in spec] or [
            k for k in inspect.signature(cls.__init__).parameters if k in SCALE_PARAMS]
        if len(params) != 1:
            raise ConfigError(f"sampler {target} has no single scale argument out of {list(SCALE_PARAMS)}")
        spec[params[0]] = float(scale)
    try:
        return cls(**spec)
    except TypeError as e:
        raise ConfigError(f"sampler {target}: bad arguments {spec!r} ({e})") from None


# ----------------------------------------------------------------------------- store identity
def store_identity(dataset: Mapping[str, Any], meta: Any = None) -> dict[str, Any]:
    """What identifies the store a sweep compares with (all JSON-able).

    ``dataset`` is the resolved dataset config (its ``path`` absolute); ``meta`` the
    store's :class:`~matdyn.data.store.StoreMeta` when the store exists. Two identities
    agree when every key present in both is equal (:func:`identity_conflicts`).
    """
    from matdyn.data.sources import synthetic_fingerprint

    ident: dict[str, Any] = {"path": str(Path(str(dataset.get("path") or "")).absolute())}
    if dataset.get("source") == "synthetic" and dataset.get("synthetic"):
        ident["synthetic_fingerprint"] = synthetic_fingerprint(dict(dataset["synthetic"]))
    if meta is not None:
        ident.update(name=meta.name, n_frames=int(meta.n_frames),
                     spatial_shape=[int(s) for s in meta.spatial_shape],
                     channel_names=list(meta.channel_names))
        fp = (meta.extra or {}).get("synthetic_fingerprint")
        if fp and "synthetic_fingerprint" not in ident:
            ident["synthetic_fingerprint"] = fp
    return ident


def identity_conflicts(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """Keys present in both identities whose values differ.

    >>> identity_conflicts({"path": "/a", "n_frames": 8}, {"path": "/a", "n_frames": 9, "x": 1})
    ['n_frames']
    """
    a, b = dict(a or {}), dict(b or {})
    return sorted(k for k in set(a) & set(b) if to_jsonable(a[k]) != to_jsonable(b[k]))


# ----------------------------------------------------------------------------- job records
def read_json_record(path: str | os.PathLike, fmt: str, version: int) -> dict[str, Any]:
    """A JSON record with ``format == fmt`` and ``version == version``; AnalysisError else."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise AnalysisError(f"{p} is unreadable ({type(e).__name__}); re-run the step that writes it") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise AnalysisError(f"{p} is not a {fmt} record")
    if data.get("version") != version:
        raise AnalysisError(f"{p} is a {fmt} record of version {data.get('version')!r}, this matdyn "
                            f"reads version {version}; re-run the sweep into a new directory")
    return data


@dataclass(frozen=True)
class JobRecord:
    """One γ job: its folder and the contents of its ``job.json``."""

    path: Path
    data: dict[str, Any]

    @property
    def gamma(self) -> float:
        return float(self.data["gamma"])

    @property
    def done(self) -> bool:
        return self.data.get("status") == "done"

    @property
    def results_dir(self) -> Path:
        return self.path / str(self.data.get("results_dir", RESULTS_SUBDIR))


def scan_jobs(sweep_dir: str | os.PathLike) -> list[JobRecord]:
    """Every job record one or two folder levels below ``sweep_dir``, sorted by γ then path.

    Job folders of an older matdyn (a ``metrics.json`` job summary without ``job.json``)
    are an AnalysisError: their sampler and store are not recorded.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise AnalysisError(f"sweep directory {root} does not exist; pass dir=<sweep dir>")
    jobs = [JobRecord(p.parent, read_json_record(p, JOB_FORMAT, JOB_VERSION))
            for p in sorted(root.glob(f"*/{JOB_RECORD}")) + sorted(root.glob(f"*/*/{JOB_RECORD}"))]
    old = [p.parent.name for p in sorted(root.glob("*/metrics.json"))
           if not (p.parent / JOB_RECORD).exists()]
    if old:
        raise AnalysisError(f"{root} holds γ job folders of an older matdyn ({', '.join(old)}) "
                            "without job.json; re-run the sweep into a new directory")
    return sorted(jobs, key=lambda j: (j.gamma, str(j.path)))


def _fmt_gammas(jobs: Sequence[JobRecord]) -> str:
    return ", ".join(f"{j.gamma:g}" for j in jobs)


def finished_jobs(sweep_dir: str | os.PathLike) -> list[JobRecord]:
    """The finished jobs of a sweep, checked to describe one sweep.

    AnalysisError (one line) when no job is there, a job is unfinished (it names the γ to
    re-run), jobs disagree on bundle, store, sampler family or metrics, or two folders hold
    the same γ with the same seed.
    """
    root = Path(sweep_dir)
    jobs = scan_jobs(root)
    if not jobs:
        raise AnalysisError(f"{root} holds no γ job record (*/{JOB_RECORD}); run the sweep first")
    todo = [j for j in jobs if not j.done]
    if todo:
        raise AnalysisError(
            f"sweep {root} has {len(todo)} unfinished job(s) (γ = {_fmt_gammas(todo)}); re-run "
            f"them into the same directory (hydra.sweep.dir={root}) and aggregate again"
        )
    first = jobs[0]
    for j in jobs[1:]:
        _check_same_sweep(first, j)
    seen: dict[tuple[float, int], JobRecord] = {}
    for j in jobs:
        key = (j.gamma, int(j.data.get("seed", 0)))
        if key in seen:
            raise AnalysisError(f"{seen[key].path} and {j.path} both hold γ = {j.gamma:g} with seed "
                                f"{key[1]}; delete one of them")
        seen[key] = j
    return jobs


def _family(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A sampler spec without its scale: what all jobs of one sweep share."""
    spec = dict(spec)
    spec.pop(scale_param(spec), None)
    return spec


def _check_same_sweep(a: JobRecord, b: JobRecord) -> None:
    """AnalysisError when two jobs of one directory belong to different sweeps."""
    what = None
    if a.data.get("bundle_sha256") != b.data.get("bundle_sha256"):
        what = f"generator bundles ({a.data.get('bundle')} vs {b.data.get('bundle')})"
    elif identity_conflicts(a.data.get("store"), b.data.get("store")):
        diff = identity_conflicts(a.data.get("store"), b.data.get("store"))
        what = f"stores (differ in {diff})"
    elif _family(a.data["sampler"]) != _family(b.data["sampler"]):
        what = f"samplers ({a.data['sampler']} vs {b.data['sampler']})"
    elif a.data.get("metric_specs") != b.data.get("metric_specs"):
        what = "metric settings"
    if what:
        raise AnalysisError(f"jobs {a.path.name} and {b.path.name} of {a.path.parent} used different "
                            f"{what}; keep one sweep of one generator per directory")


def check_job_folder(out_dir: str | os.PathLike, record: Mapping[str, Any]) -> bool:
    """Whether ``out_dir`` already holds this job (then it resumes); ConfigError (one line)
    when it holds a record of another job (bundle, store, sampler, seed, counts, metrics)."""
    path = Path(out_dir) / JOB_RECORD
    if not path.exists():
        return False
    old = read_json_record(path, JOB_FORMAT, JOB_VERSION)
    if old.get("bundle_sha256") != record.get("bundle_sha256"):
        diff = [f"bundle {old.get('bundle')} (sha256 {str(old.get('bundle_sha256'))[:12]})"]
    else:
        diff = [f"store {k}" for k in identity_conflicts(old.get("store"), record.get("store"))]
        diff += [f"{k} {old.get(k)!r}" for k in _JOB_KEYS if to_jsonable(old.get(k)) != to_jsonable(record.get(k))]
    if diff:
        raise ConfigError(f"job folder {Path(out_dir)} holds another job ({'; '.join(diff)}); run this "
                          "one into a new hydra.sweep.dir or delete that folder")
    return True


def check_siblings(sweep_dir: str | os.PathLike, record: Mapping[str, Any], out_dir: Path) -> None:
    """ConfigError (one line) when another job of ``sweep_dir`` used a different generator
    bundle or store than ``record``: one sweep directory holds one sweep."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return
    for j in scan_jobs(root):
        if j.path.resolve() == Path(out_dir).resolve():
            continue
        if j.data.get("bundle_sha256") != record.get("bundle_sha256"):
            raise ConfigError(f"sweep {root} holds jobs of another bundle ({j.data.get('bundle')}, job "
                              f"{j.path.name}); pass a new hydra.sweep.dir for this bundle")
        diff = identity_conflicts(j.data.get("store"), record.get("store"))
        if diff:
            raise ConfigError(f"sweep {root} holds jobs on another store (job {j.path.name} differs in "
                              f"{diff}); pass a new hydra.sweep.dir for this store")
