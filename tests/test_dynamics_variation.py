"""Particle-level displacement statistics of a variation (matdyn.dynamics, issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from matdyn.dynamics import (
    LocateParams,
    link_to_reference,
    locate_stack,
    still_variation,
    variation_displacements,
    variations_table,
)
from matdyn.errors import AnalysisError, ConfigError

SIGMA = 1.6  # px, Gaussian particle width
SIZE = 64


def render(centres: np.ndarray, size: int = SIZE, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Dark Gaussian particles (depth 1) at ``centres`` [S, 2] (row, col) px -> [H, W]."""
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size))
    for r, c in centres:
        img -= np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * SIGMA**2))
    if noise:
        img += noise * np.random.default_rng(seed).standard_normal(img.shape)
    return img


REF = np.array([[12.3, 14.7], [20.1, 45.2], [40.6, 20.4], [50.2, 50.8]])
PARAMS = LocateParams(diameter=9, minmass=1.0)


def moved(n: int, step_px: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Samples where particle s moves by a Gaussian step of std step_px[s] per axis."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n, len(REF), 2)) * step_px[None, :, None]
    return np.stack([render(REF + d[j]) for j in range(n)]), d


def test_msd_and_d_of_known_displacements():
    step = np.array([0.0, 0.5, 1.0, 2.0])  # px per axis
    samples, d = moved(40, step)
    px, dt = 40.0, 0.05  # nm/px, s
    v = variation_displacements(render(REF), samples, px, dt, params=PARAMS)
    p = v.particles.sort_values("y_px")
    true_msd = (d**2).sum(-1).mean(0) * px**2  # nm², exact planted values
    assert p["n_matched"].tolist() == [40, 40, 40, 40]
    np.testing.assert_allclose(p["msd_nm2"], true_msd, rtol=0.02, atol=0.5)
    np.testing.assert_allclose(p["D_nm2_per_s"], true_msd / (4 * dt), rtol=0.02, atol=3)
    assert p["msd_nm2"].iloc[0] < 0.5  # still particle: noise-free locate error only
    assert v.n_appearing.sum() == 0 and v.n_missing.sum() == 0


def test_directed_particle_has_drift_and_anisotropy():
    rng = np.random.default_rng(3)
    n = 60
    d = np.zeros((n, len(REF), 2))
    d[:, 0, 1] = 1.5 + 0.1 * rng.standard_normal(n)  # particle 0: drift along x
    d[:, 1] = 0.8 * rng.standard_normal((n, 2))  # particle 1: isotropic diffusion
    samples = np.stack([render(REF + d[j]) for j in range(n)])
    p = variation_displacements(render(REF), samples, 1.0, 1.0, params=PARAMS).particles
    p = p.sort_values("y_px")
    assert p["drift_fraction"].iloc[0] > 0.99 and p["drift_fraction"].iloc[1] < 0.1
    assert p["anisotropy"].iloc[0] > 0.9 and p["anisotropy"].iloc[1] < 0.5
    assert abs(p["mean_dx_nm"].iloc[0] - d[:, 0, 1].mean()) < 0.02


def test_linking_counts_appearing_and_disappearing():
    ref = render(REF)
    gone = render(REF[1:])  # particle 0 disappears
    extra = render(np.vstack([REF, [[30.0, 32.0]]]))  # one particle appears
    v = variation_displacements(ref, np.stack([gone, extra, ref]), 1.0, 1.0, params=PARAMS)
    p = v.particles.sort_values("y_px")
    assert v.n_appearing.tolist() == [0, 1, 0]
    assert v.n_missing.tolist() == [1, 0, 0]
    assert p["n_matched"].tolist() == [2, 3, 3, 3]
    assert p["n_missing"].tolist() == [1, 0, 0, 0]


def test_link_one_to_one_nearest_wins():
    r = link_to_reference(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [0.3, 0.0]]),
                          np.array([0, 0]), 1, 2.0)
    assert r.ref_index.tolist() == [-1, 0]
    np.testing.assert_allclose(r.displacement[1], [0.3, 0.0])
    with pytest.raises(ConfigError):
        link_to_reference(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1), 1, 0.0)


def test_noise_floor_from_still_particles():
    ref = render(REF, noise=0.02, seed=5)
    still = still_variation(ref, 50, noise_std=0.02, seed=1)
    fl = variation_displacements(ref, still, 40.0, 0.05, params=PARAMS)
    samples, _ = moved(50, np.full(4, 1.0))
    v = variation_displacements(ref, samples + 0.02 * np.random.default_rng(2).standard_normal(
        samples.shape), 40.0, 0.05, params=PARAMS).add_floor(fl)
    floor = v.particles["msd_floor_nm2"].to_numpy()
    # locate error at 2 % noise: a few 0.01 px² -> a few tens of nm² at 40 nm/px
    assert np.all(floor > 1.0) and np.all(floor < 200.0)
    assert np.all(v.particles["msd_nm2"].to_numpy() > 10 * floor)
    assert "D_floor_nm2_per_s" in v.particles


def test_locate_subpixel_and_errors():
    loc = locate_stack(render(REF), PARAMS)
    np.testing.assert_allclose(loc.coords, REF[np.lexsort((REF[:, 1], REF[:, 0]))], atol=0.02)
    with pytest.raises(AnalysisError):
        variation_displacements(np.zeros((8, 8)), np.zeros((2, 9, 9)), 1.0, 1.0)
    with pytest.raises(AnalysisError):
        variation_displacements(np.zeros((32, 32)), np.zeros((2, 32, 32)), 1.0, 1.0,
                                params=PARAMS)
    with pytest.raises(ConfigError):
        LocateParams(diameter=8)


def test_variations_table_skips_empty_reference_and_adds_floor():
    samples, d = moved(20, np.full(4, 1.0))
    blank = np.zeros((SIZE, SIZE))
    tab, info = variations_table([(blank, samples), (render(REF), samples)], 40.0, 0.05,
                                 params=PARAMS, floor_samples=16)
    assert info["skipped_refs"] == [0] and tab["ref"].unique().tolist() == [1]
    assert len(tab) == 4 and info["appearing_per_sample"] == 0.0
    # noise-free images: locate error only, far below the planted MSD (~3200 nm²)
    assert (tab["msd_floor_nm2"] < 1.0).all() and (tab["msd_nm2"] > 1000).all()
