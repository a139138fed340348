"""The one way analyses get their perturbation sampler: :func:`resolve_sampler`.

A sweep's ``gamma.json`` records the full sampler specification (``_target_`` and
arguments, with the chosen scale), so a ``sampler=gaussian`` sweep's σ feeds a gaussian
analysis sampler and never a uniform γ. Without a sweep, a given number or the paper's γ
(§3.2, §3.3.1, §3.4.1) is used with the given sampler family (default: uniform, Eq. 2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma.records import (
    GAMMA_FORMAT,
    GAMMA_VERSION,
    build_sampler,
    identity_conflicts,
    read_json_record,
    sampler_spec,
)

__all__ = ["PAPER_GAMMA", "ResolvedSampler", "as_resolved", "gamma_rule_status",
           "read_gamma_record", "resolve_sampler"]

log = logging.getLogger("matdyn.gamma")

#: γ the paper settled on per case, used when no sweep is given (§3.2, §3.3.1, §3.4.1)
PAPER_GAMMA = {"ta_chart": 1.0, "np_diffusion": 1.0, "brass_clump": 0.5}
_UNIFORM = {"_target_": "matdyn.sampling.samplers.UniformSampler"}


@dataclass(frozen=True)
class ResolvedSampler:
    """The sampler an analysis uses and where it came from.

    sampler: a :class:`~matdyn.sampling.samplers.PerturbationSampler`; gamma: its scale
    (γ for uniform, σ for gaussian); source: ``given``, ``sweep:<gamma.json path>``,
    ``paper`` or ``config``; record: the gamma.json dict (None unless source is a sweep).
    """

    sampler: Any
    gamma: float
    source: str
    record: dict[str, Any] | None = None

    @property
    def spec(self) -> dict[str, Any]:
        """The sampler's full specification (``_target_`` + arguments)."""
        return sampler_spec(self.sampler)


def read_gamma_record(sweep: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """(gamma.json dict, its path) of a sweep directory or a gamma.json path.

    ConfigError (one line) when there is none; AnalysisError when it is unreadable or of
    another format version.
    """
    p = Path(sweep)
    p = p / "gamma.json" if p.is_dir() else p
    if not p.is_file():
        raise ConfigError(f"{p}: no gamma.json; run the γ sweep first "
                          "(python scripts/sweep_gamma.py -m ...) or pass gamma=<value>")
    rec = read_json_record(p, GAMMA_FORMAT, GAMMA_VERSION)
    if not isinstance(rec.get("sampler"), Mapping) or "_target_" not in rec["sampler"]:
        raise AnalysisError(f"{p} records no sampler specification; re-run the aggregation "
                            "(python scripts/aggregate_sweep.py dir=<sweep dir>)")
    return rec, p


def _given_gamma(gamma: Any) -> float | None:
    if gamma is None or str(gamma) == "auto":
        return None
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ConfigError(f"gamma must be a number or 'auto', got {gamma!r}") from None
    if not g > 0:
        raise ConfigError(f"gamma must be > 0, got {g}")
    return g


def _check_record(rec: Mapping[str, Any], path: Path, sampler_cfg: Mapping[str, Any] | None,
                  bundle_sha256: str | None, store: Mapping[str, Any] | None) -> None:
    """ConfigError when the sweep's sampler family, bundle or store is not the analysis's."""
    want = str((sampler_cfg or {}).get("_target_") or rec["sampler"]["_target_"])
    if want != rec["sampler"]["_target_"]:
        raise ConfigError(f"{path} was swept with {rec['sampler']['_target_']} but the analysis asks "
                          f"for {want}; drop the sampler setting or pass gamma=<value>")
    if bundle_sha256 and rec.get("bundle_sha256") and rec["bundle_sha256"] != bundle_sha256:
        raise ConfigError(f"{path} chose γ for another generator bundle ({rec.get('bundle')}); pass "
                          "the sweep of this bundle or gamma=<value>")
    diff = identity_conflicts(rec.get("store"), store) if store is not None else []
    if diff:
        raise ConfigError(f"{path} chose γ on another store (differs in {diff}); pass the sweep of "
                          "this dataset or gamma=<value>")


def resolve_sampler(
    gamma: Any = "auto",
    sweep: str | os.PathLike | None = None,
    case: str | None = None,
    sampler_cfg: Mapping[str, Any] | None = None,
    *,
    bundle_sha256: str | None = None,
    store: Mapping[str, Any] | None = None,
) -> ResolvedSampler:
    """The perturbation sampler of an analysis.

    * ``gamma`` a number: ``sampler_cfg`` (``{_target_: ..., ...}``; default uniform) with
      its scale set to it; source ``given``.
    * ``gamma="auto"`` and ``sweep`` (a sweep directory or its gamma.json): exactly the
      sampler recorded there (target, arguments, chosen scale); source ``sweep:<path>``.
      ConfigError when ``sampler_cfg`` names another sampler class, or ``bundle_sha256`` /
      ``store`` (a :func:`~matdyn.gamma.records.store_identity`) differ from the recorded.
    * ``gamma="auto"`` without a sweep: the paper's γ for ``case`` (:data:`PAPER_GAMMA`)
      for a uniform sampler; another family keeps the scale of ``sampler_cfg`` (source
      ``config``), since the paper's γ is a uniform half-width.

    >>> r = resolve_sampler(0.3, sampler_cfg={"_target_": "matdyn.sampling.samplers.GaussianSampler"})
    >>> r.sampler, r.gamma, r.source
    (GaussianSampler(sigma=0.3), 0.3, 'given')
    """
    g = _given_gamma(gamma)
    spec = dict(sampler_cfg or _UNIFORM)
    if g is not None:
        s = build_sampler(spec, g)
        return ResolvedSampler(s, float(s.scale), "given")
    if sweep:
        rec, path = read_gamma_record(sweep)
        _check_record(rec, path, sampler_cfg, bundle_sha256, store)
        s = build_sampler(rec["sampler"])
        return ResolvedSampler(s, float(s.scale), f"sweep:{path}", rec)
    if spec["_target_"] != _UNIFORM["_target_"]:  # the paper's γ is a uniform half-width
        s = build_sampler(spec)
        return ResolvedSampler(s, float(s.scale), "config")
    if case not in PAPER_GAMMA:
        raise ConfigError(f"gamma=auto needs sweep=<dir> for case {case!r}")
    log.info("gamma=auto without a sweep: using the paper's γ = %s for %s", PAPER_GAMMA[case], case)
    s = build_sampler(spec, PAPER_GAMMA[case])
    return ResolvedSampler(s, float(s.scale), "paper")


def as_resolved(gamma: Any = "auto", sweep: str | os.PathLike | None = None, case: str | None = None,
                sampler_cfg: Mapping[str, Any] | None = None, **identity: Any) -> ResolvedSampler:
    """``gamma`` as a :class:`ResolvedSampler`: itself when it is one, a sampler object as
    given (scale: γ of a uniform, σ of a gaussian; source ``given``), else
    :func:`resolve_sampler` (``identity``: ``bundle_sha256`` / ``store``)."""
    from matdyn.sampling.samplers import PerturbationSampler

    if isinstance(gamma, ResolvedSampler):
        return gamma
    if isinstance(gamma, PerturbationSampler):
        return ResolvedSampler(gamma, float(getattr(gamma, "scale", float("nan"))), "given")
    return resolve_sampler(gamma, sweep, case, sampler_cfg, **identity)


def gamma_rule_status(source: str) -> dict[str, Any]:
    """The ``gamma_rule`` summary section of an analysis whose γ came from ``source``
    (:attr:`ResolvedSampler.source`): ``gamma_rule_met`` True/False for a sweep (False when
    its rule's crossing lay outside the swept range and γ was clipped; read from the
    gamma.json, older records from their continuity choice), None when no rule chose γ;
    ``note`` says what that means and what to do.

    >>> gamma_rule_status("given")["gamma_rule_met"] is None
    True
    """
    if not str(source).startswith("sweep:"):
        return {"gamma_rule_met": None, "source": source,
                "note": f"γ {source}: no rule matched it to the observed frames"}
    path = str(source)[len("sweep:"):]
    try:
        rec, _ = read_gamma_record(path)
    except (ConfigError, AnalysisError) as err:
        return {"gamma_rule_met": None, "source": source, "note": str(err)}
    met, note = rec.get("gamma_rule_met"), rec.get("gamma_rule_note")
    if met is None:  # records before gamma_rule_met: the deciding metric's continuity choice
        cont = rec.get("continuity") or {}
        choice = cont.get(f"choice_{rec.get('metric')}") or cont.get("choice") or {}
        met, note = choice.get("clipped") is None, choice.get("message")
    out = {"gamma_rule_met": bool(met), "source": source, "rule": rec.get("rule"),
           "bound_stat": rec.get("bound_stat"), "gamma": rec.get("gamma"), "note": note}
    if not met:
        out["note"] = (f"the γ rule was NOT met inside the swept range; γ = {rec.get('gamma')} is "
                       f"the edge of the sweep. {note or ''}").strip()
    return out
