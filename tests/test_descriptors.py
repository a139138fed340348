"""Descriptors (entropy, particles, IoU, composition, latent distances, difference metrics)
and the consecutive-frame continuity baseline. Hand-built inputs with hand-computed answers,
plus agreement with scikit-image / numpy on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.filters import threshold_otsu
from skimage.measure import label as sk_label
from skimage.measure import shannon_entropy as sk_entropy

from matdyn.descriptors import (
    AreaDifference,
    Binarizer,
    DensityDifference,
    EntropyDifference,
    IoU,
    MassDeviation,
    MetricFilter,
    ShapeDifference,
    angular_step,
    binarize,
    channel_iqr,
    channel_mass,
    density_difference,
    expected_angular_step,
    expected_per_dimension_distance,
    expected_perturbation_norm,
    iou,
    iou_3d,
    iou_batch,
    iqr_variance,
    mass_deviation,
    otsu_thresholds,
    particle_areas_batch,
    particle_totals,
    per_dimension_distance,
    pixel_normalize,
    quantize,
    segment_particles,
    shannon_entropy,
    shannon_entropy_batch,
)
from matdyn.descriptors.differences import cached_masks
from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma.continuity import consecutive_differences, default_metrics, summarize

RNG = np.random.default_rng(1234)


# ----------------------------------------------------------------------------- entropy
@pytest.mark.parametrize(
    "images",
    [
        RNG.integers(0, 256, size=(6, 20, 20)).astype(np.uint8),
        RNG.integers(-40, 40, size=(5, 12, 17)).astype(np.int16),
        RNG.integers(0, 3, size=(4, 6, 6, 6)).astype(np.int32),  # volumes, few levels
        np.zeros((2, 8, 8), dtype=np.uint8),  # constant images: 0 bits
    ],
)
def test_entropy_matches_skimage_on_integer_images(images):
    expected = np.array([sk_entropy(im) for im in images])
    assert np.allclose([shannon_entropy(im) for im in images], expected, rtol=0, atol=1e-12)
    assert np.allclose(shannon_entropy_batch(images, bins=None), expected, rtol=0, atol=1e-12)


def test_entropy_on_float_images_counts_unique_values_like_skimage():
    img = RNG.normal(size=(16, 16)).astype(np.float32)  # all values distinct
    assert shannon_entropy(img) == pytest.approx(sk_entropy(img), abs=1e-12)
    assert shannon_entropy(img) == pytest.approx(8.0, abs=1e-9)  # log2(256 pixels): uninformative
    assert shannon_entropy_batch(img[None], bins=None)[0] == pytest.approx(8.0, abs=1e-9)


@pytest.mark.parametrize("bins", [2, 16, 256])
@pytest.mark.parametrize("value_range", [None, (-1.0, 1.0)])
def test_batched_entropy_equals_skimage_on_quantised_float_images(bins, value_range):
    images = np.tanh(RNG.normal(size=(7, 1, 24, 24))).astype(np.float32)
    images[3] = 0.25  # a constant image
    q = quantize(images, bins, value_range)
    assert q.shape == images.shape and q.min() >= 0 and q.max() <= bins - 1
    expected = np.array([sk_entropy(q[b]) for b in range(len(images))])
    got = shannon_entropy_batch(images, bins=bins, value_range=value_range)
    assert np.allclose(got, expected, rtol=0, atol=1e-12)
    assert got[3] == 0.0
    # independent check of the binning against numpy's histogram
    for b in (0, 5):
        lo, hi = value_range or (images[b].min(), images[b].max())
        counts, _ = np.histogram(images[b], bins=bins, range=(lo, hi))
        p = counts[counts > 0] / counts.sum()
        assert got[b] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-12)


def test_quantize_hand_values_and_bad_input():
    assert quantize(np.array([[0.0, 0.24, 0.25, 0.99, 1.0]]), bins=4).tolist() == [[0, 0, 1, 3, 3]]
    assert quantize(np.array([[-5.0, 5.0]]), bins=4, value_range=(0.0, 1.0)).tolist() == [[0, 3]]
    with pytest.raises(ConfigError):
        shannon_entropy_batch(np.zeros((1, 4)), bins=0)
    with pytest.raises(ConfigError):
        shannon_entropy_batch(np.zeros((1, 4)), value_range=(1.0, 1.0))
    with pytest.raises(AnalysisError):
        shannon_entropy_batch(np.zeros((0, 4)))
    with pytest.raises(AnalysisError):
        shannon_entropy(np.zeros(0))


# ----------------------------------------------------------------------------- binarisation
def _bimodal(n: int, shape=(20, 20)) -> np.ndarray:
    out = RNG.normal(0.0, 0.05, size=(n,) + shape)
    for im in out:
        r, c = RNG.integers(2, shape[0] - 8, size=2)
        im[r : r + 6, c : c + 6] += RNG.uniform(0.6, 1.2)
    return out


def test_otsu_thresholds_match_skimage():
    images = _bimodal(8)
    ours = otsu_thresholds(images)
    ref = np.array([threshold_otsu(im) for im in images])
    bin_width = np.ptp(images.reshape(8, -1), axis=1) / 256
    assert np.all(np.abs(ours - ref) <= 1e-3 * bin_width)  # the same bin centre
    const = np.full((1, 5, 5), 0.7)
    assert otsu_thresholds(const)[0] == pytest.approx(0.7)
    assert not binarize(const).any()


def test_binarize_fixed_threshold_dark_particles_and_tophat():
    img = np.ones((1, 15, 15))
    img[0, 3:6, 3:6] = 0.2  # a dark 3x3 particle (9 px) on a bright background
    img[0, 10, 10] = 0.1  # a dark single pixel
    dark = binarize(img, 0.5, dark=True)
    assert dark.sum() == 10 and dark[0, 4, 4] and dark[0, 10, 10]
    assert binarize(img, 0.5).sum() == 225 - 10  # bright foreground is the background here
    # black top-hat turns dark particles into bright ones; background gradient goes away
    ramp = img + np.linspace(0, 0.5, 15)[None, None, :]
    th = binarize(ramp, 0.4, dark=True, tophat_radius=3)
    assert th.sum() == 10
    # the fast batched top-hat equals scipy's disk/ball top-hat exactly (2D and 3D)
    from scipy import ndimage

    for shape, r in [((3, 21, 23), 6), ((2, 7, 8, 9), 2)]:
        x = RNG.normal(size=shape).astype(np.float32)
        grid = np.mgrid[(slice(-r, r + 1),) * (len(shape) - 1)]
        fp = (np.sum(grid**2, axis=0) <= r * r)[None]
        for is_dark, th in ((True, ndimage.black_tophat), (False, ndimage.white_tophat)):
            expected = th(x, footprint=fp) > 0.5
            assert np.array_equal(binarize(x, 0.5, dark=is_dark, tophat_radius=r), expected)
    # smoothing spreads the single pixel below threshold; the 3x3 particle survives its core
    smooth = binarize(img, 0.5, dark=True, sigma=1.0)
    assert smooth[0, 4, 4] and not smooth[0, 10, 10]
    b = Binarizer(threshold=0.5, dark=True)
    assert np.array_equal(b(img[:, None]), dark)
    with pytest.raises(ConfigError):
        Binarizer(threshold="triangle")
    with pytest.raises(ConfigError):
        Binarizer(sigma=-1)
    with pytest.raises(ConfigError):
        Binarizer(channel=3)(np.ones((1, 2, 4, 4)))
    with pytest.raises(AnalysisError):
        binarize(np.ones((4, 4)))  # no batch axis


# ----------------------------------------------------------------------------- particles
def test_particles_hand_built_2d_and_3d():
    m = np.zeros((1, 10, 10), bool)
    m[0, 0:2, 0:2] = True  # 4 px
    m[0, 5:8, 5:8] = True  # 9 px
    m[0, 9, 0] = True  # 1 px, removed by min_area=2
    t = particle_totals(m, min_area=2, pixel_size=40.58)
    assert t.count.tolist() == [2] and t.area_px.tolist() == [13]
    assert t.area[0] == pytest.approx(13 * 40.58**2)  # nm² (NP frames, §3.3)
    p = segment_particles(m[0], min_area=2, pixel_size=40.58)
    assert len(p) == 2 and sorted(p.area_px.tolist()) == [4, 9]
    assert np.allclose(sorted(p.area.tolist()), [4 * 40.58**2, 9 * 40.58**2])
    assert np.allclose(p.centroid[np.argmax(p.area_px)], [6.0, 6.0])
    assert set(np.unique(p.labels)) == {0, 1, 2}
    # diagonal neighbours: one particle with full connectivity, two with 4-connectivity
    d = np.zeros((1, 3, 3), bool)
    d[0, 0, 0] = d[0, 1, 1] = True
    assert particle_totals(d).count[0] == 1
    assert particle_totals(d, connectivity=1).count[0] == 2
    # 3D: a 2x2x2 cube of 0.65 µm voxels (brass, §3.4)
    v = np.zeros((1, 6, 6, 6), bool)
    v[0, 1:3, 1:3, 1:3] = True
    tv = particle_totals(v, pixel_size=0.65)
    assert tv.count[0] == 1 and tv.area_px[0] == 8 and tv.area[0] == pytest.approx(8 * 0.65**3)


def test_batched_particles_agree_with_skimage_per_image():
    masks = RNG.random((9, 24, 24)) > 0.62
    masks[4] = False  # an empty image inside the batch
    idx, area = particle_areas_batch(masks, min_area=3)
    totals = particle_totals(masks, min_area=3)
    for b in range(len(masks)):
        lab = sk_label(masks[b])
        sizes = np.bincount(lab.ravel())[1:]
        sizes = sizes[sizes >= 3]
        assert sorted(area[idx == b].tolist()) == sorted(sizes.tolist())
        assert totals.count[b] == sizes.size and totals.area_px[b] == sizes.sum()
        assert sorted(segment_particles(masks[b], min_area=3).area_px.tolist()) == sorted(
            sizes.tolist()
        )
    assert totals.count[4] == 0


# ----------------------------------------------------------------------------- IoU
def test_iou_hand_built():
    a = np.zeros((4, 4), bool)
    a[0:2] = True  # 8 px
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 px, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0 and iou(a, empty) == 0.0
    # IOU₃D: a 2x2x2 cube shifted by one voxel along z shares 4 of 12 voxels
    v = np.zeros((4, 4, 4), bool)
    v[0:2, 0:2, 0:2] = True
    w = np.roll(v, 1, axis=0)
    assert iou_3d(v, w) == pytest.approx(4 / 12)
    batch = np.stack([a, b, empty])
    assert iou_batch(batch, a).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert iou_batch(batch, np.stack([a, a, empty])).tolist() == pytest.approx([1.0, 1 / 3, 1.0])
    with pytest.raises(AnalysisError):
        iou_batch(batch, np.zeros((3, 3), bool))
    with pytest.raises(AnalysisError):
        iou_3d(a, b)


# ----------------------------------------------------------------------------- composition
def _clump() -> np.ndarray:
    x = np.zeros((1, 3, 4, 4, 4))
    for c in range(3):
        x[0, c, 1:3, 1:3, 1:3] = c + 1.0  # densities 1, 2, 3 in a 2x2x2 cube
    return x


def test_mass_and_deviation_hand_built():
    x = _clump()
    assert channel_mass(x).tolist() == [[8.0, 16.0, 24.0]]
    assert channel_mass(x, voxel_size=0.65)[0] == pytest.approx(np.array([8, 16, 24]) * 0.65**3)
    inner = np.zeros((4, 4, 4), bool)
    inner[1, 1, 1] = True
    assert channel_mass(x, mask=inner).tolist() == [[1.0, 2.0, 3.0]]
    y = x.copy()
    y[0, 0] *= 2  # Cu doubles: total 48 -> 56
    both = np.concatenate([x, y])
    ref = channel_mass(x)[0]
    assert mass_deviation(channel_mass(both), ref) == pytest.approx([0.0, 8 / 48])
    assert mass_deviation(channel_mass(y), ref, per_channel=True)[0] == pytest.approx(
        [1.0, 0.0, 0.0]
    )
    assert mass_deviation(np.zeros((1, 3)), np.zeros(3)).tolist() == [0.0]
    assert mass_deviation(np.ones((1, 3)), np.zeros(3)).tolist() == [np.inf]
    # voxel-wise density difference: one voxel of total density 6 moved out of the cube
    z = x.copy()
    z[0, :, 1, 1, 1] = 0
    z[0, :, 0, 0, 0] = [1, 2, 3]
    assert density_difference(z, x[0]) == pytest.approx([12 / 48])
    assert density_difference(np.concatenate([x, z]), np.concatenate([x, x])) == pytest.approx(
        [0, 0.25]
    )
    with pytest.raises(AnalysisError):
        channel_mass(np.zeros((4, 4)))


def test_iqr_hand_built_and_against_numpy():
    x = np.arange(1.0, 9.0).reshape(1, 1, 2, 2, 2)  # values 1..8
    assert channel_iqr(x).tolist() == [[6.25 - 2.75]]
    m = np.zeros((2, 2, 2), bool)
    m.flat[:4] = True  # values 1..4 -> p25 1.75, p75 3.25
    assert channel_iqr(x, mask=m)[0, 0] == pytest.approx(1.5)
    assert np.isnan(channel_iqr(x, mask=np.zeros_like(m))[0, 0])
    imgs = RNG.gamma(2.0, size=(5, 3, 6, 7, 5))
    masks = RNG.random((5, 6, 7, 5)) > 0.5
    got = channel_iqr(imgs, mask=masks)
    for b in range(5):
        for c in range(3):
            q25, q75 = np.percentile(imgs[b, c][masks[b]], [25, 75])
            assert got[b, c] == pytest.approx(q75 - q25, rel=1e-12)
    iqrs = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, 0.0]])
    assert iqr_variance(iqrs, keep=np.array([True, True, False])).tolist() == [1.0, 0.0]
    assert np.isnan(iqr_variance(iqrs, keep=np.zeros(3, bool))).all()


# ----------------------------------------------------------------------------- latent
def test_per_dimension_distance_hand_and_paper_values():
    assert per_dimension_distance(np.zeros(4), np.array([[2.0, 0, 0, 0], [0, 0, 0, 4.0]])) == 0.75
    # paper: γ = 0.25 / 1 / 2 -> ≈ 0.025 / 0.1 / 0.2 per dimension (§3.3.1), γ=0.5 -> 0.05 (§3.4.1)
    for gamma, paper in [(0.25, 0.025), (0.5, 0.05), (1.0, 0.1), (2.0, 0.2)]:
        assert expected_per_dimension_distance(gamma, 32) == pytest.approx(paper, rel=0.03)


@pytest.mark.parametrize("gamma", [0.25, 1.0, 2.0])
def test_per_dimension_distance_matches_analytic_uniform(gamma):
    d, n = 32, 4000
    rng = np.random.default_rng(7)
    z = rng.standard_normal(d)
    zp = z + rng.uniform(-gamma, gamma, size=(n, d))
    got = per_dimension_distance(z, zp)
    # tolerance: 4 standard errors of the sample mean of ‖ε‖/d (≈ 0.1 % here), i.e. the
    # analytic value must be statistically indistinguishable from the simulation; the
    # first-order value γ/sqrt(3d) is off by 1/(10d) ≈ 0.3 % and would fail for gamma >= 1
    se = np.linalg.norm(zp - z, axis=1).std(ddof=1) / math.sqrt(n) / d
    assert abs(got - expected_per_dimension_distance(gamma, d)) < 4 * se


def test_gaussian_norm_and_angular_step():
    rng = np.random.default_rng(3)
    eps = rng.normal(0, 0.5, size=(20000, 16))
    se = np.linalg.norm(eps, axis=1).std() / math.sqrt(len(eps))
    assert (
        abs(np.linalg.norm(eps, axis=1).mean() - expected_perturbation_norm(0.5, 16, "gaussian"))
        < 4 * se
    )
    z = rng.standard_normal((5000, 32))
    zp = z + rng.uniform(-1, 1, size=z.shape)
    theta = np.array([angular_step(z[i], zp[i : i + 1])[0] for i in range(200)])
    assert np.allclose(theta, angular_step(z[:200], zp[:200]))
    # large-d value atan(γ/√3) ≈ 30° for γ = 1; the simulated mean sits ≈ 0.5 % above it at d = 32
    assert angular_step(z, zp).mean() == pytest.approx(expected_angular_step(1.0), rel=0.02)
    # a pixel-normalising generator cannot tell z from c * z
    assert np.allclose(pixel_normalize(3.0 * z[:3]), pixel_normalize(z[:3]))
    assert np.allclose(np.mean(pixel_normalize(z) ** 2, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ConfigError):
        expected_perturbation_norm(0.0, 32)
    with pytest.raises(ConfigError):
        expected_perturbation_norm(1.0, 32, "cauchy")
    with pytest.raises(AnalysisError):
        per_dimension_distance(np.zeros(3), np.zeros((2, 4)))


# ----------------------------------------------------------------------------- metrics
def test_difference_metrics_hand_built():
    ref = np.zeros((1, 1, 6, 6))
    ref[0, 0, 1:3, 1:3] = 1.0  # 4 px particle
    moved = np.zeros((1, 1, 6, 6))
    moved[0, 0, 1:3, 2:4] = 1.0  # shifted by 1: shares 2 px
    bigger = np.zeros((1, 1, 6, 6))
    bigger[0, 0, 1:4, 1:4] = 1.0  # 9 px
    imgs = np.concatenate([ref, moved, bigger])
    b = Binarizer(threshold=0.5)
    slots = np.zeros(3, dtype=np.int64)
    assert AreaDifference(b).compute(imgs, AreaDifference(b).prepare(ref), slots).tolist() == [
        0,
        0,
        5,
    ]
    area_nm = AreaDifference(b, pixel_size=40.58)
    assert area_nm.compute(imgs, area_nm.prepare(ref), slots)[2] == pytest.approx(5 * 40.58**2)
    iou_m = IoU(b)
    assert iou_m.compute(imgs, iou_m.prepare(ref), slots) == pytest.approx([1, 2 / 6, 4 / 9])
    shape = ShapeDifference(b)
    assert shape.compute(imgs, shape.prepare(ref), slots) == pytest.approx([0, 4 / 6, 5 / 9])
    ent = EntropyDifference(bins=2)
    h = lambda k: -(k / 36 * math.log2(k / 36) + (1 - k / 36) * math.log2(1 - k / 36))  # noqa: E731
    assert ent.compute(imgs, ent.prepare(ref), slots) == pytest.approx([0, 0, h(9) - h(4)])
    assert MassDeviation().compare(imgs, np.concatenate([ref] * 3)) == pytest.approx([0, 0, 1.25])
    assert DensityDifference().compare(imgs, np.concatenate([ref] * 3)) == pytest.approx(
        [0, 1.0, 1.25]
    )
    # masks of equal binarizers are computed once per batch
    cache: dict = {}
    iou_m.compute(imgs, iou_m.prepare(ref), slots, cache)
    AreaDifference(Binarizer(threshold=0.5)).compute(
        imgs, AreaDifference(b).prepare(ref), slots, cache
    )
    assert sum(1 for k in cache if k[0] == "mask") == 1
    assert cached_masks(b, imgs, cache) is cache[("mask", b)]
    with pytest.raises(AnalysisError):
        iou_m.compute(imgs, iou_m.prepare(ref), np.array([0, 0, 1]))  # slot out of range


def test_metric_filter():
    f = MetricFilter(upper={"mass_dev": 0.2}, lower={"iou": 0.5})  # brass filter, §3.4.2
    keep = f({"mass_dev": np.array([0.1, 0.2, 0.3, 0.1]), "iou": np.array([0.5, 0.9, 0.9, np.nan])})
    assert keep.tolist() == [True, True, False, False]
    assert f.names == ("iou", "mass_dev")
    with pytest.raises(ConfigError):
        f({"mass_dev": np.zeros(2)})
    with pytest.raises(ConfigError):
        MetricFilter(upper={"x": float("nan")})


# ----------------------------------------------------------------------------- continuity
def _moving_square(n: int = 6) -> np.ndarray:
    frames = np.zeros((n, 1, 12, 12), dtype=np.float32)
    for t in range(n):
        frames[t, 0, 3:6, 1 + t : 4 + t] = 1.0  # 3x3 square moving 1 px per frame
    return frames


def test_continuity_baseline_on_a_moving_square():
    frames = _moving_square()
    b = Binarizer(threshold=0.5)
    base = consecutive_differences(
        frames, [EntropyDifference(), AreaDifference(b), IoU(b)], batch_size=2
    )
    assert base.pairs.tolist() == [[t, t + 1] for t in range(5)]
    assert np.allclose(base.values["iou"], 6 / 12)  # 3x3 shifted by one: 6 shared of 12
    assert np.allclose(base.values["area_diff"], 0) and np.allclose(base.values["entropy_diff"], 0)
    s = base.as_dict()["iou"]
    assert (
        s["median"] == pytest.approx(0.5)
        and s["max"] == pytest.approx(0.5)
        and s["p95"] == pytest.approx(0.5)
    )
    # stride 2 and groups: only pairs within one group
    two = consecutive_differences(frames, [IoU(b)], stride=2)
    assert np.allclose(two.values["iou"], 3 / 15)
    grp = consecutive_differences(frames, [IoU(b)], groups=np.array([0, 0, 0, 1, 1, 1]))
    assert grp.pairs.tolist() == [[0, 1], [1, 2], [3, 4], [4, 5]]
    with pytest.raises(AnalysisError):
        consecutive_differences(frames[:1], [IoU(b)])
    with pytest.raises(ConfigError):
        consecutive_differences(frames, [IoU(b)], stride=0)
    with pytest.raises(ConfigError):
        consecutive_differences(frames, [IoU(b)], groups="particle")


def test_continuity_reads_a_store_and_defaults_to_paper_metrics(tmp_path):
    from matdyn.data.store import StoreWriter

    frames = _moving_square(7)
    path = tmp_path / "sq.zarr"
    with StoreWriter(
        path,
        spatial_shape=(12, 12),
        channel_names=["phase"],
        pixel_size=40.58,
        unit="nm",
        frame_interval=0.05,
        time_unit="s",
        source="synthetic:test",
        name="sq",
    ) as w:
        w.append(frames)
        w.set_label("run", np.array([0, 0, 0, 0, 1, 1, 1]))
    b = Binarizer(threshold=0.5)
    from_store = consecutive_differences(
        path, [AreaDifference(b), IoU(b)], groups="run", batch_size=3
    )
    from_array = consecutive_differences(
        frames, [AreaDifference(b), IoU(b)], groups=np.array([0, 0, 0, 0, 1, 1, 1])
    )
    assert (
        from_store.pairs.tolist()
        == from_array.pairs.tolist()
        == [[0, 1], [1, 2], [2, 3], [4, 5], [5, 6]]
    )
    for k in ("area_diff", "iou"):
        assert np.array_equal(from_store.values[k], from_array.values[k])
    assert [m.name for m in default_metrics(2)] == ["entropy_diff", "area_diff"]
    assert set(consecutive_differences(path).values) == {"entropy_diff", "area_diff"}
    vol = np.zeros((3, 3, 4, 4, 4))
    vol[:, :, 1:3, 1:3, 1:3] = 1.0
    assert set(consecutive_differences(vol).values) == {"shape_diff", "density_diff"}


def test_summarize_ignores_nan():
    s = summarize(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (s.n, s.median, s.max, s.min) == (3, 2.0, 3.0, 1.0)
    assert summarize(np.array([np.nan])).n == 0
