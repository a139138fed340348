"""Pure γ rules: which γ a continuity curve, an acceptance curve or a latent angle asks for
(paper §2.2, §3.3.1 / Fig. 5c, §3.4.1 / Fig. 7d). Numbers in, numbers out; no I/O.

* :func:`gamma_at_bound` (the paper's rule): the γ at which the typical
  perturbed-vs-reference difference reaches the upper bound of consecutive experimental
  differences (§3.3.1), interpolated linearly between swept values (first upward crossing);
* :func:`gamma_at_acceptance`: the largest γ whose acceptance rate under the analysis filter
  is still ≥ a target (last downward crossing);
* :func:`gamma_from_angle`: the scale whose mean angular latent step is a given angle.

A choice outside the swept range is clipped to it and says so in ``GammaChoice.message``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from matdyn.errors import AnalysisError

__all__ = ["STATS", "GammaChoice", "gamma_at_acceptance", "gamma_at_bound", "gamma_from_angle",
           "statistic"]

#: statistics a setting may name (see :func:`statistic`)
STATS = ("mean", "median", "p95", "max")


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



def statistic(values: np.ndarray, name: str) -> float:
    """``name`` (one of :data:`STATS`) of the finite values; NaN when there are none.

    >>> statistic(np.array([1.0, 2.0, np.nan, 9.0]), "median")
    2.0
    """
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
    if name == "max":
        return float(v.max())
    raise AnalysisError(f"unknown statistic {name!r}; use one of {STATS}")
