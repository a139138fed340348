from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from matdyn.errors import ConfigError
from matdyn.sampling.inversion import gamma_for_distance, invert


class TinyG(nn.Module):
    """Pixel-normalising MLP generator [B, d] -> [B, 1, 8, 8] in [-1, 1]."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.latent_dim = d
        self.net = nn.Sequential(nn.Linear(d, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z / z.pow(2).mean(1, keepdim=True).add(1e-8).sqrt()
        return self.net(z).view(-1, 1, 8, 8)


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=1, keepdim=True)


def test_inversion_recovers_known_latent():
    g = TinyG()
    z_true = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = g(z_true)
    res = invert(g, x, 8, steps=400, lr=0.05, restarts=4, seed=0)
    # direction error on the sphere of radius sqrt(d), relative to the prior scale sqrt(d)
    err = (_unit(res.z) - _unit(z_true)).norm(dim=1)
    assert float(err.max()) < 0.1, err
    assert float(res.mse.max()) < 1e-3
    assert res.z.norm(dim=1).div(math.sqrt(8)).sub(1).abs().max() < 0.1  # prior pins the norm
    assert all(p.requires_grad for p in g.parameters())  # generator left as it was


def test_consecutive_distances_and_batch_independence():
    g = TinyG()
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = g(z)
    a = invert(g, x, 8, steps=50, restarts=2, batch_size=5, seed=3)
    b = invert(g, x, 8, steps=50, restarts=2, batch_size=2, seed=3)
    torch.testing.assert_close(a.z, b.z, atol=1e-5, rtol=1e-4)
    d = a.consecutive_distances()
    assert d.shape == (4,) and np.all(d >= 0)


def test_gamma_for_distance_matches_uniform_statistics():
    d = 32
    gamma = 1.3
    eps = (torch.rand(20000, d, generator=torch.Generator().manual_seed(0)) * 2 - 1) * gamma
    per_dim = float(eps.norm(dim=1).mean()) / d
    assert gamma_for_distance(per_dim, d) == pytest.approx(gamma, rel=0.01)


def test_inversion_bad_input():
    with pytest.raises(ConfigError):
        invert(TinyG(), torch.zeros(2, 1, 8, 8), 8, steps=0)
    with pytest.raises(ConfigError, match="frames must be"):
        invert(TinyG(), torch.zeros(8, 8), 8)
