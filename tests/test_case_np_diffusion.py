"""NP-diffusion case (matdyn.analysis.cases.np_diffusion through run_case) on an analytic oracle.

The oracle renders 32² phase frames whose Gaussian dips sit on the planted layout of a
tiny synthetic store (64² frames, resized 2× like training): two particles slide along
the lane (directed: position linear in one latent direction), two move in 2D in the band
(free: two latent directions), three barely move at the traps (confined). So the averaged
variations have known position spreads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from matdyn.analysis.case import run_case
from matdyn.analysis.cases import np_diffusion as case
from matdyn.analysis.cases.np_diffusion.recovery import planted_mode, region_map_at
from matdyn.data.store import open_store
from matdyn.data.synthetic import np_diffusion as npd
from matdyn.errors import AnalysisError, ConfigError
from matdyn.sampling.engine import load_results, variation_latents
from matdyn.sampling.samplers import UniformSampler

SIDE, RES, DIM = 64, 32, 16
GAMMA = 1.0


class NPOracle(torch.nn.Module):
    """Analytic NP generator: Gaussian dips at positions linear in z (see module docstring)."""

    def __init__(
        self,
        attrs: dict,
        *,
        channels: int = 1,
        ndim: int = 2,
        seed: int = 0,
        a_dir: float = 5.0,
        a_free: float = 1.8,
        a_conf: float = 0.1,
    ) -> None:
        super().__init__()
        self.latent_dim, self.channels, self.ndim, self.resolution = DIM, channels, ndim, RES
        self.normalization = {"pixel_size": 40.58 * SIDE / RES, "unit": "nm"}
        self.meta = {"dataset": "np_diffusion"}

        def to_res(v):  # native pixel centres -> generator pixel centres
            return (np.asarray(v, float) + 0.5) * RES / SIDE - 0.5

        q = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(seed)))[0]
        # per particle: centre, clip box, and (latent column or None, amplitude) per axis
        particles: list[tuple[list, list, list, list]] = []
        k = 0
        for lane in attrs["lane_points_px"]:  # directed: along the lane (columns) only
            r = float(to_res(lane[0]))
            for c in (0.28 * RES, 0.72 * RES):
                particles.append(([r, c], [r, 1.5], [r, RES - 2.5], [(None, 0.0), (k, a_dir)]))
                k += 1
        b0, b1 = to_res(attrs["band_rows_px"])
        for c in (0.25 * RES, 0.75 * RES):  # free: 2D inside the band
            particles.append(
                (
                    [(b0 + b1) / 2, c],
                    [b0 + 1.5, 1.5],
                    [b1 - 1.5, RES - 2.5],
                    [(k, a_free), (k + 1, a_free)],
                )
            )
            k += 2
        for t in attrs["trap_positions_px"]:  # confined: tiny 2D motion
            particles.append(
                (list(to_res(t)), [0.0, 0.0], [RES, RES], [(k, a_conf), (k + 1, a_conf)])
            )
            k += 2
        assert k <= DIM
        base, lo, hi, dirs = (list(x) for x in zip(*particles))
        self.modes = np.array(
            [0] * 2 * len(attrs["lane_points_px"]) + [1, 1] + [2] * len(attrs["trap_positions_px"])
        )
        W = torch.zeros(len(base), 2, DIM)
        for p, axes in enumerate(dirs):
            for j, (col, amp) in enumerate(axes):
                if col is not None:
                    W[p, j] = amp * q[:, col]
        rng = np.random.default_rng(seed)
        bg = gaussian_filter(rng.standard_normal((RES, RES)), RES / 4)
        bg = 0.03 * bg / bg.std() + 0.01 * rng.standard_normal((RES, RES))
        axis = torch.arange(RES, dtype=torch.float32)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        for name, value in dict(
            W=W,
            base=torch.tensor(base),
            lo=torch.tensor(lo),
            hi=torch.tensor(hi),
            bg=torch.tensor(bg, dtype=torch.float32),
            yy=yy,
            xx=xx,
        ).items():
            self.register_buffer(name, value.float())

    def positions(self, z: torch.Tensor) -> torch.Tensor:
        """Particle centres [B, P, 2] (row, col) in generator pixels."""
        pos = self.base[None] + torch.einsum("pjd,bd->bpj", self.W, z)
        return torch.maximum(torch.minimum(pos, self.hi[None]), self.lo[None])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pos = self.positions(z)
        d2 = (self.yy - pos[..., 0, None, None]) ** 2 + (self.xx - pos[..., 1, None, None]) ** 2
        img = self.bg - torch.exp(-d2 / 2.0).sum(dim=1)  # dips of depth 1, σ = 1 px
        return img[:, None]


class NoiseGenerator(torch.nn.Module):
    """Uniform white noise in [-1, 1], whatever z."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_dim, self.channels, self.ndim, self.resolution = DIM, 1, 2, RES
        self.normalization = {"pixel_size": 40.58 * SIDE / RES, "unit": "nm"}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(z.abs().sum().item() * 1000) % (2**31))
        return torch.rand(z.shape[0], 1, RES, RES, generator=g) * 2.0 - 1.0


def small_config(**kw) -> case.Config:
    base = dict(
        n_refs=16,
        n_samples=32,
        n_fidelity=24,
        baseline_frames=40,
        tophat_radius=4,
        min_area=3,
        min_kept=2,
        swd_patches=256,
        swd_directions=32,
        swd_repeats=1,
        baseline_repeats=2,
        n_show=3,
        batch_size=128,
        features=("anisotropy", "rms_displacement"),
        descriptors="traces",  # the paper's protocol; particles: tests/test_np_particles.py
        n_modes=3,
    )
    base.update(kw)
    return case.Config(**base)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("np") / "np64.zarr"
    npd.generate(
        path,
        n_frames=40,
        size=SIDE,
        seed=0,
        particle_radius_px=3.0,
        lane_offsets_px=(-20.0,),
        particles_per_lane=2,
        n_free=2,
        band_rows_px=(24.0, 40.0),
        trap_positions_px=((52.0, 12.0), (52.0, 32.0), (52.0, 52.0)),
        trap_sigma_px=1.0,
        progress=False,
    )
    return open_store(path)


@pytest.fixture(scope="module")
def oracle(store):
    return NPOracle(store.truth_attrs)


@pytest.fixture(scope="module")
def analysis(store, oracle, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    logged: list[dict] = []
    cfg = small_config()
    summary = run_case(
        "np_diffusion", oracle, store, cfg, gamma=GAMMA, out_dir=out, seed=0, progress=False,
        log=logged.append,
    )
    return summary, out, logged, cfg


@pytest.mark.slow  # shares the ~35 s end-to-end run of the `analysis` fixture
def test_end_to_end_outputs(analysis):
    summary, out, logged, cfg = analysis
    json.dumps(summary, allow_nan=False)  # plain, strict JSON
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
    assert summary["case"] == "np_diffusion" and summary["gamma"] == GAMMA
    assert (
        summary["counts"]["n_refs"] == cfg.n_refs
        and summary["counts"]["n_samples"] == cfg.n_samples
    )
    stems = {Path(p).stem for p in summary["figures"]}
    for stem in (
        "fig5a_observed_generated",
        "fig5b_particle_area",
        "fig5a_references_averaged",
        "fig6b_diffusion_area",
        "fig6c_dendrogram_average",
        "fig6d_boxplots_ward",
        "filter_entropy_diff",
        "traces_anisotropy_reference_averaged",
    ):
        assert stem in stems
    for rel in summary["figures"]:
        assert (out / rel).stat().st_size > 0
    table = pd.read_csv(out / summary["table"])
    for col in (
        "source",
        "ref_index",
        "anisotropy",
        "tortuosity",
        "diffusion_area",
        "planted_mode",
        "cluster_average",
        "cluster_trimmed",
        "cluster_ward",
        "n_kept",
    ):
        assert col in table.columns
    assert set(table.source) == {"reference", "averaged"}
    # fidelity: every distance comes with a real-vs-real baseline
    fid = summary["fidelity"]
    # pinned (seed 0): the oracle's particles are larger than the store's, so W1 > baseline
    for key, value, baseline in (("particle_area_w1", 0.16196, 0.030556),
                                 ("swd", 0.43447, 0.11145), ("s2", 0.012781, 0.00068357)):
        assert fid[key]["value"] == pytest.approx(value, rel=1e-3)
        assert fid[key]["baseline"] == pytest.approx(baseline, rel=1e-3)
    assert fid["particle_area_w1_raw"]["value"] > fid["particle_area_w1_raw"]["baseline"]
    assert fid["particle_area_w1"]["normalize"] == "range"
    # the oracle's trapped particles wander 0.1 px per unit z, not the store's ~0.36 px: the
    # near-repeat check sees the difference, and the summary says so in a note
    nr = fid["near_repeat"]
    assert nr["r_max_px"] > 1 and nr["n_real"] > 20 and nr["flagged"]
    assert abs(1 - nr["ratio"]) > 2 * max(nr["real_vs_real_ratio"] - 1, 0.075)
    sp = fid["subpixel"]  # trackpy centroids with the analysis's locator, both sides
    assert sp["locator"] == "trackpy" and sp["locate_diameter_px"] >= 3 and "flagged" in sp
    assert sp["n_real"] >= 50 and sp["baseline_splits"] == cfg.baseline_repeats
    assert sp["flagged"] == (sp["w1_px"] > 2 * sp["real_vs_real_px"])
    at = fid["atypical"]  # the training summary's measure, per planted region
    assert set(at["regions"]) == {"directed", "free", "confined"} and at["baseline_splits"] == 20
    assert ("atypical_share" in at["flagged"]) == (
        at["generated"] > 2 * max(at["real_vs_real"], 0.02))
    # one versioned schema, the same fixed keys for every case
    assert summary["schema_version"] == 1
    # the notes name what is off, nothing else: the still traps and (the oracle's analytic
    # dips against the store's rendered discs, 111 observed centroids: 2.3x) sub-pixel placement
    heads = [n.split(":")[0] for n in summary["notes"]]
    assert heads[0] == "particles that keep their place are drawn too still"
    # the oracle's Gaussian dips are shallower and wider than the store's rendered discs: the
    # atypical share (training summary's measure) sees them when flagged; touching groups have
    # their own checks and note (session 22), and so do halos and faint smudges (session 23)
    at_flags = fid["atypical"]["flagged"]
    assert "touching" in fid["atypical"]
    assert heads[1:] == (["the generator draws too many faint, half-formed, split or merged "
                          "particles"] if any("atypical" in f for f in at_flags) else []) + (
        ["the generator draws particles touching (two crisp particles merged in one mask) too "
         "often"] if any("touching" in f for f in at_flags) else []) + (
        ["the generator draws light halos around particles (a rim brighter than its "
         "surroundings) more often than observed"] if any("halo" in f for f in at_flags)
        else []) + (
        ["the generator draws faint smudges (dips too faint to segment as particles) more often "
         "than observed; shares are faint features per particle"]
        if any("faint" in f for f in at_flags) else []) + (
        ["generated particle centroids sit on the pixel grid less often than observed"]
        if fid["subpixel"]["flagged"] else [])
    assert summary["config"]["n_refs"] == cfg.n_refs and summary["fit"] == "crop"
    # logged scalars: one key scheme, analysis/<case>/<key>
    keys = set().union(*logged)
    assert {
        "analysis/np_diffusion/fidelity/particle_area_w1/value",
        "analysis/np_diffusion/filters/entropy_diff/rejection_rate",
        "analysis/np_diffusion/recovery/ari_ward",
    } <= keys
    assert all(k.startswith("analysis/np_diffusion/") and "analysis/analysis" not in k
               for k in keys)


@pytest.mark.slow  # shares the ~35 s end-to-end run of the `analysis` fixture
def test_filter_auto_threshold_and_rejection_rates(analysis, store):
    summary, out, _, cfg = analysis
    f = summary["filters"]["entropy_diff"]
    # auto = the max of consecutive observed entropy differences at the generator resolution
    assert f["threshold_source"].startswith("auto:max")
    assert f["threshold"] == pytest.approx(f["consecutive_observed"]["max"])
    assert f["threshold"] == pytest.approx(0.107998, rel=1e-4)  # pinned (seed 0)
    assert f["rejection_rate_overall"] == pytest.approx(0.025391, rel=1e-3)
    res = load_results(out / "variations")
    ed = res["metrics/entropy_diff"]
    kept = (ed <= f["threshold"]).sum(axis=1)
    assert np.array_equal(kept, res["mean/n_kept"])
    per_ref = 1.0 - kept / cfg.n_samples
    assert f["rejection_rate_per_reference"] == pytest.approx(per_ref.tolist())
    assert f["rejection_rate_overall"] == pytest.approx(1.0 - kept.sum() / ed.size)
    s = f["rejection_rate_per_reference_summary"]
    assert s["min"] == pytest.approx(per_ref.min()) and s["max"] == pytest.approx(per_ref.max())
    assert s["min"] <= s["median"] <= s["max"]


@pytest.mark.slow  # shares the ~35 s end-to-end run of the `analysis` fixture
def test_modes_separate_and_traces_stretch(analysis):
    summary, out, _, _ = analysis
    table = pd.read_csv(out / summary["table"])
    avg = table[(table.source == "averaged") & (table.planted_mode >= 0)]
    by = avg.groupby("planted_mode")
    assert set(by.groups) == {0, 1, 2}
    aniso, area = by.anisotropy.mean(), by.diffusion_area.mean()
    # confined traces: less anisotropic and smaller than directed ones; free in between in area
    assert aniso[2] < aniso[0] - 0.2
    assert area[2] < area[1] < area[0]
    rec = summary["recovery"]
    assert rec["anisotropy_auc_confined"] >= 0.75
    # directed traces become more anisotropic after latent averaging than in the reference
    assert rec["directed_anisotropy_averaged"] > rec["directed_anisotropy_reference"] + 0.2
    # still particles: the diffusion-area noise floor is small next to the free spread
    ref = table[table.source == "reference"]
    assert abs(ref.diffusion_area.median()) < 0.2 * area[1]


@pytest.mark.slow  # shares the ~35 s end-to-end run of the `analysis` fixture
def test_robust_clustering_recovers_planted_modes(analysis):
    summary, _, _, _ = analysis
    rec = summary["recovery"]
    assert rec["n_traces_in_regions"] >= 0.9 * rec["n_traces"]
    # pinned (seed 0): Ward on anisotropy + rms displacement recovers the modes best
    for m, ari in (("average", 0.31347), ("trimmed", 0.36003), ("ward", 0.73925)):
        assert rec[f"ari_{m}"] == pytest.approx(ari, abs=1e-4)
    assert rec["anisotropy_auc_confined"] == pytest.approx(0.82771, abs=1e-4)
    assert rec["diffusion_area_auc_confined"] == pytest.approx(0.96032, abs=1e-4)
    names = set(summary["clustering"]["methods"]["ward"]["modes"])
    assert names == {"directed", "free", "confined"}


@pytest.mark.slow  # shares the ~35 s end-to-end run of the `analysis` fixture
def test_diffusion_area_matches_oracle_spread(analysis, oracle):
    """Per free/directed trace: the estimated spread vs the oracle's true position variance
    over exactly the kept samples (and the reference) of that variation."""
    summary, out, _, cfg = analysis
    table = pd.read_csv(out / summary["table"])
    res = load_results(out / "variations")
    ed, thr = res["metrics/entropy_diff"], summary["filters"]["entropy_diff"]["threshold"]
    est, true = [], []
    for i in range(cfg.n_refs):
        z, eps = variation_latents(0, i, cfg.n_samples, DIM, UniformSampler(GAMMA))
        keep = torch.from_numpy(ed[i] <= thr)
        pos = oracle.positions(torch.cat([z[None], z[None] + eps[keep]])).numpy()
        mu, var = pos.mean(axis=0), pos.var(axis=0).sum(axis=1)
        rows = table[(table.source == "averaged") & (table.ref_index == i)]
        for _, r in rows.iterrows():
            d = np.hypot(mu[:, 0] - r.centroid_row, mu[:, 1] - r.centroid_col)
            j = int(d.argmin())
            if d[j] < 1.5 and (d < 4).sum() == 1 and oracle.modes[j] in (0, 1):
                est.append(r.spread_px2 - r.footprint_px2)
                true.append(var[j])
    est, true = np.array(est), np.array(true)
    assert len(est) >= 20
    ratio = np.median(est / true)
    assert 0.7 < ratio < 1.4, ratio
    assert np.corrcoef(est, true)[0, 1] > 0.6
    # in nm²: the pixel size of the bundle squared
    ps = summary["pixel_size"]
    row = table[table.source == "averaged"].iloc[0]
    assert row.diffusion_area == pytest.approx((row.spread_px2 - row.footprint_px2) * ps**2)


def test_rejecting_every_sample_is_an_error(store, oracle, tmp_path):
    cfg = small_config(n_refs=2, n_samples=6, n_fidelity=8, entropy_threshold=1e-12)
    with pytest.raises(AnalysisError, match=r"rejected all 12 samples.*median .*max"):
        run_case("np_diffusion", oracle, store, cfg, gamma=GAMMA, out_dir=tmp_path, progress=False)


def test_noise_generator_is_an_error(store, tmp_path):
    cfg = small_config(n_refs=2, n_samples=4, n_fidelity=8)
    with pytest.raises(AnalysisError, match="noise"):
        run_case("np_diffusion", NoiseGenerator(), store, cfg, gamma=GAMMA, out_dir=tmp_path, progress=False)


@pytest.mark.parametrize("kw", [{"channels": 3}, {"ndim": 3}])
def test_wrong_channels_or_ndim_is_an_error(store, tmp_path, kw):
    gen = NPOracle(store.truth_attrs, **kw)
    with pytest.raises(AnalysisError, match="2D 1-channel generator"):
        run_case("np_diffusion", gen, store, small_config(), gamma=GAMMA, out_dir=tmp_path, progress=False)


def test_config_validation():
    for bad in (
        {"entropy_threshold": "high"},
        {"entropy_threshold": -1.0},
        {"features": ("colour",)},
        {"methods": ("kmeans",)},
        {"trace_threshold": 1.5},
        {"entropy_bound": "p50"},
    ):
        with pytest.raises(ConfigError):
            replace(case.Config(), **bad).validate()
    case.Config(entropy_threshold="0.2").validate()  # numbers given as text are fine


def test_yaml_lists_every_field_with_the_defaults():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[1] / "conf" / "analysis" / "np_diffusion.yaml"
    raw = OmegaConf.load(path)
    fields = set(asdict(case.Config()))
    assert set(raw) - {"_target_"} == fields
    cfg = instantiate(raw)
    assert isinstance(cfg, case.Config)
    got, want = asdict(cfg), asdict(case.Config())
    assert {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in got.items()} == want


def test_region_map_follows_the_training_crop_and_resize():
    rm = np.full((6, 10), -1, np.int8)
    rm[:, 2:4] = 0  # left of the centre crop (columns 2..7 survive)
    rm[:, 4:6] = 1
    rm[:, 6:8] = 2
    out = region_map_at(rm, 3)  # 6 px side -> 3 px, nearest neighbour
    assert out.shape == (3, 3)
    assert out[0].tolist() == [0, 1, 2]
    rows = np.array([0.2, 2.0])
    assert planted_mode(out, rows, np.array([0.4, 1.6])).tolist() == [0, 2]
    assert math.isclose(float(region_map_at(np.zeros((4, 4)), 4).sum()), 0.0)
    # fit=pad: 6 x 10 padded to 10 x 10 (two rows of -1 above and below), then 5 px
    padded = region_map_at(rm, 5, "pad")
    assert padded[0].tolist() == [-1] * 5 and padded[2].tolist() == [-1, 0, 1, 2, -1]
