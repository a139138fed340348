from __future__ import annotations

import numpy as np
import pytest
import torch

from matdyn.data.datamodule import MicroscopyDataModule, resize_frames, square_frames
from matdyn.data.store import StoreWriter
from matdyn.errors import ConfigError, StoreError


def _store(path, n=12, c=1, spatial=(18, 22), norm_term=None, seed=0):
    rng = np.random.default_rng(seed)
    with StoreWriter(path, spatial_shape=spatial, channel_names=[f"c{i}" for i in range(c)],
                     pixel_size=10.0, unit="nm") as w:
        w.append(rng.normal(3.0, 2.0, size=(n, c, *spatial)).astype(np.float32))
        if norm_term is not None:
            w.attrs["norm_term"] = [norm_term]
    return path


def test_2d_stage_switching_without_reload(tmp_path):
    dm = MicroscopyDataModule(_store(tmp_path / "a.zarr"), resolution=16, batch_size=4)
    dm.setup("fit")
    assert dm.channels == 1 and dm.ndim == 2
    top = dm.images_at(16)
    assert top.shape == (12, 1, 16, 16)
    assert top.min() >= -1 - 1e-6 and top.max() <= 1 + 1e-6
    assert top.min() == pytest.approx(-1, abs=1e-5) and top.max() == pytest.approx(1, abs=1e-5)
    # 18 px crop side resized to 16 -> effective pixel size 10 * 18 / 16
    assert dm.pixel_size == pytest.approx(11.25)
    it = iter(dm.train_dataloader())
    assert next(it).shape == (4, 1, 16, 16)
    dm.set_stage(4, 2)
    b = next(it)  # same iterator: the change reaches the next batch
    assert b.shape == (2, 1, 4, 4)
    # lower stage = area average of the top resolution
    np.testing.assert_allclose(dm.images_at(8), torch.nn.functional.avg_pool2d(top, 2), atol=1e-6)


def test_3d_multichannel_and_physical_roundtrip(tmp_path):
    dm = MicroscopyDataModule(_store(tmp_path / "v.zarr", n=6, c=3, spatial=(8, 8, 8)), resolution=8,
                              batch_size=3)
    dm.setup()
    x = dm.images_at(8)
    assert x.shape == (6, 3, 8, 8, 8) and dm.ndim == 3
    dm.set_stage(4, 2)
    b = next(iter(dm.train_dataloader()))
    assert b.shape == (2, 3, 4, 4, 4)
    from matdyn.data.store import open_store

    raw = torch.from_numpy(open_store(tmp_path / "v.zarr").load())
    # default scaling: no outlier tails in Gaussian data -> limits are the data range, exact inverse
    assert dm.normalization["mode"] == "percentile" and dm.normalization["percentiles"] == [0.01, 99.99]
    assert dm.normalization["clipped"] == [0, 0, 0]
    assert dm.normalization["limits"] == dm.normalization["range"]
    torch.testing.assert_close(dm.to_physical(x), raw, atol=1e-5, rtol=1e-5)
    mm = MicroscopyDataModule(tmp_path / "v.zarr", resolution=8, normalization="minmax")
    torch.testing.assert_close(mm.to_physical(mm.images_at(8)), raw, atol=1e-5, rtol=1e-5)


def _hot_store(path, n=5, spatial=(64, 64)):
    """Values in 477..576 (16-bit camera counts) with one hot pixel of 65535 (issue 10)."""
    rng = np.random.default_rng(7)
    x = rng.integers(477, 577, size=(n, 1, *spatial)).astype(np.float32)
    x[2, 0, 10, 12] = 65535.0
    with StoreWriter(path, spatial_shape=spatial, channel_names=["phase"], pixel_size=1.0) as w:
        w.append(x)
    return path, x


def test_hot_pixel_does_not_dominate_scaling(tmp_path, caplog):
    path, raw = _hot_store(tmp_path / "hot.zarr")
    with caplog.at_level("WARNING", logger="matdyn.data"):
        dm = MicroscopyDataModule(path, resolution=64, normalization="auto")
        x = dm.images_at(64)
    n = dm.normalization
    assert n["limits"] == [[477.0, 576.0]] and n["clipped"] == [1] and n["range"] == [[477.0, 65535.0]]
    inside = torch.from_numpy(raw) <= 576
    assert float(x[inside].min()) == -1.0 and float(x[inside].max()) == 1.0  # full [-1, 1] used
    assert float(x[2, 0, 10, 12]) == 1.0  # the hot pixel saturates
    torch.testing.assert_close(dm.to_physical(x)[inside], torch.from_numpy(raw)[inside])
    warn = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warn) == 1 and "1 pixel(s)" in warn[0] and "frame 2 pixel (10, 12)" in warn[0]
    assert "[477, 576]" in warn[0] and "0.01-99.99 percentile" in warn[0]
    # the old min/max mode: 99.99 % of pixels squeezed into [-1, -0.997]
    mm = MicroscopyDataModule(path, resolution=64, normalization="minmax")
    assert float(mm.images_at(64)[inside].max()) == pytest.approx(-0.997, abs=1e-3)


def test_no_warning_without_outliers(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="matdyn.data"):
        dm = MicroscopyDataModule(_store(tmp_path / "g.zarr", n=40), resolution=16)
        dm.setup()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert dm.normalization["limits"] == dm.normalization["range"] and dm.normalization["clipped"] == [0]


def test_bundle_inverts_percentile_normalization(tmp_path):
    from matdyn.models.pggan import Generator
    from matdyn.training.bundle import load_generator, save_bundle

    path, _ = _hot_store(tmp_path / "hot.zarr", n=3, spatial=(16, 16))
    dm = MicroscopyDataModule(path, resolution=16)
    x = dm.images_at(16)
    g = Generator(latent_dim=4, channels=1, ndim=2, filters=(8, 8))
    b = load_generator(save_bundle(tmp_path / "g.pt", g, 0, normalization=dm.normalization))
    assert b.normalization["limits"] == dm.normalization["limits"]
    torch.testing.assert_close(b.to_physical(x), dm.to_physical(x))


def test_sqrt_transform_round_trips_densities_and_squares_a_faint_haze(tmp_path):
    from matdyn.models.pggan import Generator
    from matdyn.training.bundle import load_generator, save_bundle

    rng = np.random.default_rng(3)
    x = np.clip(rng.normal(0.0, 0.01, size=(6, 2, 8, 8, 8)), 0, None).astype(np.float32)
    x[:, :, 2:6, 2:6, 2:6] += 0.8  # a dense particle in a near-empty box
    path = tmp_path / "d.zarr"
    with StoreWriter(path, spatial_shape=(8, 8, 8), channel_names=["Cu", "CuS"], pixel_size=1.0) as w:
        w.append(x)
    dm = MicroscopyDataModule(path, resolution=8, transform="sqrt")
    xn = dm.images_at(8)
    assert dm.normalization["transform"] == "sqrt"
    assert xn.min() == pytest.approx(-1, abs=1e-5) and xn.max() == pytest.approx(1, abs=1e-5)
    torch.testing.assert_close(dm.to_physical(xn), torch.from_numpy(x), atol=1e-5, rtol=1e-4)
    g = Generator(latent_dim=4, channels=2, ndim=3, filters=(8, 8))
    b = load_generator(save_bundle(tmp_path / "g.pt", g, 0, normalization=dm.normalization))
    assert b.transform == "sqrt"
    torch.testing.assert_close(b.to_physical(xn), torch.from_numpy(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.from_physical(torch.from_numpy(x)), xn, atol=1e-5, rtol=1e-4)
    # an error e in [-1, 1] at the empty end is (e * scale)² of density after the square
    # root instead of e * scale: a faint generated haze shrinks quadratically
    lo = torch.full((1, 2, 1, 1, 1), -1.0)
    haze = (b.to_physical(lo + 0.02) - b.to_physical(lo)).flatten()
    linear = MicroscopyDataModule(path, resolution=8)
    haze_lin = (linear.to_physical(lo + 0.02) - linear.to_physical(lo)).flatten()
    assert (haze < 0.05 * haze_lin).all()


def test_sqrt_transform_refuses_negative_values_with_one_line(tmp_path):
    path = _store(tmp_path / "neg.zarr", c=2)  # Gaussian around 3 with sd 2: negatives
    with pytest.raises(ConfigError, match=r"transform=sqrt needs values >= 0; negative in channel c0 "
                                          r"\(minimum -[0-9.]+\), c1"):
        MicroscopyDataModule(path, resolution=16, transform="sqrt").setup()
    with pytest.raises(ConfigError, match="transform must be none or sqrt"):
        MicroscopyDataModule(path, resolution=16, transform="log")


def test_norm_term_convention(tmp_path):
    dm = MicroscopyDataModule(_store(tmp_path / "n.zarr", norm_term=2.0), resolution=16)
    dm.setup()
    assert dm.normalization["mode"] == "norm_term"
    assert dm.normalization["offset"] == [2.0] and dm.normalization["scale"] == [2.0]


def test_bad_normalization_settings(tmp_path):
    with pytest.raises(ConfigError, match="normalization must be"):
        MicroscopyDataModule(tmp_path / "x.zarr", resolution=16, normalization="zscore")
    with pytest.raises(ConfigError, match="percentiles must be"):
        MicroscopyDataModule(tmp_path / "x.zarr", resolution=16, percentiles=(99, 1))


def test_square_and_resize_helpers():
    x = torch.arange(2 * 6 * 4, dtype=torch.float32).view(1, 2, 6, 4)
    assert square_frames(x, "crop").shape == (1, 2, 4, 4)
    assert square_frames(x, "pad").shape == (1, 2, 6, 6)
    torch.testing.assert_close(square_frames(x, "crop"), x[:, :, 1:5, :])
    # non-integer antialiased downsample of a constant stays constant
    c = torch.full((1, 1, 142, 142), 3.0)
    torch.testing.assert_close(resize_frames(c, 64), torch.full((1, 1, 64, 64), 3.0))
    v = torch.full((1, 1, 12, 12, 12), 2.0)
    torch.testing.assert_close(resize_frames(v, 8), torch.full((1, 1, 8, 8, 8), 2.0))


def test_datamodule_errors(tmp_path):
    with pytest.raises(ConfigError, match="power of two"):
        MicroscopyDataModule(tmp_path / "x.zarr", resolution=48)
    with pytest.raises(StoreError, match="no such store"):
        MicroscopyDataModule(tmp_path / "missing.zarr", resolution=16).setup()
    dm = MicroscopyDataModule(_store(tmp_path / "one.zarr", n=1), resolution=16)
    with pytest.raises(StoreError, match="at least 2"):
        dm.setup()
    dm = MicroscopyDataModule(_store(tmp_path / "a.zarr"), resolution=16)
    with pytest.raises(ConfigError, match="between 4 and"):
        dm.set_stage(32, 4)


def test_shuffle_is_seeded(tmp_path):
    p = _store(tmp_path / "a.zarr")
    a = next(iter(MicroscopyDataModule(p, 16, batch_size=4, seed=3).train_dataloader()))
    b = next(iter(MicroscopyDataModule(p, 16, batch_size=4, seed=3).train_dataloader()))
    c = next(iter(MicroscopyDataModule(p, 16, batch_size=4, seed=4).train_dataloader()))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_ranks_get_disjoint_batches(tmp_path, monkeypatch):
    from matdyn.data import datamodule as dmod

    p = _store(tmp_path / "a.zarr", n=12)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(dmod, "_rank_world", lambda r=rank: (r, 2))
        dm = MicroscopyDataModule(p, 16, batch_size=3, seed=1)
        assert len(dm.train_dataloader()) == 2
        batches = [dm.next_indices() for _ in range(2)]
        assert all(len(b) == 3 for b in batches) and dm.order.epoch == 0
        seen.append({i for b in batches for i in b})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12


def test_frame_order_resumes_mid_epoch_from_its_state(tmp_path):
    p = _store(tmp_path / "a.zarr", n=10)
    dm = MicroscopyDataModule(p, 16, batch_size=4, seed=2)
    sizes = [4, 4, 2, 4, 4, 4]  # a stage switch to batch 2, then 4 again (tails dropped)
    straight = []
    for k, bs in enumerate(sizes):
        dm.batch_size = bs
        straight.append(dm.next_indices())
        if k == 2:
            state = dm.state_dict()
    # pinned: epoch 0 = randperm(10) seeded 2 * 1_000_003; a 2-frame tail is dropped
    order0 = torch.randperm(10, generator=torch.Generator().manual_seed(2_000_006)).tolist()
    assert straight[:3] == [order0[:4], order0[4:8], order0[8:10]]
    assert state == {"stage_resolution": 16, "batch_size": 2, "order_epoch": 0, "order_offset": 10}
    assert (dm.order.epoch, dm.order.offset) == (2, 4)  # epoch 1: [0:4], [4:8]; epoch 2: [0:4]

    resumed = MicroscopyDataModule(p, 16, batch_size=4, seed=2)
    resumed.load_state_dict(state)
    rest = []
    for bs in sizes[3:]:
        resumed.batch_size = bs
        rest.append(resumed.next_indices())
    assert rest == straight[3:]
    # old checkpoints (sampler_epoch only) restart their epoch
    old = MicroscopyDataModule(p, 16, batch_size=4, seed=2)
    old.load_state_dict({"sampler_epoch": 1})
    assert (old.order.epoch, old.order.offset) == (1, 0)
