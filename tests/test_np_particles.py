"""Particle-level NP analysis (issue 12): streamed displacements, time axis, cluster count,
reference lines, and the NP case end to end with the default ``descriptors: particles``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from matdyn.analysis.cases.np_diffusion import figures as figs
from matdyn.analysis.cases.np_diffusion import particle_figures as pfigs
from matdyn.analysis.cases.np_diffusion import particles, timebase
from matdyn.analysis.cases.np_diffusion.config import Config
from matdyn.dynamics.locate import LocateParams
from matdyn.dynamics.streaming import ParticleLinks, particle_rows
from matdyn.errors import AnalysisError, ConfigError
from matdyn.sampling.reducers import ReferenceBlock, RunInfo, VariationBatch

H = 40


def dips(centres, h: int = H, sigma: float = 1.5) -> np.ndarray:
    """One image [1, h, h] with Gaussian dips of depth 1 at (row, col) centres."""
    yy, xx = np.mgrid[:h, :h]
    img = np.zeros((h, h))
    for r, c in centres:
        img -= np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    return img[None].astype(np.float32)


def run_reducer(red: ParticleLinks, ref: np.ndarray, samples: list[np.ndarray],
                keep: np.ndarray | None = None) -> dict:
    """Drive the reducer hooks as the engine does, for one reference and its samples."""
    n = len(samples)
    red.start(RunInfo(1, n, 2, ref.shape, ("m",), 0))
    block = ReferenceBlock(0, np.array([0]), np.zeros((1, 2), np.float32), ref[None])
    red.begin_block(block)
    metric = np.zeros(n) if keep is None else np.where(keep, 0.0, 1.0)
    red.update(VariationBatch(block, np.zeros(n, np.int64), np.arange(n), np.zeros(n, np.int64),
                              np.stack(samples), np.zeros((n, 2), np.float32), {"m": metric}))
    out = red.end_block()
    return {f"particles/{k}": v for k, v in out.items()}


PARAMS = LocateParams(diameter=7, minmass=0.5)
KEEP = None


def test_msd_and_d_of_a_particle_moved_by_a_known_amount():
    # particle A moves ±1 px along rows (MSD 1 px²), particle B does not move
    ref = dips([(12.3, 12.6), (27.0, 28.0)])
    samples = [dips([(12.3 + s, 12.6), (27.0, 28.0)]) for s in (1.0, -1.0) * 4]
    res = run_reducer(ParticleLinks(PARAMS, floor_samples=8, seed=1), ref, samples)
    df = particle_rows(res, "particles", pixel_size=40.0, dt=0.5)
    a, b = df.sort_values("centroid_row").itertuples()
    assert (a.centroid_row, a.centroid_col) == pytest.approx((12.3, 12.6), abs=0.05)
    assert a.n_matched == 8 and a.n_missing == 0
    assert a.msd == pytest.approx(1600.0, rel=0.03)  # (1 px × 40 nm)²
    assert a.D == pytest.approx(1600.0 / (4 * 0.5), rel=0.03)  # MSD / (2·ndim·Δt)
    assert a.anisotropy == pytest.approx(1.0, abs=0.02) and a.drift_fraction < 0.01
    assert b.msd < 1.0  # the still particle: sub-pixel locate error only
    # the noise floor of a noise-free image is tiny next to 1 px²; it is reported per particle
    assert np.isfinite(df.msd_floor).all() and (df.msd_floor < 0.05 * 1600).all()
    # no Δt: D is not a number rather than a made-up time
    assert particle_rows(res, "particles", 40.0, None)["D"].isna().all()


def test_appearing_and_disappearing_particles_are_counted_not_dropped():
    ref = dips([(12.0, 12.0), (28.0, 28.0)])
    samples = [dips([(12.5, 12.0), (28.0, 28.0)]),   # both found
               dips([(12.5, 12.0)]),                  # the second one disappears
               dips([(12.5, 12.0), (28.0, 28.0), (12.0, 30.0)]),  # a third one appears
               dips([(13.0, 12.0), (28.0, 28.0)])]    # rejected by the filter
    red = ParticleLinks(PARAMS)
    red.keep = lambda m: m["m"] < 0.5
    res = run_reducer(red, ref, samples, keep=np.array([True, True, True, False]))
    assert res["particles/kept"].tolist() == [[True, True, True, False]]
    assert res["particles/appearing"].tolist() == [[0, 0, 1, 0]]
    df = particle_rows(res, "particles", 1.0, 1.0).sort_values("centroid_row")
    assert df.n_kept.tolist() == [3, 3]
    assert df.n_matched.tolist() == [3, 2] and df.n_missing.tolist() == [0, 1]
    # 0.5 px in each kept sample (locate bias ~0.03 px²); with the rejected 1-px move it were 0.5
    assert df.msd.iloc[0] == pytest.approx(0.25, abs=0.04)


class _Store:
    def __init__(self, frame_interval: float | None, labels=None) -> None:
        self.meta = SimpleNamespace(frame_interval=frame_interval, time_unit="s",
                                    channel_names=("phase",))
        self.labels = labels or {}


def _walk_frames(n: int = 64, seed: int = 0) -> np.ndarray:
    """Frames of 6 free Brownian particles (σ = 0.7 px per frame)."""
    rng = np.random.default_rng(seed)
    pos = np.array([[10, 10], [10, 30], [20, 20], [30, 10], [30, 30], [20, 5]], float)
    pos = pos + np.cumsum(rng.normal(0, 0.7, (n, 6, 2)), axis=0)
    pos = np.clip(pos, 3, H - 4)
    return np.stack([dips(p) + 0.01 * rng.standard_normal((1, H, H)) for p in pos])


def test_gamma_to_dt_is_monotone_on_a_store_with_known_dynamics():
    frames = (_walk_frames() + 1.5).astype(np.float32)  # densities > 0
    ctx = SimpleNamespace(store=_Store(0.1), gamma=1.0)
    # the γ-curve: median differences that grow with γ, inside the observed range
    cal = timebase.calibrate(ctx, frames, {0.25: 0.004, 0.5: 0.009, 1.0: 0.02, 2.0: 0.05})
    assert cal["available"] and cal["time_unit"] == "s" and cal["lag_intercept"] >= 0
    lags = pd.DataFrame(cal["lags"])
    assert lags["lag"].tolist() == [1, 2, 4, 8, 16]
    assert np.all(np.diff(lags["median"]) > 0)  # Brownian frames drift apart with lag
    dt = np.array([np.nan if v is None else v for v in cal["dt"]])
    fin = dt[np.isfinite(dt)]
    assert fin.size == 3 and np.all(np.diff(fin) > 0)  # larger γ stands for a longer Δt
    assert cal["in_range"] == [True, True, True, False]  # γ = 2 lies beyond the longest lag
    assert cal["dt_of_analysis_gamma"] == pytest.approx(dt[2])
    g = [r["gamma"] for r in cal["gamma_for_lag"] if r["gamma"] is not None]
    assert len(g) >= 2 and np.all(np.diff(g) > 0)
    # no frame interval, or frames that are not a time series: no time axis, said plainly
    none = timebase.calibrate(SimpleNamespace(store=_Store(None), gamma=1.0), frames, {1.0: 0.05})
    assert none["available"] is False and "frame_interval" in none["note"]
    stages = SimpleNamespace(store=_Store(0.1, {"stage_days": np.zeros(3)}), gamma=1.0)
    assert timebase.calibrate(stages, frames, {1.0: 0.05})["available"] is False


def test_squared_difference_recovers_the_time_of_a_known_displacement():
    """γ ↔ Δt on Brownian frames with frame noise: a noise-free "variation" whose particles
    are displaced by the Brownian step of k frames must map to Δt ≈ k frames with the
    squared difference (noise adds exactly, motion grows ∝ MSD), while the L1 density
    difference with a straight-line noise intercept maps it much too far (issue 12)."""
    from matdyn.descriptors.differences import DensityDifference, SquaredDifference
    from matdyn.dynamics import dt_for_gammas, lag_differences, lag_intercept

    rng = np.random.default_rng(3)
    step, n, dt_frame = 0.5, 160, 0.1  # px rms per axis per frame; s per frame
    start = rng.uniform(6, H - 7, (8, 2))
    pos = start + np.cumsum(rng.normal(0, step, (n, 8, 2)), axis=0)
    pos = np.clip(pos, 3, H - 4)
    noise = 0.08  # frame noise (depth-1 dips): the regime of the demo's L1 bias
    frames = np.stack([dips(p) + noise * rng.standard_normal((1, H, H)) for p in pos]) + 1.5
    k = 3  # the variation stands for 3 frames = 0.3 s
    refs = np.stack([dips(p) for p in pos[:40]]) + 1.5
    moved = np.stack([dips(p + rng.normal(0, step * np.sqrt(k), p.shape)) for p in pos[:40]])
    moved = moved + 1.5
    found = {}
    for metric in (SquaredDifference(sigma=1.0), DensityDifference()):
        lag = lag_differences(frames.astype(np.float32), metric, frame_interval=dt_frame,
                              max_fraction=0.1)
        t, d = lag["dt_s"].to_numpy(), lag["median"].to_numpy()
        d0 = lag_intercept(t, d)
        g = np.median(metric.compare(moved.astype(np.float32), refs.astype(np.float32)))
        dt, ok = dt_for_gammas(np.array([g]), np.r_[0.0, t], np.r_[0.0, d - d0])
        found[metric.name] = float(dt[0])
    assert found["sq_diff"] == pytest.approx(k * dt_frame, rel=0.3)
    assert found["density_diff"] > 1.5 * k * dt_frame or not np.isfinite(found["density_diff"])


def test_one_mode_data_yields_one_cluster():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"msd": np.exp(rng.normal(7.0, 0.4, 80)), "drift_fraction": 0.1,
                       "anisotropy": 0.5, "centroid_row": 1.0, "centroid_col": 1.0})
    one = Config(particle_features=("log_msd",), feature_gamma=None)  # log MSD at the run's γ
    summary, results, rows = particles.cluster(one, df)
    assert summary["n_modes"] == 1 and summary["n_modes_from_data"] == 1
    assert set(summary["methods"]["average"]["modes"]) == {"one mode"}
    # two well separated mobilities: two clusters, named from their MSD
    df2 = pd.concat([df, df.assign(msd=df.msd * 200)], ignore_index=True)
    s2, res2, _ = particles.cluster(one, df2)
    assert s2["n_modes"] == 2 and set(s2["methods"]["average"]["modes"]) == {"most mobile",
                                                                             "least mobile"}
    # the paper's fixed 3 stays available; names stay generic when the data do not support 3
    s3, _, _ = particles.cluster(Config(n_modes=3, particle_features=("log_msd",),
                                        feature_gamma=None), df2)
    assert s3["n_modes"] == 3 and not s3["separation_real"]
    assert all(n.startswith("cluster") for n in s3["methods"]["average"]["modes"])


def _cloud_rows(n: int, sigma_xy: tuple[float, float], seed: int, samples: int = 200
                ) -> pd.DataFrame:
    """Particle rows at γ = 1 from simulated displacement clouds: ``samples`` Gaussian steps
    of std sigma_xy (px per axis) per particle, the mobility scattered lognormally (0.1)."""
    from matdyn.dynamics import cloud_stats

    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 0.1, n))
    d = rng.standard_normal((n, samples, 2)) * np.array(sigma_xy)[::-1] * scale[:, None, None]
    st = cloud_stats(d.reshape(-1, 2), np.repeat(np.arange(n), samples), n)
    df = pd.DataFrame({k: st[k] for k in ("msd", "rg", "anisotropy", "drift_fraction")})
    df["msd_floor"] = 0.01  # px², locate noise well below the clouds
    df["msd_g1"] = df["msd"]
    df["log_anisotropy_ratio_g1"] = particles._log_ratio(df, df["rg"], df["anisotropy"])
    return df.assign(centroid_row=1.0, centroid_col=1.0)


def test_default_features_tell_lanes_from_diffusion_at_equal_msd():
    """Directed particles in a lane spread their displacements along it, diffusing ones in a
    round cloud, trapped ones barely move. log MSD alone tells the trapped ones from the rest
    only; the default features (log MSD and log anisotropy ratio at feature_gamma) find all
    three; one round population stays one."""
    from sklearn.metrics import adjusted_rand_score

    cfg = Config()
    assert cfg.particle_features == ("log_msd", "log_anisotropy_ratio") and cfg.feature_gamma == 1.0
    free = _cloud_rows(50, (1.0, 1.0), seed=0)
    lanes = _cloud_rows(30, (np.sqrt(1.99), 0.1), seed=1)  # same MSD (2 px²), along x
    traps = _cloud_rows(40, (0.15, 0.15), seed=2)
    assert lanes["msd"].median() == pytest.approx(free["msd"].median(), rel=0.25)
    s1, _, _ = particles.cluster(cfg, free.copy())
    assert s1["n_modes"] == 1 and s1["feature_gamma"] == 1.0
    assert s1["feature_columns"] == ["msd_g1", "log_anisotropy_ratio_g1"]  # what was read
    both = pd.concat([free, lanes, traps], ignore_index=True)
    truth = np.repeat([0, 1, 2], [50, 30, 40])
    # three modes (the paper's count): the features separate them, log MSD alone cannot
    three = Config(n_modes=3)
    s3, res, rows = particles.cluster(three, both.copy())
    assert adjusted_rand_score(truth[rows], res["average"].labels) > 0.9
    s_msd, res_msd, rows_msd = particles.cluster(
        Config(n_modes=3, particle_features=("log_msd",)), both.copy())
    assert adjusted_rand_score(truth[rows_msd], res_msd["average"].labels) < 0.7
    with pytest.raises(AnalysisError, match="feature_gamma 2"):
        particles.features(both, ("log_msd",), 2.0)


def test_feature_gamma_must_be_on_the_msd_ladder():
    from matdyn.errors import ConfigError

    Config(feature_gamma=None, msd_gammas=()).validate()
    Config(descriptors="traces", msd_gammas=()).validate()  # the traces never read it
    with pytest.raises(ConfigError, match="feature_gamma must be one of"):
        Config(feature_gamma=0.7).validate()
    with pytest.raises(ConfigError, match="feature_gamma must be one of"):
        Config(feature_gamma="one").validate()


class _FigCtx:
    def __init__(self) -> None:
        self.saved, self.gamma, self.nm = {}, 1.0, 1.0

    def save(self, fig, name, title=None) -> None:
        self.saved[name] = fig


def _labels(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_no_planted_or_paper_line_without_truth():
    ctx = _FigCtx()
    df = pd.DataFrame({"D": [10.0, 20.0, 40.0], "D_floor": [1.0, 1.0, 2.0]})
    tracking = {"applicable": True, "modes": {"all": {"D": 25.0}}}
    pfigs.d_histogram(ctx, df, tracking, None, "µm", "ms")
    labels = _labels(ctx.saved["particles_D"])
    assert not any("planted" in s or "paper" in s for s in labels)
    assert any("tracking" in s for s in labels)
    assert ctx.saved["particles_D"].axes[0].get_xlabel() == "log10 D (µm²/ms)"
    pfigs.d_histogram(ctx, df, tracking, 30.0, "nm", "s")  # with truth: the planted line
    assert any("planted" in s for s in _labels(ctx.saved["particles_D"]))
    diff = {"n": 3, "mean": 1.0, "std": 1.0, "planted_free_4Dt": None, "time_s": 1.0}
    figs.diffusion_figure(ctx, np.array([1.0, 2.0, 3.0]), diff, "nm^2", None)
    assert not any("planted" in s or "paper" in s
                   for s in _labels(ctx.saved["fig6b_diffusion_area"]))


def test_np_case_end_to_end_writes_the_particle_sections(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_case_np_diffusion import SIDE, NPOracle, small_config

    from matdyn.analysis.case import run_case
    from matdyn.data.store import open_store
    from matdyn.data.synthetic import np_diffusion as npd

    path = tmp_path / "np64.zarr"
    npd.generate(path, n_frames=40, size=SIDE, seed=0, particle_radius_px=3.0,
                 lane_offsets_px=(-20.0,), particles_per_lane=2, n_free=2,
                 band_rows_px=(24.0, 40.0),
                 trap_positions_px=((52.0, 12.0), (52.0, 32.0), (52.0, 52.0)),
                 trap_sigma_px=1.0, progress=False)
    store = open_store(path)
    # 40 frames calibrate Δt up to 8 frames (0.4 s): the oracle's γ 0.5 stands for about that
    cfg = small_config(descriptors="particles", n_modes="auto", msd_gammas=(0.125, 0.25),
                       msd_samples=16, floor_samples=8, feature_gamma=0.25)
    s = run_case("np_diffusion", NPOracle(store.truth_attrs), store, cfg, gamma=0.25,
                 out_dir=tmp_path / "out", seed=0, progress=False)
    json.dumps(s, allow_nan=False)
    for key in ("time_calibration", "tracking_baseline", "particles", "clustering", "recovery",
                "gamma_rule"):
        assert key in s
    assert s["gamma_rule"]["gamma_rule_met"] is None  # γ given, no rule
    tc = s["time_calibration"]
    assert tc["available"] and tc["gammas"] == [0.125, 0.25]
    assert tc["metric"] == "sq_diff (median)" and tc["smoothing_sigma_px"] > 0
    assert tc["difference_unit"] == f"({store.meta.channel_names[0]})²"
    assert tc["dt"][0] < tc["dt"][1] and tc["dt_of_analysis_gamma"] == tc["dt"][1]
    p = s["particles"]
    assert p["units"]["D"] == "nm^2/s" and p["dt"] == tc["dt"][1]
    assert p["msd"]["median"] > 10 * p["msd_floor"]["median"]
    assert s["tracking_baseline"]["applicable"] and "free" in s["tracking_baseline"]["modes"]
    rec = s["recovery"]
    # the oracle's confined particles barely move; free and directed ones move pixels
    modes = rec["modes"]
    assert modes["confined"]["median_msd"] < 0.05 * modes["free"]["median_msd"]
    assert modes["directed"]["median_anisotropy"] > modes["free"]["median_anisotropy"]
    assert rec["ari_average"] is not None
    # per mode, MC MSD over the true MSD over the calibrated Δt: the oracle freezes the traps
    share = rec["msd_over_planted_at_dt"]
    assert set(share) <= {"directed", "free", "confined"} and "confined" in share
    assert share["confined"] < 0.2 * share["free"]
    for name, v in share.items():
        e = modes[name]
        mc = e["ensemble"]["msd_by_gamma"]["0.25"] - e["ensemble"]["floor"]
        assert v == pytest.approx(mc / e["planted_msd_at_dt"])
    # what the clustered descriptors (log MSD) can separate at all: the oracle moves free and
    # directed particles pixels and confined ones barely, so at least confined vs the rest
    assert 0.2 < rec["ari_supervised"] <= 1.0
    table = pd.read_csv(tmp_path / "out" / s["table"])
    assert {"msd", "D", "msd_floor", "D_floor", "msd_g0.125", "msd_g0.25", "planted_mode",
            "cluster_average", "log_anisotropy_ratio", "log_anisotropy_ratio_g0.125",
            "log_anisotropy_ratio_g0.25"} <= set(table.columns)
    assert s["clustering"]["feature_gamma"] == 0.25
    np.testing.assert_allclose(table["log_anisotropy_ratio_g0.25"], table["log_anisotropy_ratio"])
    assert set(table.source) == {"particle"}
    stems = {Path(f).stem for f in s["figures"]}
    assert {"particles_msd_dt", "particles_D", "time_calibration"} <= stems
    mv = s["mc_vs_tracking"]  # the MSD-exponent classes and, when they differ, a note
    assert {"mc_motion", "tracking_motion", "exponents_agree", "rays_motion"} <= set(mv)
    assert mv["motion_from"] == "rays" and mv["motion_agrees"] == mv["rays_exponents_agree"]
    said = any(n.startswith(("MC MSD(Δt) grows as", "MC MSD(Δt) followed along")) for n in s["notes"])
    assert said == (mv["exponents_agree"] is False or mv["rays_exponents_agree"] is False)
    ens = s["particles"]["ensemble"]  # the MSD's dependence on the link radius
    # particles followed along the latent rays: the oracle moves them less than the link
    # radius, so the ray MSD equals the one-jump MSD, and hardly any is lost
    ray = ens["rays"]
    assert {0.125, 0.25} <= set(ray["ladder"]) and ray["n_samples"] == 16
    for k in ("0.125", "0.25"):
        row = ray["by_gamma"][k]
        assert row["lost_fraction"] < 0.05
        assert row["msd"] == pytest.approx(ens["msd_by_gamma"][k], rel=0.1)
        free = row["modes"]["free"]
        assert free["msd"] == pytest.approx(rec["modes"]["free"]["ensemble"]["msd_by_gamma"][k],
                                            rel=0.1)
        assert row["modes"]["confined"]["msd"] < 0.05 * free["msd"]
    assert ray["D"] == ray["by_gamma"]["0.25"]["D"] and ens["D_rays"] == ray["D"]
    assert ray["lost_fraction"] == ray["by_gamma"]["0.25"]["lost_fraction"]
    assert {"all", "directed", "free", "confined"} <= set(ray["msd_curve"])
    assert ray["msd_exponent"] == ray["msd_curve"]["all"]["msd_exponent"] is not None
    assert "D_over_planted" in ray["by_gamma"]["0.25"]["modes"]["free"]
    assert "D_over_planted" not in ray["by_gamma"]["0.25"]["modes"]["directed"]  # drift, not D
    assert s["mc_vs_tracking"]["D_rays_over_tracking"] == pytest.approx(
        ray["D"] / s["tracking_baseline"]["modes"]["all"]["D"])
    lr = ens["link_radius"]
    assert lr["wide_radius_px"] == 2 * lr["link_radius_px"] and set(lr["by_gamma"]) == {"0.125", "0.25"}
    for k, v in lr["by_gamma"].items():  # a wider radius only adds links
        assert v["wide_over_msd"] >= 0.99 and ens["msd_wide_by_gamma"][k] >= 0.99 * ens["msd_by_gamma"][k]
    tc = s["time_calibration"]  # how well each γ's Δt is determined
    assert len(tc["local_exponent"]) == len(tc["gammas"])
    flat = any("poorly determined" in n for n in s["notes"])
    assert flat == any(e is not None and e < timebase.SATURATION_EXPONENT and t is not None
                       for e, t in zip(tc["local_exponent"], tc["dt"]))
    ob = lr["observed"]  # the same check on observed frame pairs at the analysis Δt
    assert ob["lag_frames"] >= 1 and ob["n_pairs"] > 0 and ob["wide_over_msd"] >= 0.99
    said = any("depends on the link radius" in n for n in s["notes"])
    assert said == bool(lr["sensitive_gammas"])
    assert mv["D_wide_over_tracking"] >= 0.99 * mv["D_over_tracking"]


def test_gamma_rule_status_says_when_the_rule_was_not_met(tmp_path):
    from matdyn.gamma import gamma_rule_status

    rec = {"format": "matdyn-gamma", "version": 2, "gamma": 2.0, "rule": "bound",
           "bound_stat": "median", "metric": "entropy_diff",
           "sampler": {"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": 2.0},
           "gamma_rule_met": False, "gamma_rule_note": "extend the sweep to larger γ"}
    (tmp_path / "gamma.json").write_text(json.dumps(rec))
    st = gamma_rule_status(f"sweep:{tmp_path / 'gamma.json'}")
    assert st["gamma_rule_met"] is False and st["bound_stat"] == "median"
    assert "NOT met" in st["note"] and "extend the sweep" in st["note"]
    # older records: read from the deciding metric's continuity choice
    old = {k: v for k, v in rec.items() if not k.startswith("gamma_rule")}
    old["continuity"] = {"choice_entropy_diff": {"clipped": None, "message": None}}
    (tmp_path / "gamma.json").write_text(json.dumps(old))
    assert gamma_rule_status(f"sweep:{tmp_path / 'gamma.json'}")["gamma_rule_met"] is True
    assert gamma_rule_status("paper")["gamma_rule_met"] is None


def test_mc_vs_tracking_agreement_flags_a_generator_that_moves_too_little():
    tr = {"applicable": True, "modes": {"all": {"D": 1000.0, "alpha": 1.0}}}
    sec = {"D_slope": {"median": 100.0}, "D": {"median": 450.0}}
    ens = {"D": 300.0, "D_slope": 200.0, "msd_exponent": 0.6}
    a = particles.agreement(ens, sec, tr)
    assert a["agrees"] is False and a["D_over_tracking"] == pytest.approx(0.3)
    assert a["median_D_slope_over_tracking"] == pytest.approx(0.1)
    assert a["D_slope_over_tracking"] == pytest.approx(0.2) and a["mc_msd_exponent"] == 0.6
    assert a["mc_motion"] == "sub-diffusive (confined)" and a["tracking_motion"] == "diffusive"
    assert a["exponents_agree"] is False
    ens["D"] = 600.0
    assert particles.agreement(ens, sec, tr)["agrees"] is True
    ens["msd_exponent"] = 0.9
    assert particles.agreement(ens, sec, tr)["exponents_agree"] is True
    ens["msd_exponent"] = None
    assert "exponents_agree" not in particles.agreement(ens, sec, tr)
    assert "agrees_wide" not in particles.agreement(ens, sec, tr)  # no wide links: no verdict
    ens["D_wide"] = 2500.0  # linked within twice the radius: 2.5x tracking
    w = particles.agreement(ens, sec, tr)
    assert w["D_wide_over_tracking"] == pytest.approx(2.5) and w["agrees_wide"] is False
    assert w["agrees"] is True
    none = particles.agreement(ens, sec, {"applicable": False, "reason": "not a time series"})
    assert none["agrees"] is None and "not a time series" in none["note"]


def test_the_kind_of_motion_is_read_from_the_rays_when_they_were_followed():
    tr = {"applicable": True, "modes": {"all": {"D": 1000.0, "alpha": 0.94}}}
    sec = {"D_slope": {"median": 100.0}, "D": {"median": 450.0}}
    # Princeton beads, session 17: one-jump α capped by the link radius, rays diffusive
    ens = {"D": 1800.0, "D_slope": 180.0, "msd_exponent": 0.42, "rays_msd_exponent": 0.84}
    a = particles.agreement(ens, sec, tr)
    assert a["exponents_agree"] is False and a["rays_exponents_agree"] is True
    assert a["motion_from"] == "rays" and a["motion_agrees"] is True
    note = particles.motion_note(a, 0.083, "s")
    assert "Δt^0.84 (diffusive)" in note and "caps it" in note and "holds at" not in note
    ens["msd_exponent"] = 0.9  # both agree: nothing to say
    assert particles.motion_note(particles.agreement(ens, sec, tr), 0.083, "s") is None
    ens["rays_msd_exponent"] = 0.3  # the rays disagree: the MC D holds at that Δt only
    a = particles.agreement(ens, sec, tr)
    assert a["motion_agrees"] is False and a["exponents_agree"] is True
    assert "holds at the analysis Δt (0.083 s) only" in particles.motion_note(a, 0.083, "s")
    del ens["rays_msd_exponent"]  # no rays: the one-jump exponent decides
    ens["msd_exponent"] = 0.42
    a = particles.agreement(ens, sec, tr)
    assert a["motion_from"] == "one-jump" and a["motion_agrees"] is False
    assert particles.motion_note(a, 0.5, "s").startswith("MC MSD(Δt) grows as Δt^0.42")
    assert "at the analysis γ only" in particles.motion_note(a, None, "s")  # no time axis
    # rays measured, one-jump exponent not: the tracked class still named
    ens.update(msd_exponent=None, rays_msd_exponent=0.3)
    a = particles.agreement(ens, sec, tr)
    assert "mc_motion" not in a and a["motion_from"] == "rays"
    assert "Δt^0.94 (diffusive)" in particles.motion_note(a, None, "s")
    # no tracking baseline (e.g. no frame interval): nothing decided, no note, no crash
    a = particles.agreement(ens, sec, {"applicable": False, "reason": "no frame interval"})
    assert "motion_from" not in a and particles.motion_note(a, None, "s") is None


def test_ensemble_msd_is_the_mean_over_particles_minus_the_floor():
    """Heavy-tailed per-particle MSDs: the ensemble (trackpy emsd's averaging) is the mean,
    not the median, minus the mean still-scene floor; D from the run's γ and the slope."""
    # 9 particles hardly move, 1 moves far: median ≈ 10, mean = 109 at γ = 1 (Δt 0.5 s)
    msd1 = np.array([10.0] * 9 + [1000.0])
    df = pd.DataFrame({"msd": msd1, "msd_floor": 4.0, "msd_g1": msd1, "msd_g2": 2 * msd1})
    e = particles.ensemble(df, [1.0, 2.0], {1.0: 0.5, 2.0: 1.0}, 1.0)
    assert e["msd_by_gamma"] == {"1": pytest.approx(109.0), "2": pytest.approx(218.0)}
    assert e["D"] == pytest.approx((109.0 - 4.0) / (4 * 0.5))
    assert e["D_slope"] == pytest.approx(109.0 / 0.5 / 4)  # slope of 109 → 218 over 0.5 s
    assert particles.ensemble(df, [1.0, 2.0], {}, 1.0)["D"] is None  # no time axis


def test_particle_polarity_from_pixel_skewness():
    from matdyn.data.synthetic import np_diffusion as npd
    from matdyn.dynamics import particle_polarity

    frames = npd.simulate(n_frames=8, size=64, seed=0).frames[:, 0]
    dark, sk = particle_polarity(frames)
    assert dark and sk < -1
    bright, sk2 = particle_polarity(-frames)
    assert not bright and sk2 == pytest.approx(-sk)
    noise = np.random.default_rng(0).standard_normal((8, 64, 64))
    with pytest.raises(AnalysisError, match="dark_particles=true"):
        particle_polarity(noise)  # no particles: the skewness cannot tell
    with pytest.raises(AnalysisError, match="no finite pixel"):
        particle_polarity(np.full((2, 8, 8), np.nan))
    nan_holes = -frames.copy()
    nan_holes[:, :4] = np.nan  # NaN pixels are left out, not read as "skewness 0"
    assert particle_polarity(nan_holes)[0] is False
    from matdyn.errors import ConfigError
    with pytest.raises(ConfigError, match="max_frames"):
        particle_polarity(frames, max_frames=0)


def test_bright_particles_are_found_without_saying_so(tmp_path):
    """A bright-particle video (fluorescence, bright-field beads) runs with the default
    dark_particles=auto: polarity from the observed frames, the same locator for MC and
    tracking; the paper's dark-dip trace protocol refuses it with a clear error."""
    from test_case_np_diffusion import SIDE, NPOracle, small_config

    from matdyn.analysis.case import run_case
    from matdyn.data.importers import import_frames
    from matdyn.data.store import open_store
    from matdyn.data.synthetic import np_diffusion as npd
    from matdyn.errors import ConfigError

    class BrightOracle(NPOracle):
        def forward(self, z):
            return -super().forward(z)

    dark_path = tmp_path / "dark.zarr"
    npd.generate(dark_path, n_frames=40, size=SIDE, seed=0, progress=False)
    dark = open_store(dark_path)
    np.save(tmp_path / "bright.npy", -np.asarray(dark.images[:, 0]))
    import_frames(tmp_path / "bright.npy", tmp_path / "bright.zarr", pixel_size=40.58,
                  frame_interval=float(dark.meta.frame_interval), progress=False)
    bright = open_store(tmp_path / "bright.zarr")
    cfg = small_config(descriptors="particles", msd_gammas=(0.125, 0.25), msd_samples=16,
                       floor_samples=8, feature_gamma=0.25, n_modes=2)
    assert cfg.dark_particles == "auto"
    s = run_case("np_diffusion", BrightOracle(dark.truth_attrs), bright, cfg, gamma=0.25,
                 out_dir=tmp_path / "out", seed=0, progress=False)
    loc = s["particles"]["locate"]
    assert loc["dark"] is False and loc["polarity"]["source"].startswith("auto")
    assert loc["polarity"]["skewness"] > 1
    assert s["particles"]["n_particles"] > 16 and s["tracking_baseline"]["applicable"]
    assert cfg.dark_particles == "auto"  # the caller's config is not changed
    with pytest.raises(ConfigError, match="descriptors=traces reads dark particles"):
        run_case("np_diffusion", BrightOracle(dark.truth_attrs), bright,
                 small_config(descriptors="traces"), gamma=0.25, out_dir=tmp_path / "out2",
                 seed=0, progress=False)
    with pytest.raises(ConfigError, match="dark_particles must be true, false or auto"):
        small_config(dark_particles="maybe").validate()


def test_sweep_metrics_follow_the_store_particle_polarity(tmp_path):
    """The sweep's particle-area metric thresholds the side the particles are on: read from
    the store (jobs and aggregation alike), the NP default (dark) when it cannot tell."""
    from matdyn.data.importers import import_frames
    from matdyn.data.synthetic import np_diffusion as npd
    from matdyn.gamma.continuity import metrics_from_spec, sweep_particles_dark

    frames = npd.simulate(n_frames=8, size=64, seed=0).frames
    for name, x in (("dark", frames), ("bright", -frames),
                    ("noise", np.random.default_rng(0).standard_normal(frames.shape))):
        np.save(tmp_path / f"{name}.npy", x[:, 0].astype(np.float32))
        import_frames(tmp_path / f"{name}.npy", tmp_path / f"{name}.zarr", pixel_size=40.58,
                      progress=False)
    dark = {n: sweep_particles_dark({"path": str(tmp_path / f"{n}.zarr")})
            for n in ("dark", "bright", "noise")}
    assert dark == {"dark": True, "bright": False, "noise": None}
    assert sweep_particles_dark({"path": str(tmp_path / "missing.zarr")}) is None
    area = {d: metrics_from_spec("auto", "np_diffusion", 2, dark=d)[1] for d in (None, False)}
    assert area[None].binarizer.dark is True and area[False].binarizer.dark is False
    assert repr(area[None]) != repr(area[False])  # the jobs' metric_specs tell them apart



def test_a_wide_radius_links_the_jumps_the_search_radius_counts_as_appearing():
    """Particle A jumps 3 px in half the samples: beyond a 2-px link radius it is missing and
    a new particle appears; linked within 4 px (wide_factor 2) the jump counts, so msd_wide
    sees the motion msd cannot (the Princeton generators moved some beads 2-4 px)."""
    ref = dips([(12.0, 12.0), (27.0, 28.0)])
    samples = [dips([(12.0 + s, 12.0), (27.0, 28.0)]) for s in (3.0, 0.5) * 4]
    red = ParticleLinks(PARAMS, search_radius=2.0, wide_factor=2.0)
    assert red.wide == 4.0
    res = run_reducer(red, ref, samples)
    assert res["particles/appearing"].sum() == 4  # the four 3-px jumps, at R = 2
    df = particle_rows(res, "particles", 1.0, 1.0).sort_values("centroid_row")
    a = df.iloc[0]
    assert a.n_matched == 4 and a.msd == pytest.approx(0.25, abs=0.05)
    assert a.msd_wide == pytest.approx((4 * 9.0 + 4 * 0.25) / 8, abs=0.15)
    assert df.iloc[1].msd_wide == pytest.approx(df.iloc[1].msd, abs=1e-9)  # the still one
    assert "msd_wide" not in particle_rows(run_reducer(ParticleLinks(PARAMS), ref, samples),
                                           "particles", 1.0, 1.0)
    with pytest.raises(ConfigError):
        ParticleLinks(PARAMS, wide_factor=1.0)


def test_link_radius_check_names_the_gammas_whose_msd_depends_on_the_radius():
    px = 700.0  # nm per px
    c = particles.link_radius_check({"0.5": 3.3e5, "1": 5.0e5, "2": None},
                                    {"0.5": 6.8e5, "1": 5.5e5, "2": 1e6}, 2.0, 4.0, px)
    assert c["msd_cap"] == pytest.approx(0.5 * 4 * px ** 2)
    assert c["by_gamma"]["0.5"]["wide_over_msd"] == pytest.approx(6.8 / 3.3)
    assert c["by_gamma"]["1"]["msd_over_cap"] == pytest.approx(5.0e5 / c["msd_cap"])
    assert c["by_gamma"]["2"] == {"msd_over_cap": None, "wide_over_msd": None}
    assert c["sensitive_gammas"] == ["0.5"]  # 1.1x at γ = 1 is under the 1.25x note level
    none = particles.link_radius_check({"1": 5.0e5}, None, 2.0, None, px)
    assert none["wide_radius_px"] is None and none["sensitive_gammas"] == []
    with pytest.raises(AnalysisError):
        particles.link_radius_check({"1": 1.0}, None, 0.0, None, px)


def test_the_radius_check_of_observed_frames_sees_their_own_jumps():
    """pair_radius_check: the MC's link estimator on observed frame pairs. Brownian particles
    (σ 0.7 px per frame) hardly reach past a 3-px radius in one frame, so linking within 6 px
    adds little; particles that jump 4 px between every other pair of frames add a lot."""
    from matdyn.dynamics.tracking import pair_radius_check

    params = LocateParams(diameter=7, minmass=0.5)
    rng = np.random.default_rng(3)
    pos = np.array([[16, 16], [16, 48], [48, 16], [48, 48]], float)  # 32 px apart, no crossing
    walk = pos + np.cumsum(rng.normal(0, 0.7, (30, 4, 2)), axis=0)
    calm = pair_radius_check(np.stack([dips(p, h=64)[0] for p in walk]), params, 1, 3.0, 6.0)
    assert calm["n_pairs"] == 29 and calm["wide_over_msd"] < 1.1
    assert calm["msd_px2"] == pytest.approx(2 * 0.7 ** 2, rel=0.3)
    jumpy = np.stack([dips(pos + (4.0 * ((t // 2) % 2)) * np.array([1.0, 0.0])
                           + rng.normal(0, 0.3, (4, 2)), h=64)[0] for t in range(20)])
    j = pair_radius_check(jumpy, params, 1, 3.0, 6.0)
    assert j["wide_over_msd"] > 5
    with pytest.raises(ConfigError):
        pair_radius_check(jumpy, params, 0, 3.0, 6.0)


def test_radius_check_settings_are_validated_and_null_keeps_the_old_fingerprint():
    for bad in ("none", 1.0, True, 0.5):
        with pytest.raises(ConfigError, match="radius_check_factor"):
            Config(radius_check_factor=bad).validate()
    Config(radius_check_factor=None).validate()
    # without the wide links the reducer's repr (the engine's resume fingerprint) is unchanged
    assert "wide" not in repr(ParticleLinks(PARAMS))
    assert "wide=6.0" in repr(ParticleLinks(PARAMS, wide_factor=2.0))


def test_local_exponent_of_the_calibration_curve_sees_saturation():
    """Squared frame differences grow ∝ MSD while particles move less than their size and
    saturate beyond: the log-log slope at each γ's Δt says how well that Δt is determined."""
    t = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    linear = 3.0 * t
    saturating = 1.0 - np.exp(-t / 1.5)
    e = timebase.local_exponents(t, linear, [0.3, 0.7, 3.0, 20.0, None])
    np.testing.assert_allclose(e[:4], 1.0)
    assert np.isnan(e[4])
    s = timebase.local_exponents(t, saturating, [0.7, 6.0])
    assert 0.7 < s[0] < 1.0 and s[1] < timebase.SATURATION_EXPONENT
    assert np.isnan(timebase.local_exponents(t, -linear, [1.5])[0])  # no positive difference
