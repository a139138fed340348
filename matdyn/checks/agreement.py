"""Descriptor agreement of a fast inference path with fp32 (the bounds of
``tests/test_precision.py`` and ``matdyn/training/bundle.py``), as library code so the GPU
check (``scripts/gpu_check.py``) measures what the CPU test asserts.

Bounds, per image, same latents, fast path vs fp32:

* image entropy (256 bins over [-1, 1]): |Δ| median <= 0.02 bits, max <= 0.05 bits
* total particle area (binarised, particles >= 6 px): relative difference median <= 2 %,
  90th percentile <= 5 %
* foreground masks: IoU median >= 0.98, min >= 0.95
* per-channel mass ((x + 1) / 2 summed): relative difference <= 1 %

2D images are binarised as dark particles (the NP case), 3D volumes on the channel sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from matdyn.models import Generator

#: (name, bound, "max" | "min") — the bounds of tests/test_precision.py
TOLERANCES: tuple[tuple[str, float, str], ...] = (
    ("entropy_diff_median", 0.02, "max"),
    ("entropy_diff_max", 0.05, "max"),
    ("area_rel_median", 0.02, "max"),
    ("area_rel_p90", 0.05, "max"),
    ("iou_median", 0.98, "min"),
    ("iou_min", 0.95, "min"),
    ("mass_rel_max", 0.01, "max"),
)


@torch.no_grad()
def calibrate_output(generator: Generator, stage: int, std: float = 0.35, n: int = 64,
                     seed: int = 0) -> Generator:
    """Scale and shift the output layer of ``stage`` in place so a random-init generator's
    images have per-channel mean 0 and standard deviation ``std`` (they then fill [-1, 1]
    with < 3 % clipping, like a trained generator's; tests/test_precision.py explains why).
    Returns ``generator``. Runs on the generator's device."""
    dev = next(generator.parameters()).device
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    x = generator(z.to(dev), stage, 1.0).float()  # [n, C, *S]
    dims = [0, *range(2, x.dim())]
    mean, k = x.mean(dims), std / x.std(dims)  # [C]
    layer = generator.to_image[stage]  # out = conv(h, w) + b  ->  (out - mean) * k
    layer.weight.mul_(k.view(-1, *(1,) * (layer.weight.dim() - 1)))
    layer.bias.copy_((layer.bias - mean) * k)
    return generator


def descriptor_agreement(ref: np.ndarray, fast: np.ndarray) -> dict[str, float]:
    """Descriptor differences of ``fast`` vs ``ref`` images ([N, C, *S] in [-1, 1], same
    latents); keys as in :data:`TOLERANCES` plus ``max_abs_pixel`` and ``mask_fraction``."""
    from matdyn.descriptors import (
        Binarizer,
        channel_mass,
        iou_batch,
        particle_totals,
        shannon_entropy_batch,
    )

    ref, fast = np.asarray(ref, np.float32), np.asarray(fast, np.float32)
    de = np.abs(shannon_entropy_batch(ref, 256, (-1, 1)) - shannon_entropy_batch(fast, 256, (-1, 1)))
    binarizer = Binarizer(dark=True, sigma=1.0) if ref.ndim == 4 else Binarizer(sigma=1.0)
    ma, mb = binarizer(ref), binarizer(fast)
    ta = particle_totals(ma, min_area=6).area_px.astype(float)
    tb = particle_totals(mb, min_area=6).area_px.astype(float)
    rel = np.abs(ta - tb) / np.maximum(ta, 1.0)
    ious = iou_batch(mb, ma)
    mass_a, mass_b = channel_mass((ref + 1) / 2), channel_mass((fast + 1) / 2)
    return {
        "entropy_diff_median": float(np.median(de)), "entropy_diff_max": float(de.max()),
        "area_rel_median": float(np.median(rel)), "area_rel_p90": float(np.quantile(rel, 0.9)),
        "iou_median": float(np.median(ious)), "iou_min": float(ious.min()),
        "mass_rel_max": float((np.abs(mass_a - mass_b) / np.maximum(mass_a, 1e-12)).max()),
        "max_abs_pixel": float(np.abs(ref - fast).max()), "mask_fraction": float(ma.mean()),
    }


def violations(numbers: dict[str, Any]) -> list[str]:
    """The bounds of :data:`TOLERANCES` that ``numbers`` break, as readable strings."""
    out = []
    for key, bound, kind in TOLERANCES:
        v = float(numbers[key])
        ok = v <= bound if kind == "max" else v >= bound
        if not ok or not np.isfinite(v):
            out.append(f"{key} {v:.4g} {'>' if kind == 'max' else '<'} {bound:g}")
    return out
