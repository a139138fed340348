"""Distances in the latent space: the paper's per-dimension margin and the angular step.

The paper (§3.3.1, Supplementary S2) reports perturbation sizes as the mean Euclidean
distance between a reference latent and its perturbed copies divided by the dimension d:
with ε ~ U[-γ, γ]^d, E‖ε‖ ≈ γ·sqrt(d/3), so γ = 1 at d = 32 is ≈ 0.1 per dimension.

PGGAN generators pixel-normalise their input (z / sqrt(mean(z²))), so G(z + ε) only sees
the *direction* of z + ε: the step that matters is the angle between z and z + ε. For
z ~ N(0, I) and ε with per-component standard deviation s it is ≈ atan(s), almost
independent of d (s = γ/√3 for the uniform sampler: γ = 1 → ≈ 30°).
"""

from __future__ import annotations

import math

import numpy as np

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "angular_step",
    "component_std",
    "expected_angular_step",
    "expected_per_dimension_distance",
    "expected_perturbation_norm",
    "per_dimension_distance",
    "pixel_normalize",
]

_DISTRIBUTIONS = ("uniform", "gaussian")


def _pair(z: np.ndarray, z_perturbed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(z, dtype=np.float64)
    zp = np.asarray(z_perturbed, dtype=np.float64)
    if zp.ndim == 1:
        zp = zp[None]
    if zp.ndim != 2 or z.shape not in (zp.shape, zp.shape[1:]):
        raise AnalysisError(
            f"latents do not match: z {z.shape}, perturbed {zp.shape}; use z [d] or [N, d] "
            "with perturbed [N, d]"
        )
    return z, zp


def per_dimension_distance(z: np.ndarray, z_perturbed: np.ndarray) -> float:
    """Mean ‖z' - z‖ / d over the perturbed latents (the paper's per-dimension margin).

    ``z`` is one reference [d] (or [N, d] pairwise), ``z_perturbed`` is [N, d].

    >>> per_dimension_distance(np.zeros(4), np.array([[2.0, 0, 0, 0], [0, 0, 0, 4.0]]))
    0.75
    """
    z, zp = _pair(z, z_perturbed)
    return float(np.linalg.norm(zp - z, axis=-1).mean() / zp.shape[1])


def component_std(scale: float, distribution: str = "uniform") -> float:
    """Standard deviation of one component of ε: γ/√3 for U[-γ, γ], σ for N(0, σ²).

    >>> round(component_std(1.0), 4)
    0.5774
    """
    if distribution not in _DISTRIBUTIONS:
        raise ConfigError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    if not scale > 0:
        raise ConfigError(f"perturbation scale must be > 0, got {scale!r}")
    return float(scale) / math.sqrt(3.0) if distribution == "uniform" else float(scale)


def expected_perturbation_norm(scale: float, dim: int, distribution: str = "uniform") -> float:
    """E‖ε‖ for ε ~ U[-γ, γ]^d (``scale`` = γ) or N(0, σ² I) (``scale`` = σ).

    Gaussian: exact, σ·√2·Γ((d+1)/2)/Γ(d/2). Uniform: second-order expansion of E√X around
    E X = dγ²/3 with Var X = 4dγ⁴/45, i.e. γ·sqrt(d/3)·(1 - 1/(10d)); the neglected terms
    are O(d⁻²) relative (checked by simulation: < 0.05 % at d = 8).

    >>> round(expected_perturbation_norm(1.0, 32), 4)
    3.2558
    >>> round(expected_perturbation_norm(1.0, 2, "gaussian"), 4)
    1.2533
    """
    component_std(scale, distribution)  # validates
    if int(dim) != dim or dim < 1:
        raise ConfigError(f"latent dimension must be a positive integer, got {dim!r}")
    if distribution == "gaussian":
        return (
            float(scale)
            * math.sqrt(2.0)
            * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))
        )
    return float(scale) * math.sqrt(dim / 3.0) * (1.0 - 1.0 / (10.0 * dim))


def expected_per_dimension_distance(scale: float, dim: int, distribution: str = "uniform") -> float:
    """E‖ε‖ / d, the analytic value of :func:`per_dimension_distance`.

    >>> round(expected_per_dimension_distance(1.0, 32), 3)  # paper §3.3.1: "≈ 0.1"
    0.102
    >>> round(expected_per_dimension_distance(0.5, 32), 3)  # paper §3.4.1: "≈ 0.05"
    0.051
    """
    return expected_perturbation_norm(scale, dim, distribution) / dim


def pixel_normalize(z: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """What a PGGAN generator does to its input: z / sqrt(mean(z²) + eps) along the last axis.

    >>> pixel_normalize(np.array([3.0, 4.0])).round(4).tolist()
    [0.8485, 1.1314]
    """
    z = np.asarray(z, dtype=np.float64)
    return z / np.sqrt(np.mean(z * z, axis=-1, keepdims=True) + eps)


def angular_step(z: np.ndarray, z_perturbed: np.ndarray) -> np.ndarray:
    """Angle (radians) between z and each z' -> [N]; the step a pixel-normalising G sees.

    >>> np.degrees(angular_step(np.array([1.0, 0.0]), np.array([[1.0, 1.0], [2.0, 0.0]]))).round(6).tolist()
    [45.0, 0.0]
    """
    z, zp = _pair(z, z_perturbed)
    num = np.sum(z * zp, axis=-1)
    den = np.linalg.norm(z, axis=-1) * np.linalg.norm(zp, axis=-1)
    cos = np.divide(num, den, out=np.ones_like(num), where=den > 0)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def expected_angular_step(scale: float, distribution: str = "uniform") -> float:
    """Large-d value of the mean angle between z ~ N(0, I) and z + ε: atan(component std).

    Independent of d to first order; a simulation gives means above it by ≈ 0.5 % at d = 32
    and ≈ 2 % at d = 8 (γ = 0.25..4).

    >>> round(math.degrees(expected_angular_step(1.0)), 1)  # γ = 1, the NP case
    30.0
    """
    return math.atan(component_std(scale, distribution))
