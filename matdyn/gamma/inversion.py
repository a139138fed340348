"""γ from latent inversion (paper §2.2: "correlating ... with the average latent space
distances between adjacent time-step reconstructions"): invert a window of consecutive real
frames into the latent space (:mod:`matdyn.sampling.inversion`) and match γ to their
latent steps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from matdyn.errors import AnalysisError
from matdyn.gamma.rules import gamma_from_angle
from matdyn.gamma.rules import statistic as _stat
from matdyn.gamma.specs import CalibrationSpec

__all__ = ["inversion_calibration"]


def inversion_calibration(
    bundle: Any,
    frames: np.ndarray,
    groups: np.ndarray | None,
    spec: CalibrationSpec,
    *,
    gammas: Sequence[float] = (),
    angular_steps: Sequence[float] = (),
    distribution: str = "uniform",
    device: str = "cpu",
) -> dict[str, Any]:
    """γ from the latent steps between inverted consecutive real frames.

    ``frames`` [n, C, *spatial] are in physical units at the generator's resolution; they
    are mapped to the generator's [-1, 1] range with the bundle's normalisation, inverted,
    and the consecutive per-dimension distances on the √d sphere (pairs inside one group)
    summarised by ``spec.stat``. ``gamma_distance`` matches that distance to E‖ε‖/d;
    ``gamma_angular`` matches the angle between the latents to the sweep's measured mean
    angular step (``gammas`` / ``angular_steps``; analytic outside the swept range).
    """
    import torch

    from matdyn.descriptors.latent import expected_per_dimension_distance
    from matdyn.sampling.inversion import gamma_for_distance, invert

    d = int(bundle.latent_dim)
    x = torch.as_tensor(np.asarray(frames, dtype=np.float32), device=device)
    x = bundle.from_physical(x)  # physical -> [-1, 1]
    gen = bundle.generator

    def g_fn(z: torch.Tensor) -> torch.Tensor:  # unclamped, so gradients reach every pixel
        return gen(z, bundle.stage, bundle.fade_alpha)

    res = invert(
        g_fn, x, d, steps=int(spec.steps), lr=float(spec.lr), restarts=int(spec.restarts),
        prior_weight=float(spec.prior_weight), batch_size=int(spec.batch_size), seed=int(spec.seed),
    )
    dist = np.asarray(res.consecutive_distances(), dtype=np.float64)  # [n-1]
    valid = np.ones(dist.size, dtype=bool) if groups is None else groups[1:] == groups[:-1]
    dist = dist[valid]
    if dist.size == 0:
        raise AnalysisError("the inverted frames hold no consecutive pair; raise calibration.n_frames")
    # angle between latents on the sqrt(d) sphere: chord = 2 sqrt(d) sin(θ/2) = distance · d
    angles = 2.0 * np.arcsin(np.clip(dist * math.sqrt(d) / 2.0, 0.0, 1.0))
    dist_stat, angle_stat = _stat(dist, spec.stat), _stat(angles, spec.stat)
    if distribution == "uniform":
        g_dist = gamma_for_distance(dist_stat, d)
    else:
        g_dist = dist_stat / expected_per_dimension_distance(1.0, d, distribution)
    notes = []
    g_arr = np.asarray(gammas, dtype=np.float64)
    a_arr = np.asarray(angular_steps, dtype=np.float64)
    order = np.argsort(a_arr)
    if a_arr.size >= 2 and a_arr[order][0] <= angle_stat <= a_arr[order][-1]:
        g_ang = float(np.interp(angle_stat, a_arr[order], g_arr[order]))
    else:
        g_ang = gamma_from_angle(angle_stat, distribution)
        notes.append(
            f"the inverted frames' latent angle {math.degrees(angle_stat):.3g}° lies outside the "
            "swept angular steps; gamma_angular uses the analytic atan relation"
        )
    chosen = g_ang if spec.mapping == "angular" else g_dist
    return {
        "gamma": float(chosen),
        "mapping": spec.mapping,
        "gamma_angular": float(g_ang),
        "gamma_distance": float(g_dist),
        "stat": spec.stat,
        "per_dim_distance": dist_stat,
        "angle_deg": math.degrees(angle_stat),
        "n_frames": int(x.shape[0]),
        "n_pairs": int(dist.size),
        "mse_median": float(res.mse.median()),
        "distances": dist.tolist(),
        "settings": asdict(spec),
        "notes": notes,
    }

