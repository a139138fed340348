"""WGAN-GP losses (Gulrajani et al. 2017) with the PGGAN drift term, as small pure functions.

Scores are critic outputs shaped [N]; images are [N, C, *spatial].
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from matdyn.models.layers import penalty_pass

GP_WEIGHT = 10.0  # λ of WGAN-GP (Gulrajani et al.; PGGAN §A.1)
DRIFT_WEIGHT = 1e-3  # ε_drift of PGGAN §A.1: keeps critic scores near zero


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss E[D(fake)] - E[D(real)] (eq. 1, negated for minimisation)."""
    return fake_scores.float().mean() - real_scores.float().mean()


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator loss -E[D(G(z))]."""
    return -fake_scores.float().mean()


def drift_penalty(real_scores: torch.Tensor, weight: float = DRIFT_WEIGHT) -> torch.Tensor:
    """weight · E[D(x)²] on real scores."""
    return weight * real_scores.float().square().mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = GP_WEIGHT,
    gp_mix: torch.Tensor | None = None,
) -> torch.Tensor:
    """weight · E[(‖∇D(x̂)‖₂ - 1)²] on x̂ = lerp(real, fake, gp_mix), gp_mix ~ U[0, 1) per sample.

    The graph is kept (``create_graph=True``) so the penalty can be back-propagated into the
    critic's parameters. ``gp_mix`` ([N]) may be given for reproducible tests.
    """
    n = real.shape[0]
    if gp_mix is None:
        gp_mix = torch.rand(n, device=real.device, dtype=real.dtype)
    mix = gp_mix.to(real.dtype).view(n, *(1,) * (real.dim() - 1))  # [N, 1, 1, ...]
    x_hat = torch.lerp(real.detach(), fake.detach().to(real.dtype), mix).requires_grad_(True)
    with penalty_pass():  # input-gradient-only layers: cheaper second-order backward
        scores = critic(x_hat)  # [N]
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(dim=1)  # [N]
    return weight * (norm - 1.0).square().mean()
