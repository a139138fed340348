"""The Case protocol and run_case (matdyn.analysis.case): dataset.fit, pixel sizes, the
registry (a fourth case from a test), the summary schema and the W&B key scheme."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matdyn.analysis.case import make_context, rejection_summary, run_case, stats
from matdyn.analysis.cases.np_diffusion import Config as NPConfig
from matdyn.analysis.cases.np_diffusion import steps as np_steps
from matdyn.data.store import StoreWriter, open_store
from matdyn.errors import ConfigError

H, W, PS, RADIUS = 250, 500, 10.0, 20.0  # native px, nm/px, particle radius (native px)


class Stub(torch.nn.Module):
    """A 1-channel 2D generator: a dark disc whose centre moves with z[0:2] (no bundle
    pixel size, so the analysis derives it from the store and dataset.fit)."""

    def __init__(self, resolution: int = 125) -> None:
        super().__init__()
        self.latent_dim, self.channels, self.ndim, self.resolution = 4, 1, 2, resolution
        self.normalization: dict = {"unit": "nm"}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = torch.arange(self.resolution, dtype=torch.float32)
        c = self.resolution / 2 + 2.0 * z[:, :2, None, None]
        d2 = (r[None, :, None] - c[:, 0]) ** 2 + (r[None, None, :] - c[:, 1]) ** 2
        return -torch.exp(-d2 / 50.0)[:, None]


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory):
    """8 frames of 250 x 500 px, 10 nm/px: one dark disc of radius 20 px at the centre."""
    rr, cc = np.mgrid[:H, :W]
    disc = (np.hypot(rr - H / 2, cc - W / 2) <= RADIUS).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.01, (8, 1, H, W)).astype(np.float32)
    path = tmp_path_factory.mktemp("wide") / "wide.zarr"
    with StoreWriter(path, spatial_shape=(H, W), channel_names=["phase"], pixel_size=PS,
                     unit="nm", frame_interval=0.1) as w:
        w.append(noise - disc[None, None])
    return open_store(path)


@pytest.mark.parametrize("fit, pixel_size, blank_rows", [("pad", 40.0, 31), ("crop", 20.0, 0)])
def test_fit_sets_observed_frames_and_pixel_size(wide_store, tmp_path, fit, pixel_size,
                                                 blank_rows):
    cfg = NPConfig(n_fidelity=4, baseline_frames=4, tophat_radius=12)
    _, ctx, _ = make_context("np_diffusion", Stub(), wide_store, cfg, out_dir=tmp_path,
                             gamma=1.0, fit=fit)
    assert ctx.pixel_size == pytest.approx(pixel_size)  # pad: 500 px -> 125; crop: 250 -> 125
    real = np_steps.observe(ctx, cfg).fidelity
    assert real.shape == (4, 1, 125, 125)
    # pad: 125 native rows above the frame become 31 rows of the fill value; crop: none
    top = real[:, 0, :blank_rows]
    assert np.ptp(top) < 1e-6 if blank_rows else np.ptp(real[:, 0, :2]) > 1e-3
    # particle areas in nm² with the pixel size of that geometry: the planted disc, π r²
    # (+ the σ = 1 px smoothing rim); the crop pixel size on padded frames gave 4x too little
    areas = np_steps._particles(ctx, cfg, real, real)["a_real"]
    assert np.median(areas) == pytest.approx(math.pi * (RADIUS * PS) ** 2, rel=0.25)


def test_unknown_case_and_bad_fit_are_one_line_errors(wide_store, tmp_path):
    with pytest.raises(ConfigError, match="unknown analysis case 'nope'"):
        run_case("nope", Stub(), wide_store, out_dir=tmp_path, gamma=1.0)
    with pytest.raises(ConfigError, match="dataset.fit must be 'crop' or 'pad'"):
        make_context("np_diffusion", Stub(), wide_store, out_dir=tmp_path, gamma=1.0, fit="warp")


def test_stats_and_rejection_summary():
    assert stats([1.0, 2.0, 3.0, np.nan]) == pytest.approx(
        {"n": 3, "mean": 2.0, "std": math.sqrt(2 / 3), "median": 2.0, "min": 1.0, "p95": 2.9,
         "max": 3.0})
    assert stats([np.inf])["mean"] is None
    r = rejection_summary(np.array([[True, False], [False, False]]), 0.5, "upper bound")
    assert r["rejection_rate_overall"] == 0.25 and r["rejection_rate_per_reference"] == [0.5, 0]


def test_a_fourth_case_registered_from_a_test(wide_store, tmp_path):
    """A new case = a class with the steps + register_case; run_case does the rest."""
    from dataclasses import dataclass

    from matdyn.analysis.case import Table, VariationPlan, register_case
    from matdyn.descriptors.differences import EntropyDifference
    from matdyn.sampling.reducers import SampleMetrics

    @dataclass
    class DummyConfig:
        n_refs: int = 3

    class Dummy:
        name, channels, ndim, what = "dummy", 1, 2, "phase images"

        def __init__(self, cfg):
            self.cfg, self.counts = cfg or DummyConfig(), {"n_refs": 3}

        def observe(self, ctx):
            return ctx.observed([0, 1]).load()

        def fidelity(self, ctx, obs):
            gen = ctx.generate(ctx.fidelity_latents(2))
            return {"mean_observed": float(obs.mean()), "mean_generated": float(gen.mean())}

        def variations(self, ctx, obs):
            return VariationPlan(self.cfg.n_refs, 4, [EntropyDifference()],
                                 [SampleMetrics(["entropy_diff"], name="m")])

        def filters(self, ctx, result):
            return {"none": rejection_summary(result["m/entropy_diff"] < 0, None, "keeps all")}

        def describe(self, ctx, obs, result):
            import pandas as pd

            return Table(pd.DataFrame({"h": result["m/entropy_diff"].mean(axis=1)}), {"h": "bit"})

        def group(self, ctx, table):
            return {"groups": {"n": len(table.frame)}}

        def recover(self, ctx, obs, table):
            return {"never": 1.0}

        def figures(self, ctx, obs, result, table):
            from matplotlib.figure import Figure

            fig = Figure()
            fig.add_subplot().plot(table.frame["h"])
            ctx.save(fig, "dummy", "Dummy")

        def sections(self, ctx):
            return {}

    register_case("dummy", Dummy, DummyConfig)
    logged: list[dict] = []
    s = run_case(DummyConfig(), Stub(), wide_store, out_dir=tmp_path, gamma=0.5, fit="pad",
                 progress=False, log=logged.append)
    assert s["case"] == "dummy" and s["schema_version"] == 1 and s["fit"] == "pad"
    assert s["pixel_size"] == pytest.approx(40.0) and s["gamma"] == 0.5
    assert s["groups"] == {"n": 3} and "recovery" not in s  # the store has no truth
    assert s["filters"]["none"]["rejection_rate_overall"] == 0.0
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert (tmp_path / "variations.csv").read_text().startswith("h\n")
    assert s["figures"] == ["figures/dummy.png", "figures/dummy.svg"]
    keys = set().union(*logged)
    assert "analysis/dummy/filters/none/rejection_rate" in keys
    assert all(k.startswith("analysis/dummy/") for k in keys)


def test_the_sampler_comes_from_one_place():
    from matdyn.analysis.case import _sampler
    from matdyn.sampling.samplers import GaussianSampler, UniformSampler

    s, g, src = _sampler(GaussianSampler(0.3), None, "np_diffusion")
    assert isinstance(s, GaussianSampler) and g == 0.3 and src == "given"
    s, g, src = _sampler("0.7", None, "np_diffusion")
    assert isinstance(s, UniformSampler) and s.gamma == 0.7 and src == "given"
    assert _sampler("auto", None, "brass_clump")[1:] == (0.5, "paper")  # §3.4.1
