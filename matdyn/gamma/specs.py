"""Typed settings of the γ sweep (``conf/sweep.yaml`` keys ``rule``, ``calibration``,
``baseline``). Unknown keys and out-of-range values are a one-line ConfigError, because a
typo here would silently change which γ is chosen."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from matdyn.errors import ConfigError
from matdyn.gamma.rules import STATS as _STATS

__all__ = ["BaselineSpec", "CalibrationSpec", "RuleSpec"]


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
    (``median``, default: the typical generated difference matches the typical observed
    one, so a few outlier frames cannot push γ off the sweep (FINDINGS.md: on a real video
    max 0.58 vs generated ≤ 0.13); ``p95``; ``max``: the paper's "upper bound", §3.3.1). target: the
    acceptance rule's minimum acceptance rate. filter: explicit upper bounds
    ``{metric: value}`` for the acceptance filter (default: the metric's baseline bound).
    interpolate: interpolate linearly between swept γ (else pick a swept value).
    """

    name: str = "bound"
    metric: str = "auto"
    bound_stat: str = "median"  # paper (§3.3.1): "max", the upper bound of consecutive frames
    target: float = 0.5
    filter: Mapping[str, float] | None = None
    interpolate: bool = True

    def __post_init__(self) -> None:
        if self.name not in ("bound", "acceptance"):
            raise ConfigError(f"rule.name must be 'bound' or 'acceptance', got {self.name!r}")
        if self.bound_stat not in ("median", "p95", "max"):
            raise ConfigError(f"rule.bound_stat must be 'median', 'p95' or 'max', got "
                              f"{self.bound_stat!r}")
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

