"""Tracking baseline, γ ↔ Δt calibration, MSD exponent and cluster count (matdyn.dynamics)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from matdyn.data.store import open_store
from matdyn.data.synthetic import np_diffusion
from matdyn.descriptors.differences import DensityDifference
from matdyn.dynamics import (
    choose_n_clusters,
    fit_diffusion,
    gamma_for_lags,
    lag_differences,
    msd_curve,
    tracking_baseline,
)
from matdyn.errors import AnalysisError

PLANTED_FREE_D = 1887.5  # nm²/s, np_diffusion default (paper §3.3.2: 7550 nm² / 4 s)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dyn") / "np.zarr"
    return open_store(np_diffusion.generate(path, n_frames=150, size=64, seed=0, progress=False))


def test_tracking_free_mode_d_near_planted(tiny_store):
    r = tracking_baseline(tiny_store)
    assert r.applicable and r.units == {"length": "nm", "time": "s"}
    assert set(r.fits["mode"]) == {"all", "directed", "free", "confined"}
    d_free = r.diffusion("free")
    # 5 free particles x 150 frames: measured 1743 nm²/s (-7.6 %); 400 frames at 142 px: -2 %
    assert abs(d_free / PLANTED_FREE_D - 1) < 0.2
    assert r.diffusion("confined") < d_free
    fits = r.fits.set_index("mode")
    # directed lanes drift at 200 nm/s (np_diffusion default): measured 199 nm/s, alpha 1.87
    assert abs(fits.loc["directed", "v_nm_per_s"] / 200.0 - 1) < 0.15
    assert fits.loc["directed", "alpha"] > 1.5 and abs(fits.loc["free", "alpha"] - 1) < 0.2
    lag1 = r.msd[(r.msd["mode"] == "free") & (r.msd["lag"] == 1)]
    assert lag1["lag_s"].item() == pytest.approx(0.05)


def test_tracking_not_a_time_series():
    store = SimpleNamespace(labels={"particle_id": np.zeros(4), "stage_days": np.arange(4)})
    r = tracking_baseline(store)
    assert not r.applicable and "not a time series" in r.reason
    assert np.isnan(r.diffusion("all")) and r.fits.empty
    r = tracking_baseline(SimpleNamespace(labels={"is_augmented": np.zeros(4, bool)}))
    assert not r.applicable and "augmented" in r.reason


def test_gamma_of_dt_monotone_on_known_dynamics(tiny_store):
    frames = tiny_store.load(0, 96)
    lag = lag_differences(frames, DensityDifference(), frame_interval=0.05, max_fraction=0.5)
    assert lag["lag"].tolist() == [1, 2, 4, 8, 16, 32]
    med = lag["median"].to_numpy()
    assert np.all(np.diff(med) > 0)  # diffusing particles: frames differ more at longer lags
    # a γ-curve with a noisy fold (0.62 < 0.65) spanning the lag differences
    gammas = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
    curve = np.array([0.20, 0.35, 0.50, 0.65, 0.62, 0.80, 0.95])
    g, ok = gamma_for_lags(gammas, curve, med)
    assert ok.all()
    assert np.all(np.diff(g) > 0)
    g2, ok2 = gamma_for_lags(gammas[:3], curve[:3], med)
    assert ok2.tolist() == [True, True, True, False, False, False] and np.isnan(g2[-1])
    with pytest.raises(AnalysisError):
        gamma_for_lags(gammas, np.zeros(7), med, through_origin=False)


def test_msd_curve_exponent_classifies_motion():
    dt = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
    free = 4 * 1887.5 * dt
    confined = 4000 * (1 - np.exp(-dt / 0.05))
    directed = 4 * 100 * dt + (2000 * dt) ** 2
    out = msd_curve(dt, np.stack([free, confined, directed], axis=1))
    assert out["D"].iloc[0] == pytest.approx(1887.5)
    assert out["alpha"].iloc[0] == pytest.approx(1.0)
    assert out["motion"].tolist() == ["diffusive", "sub-diffusive (confined)",
                                      "ballistic (directed)"]
    one = msd_curve(dt, free + 30.0, floor=np.full(5, 30.0))  # one particle, floor per Δt
    assert one["alpha"].item() == pytest.approx(1.0) and one["motion"].item() == "diffusive"
    assert fit_diffusion(dt, free + 30.0) == pytest.approx((1887.5, 30.0))
    with pytest.raises(AnalysisError):
        msd_curve(np.array([0.1, 0.1]), np.ones((2, 3)))


@pytest.mark.parametrize("method", ["gap", "silhouette"])
def test_one_mode_gives_one_cluster(method):
    rng = np.random.default_rng(4)
    one = np.column_stack([rng.normal(7.5, 0.3, 80), rng.normal(0.2, 0.05, 80)])  # log MSD, drift
    assert choose_n_clusters(one, method=method).k == 1
    # free (high MSD), confined (low MSD), directed (mid MSD, high drift)
    three = np.concatenate([one[:30] + s for s in ([3.0, 0.0], [0.0, 0.0], [1.5, 0.5])])
    c = choose_n_clusters(three, method=method)
    assert c.k == 3 and len(np.unique(c.labels)) == 3


def test_gap_counts_the_modes_of_a_layout_where_average_linkage_dispersion_said_one():
    """Held-out NP layout g (session 18): the MC descriptors of 801 particles (log MSD and
    log anisotropy ratio at γ = 1; lanes, band, traps planted). With W_k from average linkage
    the gap rule said 1 mode (Gap 0.61, −0.11, 0.49 for k = 1..3); with W_k from Ward it
    says 3, and the returned labels are still average linkage's."""
    from pathlib import Path

    import pandas as pd
    from sklearn.cluster import AgglomerativeClustering

    t = pd.read_csv(Path(__file__).parent / "data" / "np_layout_g_features.csv")
    x = t[["log_msd_g1", "log_anisotropy_ratio_g1"]].to_numpy()
    c = choose_n_clusters(x, method="gap", linkage="average")
    assert c.k == 3
    z = (x - x.mean(0)) / x.std(0)
    avg = AgglomerativeClustering(n_clusters=3, linkage="average").fit_predict(z)
    np.testing.assert_array_equal(c.labels, avg)


def test_estimated_diameter_grows_when_no_feature_is_found_at_the_log_scale(monkeypatch):
    """Ring-like bright-field particles can defeat the LoG diameter (trackpy's bulk_water at
    64 px: 0 features at 5 px, 14 at 7 px); the estimate then tries larger odd diameters,
    while a diameter given by the user is used as given."""
    from matdyn.dynamics import locate as loc

    yy, xx = np.mgrid[:48, :48]
    img = np.zeros((48, 48))
    for r, c in ((10, 10), (10, 36), (30, 20), (38, 40)):
        img -= np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5**2))
    first = loc.estimate_locate_params(img, dark=True).diameter
    real = loc.locate_stack

    def blind_below(frames, params, *a, **k):  # no feature below first + 2, like the rings
        out = real(frames, params, *a, **k)
        if params.diameter >= first + 2:
            return out
        return loc.Located(out.coords[:0], out.frame[:0], out.mass[:0], out.n_images)

    monkeypatch.setattr(loc, "locate_stack", blind_below)
    p = loc.estimate_locate_params(img, dark=True)
    assert p.diameter == first + 2 and p.minmass > 0
    with pytest.raises(AnalysisError, match="diameter"):
        loc.estimate_locate_params(img, dark=True, diameter=first)
