"""The γ sweep: choosing the latent perturbation margin γ (paper §2.2, §3.3.1 / Fig. 5c,
§3.4.1 / Fig. 7d) and handing the chosen sampler to the analyses.

* :mod:`~matdyn.gamma.rules` — pure γ rules (bound crossing, acceptance, angle).
* :mod:`~matdyn.gamma.specs` — typed settings (``rule``, ``calibration``, ``baseline``).
* :mod:`~matdyn.gamma.continuity` — difference metrics per case and the consecutive-frame
  baseline on frames prepared like training (:mod:`matdyn.data.frames`).
* :mod:`~matdyn.gamma.job` — one γ job (variation engine -> ``<job>/job.json``), whole or
  in shards (``shard="k/n"``; :func:`finish_sharded_jobs` is the merge step).
* :mod:`~matdyn.gamma.records` — sampler specification, store identity, job records and
  their discovery by scanning (jobs are found by γ value, never by folder number).
* :mod:`~matdyn.gamma.aggregate` — all jobs -> ``gamma.json`` + ``continuity.{png,svg}``.
* :mod:`~matdyn.gamma.inversion` — γ from inverted consecutive frames.
* :mod:`~matdyn.gamma.resolve` — :func:`resolve_sampler`, the one way analyses build the
  sampler a sweep recorded.
* :mod:`~matdyn.gamma.hydra_glue` — the multirun callback and config translation (only the
  scripts and ``conf/sweep.yaml`` use it).
"""

from matdyn.gamma.aggregate import aggregate_sweep
from matdyn.gamma.continuity import (
    ContinuityBaseline,
    DistributionSummary,
    case_metrics,
    consecutive_differences,
    default_metrics,
    metrics_from_spec,
    real_baseline,
    summarize,
)
from matdyn.gamma.inversion import inversion_calibration
from matdyn.gamma.job import (
    check_bundle_fits,
    finish_sharded_jobs,
    run_gamma_job,
    run_sweep_job,
    sweep_name,
)
from matdyn.gamma.records import (
    JOB_RECORD,
    JobRecord,
    build_sampler,
    finished_jobs,
    sampler_spec,
    scan_jobs,
    store_identity,
)
from matdyn.gamma.resolve import (
    PAPER_GAMMA,
    ResolvedSampler,
    as_resolved,
    gamma_rule_status,
    read_gamma_record,
    resolve_sampler,
)
from matdyn.gamma.rules import GammaChoice, gamma_at_acceptance, gamma_at_bound, gamma_from_angle
from matdyn.gamma.specs import BaselineSpec, CalibrationSpec, RuleSpec

__all__ = [
    "JOB_RECORD",
    "PAPER_GAMMA",
    "BaselineSpec",
    "CalibrationSpec",
    "ContinuityBaseline",
    "DistributionSummary",
    "GammaChoice",
    "JobRecord",
    "ResolvedSampler",
    "RuleSpec",
    "aggregate_sweep",
    "as_resolved",
    "build_sampler",
    "case_metrics",
    "check_bundle_fits",
    "consecutive_differences",
    "default_metrics",
    "finish_sharded_jobs",
    "finished_jobs",
    "gamma_at_acceptance",
    "gamma_at_bound",
    "gamma_from_angle",
    "gamma_rule_status",
    "inversion_calibration",
    "metrics_from_spec",
    "read_gamma_record",
    "real_baseline",
    "resolve_sampler",
    "run_gamma_job",
    "run_sweep_job",
    "sampler_spec",
    "scan_jobs",
    "store_identity",
    "summarize",
    "sweep_name",
]
