"""Fidelity of a trained generator against its training data (written as the run summary).

Generated frames G(z), z ~ N(0, I), are compared with real frames resized exactly as the
training saw them. Every number comes with a real-vs-real baseline (two disjoint halves of
the real frames), so a distance can be read as "how far beyond sampling noise":

* ``intensity_w1/<channel>``: 1D Wasserstein distance of voxel values, after mapping the
  pooled (real ∪ generated) range to [0, 1] (the paper reports per-species values of
  0.010 / 0.017 / 0.006 for the brass clumps, §3.4.1);
* ``particle_area_w1`` (2D, one channel: dark particles such as gold NPs): Wasserstein
  distance of per-particle areas, again on the pooled range mapped to [0, 1] (paper: 0.068
  for NP areas, §3.3.1), plus the raw distance in physical units (nm²);
* ``swd``: multi-scale sliced Wasserstein distance on Laplacian-pyramid patches (PGGAN).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matdyn.analysis.fidelity import sliced_wasserstein, wasserstein_1d
from matdyn.descriptors.particles import binarize, particle_areas_batch


def generate_frames(bundle: torch.nn.Module, n: int, *, seed: int = 0, batch: int = 128,
                    physical: bool = True) -> np.ndarray:
    """n frames from z ~ N(0, I) drawn with a seeded CPU generator (device-independent)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, bundle.latent_dim, generator=g)
    device = next(bundle.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch):
            zb = z[i : i + batch].to(device)
            x = bundle.sample(zb) if physical else bundle(zb)
            out.append(x.float().cpu().numpy())
    return np.concatenate(out)


def dark_particle_areas(images: np.ndarray, min_area: int = 4) -> np.ndarray:
    """Areas (px) of dark particles (phase dips) in single-channel frames [B, 1, H, W].

    Gaussian σ = 1, black top-hat (radius 6 px) against slow backgrounds, Otsu threshold per
    image: the trace-extraction settings that worked in the CPU prototype (FINDINGS.md).
    """
    masks = binarize(images[:, 0], "otsu", dark=True, sigma=1.0, tophat_radius=6)
    _, areas = particle_areas_batch(masks, min_area=min_area)
    return areas.astype(np.float64)


def _half_split(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(len(x))
    h = len(x) // 2
    return x[idx[:h]], x[idx[h : 2 * h]]


def fidelity_summary(generated: np.ndarray, real: np.ndarray, *, channel_names: list[str],
                     pixel_size: float, unit: str, seed: int = 0,
                     particles: bool | None = None) -> dict[str, Any]:
    """Generated vs real frames ([N, C, *spatial], physical units) with real-vs-real baselines."""
    out: dict[str, Any] = {"n_generated": int(len(generated)), "n_real": int(len(real))}
    ra, rb = _half_split(real, seed)
    w1: dict[str, Any] = {}
    for c, name in enumerate(channel_names):
        w1[name] = {
            "generated_vs_real": wasserstein_1d(real[:, c].ravel(), generated[:, c].ravel(), "range"),
            "real_vs_real": wasserstein_1d(ra[:, c].ravel(), rb[:, c].ravel(), "range"),
        }
    out["intensity_w1"] = w1
    if particles is None:
        particles = real.shape[1] == 1 and real.ndim == 4
    if particles:
        a_real, a_gen = dark_particle_areas(real), dark_particle_areas(generated)
        a_ra, a_rb = dark_particle_areas(ra), dark_particle_areas(rb)
        px2 = float(pixel_size) ** 2
        if len(a_real) and len(a_gen):
            out["particle_area_w1"] = {
                "generated_vs_real": wasserstein_1d(a_real, a_gen, "range"),
                "real_vs_real": wasserstein_1d(a_ra, a_rb, "range") if len(a_ra) and len(a_rb) else None,
                f"generated_vs_real_{unit}2": wasserstein_1d(a_real * px2, a_gen * px2),
                "normalisation": "values mapped to [0, 1] over the pooled range",
                "mean_area_real_px": float(a_real.mean()),
                "mean_area_generated_px": float(a_gen.mean()),
                "particles_per_frame_real": len(a_real) / len(real),
                "particles_per_frame_generated": len(a_gen) / len(generated),
            }
        else:
            out["particle_area_w1"] = {"error": f"no particles found (real {len(a_real)}, "
                                                f"generated {len(a_gen)})"}
    if min(real.shape[2:]) >= 16:
        swd = sliced_wasserstein(real, generated, seed=seed)
        base = sliced_wasserstein(ra, rb, seed=seed)
        out["swd"] = {"generated_vs_real": float(swd.mean), "real_vs_real": float(base.mean),
                      "levels": [float(v) for v in swd.levels]}
    return out


def evaluate_bundle(bundle_path: str | os.PathLike, store_path: str | os.PathLike, *,
                    n: int = 1000, seed: int = 0, fit: str = "crop",
                    particles: bool | None = None) -> dict[str, Any]:
    """Fidelity summary of a bundle against the store it was trained on (n frames each).

    ``particles``: compare dark-particle areas (NP-like data); None = any 1-channel 2D store.
    """
    from matdyn.data.store import open_store
    from matdyn.data.transforms import resize_frames, square_frames
    from matdyn.training.bundle import load_generator

    bundle = load_generator(bundle_path)
    store = open_store(store_path, validate=False)
    n_real = min(n, len(store))
    idx = np.sort(np.random.default_rng(seed).choice(len(store), n_real, replace=False))
    real = torch.from_numpy(np.stack([store.images[int(i)] for i in idx]).astype(np.float32))
    real = resize_frames(square_frames(real, fit), bundle.resolution).numpy()  # type: ignore[arg-type]
    gen = generate_frames(bundle, n, seed=seed)
    pixel = float(bundle.normalization.get("pixel_size", store.meta.pixel_size))
    summary = fidelity_summary(gen, real, channel_names=list(store.meta.channel_names),
                               pixel_size=pixel, unit=store.meta.unit, seed=seed,
                               particles=particles)
    summary.update(bundle=str(Path(bundle_path)), resolution=bundle.resolution,
                   pixel_size=pixel, unit=store.meta.unit)
    return summary
