"""Samplers and the variation engine: streams, determinism, reducers against a direct
computation, checkpoint/resume, shards, bounded memory, bad input. Tiny random generators."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from matdyn.descriptors import (
    AreaDifference,
    Binarizer,
    EntropyDifference,
    IoU,
    MassDeviation,
    MetricFilter,
    channel_iqr,
    expected_per_dimension_distance,
    iqr_variance,
)
from matdyn.errors import AnalysisError, ConfigError
from matdyn.sampling import (
    FilteredMean,
    GaussianSampler,
    IQRVariance,
    LatentStats,
    Reducer,
    SampleMetrics,
    UniformSampler,
    VariationEngine,
    ZarrImageSink,
    load_results,
    merge_results,
    parse_shard,
    variation_latents,
)
from matdyn.sampling.engine import shard_blocks

CONF = Path(__file__).resolve().parents[1] / "conf" / "sampler"


class LinearG(nn.Module):
    """latents [B, d] -> images [B, 1, 16, 16] in [-1, 1]."""

    def __init__(self, latent_dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.latent_dim = latent_dim
        self.fc = nn.Linear(latent_dim, 16 * 16)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(-1, 1, 16, 16)


class ConvG(nn.Module):
    """A 2-layer conv generator at 16² with 2 channels and pixel norm, like a tiny PGGAN."""

    def __init__(self, latent_dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.latent_dim = latent_dim
        self.fc = nn.Linear(latent_dim, 8 * 8 * 8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z / torch.sqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        x = torch.relu(self.fc(z)).view(-1, 8, 8, 8)
        x = torch.relu(self.conv1(nn.functional.interpolate(x, scale_factor=2.0)))
        return torch.tanh(self.conv2(x))

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Physical units: [-1, 1] -> [0, 2]."""
        return self.forward(z) + 1.0


BIN = Binarizer(threshold=0.2)


def metrics():
    return [EntropyDifference(bins=32), AreaDifference(BIN), IoU(BIN), MassDeviation()]


KEEP = MetricFilter(upper={"entropy_diff": 0.3})


def reducers(keep=KEEP):
    return [SampleMetrics(), FilteredMean(keep), IQRVariance(keep, mask=BIN), LatentStats()]


def engine(gen=None, n_refs=10, n_samples=6, **kw) -> VariationEngine:
    kw.setdefault("metrics", metrics())
    kw.setdefault("reducers", reducers())
    kw.setdefault("progress", False)
    return VariationEngine(
        gen or LinearG(), UniformSampler(1.0), n_refs=n_refs, n_samples=n_samples, **kw
    )


def assert_same(a, b) -> None:
    assert a.keys() == b.keys() and a.keys()
    for k in a.keys():
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ----------------------------------------------------------------------------- samplers
def test_samplers_draw_the_right_distributions_and_validate():
    g = torch.Generator().manual_seed(0)
    eps = UniformSampler(0.5).sample(4000, 8, g)
    assert eps.dtype == torch.float32 and eps.shape == (4000, 8)
    assert eps.abs().max() <= 0.5 and eps.abs().max() > 0.49
    assert abs(float(eps.var()) - 0.5**2 / 3) < 0.003  # U[-γ, γ] variance γ²/3
    gs = GaussianSampler(2.0).sample(4000, 8, g)
    assert abs(float(gs.std()) - 2.0) < 0.05
    assert UniformSampler().gamma == 1.0  # paper §3.3.1 default
    assert UniformSampler(1.0).per_dimension_distance(32) == pytest.approx(0.1, rel=0.03)
    assert math.degrees(UniformSampler(1.0).angular_step()) == pytest.approx(30.0, abs=0.1)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError):
            UniformSampler(bad)
        with pytest.raises(ConfigError):
            GaussianSampler(bad)


def test_sampler_configs_instantiate_with_hydra():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    uni = instantiate(OmegaConf.load(CONF / "uniform.yaml"))
    assert isinstance(uni, UniformSampler) and uni.gamma == 1.0
    gau = instantiate(OmegaConf.load(CONF / "gaussian.yaml"))
    assert isinstance(gau, GaussianSampler) and gau.sigma == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(Exception) as err:  # Hydra wraps the error; its cause is ours
        instantiate(OmegaConf.load(CONF / "uniform.yaml"), gamma=-0.5)
    assert isinstance(err.value.__cause__, ConfigError)


def test_metrics_and_reducers_build_from_hydra_configs_like_code():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "metric": {"_target_": "matdyn.descriptors.EntropyDifference", "value_range": [-1, 1]},
            "reducer": {
                "_target_": "matdyn.sampling.FilteredMean",
                "keep": {
                    "_target_": "matdyn.descriptors.MetricFilter",
                    "upper": {"entropy_diff": 0.2},
                },
            },
        }
    )
    built = instantiate(cfg)
    assert built.metric == EntropyDifference(value_range=(-1.0, 1.0))
    assert repr(built.reducer) == repr(FilteredMean(MetricFilter(upper={"entropy_diff": 0.2})))
    assert type(built.reducer.keep.upper) is dict  # no DictConfig inside library objects


def test_progress_bar_reports_images(capsys):
    engine(n_refs=2, n_samples=3, progress=True).run()
    err = capsys.readouterr().err
    assert "8/8" in err and "img" in err  # M * (N + 1) images


def test_streams_depend_only_on_seed_and_reference():
    z, eps = variation_latents(5, 3, 4, 8, UniformSampler(1.0))
    z2, eps2 = variation_latents(5, 3, 4, 8, UniformSampler(1.0))
    assert torch.equal(z, z2) and torch.equal(eps, eps2)
    z3, _ = variation_latents(5, 4, 4, 8, UniformSampler(1.0))
    assert not torch.equal(z, z3)
    # the same references for every γ: z_i does not depend on the sampler, ε scales with γ
    z4, eps4 = variation_latents(5, 3, 4, 8, UniformSampler(2.0))
    assert torch.equal(z, z4) and torch.allclose(eps4, 2 * eps)
    assert not torch.equal(z, variation_latents(6, 3, 4, 8, UniformSampler(1.0))[0])


# ----------------------------------------------------------------------------- engine
class PerSampleG(ConvG):
    """ConvG evaluated one latent at a time: its output for a latent cannot depend on the
    batch it came in (batched CPU GEMM/conv kernels differ in the last bits by batch shape)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([super(PerSampleG, self).forward(z[i : i + 1]) for i in range(z.shape[0])])


SETTINGS = (
    {"batch_size": 5, "block_size": 3},
    {"batch_size": 7, "overlap": False},
    {"batch_size": 1},
)


def test_results_do_not_depend_on_batch_size_block_size_or_overlap():
    gen = PerSampleG()
    ref = engine(gen, batch_size=64, block_size=10).run()
    assert ref.complete and ref["metrics/entropy_diff"].shape == (10, 6)
    for kw in SETTINGS:
        assert_same(ref, engine(gen, **kw).run())


@pytest.mark.parametrize("gen_cls", [LinearG, ConvG])
def test_batched_generators_agree_across_batch_sizes_up_to_float_rounding(gen_cls):
    gen = gen_cls()
    ref = engine(gen, batch_size=64, block_size=10).run()
    for kw in SETTINGS:
        other = engine(gen, **kw).run()
        # the engine's own part is exact; the rest differs by generator rounding only
        for k in ("latent/z", "latent/per_dim_distance", "latent/angular_step"):
            np.testing.assert_array_equal(ref[k], other[k], err_msg=k)
        for k in ("mean/mean", "iqr/iqr_var", "metrics/mass_dev"):
            np.testing.assert_allclose(ref[k], other[k], rtol=0, atol=1e-5, err_msg=k)


def test_reducers_match_a_direct_computation(tmp_path):
    gen = PerSampleG()  # so the direct images below equal the engine's bit for bit
    keep = MetricFilter(upper={"entropy_diff": 0.3})
    sink = ZarrImageSink(tmp_path / "images.zarr")
    res = engine(gen, n_refs=5, n_samples=7, batch_size=9, reducers=[*reducers(keep), sink]).run()
    assert res["mean/mean"].shape == (5, 2, 16, 16) and res["iqr/iqr"].shape == (5, 7, 2)
    import zarr

    stored = zarr.open_array(str(tmp_path / "images.zarr"), mode="r")[:]
    assert stored.shape == (5, 8, 2, 16, 16)
    for i in range(5):
        z, eps = variation_latents(0, i, 7, 8, UniformSampler(1.0))
        with torch.inference_mode():
            ref_img = gen.sample(z[None]).numpy()  # auto output: .sample is used
            imgs = gen.sample(z[None] + eps).numpy()
        np.testing.assert_allclose(stored[i, 0], ref_img[0], atol=1e-6)
        np.testing.assert_allclose(stored[i, 1:], imgs, atol=1e-6)
        direct = {
            m.name: m.compute(imgs, m.prepare(ref_img), np.zeros(7, dtype=np.int64))
            for m in metrics()
        }
        for name, vals in direct.items():
            np.testing.assert_allclose(res[f"metrics/{name}"][i], vals, atol=1e-9, err_msg=name)
        kept = keep(direct)
        assert res["mean/n_kept"][i] == kept.sum()
        mean = (ref_img[0] + imgs[kept].sum(axis=0)) / (1 + kept.sum())
        np.testing.assert_allclose(res["mean/mean"][i], mean, atol=1e-5)
        np.testing.assert_allclose(res["mean/reference"][i], ref_img[0], atol=1e-6)
        iqr = channel_iqr(imgs, mask=BIN(imgs))
        np.testing.assert_allclose(res["iqr/iqr"][i][kept], iqr[kept], atol=1e-9)
        assert np.isnan(res["iqr/iqr"][i][~kept]).all()
        np.testing.assert_allclose(res["iqr/iqr_var"][i], iqr_variance(iqr, kept), atol=1e-9)
        np.testing.assert_array_equal(res["latent/z"][i], z.numpy())
        assert res["latent/per_dim_distance"][i] == pytest.approx(
            np.linalg.norm(eps.numpy().astype(np.float64), axis=1).mean() / 8
        )


def test_latent_distance_matches_the_analytic_value():
    gen = LinearG(latent_dim=32)
    res = engine(
        gen, n_refs=40, n_samples=50, metrics=[], reducers=[LatentStats()], batch_size=256
    ).run()
    per_ref = res["latent/per_dim_distance"]
    # every reference's mean over 50 samples is within 5 standard errors of E‖ε‖/d;
    # the std of ‖ε‖ for U[-γ, γ]^d is ≈ γ/sqrt(15) (delta method), so SE = γ/sqrt(15·50)/d
    se = 1.0 / math.sqrt(15 * 50) / 32
    expected = expected_per_dimension_distance(1.0, 32)
    assert np.all(np.abs(per_ref - expected) < 5 * se)
    assert abs(per_ref.mean() - expected) < 5 * se / math.sqrt(40)
    assert np.degrees(res["latent/angular_step"]).mean() == pytest.approx(30.0, rel=0.03)


def test_output_choice_sample_raw_and_images_fn():
    gen = ConvG()
    kw = dict(n_refs=2, n_samples=2, metrics=[], reducers=[FilteredMean(include_reference=False)])
    auto = engine(gen, **kw).run()["mean/reference"]
    raw = engine(gen, output="raw", **kw).run()["mean/reference"]
    custom = engine(gen, images_fn=lambda z: 3 * gen(z), **kw).run()["mean/reference"]
    np.testing.assert_allclose(auto, raw + 1.0, atol=1e-6)
    np.testing.assert_allclose(custom, 3 * raw, atol=1e-6)
    with pytest.raises(ConfigError):
        engine(LinearG(), output="physical", **kw)
    gen.train()
    engine(gen, **kw).run()
    assert gen.training  # the engine runs in eval mode and restores the mode


class Crash(Reducer):
    """Raises when it sees reference ``fail_at``; counts the references it was given."""

    name = "crash"

    def __init__(self) -> None:
        self.fail_at: int | None = None
        self.seen: list[int] = []

    def begin_block(self, block) -> None:
        self.seen.extend(block.ref_indices.tolist())

    def update(self, batch) -> None:
        if self.fail_at is not None and self.fail_at in batch.ref_indices:
            raise RuntimeError("simulated crash")

    def __repr__(self) -> str:  # the same run whether or not it will crash
        return "Crash()"


@pytest.mark.parametrize("overlap", [True, False])
def test_interrupt_and_resume_equals_an_uninterrupted_run(tmp_path, overlap):
    gen = ConvG()
    crash = Crash()
    crash.fail_at = 7
    kw = dict(n_refs=12, batch_size=5, block_size=3, overlap=overlap)
    e = engine(gen, reducers=[*reducers(), crash], **kw)
    with pytest.raises(RuntimeError, match="simulated crash"):
        e.run(tmp_path / "run")
    partial = load_results(tmp_path / "run")
    assert not partial.complete and partial.ref_indices.tolist() == list(range(6))  # blocks 0, 1
    crash.fail_at, crash.seen = None, []
    resumed = e.run(tmp_path / "run")
    assert crash.seen == list(range(6, 12))  # finished references were not recomputed
    full = engine(gen, reducers=[*reducers(), Crash()], **kw).run(tmp_path / "full")
    assert resumed.complete
    assert_same(resumed, full)
    assert_same(load_results(tmp_path / "run"), full)
    # a finished run is not recomputed at all
    crash.seen = []
    e.run(tmp_path / "run")
    assert crash.seen == []
    # other settings or resume=False on the same directory are refused
    with pytest.raises(ConfigError, match="different run"):
        engine(gen, reducers=[*reducers(), Crash()], n_refs=12, batch_size=4, block_size=3).run(
            tmp_path / "run"
        )
    with pytest.raises(ConfigError, match="resume"):
        e.run(tmp_path / "run", resume=False)


def test_shards_merge_to_the_single_process_result(tmp_path):
    gen = LinearG()
    kw = dict(n_refs=11, batch_size=8, block_size=2)  # 6 blocks over 4 shards: 2, 2, 1, 1
    single = engine(gen, **kw).run(tmp_path / "single")
    dirs = []
    for k in range(4):
        res = engine(gen, **kw).run(tmp_path / f"shard{k}", shard=f"{k}/4")
        assert not res.complete and res.ref_indices.size > 0
        dirs.append(tmp_path / f"shard{k}")
    assert [len(shard_blocks(6, f"{k}/4")) for k in range(4)] == [2, 2, 1, 1]
    merged = merge_results(*dirs)
    assert merged.complete and merged.ref_indices.tolist() == list(range(11))
    assert_same(merged, single)
    # shards writing into one shared directory work too
    for k in range(3):
        engine(gen, **kw).run(tmp_path / "shared", shard=(k, 3))
    assert_same(merge_results(tmp_path / "shared"), single)
    with pytest.raises(AnalysisError, match="incomplete"):
        merge_results(*dirs[:3])
    other = engine(gen, n_refs=11, batch_size=8, block_size=2, seed=1).run(tmp_path / "other")
    assert other.complete
    with pytest.raises(AnalysisError, match="different run"):
        merge_results(dirs[0], tmp_path / "other")


def test_peak_memory_does_not_grow_with_the_number_of_references(tmp_path):
    gen = LinearG()

    def peak(n_refs: int) -> int:
        e = engine(gen, n_refs=n_refs, n_samples=8, batch_size=32, block_size=4, overlap=False)
        tracemalloc.start()
        try:
            e.run(tmp_path / f"m{n_refs}")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(4)  # warm caches/imports
    small, large = peak(20), peak(200)
    assert large < 1.2 * small + 64 * 1024, (small, large)
    # and results are complete on disk, not in memory
    assert load_results(tmp_path / "m200")["metrics/iou"].shape == (200, 8)


def test_bad_input_raises_config_errors():
    gen = LinearG()
    for kw in (
        {"n_refs": 0},
        {"n_samples": 0},
        {"n_samples": -3},
        {"batch_size": 0},
        {"block_size": 0},
        {"seed": -1},
        {"output": "png"},
    ):
        with pytest.raises(ConfigError):
            engine(gen, **{"n_refs": 4, "n_samples": 2, **kw})
    with pytest.raises(ConfigError, match="latent_dim"):
        VariationEngine(lambda z: z, UniformSampler(1.0), n_refs=1, n_samples=1)
    with pytest.raises(ConfigError, match="needs metrics"):
        engine(gen, metrics=[], reducers=[FilteredMean(MetricFilter(upper={"entropy_diff": 0.2}))])
    with pytest.raises(ConfigError, match="unique"):
        engine(gen, reducers=[SampleMetrics(), SampleMetrics()])
    with pytest.raises(ConfigError, match="unique"):
        engine(gen, metrics=[IoU(BIN), IoU(Binarizer())])
    with pytest.raises(ConfigError, match="references"):
        engine(gen, references=np.zeros((3, 8)))
    with pytest.raises(ConfigError):
        VariationEngine(gen, 1.0, n_refs=1, n_samples=1)  # type: ignore[arg-type]
    for bad in ("8/8", "a/b", "3", "-1/4", (1, 0)):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="shape"):
        VariationEngine(
            lambda z: z[:, :4],
            UniformSampler(1.0),
            n_refs=1,
            n_samples=1,
            latent_dim=8,
            progress=False,
        ).run()
    nan_gen = LinearG()
    nan_gen.fc.bias.data[0] = float("nan")
    with pytest.raises(AnalysisError, match="NaN"):
        engine(nan_gen, n_refs=2, n_samples=2).run()


def test_fixed_reference_latents():
    gen = LinearG()
    refs = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    res = engine(
        gen, n_refs=3, n_samples=2, references=refs, metrics=[], reducers=[LatentStats()]
    ).run()
    np.testing.assert_array_equal(res["latent/z"], refs)
