"""Latent perturbation samplers: ε added to a reference latent z (paper Eq. 2).

Plain classes with validated constructors, so Hydra can build them from
``conf/sampler/*.yaml`` and code can build them directly::

    UniformSampler(gamma=1.0)      # ε ~ U[-γ, γ]^d, the paper's choice (§2.2, γ = 1 in §3.3.1)
    GaussianSampler(sigma=0.577)   # ε ~ N(0, σ² I), same per-component std as γ = 1

Randomness comes only from the ``torch.Generator`` passed to :meth:`sample`, on the CPU,
so the engine controls the streams (see :func:`matdyn.sampling.engine.variation_latents`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from matdyn.descriptors.latent import (
    expected_angular_step,
    expected_per_dimension_distance,
    expected_perturbation_norm,
)
from matdyn.errors import ConfigError

__all__ = ["GaussianSampler", "PerturbationSampler", "UniformSampler"]


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be finite and > 0, got {value!r}")
    return float(value)


class PerturbationSampler(ABC):
    """Draws perturbations ε [n, d] float32 on the CPU from a given generator."""

    #: "uniform" or "gaussian", for the analytic distances in matdyn.descriptors.latent
    distribution: str
    #: γ for uniform, σ for gaussian
    scale: float

    @abstractmethod
    def sample(self, n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
        """ε as a float32 CPU tensor [n, dim]."""

    def expected_norm(self, dim: int) -> float:
        """E‖ε‖ in a latent space of dimension ``dim``."""
        return expected_perturbation_norm(self.scale, dim, self.distribution)

    def per_dimension_distance(self, dim: int) -> float:
        """E‖ε‖ / d, the paper's per-dimension sampling margin (γ = 1, d = 32 -> ≈ 0.1)."""
        return expected_per_dimension_distance(self.scale, dim, self.distribution)

    def angular_step(self) -> float:
        """Approximate mean angle (radians) between z ~ N(0, I) and z + ε."""
        return expected_angular_step(self.scale, self.distribution)

    @staticmethod
    def _check_shape(n: int, dim: int) -> None:
        if int(n) != n or n < 0 or int(dim) != dim or dim < 1:
            raise ConfigError(f"cannot sample {n} perturbations of dimension {dim}")


class UniformSampler(PerturbationSampler):
    """ε ~ U[-γ, γ]^d (paper Eq. 2). γ = 1.0 for the NP case (§3.3.1), 0.5 for brass (§3.4.1).

    >>> g = torch.Generator().manual_seed(0)
    >>> eps = UniformSampler(0.5).sample(1000, 8, g)
    >>> eps.shape, bool(eps.abs().max() <= 0.5)
    (torch.Size([1000, 8]), True)
    """

    distribution = "uniform"

    def __init__(self, gamma: float = 1.0) -> None:  # §3.3.1: γ = 1 matched consecutive frames
        self.gamma = _positive(gamma, "UniformSampler.gamma")
        self.scale = self.gamma

    def sample(self, n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
        self._check_shape(n, dim)
        u = torch.rand((int(n), int(dim)), generator=generator, dtype=torch.float32)
        return u.mul_(2.0 * self.gamma).sub_(self.gamma)

    def __repr__(self) -> str:
        return f"UniformSampler(gamma={self.gamma!r})"


class GaussianSampler(PerturbationSampler):
    """ε ~ N(0, σ² I). σ = 1/√3 ≈ 0.577 has the per-component spread of U[-1, 1].

    >>> g = torch.Generator().manual_seed(0)
    >>> round(float(GaussianSampler(2.0).sample(20000, 4, g).std()), 1)
    2.0
    """

    distribution = "gaussian"

    def __init__(self, sigma: float = 1.0 / math.sqrt(3.0)) -> None:
        self.sigma = _positive(sigma, "GaussianSampler.sigma")
        self.scale = self.sigma

    def sample(self, n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
        self._check_shape(n, dim)
        return torch.randn((int(n), int(dim)), generator=generator, dtype=torch.float32).mul_(
            self.sigma
        )

    def __repr__(self) -> str:
        return f"GaussianSampler(sigma={self.sigma!r})"
