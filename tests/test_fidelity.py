"""Distribution distances and baselines (matdyn.analysis.fidelity)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from matdyn.analysis.fidelity import (
    binarize,
    laplacian_pyramid,
    property_wasserstein,
    s2_baseline,
    s2_distance,
    sliced_wasserstein,
    split_half_baseline,
    swd_baseline,
    two_point_correlation,
    wasserstein_1d,
    wasserstein_baseline,
)
from matdyn.errors import AnalysisError, ConfigError


def smooth_images(n: int, shape=(32, 32), channels: int = 1, sigma: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, channels, *shape))
    return ndimage.gaussian_filter(x, (0, 0) + (sigma,) * len(shape))


# ----------------------------------------------------------------------------- Wasserstein


def test_wasserstein_of_shifted_samples_equals_shift():
    rng = np.random.default_rng(0)
    u = rng.gamma(2.0, 3.0, 500)
    for shift in (0.0, 0.5, 4.0):
        assert wasserstein_1d(u, u + shift) == pytest.approx(shift, abs=1e-9)
    assert wasserstein_1d(u, u + 2.0, normalize="std") == pytest.approx(2.0 / u.std())
    r = wasserstein_1d(u, u + 2.0, normalize="range")
    pooled = max(u.max(), u.max() + 2) - u.min()
    assert r == pytest.approx(2.0 / pooled)
    assert 0 <= r <= 1
    assert property_wasserstein({"a": u, "b": u}, {"a": u + 1, "b": u}) == pytest.approx(
        {"a": 1.0, "b": 0.0}
    )
    with pytest.raises(ConfigError):
        wasserstein_1d(u, u, normalize="minmax")
    with pytest.raises(AnalysisError):
        wasserstein_1d(u, [np.nan])


def test_wasserstein_baseline_is_below_a_real_shift():
    rng = np.random.default_rng(1)
    u = rng.normal(0, 1, 400)
    base = wasserstein_baseline(u, n_repeats=5)
    assert 0 < base < 0.3
    assert wasserstein_1d(u, u + 1.0) > 3 * base
    halves = split_half_baseline(np.arange(10.0), lambda a, b: (len(a), len(b)), n_repeats=2)
    assert halves == [(5, 5), (5, 5)]


# ---------------------------------------------------------------------- sliced Wasserstein


def test_laplacian_pyramid_reconstructs_and_ignores_constants():
    from matdyn.analysis.fidelity import _upsample

    x = smooth_images(3, (32, 32))
    pyr = laplacian_pyramid(x, min_size=8)
    assert [p.shape[-1] for p in pyr] == [32, 16, 8]
    rec = pyr[-1]
    for lap in reversed(pyr[:-1]):
        rec = lap + _upsample(rec, lap.shape[2:])
    assert np.allclose(rec, x)
    shifted = laplacian_pyramid(x + 5.0, min_size=8)
    for a, b in zip(pyr[:-1], shifted[:-1]):
        assert np.allclose(a, b)  # band-pass levels are blind to a constant


def test_swd_small_for_identical_and_grows_with_intensity_shift():
    x = smooth_images(16)
    kw = {"n_patches": 1024, "min_size": 8, "seed": 3}
    same = sliced_wasserstein(x, x, **kw)
    assert same.levels.shape == (3,)
    assert same.sizes == ((32, 32), (16, 16), (8, 8))
    assert same.mean < 0.06
    means = [sliced_wasserstein(x, x + s, **kw).mean for s in (0.1, 0.2, 0.4, 0.8)]
    assert all(b > a for a, b in zip([same.mean] + means, means))
    assert means[0] > 2 * same.mean
    # the PGGAN per-set normalisation cannot see a global shift
    blind = sliced_wasserstein(x, x + 0.8, normalize="per_set", **kw)
    assert blind.mean < 0.06
    # seeded: same seed, same numbers
    again = sliced_wasserstein(x, x + 0.2, **kw)
    assert again.mean == means[1]


def test_swd_3d_multichannel_and_baseline():
    v = smooth_images(4, (16, 16, 16), channels=3, sigma=1.0)
    res = sliced_wasserstein(v, v * 1.5, n_patches=512, min_size=8)
    assert res.levels.shape == (2,)
    base = swd_baseline(v, n_patches=512, min_size=8)
    assert base.levels.shape == (2,)
    singles = split_half_baseline(  # the default averages five random halvings
        v, lambda a, b: sliced_wasserstein(a, b, n_patches=512, min_size=8).mean, n_repeats=5)
    assert base.mean == pytest.approx(np.mean(singles)) and np.ptp(singles) > 0
    assert res.mean > base.mean
    with pytest.raises(AnalysisError):
        sliced_wasserstein(v, v[:, :2])


# ------------------------------------------------------------------------------------ S2


def random_medium(phi: float, shape=(128, 128), n: int = 4, corr: float = 2.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(
        rng.standard_normal((n, *shape)), (0,) + (corr,) * len(shape), mode="wrap"
    )
    return field > np.quantile(field, 1 - phi)


@pytest.mark.parametrize("periodic", [True, False])
def test_s2_limits_for_random_media(periodic):
    b = random_medium(0.3)
    phi = b.mean()
    r, s2 = two_point_correlation(b, batch=True, periodic=periodic, r_max=40)
    assert r[0] == 0 and len(r) == 41
    assert s2[0] == pytest.approx(phi, abs=1e-9)  # S2(0) = volume fraction
    assert np.all(np.diff(s2[:6]) < 0)  # decays from φ ...
    assert s2[20:].mean() == pytest.approx(phi**2, abs=0.01)  # ... towards φ² at large r
    # 3D volume of independent voxels: S2(r >= 1) = φ²
    v = np.random.default_rng(2).random((24, 24, 24)) < 0.2
    _, s2v = two_point_correlation(v, periodic=periodic)
    assert s2v[0] == pytest.approx(v.mean())
    assert s2v[1:].mean() == pytest.approx(v.mean() ** 2, abs=0.005)


def test_s2_distance_and_baseline_separate_structures():
    fine = random_medium(0.3, (64, 64), n=8, corr=1.0, seed=1)
    coarse = random_medium(0.3, (64, 64), n=8, corr=3.0, seed=2)
    s2f = two_point_correlation(fine, batch=True)[1]
    s2c = two_point_correlation(coarse, batch=True)[1]
    assert s2_distance(s2f, s2f) == 0.0
    base = s2_baseline(fine, n_repeats=3)
    assert s2_distance(s2f, s2c) > 3 * base
    assert binarize(np.array([0.1, 0.9, 0.2, 0.8])).tolist() == [False, True, False, True]
    with pytest.raises(AnalysisError):
        two_point_correlation(np.array([[0.5, 1.0], [0.0, 1.0]]))
