"""Ta test-chart case (matdyn.analysis.cases.ta_chart, through run_case) on an analytic oracle.

The oracle draws the synthetic chart (same layout as the store) displaced by
``k_t · z[0]`` nm along the chart axis and rotated by ``k_r · z[1]`` degrees, so the
motion of every perturbed image relative to its reference is known exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.ndimage import rotate

from matdyn.analysis.case import CaseContext, run_case
from matdyn.analysis.cases import ta_chart as case
from matdyn.analysis.cases.ta_chart.geometry import make_geometry, nearest_slits
from matdyn.analysis.cases.ta_chart.observed import Observed
from matdyn.data.store import open_store
from matdyn.data.synthetic import ta_chart as tc
from matdyn.errors import AnalysisError, ConfigError
from matdyn.sampling.engine import variation_latents
from matdyn.sampling.samplers import UniformSampler

SIZE, PX = 64, 41.44  # 64 px frames at 2 × the paper's pixel size: slits ≈ 7.5 px wide
CELL = 0.8 * SIZE * PX
# chart origin that puts the slit pair of cell 0 at the frame centre at offset 0
ORIGIN = SIZE * PX / 2 - (0.30 * CELL + 0.62 * CELL + 324.0) / 2
PARAMS = dict(
    size=SIZE,
    pixel_size_nm=PX,
    cell_width_frac=0.8,
    n_frames=40,
    n_augment=2,
    chart_origin_nm=ORIGIN,
)
K_T, K_R, BASE = 60.0, 3.0, 40.0  # nm and degrees per unit of z, base offset (nm)
N_REFS, N_SAMPLES, LATENT = 2, 24, 4

SMALL = dict(
    n_fidelity=32,
    n_anchors=4,
    n_slit_frames=10,
    n_rotation_frames=10,
    n_observed_pairs=20,
    swd_patches=256,
    batch_size=32,
)


class ChartOracle(torch.nn.Module):
    """Renders the store's chart at offset BASE + k_t z0 (+ ``jump_nm`` when z0 > jump_at),
    rotated by k_r z1; output in [-1, 1] (phase / π) and ``sample`` in radians."""

    def __init__(
        self, k_t: float = K_T, k_r: float = K_R, jump_nm: float = 0.0, jump_at: float = 0.0
    ) -> None:
        super().__init__()
        self.p = tc.TaChartParams(**PARAMS)
        self.rects, self.support = tc.chart_rects(self.p, 0), tc.support(self.p)
        self.latent_dim, self.channels, self.ndim, self.resolution = LATENT, 1, 2, SIZE
        self.normalization = {"offset": [0.0], "scale": [math.pi], "pixel_size": PX, "unit": "nm"}
        self.meta = {"dataset": "ta_chart"}
        self.k_t, self.k_r, self.jump_nm, self.jump_at = k_t, k_r, jump_nm, jump_at

    def motion(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        off = BASE + self.k_t * z[..., 0] + self.jump_nm * (z[..., 0] > self.jump_at)
        return off, self.k_r * z[..., 1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p, s = self.p, self.support
        frames = []
        for off, ang in zip(*self.motion(z.numpy().astype(np.float64))):
            img = (
                s.envelope * p.phase_contrast_rad * tc.render_chart(p, self.rects, off)
                + s.ringing
                + s.ramp
            )
            frames.append(
                rotate(tc.wrap_phase(img), ang, reshape=False, order=1, mode="constant", cval=0.0)
            )
        return torch.from_numpy(np.stack(frames)[:, None].astype(np.float32) / math.pi)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward(z) * math.pi


class NoiseGenerator(torch.nn.Module):
    """White noise in [-1, 1]: no chart at all."""

    def __init__(self, channels: int = 1, ndim: int = 2, resolution: int = SIZE) -> None:
        super().__init__()
        self.latent_dim, self.channels, self.ndim, self.resolution = (
            LATENT,
            channels,
            ndim,
            resolution,
        )
        self.normalization = {
            "offset": [0.0] * channels,
            "scale": [math.pi] * channels,
            "pixel_size": PX,
            "unit": "nm",
        }
        self.meta = {"dataset": "noise"}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(1000 * float(z.abs().sum())) % 2**31)
        shape = (z.shape[0], self.channels) + (self.resolution,) * self.ndim
        return torch.rand(shape, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tc.generate(tmp_path_factory.mktemp("ta") / "ta.zarr", seed=0, progress=False, **PARAMS)
    return open_store(path)


@pytest.fixture(scope="module")
def result(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("ta_run")
    cfg = case.Config(n_refs=N_REFS, n_samples=N_SAMPLES, **SMALL)
    logged: list[dict] = []
    summary = run_case(
        "ta_chart", ChartOracle(), store, cfg, gamma=1.0, out_dir=out, seed=0, progress=False,
        log=logged.append,
    )
    return summary, out, logged


@pytest.mark.slow  # an end-to-end run (~30-60 s on 2 cores)
def test_summary_contract(result):
    summary, out, logged = result
    json.dumps(summary)  # JSON-able
    for key in (
        "case",
        "gamma",
        "counts",
        "fidelity",
        "filters",
        "recovery",
        "figures",
        "table",
        "paper",
    ):
        assert key in summary
    assert summary["case"] == "ta_chart" and summary["gamma"] == 1.0
    assert summary["counts"]["n_refs"] == N_REFS and summary["counts"]["n_samples"] == N_SAMPLES
    f = summary["filters"]["match_score"]
    # an exact renderer of the chart: every sample matches its reference
    assert f["threshold"] == 0.5 and f["rejection_rate_overall"] == 0.0
    assert set(f["rejection_rate_per_reference_summary"]) == {"min", "median", "max"}
    fid = summary["fidelity"]
    # pinned (seed 0; fidelity latents seeded like every case: seed * 1_000_003 + 7)
    for key, value in (("phase_w1", 0.0759297), ("phase_w1_baseline", 0.0471734),
                       ("swd", 0.136436), ("swd_baseline", 0.122118)):
        assert fid[key] == pytest.approx(value, rel=1e-3)
    # an exact renderer of the data: distances at the scale of the real-vs-real noise floor
    assert fid["phase_w1"] < 0.3 and fid["swd"] < 3 * fid["swd_baseline"]
    names = {Path(p).name for p in summary["figures"]}
    assert {
        "fig3a_observed.png",
        "fig3b_translation_sequence.png",
        "fig3c_rotation_sequence.png",
        "fig4a_iou.png",
        "fig4b_slit_widths.png",
        "fig4b_reference_slits.png",
    } <= names
    for p in summary["figures"]:
        assert (out / p).is_file() and (out / p).with_suffix(".svg").is_file()
    assert (out / "variations" / "manifest.json").is_file()
    keys = set().union(*logged)
    assert {"analysis/ta_chart/fidelity/phase_w1",
            "analysis/ta_chart/filters/match_score/rejection_rate",
            "analysis/ta_chart/recovery/slit_widths/d1/generated_error_px"} <= keys
    assert all(isinstance(v, float) for d in logged for v in d.values())


@pytest.mark.slow  # an end-to-end run (~30-60 s on 2 cores)
def test_rerun_resumes_from_the_variation_blocks(result, store):
    summary, out, _ = result
    blocks = sorted((out / "variations" / "blocks").glob("*.npz"))
    stamps = [b.stat().st_mtime_ns for b in blocks]
    cfg = case.Config(n_refs=N_REFS, n_samples=N_SAMPLES, **SMALL)
    again = run_case("ta_chart", ChartOracle(), store, cfg, gamma=1.0, out_dir=out, seed=0,
                     progress=False)
    assert [b.stat().st_mtime_ns for b in blocks] == stamps  # nothing regenerated
    assert json.dumps(again["recovery"]) == json.dumps(summary["recovery"])
    assert json.dumps(again["sequences"]) == json.dumps(summary["sequences"])


@pytest.mark.slow  # an end-to-end run (~30-60 s on 2 cores)
def test_translations_and_rotations_recovered(result):
    summary, out, _ = result
    df = pd.read_csv(out / summary["table"])
    assert len(df) == N_REFS * N_SAMPLES and df["kept"].all()
    # regenerate each sample's perturbation: relative motion of the oracle is known
    err_t, err_r = [], []
    for i, d in df.groupby("reference"):
        _, eps = variation_latents(0, int(i), N_SAMPLES, LATENT, UniformSampler(1.0))
        e = eps.numpy().astype(np.float64)[d["sample"].to_numpy()]
        delta, phi = K_T * e[:, 0], K_R * e[:, 1]
        # shift measured in the reference frame: delta rotated by the sample's own rotation
        err_t.append(d["translation_along_nm"].to_numpy() - delta * np.cos(np.radians(phi)))
        err_r.append(d["rotation_deg"].to_numpy() - phi)
    err_t, err_r = np.concatenate(err_t), np.concatenate(err_r)
    assert np.abs(err_t).max() < 0.1 * PX  # < 0.1 px
    assert np.abs(err_r).max() < 0.5  # degrees
    assert df["translation_across_nm"].abs().max() < 0.15 * PX + K_T * np.sin(np.radians(K_R))
    # sorted ranks are consistent with the measured values
    for _, d in df.groupby("reference"):
        t, r = d[d["rank_translation"] >= 0], d[d["rank_rotation"] >= 0]
        assert len(t) == len(r) == N_SAMPLES // 2  # sequence_subset_frac = 0.5
        assert (np.diff(t.sort_values("rank_translation")["translation_along_nm"]) >= 0).all()
        assert (np.diff(r.sort_values("rank_rotation")["rotation_deg"]) >= 0).all()


@pytest.mark.slow  # an end-to-end run (~30-60 s on 2 cores)
def test_slit_widths_within_two_pixels(result):
    summary, _, _ = result
    rec = summary["recovery"]["slit_widths"]
    for name, truth in (("d1", 309.0), ("d2", 324.0)):
        r = rec[name]
        assert r["truth"] == truth
        assert r["generated_within_tolerance"] and r["observed_within_tolerance"]
    # pinned (seed 0): generated and observed means, nm (1 px = 41.44 nm)
    for name, gen, obs in (("d1", 307.822, 308.737), ("d2", 322.014, 319.821)):
        assert rec[name]["generated_mean"] == pytest.approx(gen, abs=0.01)
        assert rec[name]["observed_mean"] == pytest.approx(obs, abs=0.01)
    for name in ("d1", "d2"):
        assert summary["slit_widths"][name]["generated"]["n"] >= N_REFS * N_SAMPLES // 2
        # a rigid chart: widths barely fluctuate across the variation
        assert summary["slit_widths"][name]["generated"]["std"] < 0.5 * PX


@pytest.mark.slow  # an end-to-end run (~30-60 s on 2 cores)
def test_sequences_smooth_and_iou(result):
    summary, _, _ = result
    rec = summary["recovery"]
    t, r = rec["translation_smoothness"], rec["rotation_smoothness"]
    assert t["bound"] == pytest.approx(340 * 0.007)  # from the store's truth offsets
    assert r["bound"] == pytest.approx(28.0120, abs=1e-3)  # largest gap of sorted augmentations
    assert t["jump_free"] and r["jump_free"]
    assert t["smooth"] == (t["max_step"] <= t["bound"])
    assert r["smooth"]  # sorted generated rotations step less than the augmented data do
    seq = summary["sequences"]
    # ±3° per unit of z: 12 sorted samples span at most 6°, steps stay well below that
    assert seq["rotation"]["steps"]["max"] < 4.0
    assert seq["translation"]["iou_generated"]["median"] > 0.8
    assert seq["translation"]["iou_observed"]["median"] > 0.8  # 2.38 nm steps: nearly identical
    assert seq["rotation"]["iou_observed"]["n"] > 0


@pytest.mark.slow  # an end-to-end run (~30-60 s on 2 cores)
def test_jump_in_the_latent_space_is_detected(store, tmp_path):
    cfg = case.Config(n_refs=1, n_samples=16, sequence_subset_frac=1.0, **SMALL)
    z_ref, _ = variation_latents(3, 0, 1, LATENT, UniformSampler(1.0))
    # the offset jumps by 150 nm inside the reference's neighbourhood: no sample lands between
    oracle = ChartOracle(k_t=5.0, k_r=0.5, jump_nm=150.0, jump_at=float(z_ref[0]))
    s = run_case("ta_chart", oracle, store, cfg, gamma=1.0, out_dir=tmp_path, seed=3,
                 progress=False)
    t = s["recovery"]["translation_smoothness"]
    assert not t["jump_free"] and not t["smooth"]
    assert t["max_step"] > 100.0 and t["max_gap_ratio"] > 3.0


def test_noise_generator_is_rejected(store, tmp_path):
    with pytest.raises(AnalysisError, match="match no observed"):
        run_case(
            "ta_chart",
            NoiseGenerator(),
            store,
            case.Config(n_refs=1, n_samples=4, **SMALL),
            gamma=1.0,
            out_dir=tmp_path,
            progress=False,
        )


def test_threshold_rejecting_everything_reports_the_distribution(store, tmp_path):
    cfg = case.Config(n_refs=1, n_samples=6, min_match_score=1.0, **SMALL)
    with pytest.raises(AnalysisError, match=r"rejects every sample.*median"):
        run_case("ta_chart", ChartOracle(), store, cfg, gamma=1.0, out_dir=tmp_path,
                 progress=False)


@pytest.mark.parametrize("gen", [NoiseGenerator(channels=3), NoiseGenerator(ndim=3, resolution=8)])
def test_wrong_channels_or_ndim(store, tmp_path, gen):
    with pytest.raises(AnalysisError, match="2D 1-channel"):
        run_case("ta_chart", gen, store, case.Config(**SMALL), gamma=1.0, out_dir=tmp_path,
                 progress=False)


def test_config_yaml_and_validation():
    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "analysis" / "ta_chart.yaml")
    cfg = instantiate(conf)
    assert isinstance(cfg, case.Config) and cfg == case.Config()  # yaml mirrors the defaults
    cfg.validate()
    with pytest.raises(ConfigError, match="crop_frac"):
        case.Config(crop_frac=1.5).validate()
    with pytest.raises(ConfigError, match="n_samples"):
        case.Config(n_samples=0).validate()


def test_profile_search_finds_the_slits_without_truth(store):
    """Real data has no truth: the slit pair is found by a profile search instead."""
    cfg = case.Config()
    ctx = CaseContext("ta_chart", None, store, cfg, Path("."), None, 1.0, 0, "crop", SIZE,
                      LATENT, PX, "nm")
    obs = Observed(ctx, cfg)
    geom = make_geometry(SIZE, obs.pixel_size, cfg, obs.expected_widths())
    frames = obs.load(obs.raw[:4])[:, 0].astype(np.float64)
    for i, frame in zip(obs.raw[:4], frames):
        truth = nearest_slits(obs.truth_pairs(int(i), geom), geom.image_centre)
        found = obs.search_pairs(frame, geom)
        assert len(found) >= 1
        best = nearest_slits(found, geom.image_centre)
        assert np.abs(best - truth).max() < 0.5  # px
