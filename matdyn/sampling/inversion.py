"""Latent inversion: project observed frames into the generator's latent space.

The paper picks γ "by correlating the maximum observed micro-structural displacement over
time intervals with the average latent space distances between adjacent time-step
reconstructions" (§2.2). This module provides those reconstructions: for each frame x it
finds z minimising

    mean((G(z) - x)²) + prior_weight · (‖z‖/√d − 1)²

by batched Adam with optional random restarts (the best restart per frame is kept). A
PGGAN generator pixel-normalises its input (G(z) = G(z/‖z‖·√d)), so only the direction
of z matters to G; the prior term pins the norm to the typical √d of N(0, I), which keeps
distances between inversions comparable with perturbations ε drawn around such latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from matdyn.descriptors.latent import expected_per_dimension_distance
from matdyn.errors import ConfigError


@dataclass
class InversionResult:
    z: torch.Tensor               # [N, d] best latent per frame (norm pinned near sqrt(d))
    mse: torch.Tensor             # [N] reconstruction error in the generator's [-1, 1] units
    reconstructions: torch.Tensor  # [N, C, *spatial] G(z) in [-1, 1]

    def consecutive_distances(self) -> np.ndarray:
        """Per-dimension latent distance ‖z_t+1 − z_t‖ / d between consecutive frames.

        Directions are compared on the sphere of radius √d (what a pixel-normalising
        generator sees), so the number is comparable with ‖ε‖ / d of the perturbations.
        """
        d = self.z.shape[1]
        zn = self.z / self.z.norm(dim=1, keepdim=True).clamp_min(1e-12) * math.sqrt(d)
        return ((zn[1:] - zn[:-1]).norm(dim=1) / d).cpu().numpy()


def gamma_for_distance(per_dim_distance: float, latent_dim: int) -> float:
    """γ whose uniform perturbation U[−γ, γ]^d has mean ‖ε‖/d equal to `per_dim_distance`.

    Exact inverse of :func:`matdyn.descriptors.latent.expected_per_dimension_distance`,
    which is linear in γ: E‖ε‖/d = γ·√(d/3)·(1 − 1/(10d))/d, i.e. for large d
    γ ≈ per_dim_distance · √(3d).

    Note: this reads a latent distance as ‖ε‖. Distances between inverted latents compared
    on the √d sphere (what a pixel-normalising generator sees) are chords, shorter than
    the ‖ε‖ of a perturbation with the same angular step; :mod:`matdyn.gamma.inversion`
    also reports the γ matched through the angle.

    >>> round(gamma_for_distance(0.102, 32), 2)
    1.0
    """
    return float(per_dim_distance) / expected_per_dimension_distance(1.0, int(latent_dim))


def invert(
    generator: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    latent_dim: int,
    *,
    steps: int = 300,
    lr: float = 0.05,
    restarts: int = 4,
    prior_weight: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> InversionResult:
    """Invert frames [N, C, *spatial] (already in the generator's [-1, 1] range).

    Args:
        generator: maps latents [B, d] to images [B, C, *spatial] in [-1, 1]; gradients flow.
        steps, lr: Adam iterations and step size per restart.
        restarts: independent random starts per frame; the lowest-error one is kept.
        prior_weight: weight of the norm prior (‖z‖/√d − 1)².
        batch_size: frames optimised together (memory ~ batch_size × restarts images).
        seed: restarts are drawn from a generator seeded with (seed, frame index).
    """
    if steps < 1 or restarts < 1 or batch_size < 1:
        raise ConfigError("inversion needs steps, restarts and batch_size >= 1")
    if frames.dim() < 4:
        raise ConfigError(f"frames must be [N, C, *spatial], got shape {tuple(frames.shape)}")
    module = generator if isinstance(generator, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    params = list(module.parameters()) if module is not None else []
    req = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    device = frames.device
    zs, errs, recs = [], [], []
    try:
        for start in range(0, frames.shape[0], batch_size):
            x = frames[start : start + batch_size]
            n = x.shape[0]
            # one seeded stream per frame: results do not depend on batch_size
            z0 = torch.stack([
                torch.randn(restarts, latent_dim,
                            generator=torch.Generator().manual_seed(seed * 1_000_003 + start + i))
                for i in range(n)
            ]).to(device)  # [n, R, d]
            z = z0.reshape(n * restarts, latent_dim).clone().requires_grad_(True)
            target = x.repeat_interleave(restarts, dim=0)
            opt = torch.optim.Adam([z], lr=lr)
            sqrt_d = math.sqrt(latent_dim)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                rec = generator(z)
                mse = (rec - target).pow(2).flatten(1).mean(1)
                prior = (z.norm(dim=1) / sqrt_d - 1).pow(2)
                (mse + prior_weight * prior).sum().backward()
                opt.step()
            with torch.no_grad():
                rec = generator(z)
                mse = (rec - target).pow(2).flatten(1).mean(1).view(n, restarts)
                best = mse.argmin(dim=1)
                pick = torch.arange(n, device=device) * restarts + best
                zs.append(z.detach()[pick])
                errs.append(mse[torch.arange(n), best])
                recs.append(rec[pick])
    finally:
        for p, r in zip(params, req):
            p.requires_grad_(r)
        if module is not None:
            module.train(was_training)
    return InversionResult(torch.cat(zs), torch.cat(errs), torch.cat(recs))
