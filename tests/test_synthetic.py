"""Synthetic stand-ins: determinism, ground truth consistent with the images, stores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, rotate
from skimage.measure import label, regionprops

from matdyn.data.store import open_store
from matdyn.data.synthetic import brass_clump, np_diffusion, ta_chart
from matdyn.data.synthetic import generate as generate_by_name
from matdyn.errors import ConfigError, StoreError

# ---------------------------------------------------------------------------- NP diffusion


@pytest.fixture(scope="module")
def np_data():
    return np_diffusion.simulate(n_frames=12, seed=3)


def test_np_deterministic_and_chunk_independent(np_data):
    again = np_diffusion.simulate(n_frames=12, seed=3)
    np.testing.assert_array_equal(np_data.frames, again.frames)
    for k, v in np_data.truth.items():
        np.testing.assert_array_equal(v, again.truth[k], err_msg=k)
    other = np_diffusion.simulate(n_frames=12, seed=4)
    assert not np.allclose(np_data.frames, other.frames)
    r = np_diffusion.recipe(n_frames=12, seed=3)
    split = np.concatenate([r.render_chunk(0, 5)[0], r.render_chunk(5, 12)[0]])
    np.testing.assert_array_equal(split, np_data.frames)


def test_np_particles_segmented_at_truth_positions(np_data):
    depth = np_data.truth_attrs["particle_depth_rad"]
    radius = np_data.truth_attrs["particle_radius_px"]
    pos = np_data.truth["positions_px"]
    modes = np_data.truth["particle_mode"]
    region = np_data.truth["region_map"]
    n = np_data.frames.shape[-1]
    assert np_data.frames.shape == (12, 1, 142, 142)
    assert sum(np_data.truth_attrs["n_particles_per_mode"]) == pos.shape[1] == 15
    matched = 0
    for t in range(len(pos)):
        img = np_data.frames[t, 0]
        dark = img < -0.4 * depth
        lab = label(dark)
        # every dark pixel lies in some mode region
        assert (region[img < -0.3 * depth] >= 0).all()
        blobs = [b for b in regionprops(lab) if b.area >= 6]
        cents = np.array([b.centroid for b in blobs])
        for b, c in zip(blobs, cents):
            r0, c0, r1, c1 = b.bbox
            if r0 == 0 or c0 == 0 or r1 == n or c1 == n:
                continue  # clipped by the border: centroid is biased
            d = np.hypot(*(pos[t] - c).T)
            j = int(np.argmin(d))
            assert d[j] < 2.0, f"frame {t}: blob at {c} has no particle within 2 px"
            # the blob sits in the region of its particle's mode
            vals = region[lab == b.label]
            assert (vals == modes[t, j]).mean() > 0.95
        # every isolated, fully visible particle is found within 2 px
        for j, q in enumerate(pos[t]):
            others = np.delete(pos[t], j, axis=0)
            isolated = np.hypot(*(others - q).T).min() > 2 * radius + 3
            if isolated and (q >= radius + 1).all() and (q <= n - 2 - radius).all():
                assert np.hypot(*(cents - q).T).min() < 2.0, f"frame {t}: particle {j} missed"
                matched += 1
    assert matched >= 10 * len(pos)


def test_np_planted_dynamics_match_parameters():
    r = np_diffusion.recipe(n_frames=2000, seed=0)  # trajectories only (no rendering)
    p = np_diffusion.NPDiffusionParams()
    pos, ids, slot = (r.truth["positions_px"].astype(float), r.truth["particle_ids"],
                      r.truth["slot_mode"])
    lag = round(1.0 / p.frame_interval_s)  # 1 s
    disp = pos[lag:] - pos[:-lag]
    same = ids[lag:] == ids[:-lag]
    # free mode: x-MSD = 2 D t (y is reflected by the band, so use x)
    free = (slot == np_diffusion.FREE)[None] & same
    d_est = np.mean((disp[..., 1] * p.pixel_size_nm)[free] ** 2) / 2
    assert d_est == pytest.approx(p.free_diffusion_nm2_s, rel=0.3)
    assert r.truth_attrs["free_diffusion_area_per_s_nm2"] == pytest.approx(7550.0)
    # confined mode: stationary spread around the trap centres
    traps = np.asarray(r.truth_attrs["trap_positions_px"])
    dev = pos[:, slot == np_diffusion.CONFINED] - traps[None]
    assert dev.std() == pytest.approx(p.trap_sigma_px, rel=0.25)
    # directed mode: drift at the lane speed, tiny transverse wobble
    lane = (slot == np_diffusion.DIRECTED)[None] & same
    speed = np.abs(disp[..., 1][lane]).mean() * p.pixel_size_nm / (lag * p.frame_interval_s)
    assert speed == pytest.approx(p.lane_speed_nm_s, rel=0.1)
    assert np.abs(disp[..., 0][lane]).max() < 6 * p.lane_sigma_px
    # particles enter and leave, but the number of slots per mode is fixed
    assert ids.max() + 1 > ids.shape[1]
    assert len(np.unique(ids)) == ids.max() + 1


def test_np_region_overlap_is_a_config_error():
    with pytest.raises(ConfigError, match="overlaps"):
        np_diffusion.simulate(n_frames=1, band_rows_px=(90.0, 130.0))
    with pytest.raises(ConfigError, match="unknown"):
        np_diffusion.simulate(n_frames=1, n_fre=3)


def test_np_store(tmp_path, np_data):
    path = np_diffusion.generate(tmp_path / "np.zarr", n_frames=12, seed=3, progress=False,
                                 chunk_frames=5)
    s = open_store(path)
    assert len(s) == 12 and s.meta.pixel_size == pytest.approx(40.58)
    assert s.meta.source == "synthetic:np_diffusion" and s.meta.channel_names == ("phase",)
    np.testing.assert_array_equal(s.load(), np_data.frames)
    assert s.truth_attrs["mode_names"] == ["directed", "free", "confined"]
    assert s.truth["region_map"].dtype == np.int8
    assert s.truth["positions_nm"].shape == (12, 15, 2)
    np.testing.assert_allclose(s.labels["time_s"], np.arange(12) * 0.05)


# ---------------------------------------------------------------------------- Ta chart


@pytest.fixture(scope="module")
def chart():
    return ta_chart.simulate(n_frames=2, n_augment=3, seed=1)


def test_chart_deterministic_and_layout(chart):
    again = ta_chart.simulate(n_frames=2, n_augment=3, seed=1)
    np.testing.assert_array_equal(chart.frames, again.frames)
    assert not np.allclose(chart.frames, ta_chart.simulate(n_frames=2, n_augment=3, seed=2).frames)
    assert chart.frames.shape == (8, 1, 178, 178)
    assert chart.truth["is_augmented"].tolist() == [0, 1, 1, 1, 0, 1, 1, 1]
    assert chart.truth["source_frame"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(chart.truth["offset_nm"][4], 340 * 0.007)
    rot = chart.truth["rotation_deg"]
    assert (rot[chart.truth["is_augmented"] == 0] == 0).all()
    assert (np.abs(rot) <= 30).all() and len(np.unique(rot)) == 7
    assert chart.frames.min() >= -math.pi and chart.frames.max() <= math.pi
    # paper scale: 1755 frames + 5 rotated copies each = 10 530 images
    assert ta_chart.recipe().n_frames == 10530


def test_chart_slit_widths_measured_within_a_pixel():
    r = ta_chart.recipe(seed=0)  # paper scale plan; render three raw frames only
    px = r.truth_attrs["pixel_size_nm"]
    for k in (0, 900, 1754):  # offsets 0, 2.1 µm, 4.2 µm: slits stay in view
        i = 6 * k
        img = r.render_chunk(i, i + 1)[0][0, 0]
        d1, d2 = ta_chart.measure_slit_widths(img, float(r.truth["offset_nm"][i]))
        assert abs(d1 - 309.0) < 0.5 * px, (k, d1)
        assert abs(d2 - 324.0) < 0.5 * px, (k, d2)


def test_chart_rotation_recovered(chart):
    raw = chart.frames[0, 0].astype(float)
    yy, xx = np.mgrid[:178, :178]
    disk = np.hypot(yy - 88.5, xx - 88.5) < 45  # well inside the illuminated support
    cands = np.arange(-30, 30.01, 0.5)
    for i in (1, 2, 3):
        img = chart.frames[i, 0].astype(float)
        score = [np.corrcoef(rotate(raw, a, reshape=False, order=1)[disk], img[disk])[0, 1]
                 for a in cands]
        assert abs(cands[int(np.argmax(score))] - chart.truth["rotation_deg"][i]) <= 1.0


def test_chart_store(tmp_path, chart):
    path = ta_chart.generate(tmp_path / "ta.zarr", n_frames=2, n_augment=3, seed=1,
                             progress=False, chunk_frames=3)
    s = open_store(path)
    assert len(s) == 8 and s.meta.pixel_size == pytest.approx(20.72)
    np.testing.assert_array_equal(s.load(), chart.frames)
    assert s.truth_attrs["slit_widths_nm"] == [309.0, 324.0]
    np.testing.assert_array_equal(s.labels["is_augmented"], chart.truth["is_augmented"])
    assert set(s.truth) >= {"offset_nm", "rotation_deg", "source_frame", "is_augmented"}


# ---------------------------------------------------------------------------- brass clumps


@pytest.fixture(scope="module")
def clumps():
    return brass_clump.simulate(n_particles=24, seed=5, mode_weights=(1, 1, 1))


def _depth(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = vol.sum(axis=0) > 0.5
    return mask, distance_transform_edt(mask)


def test_clumps_deterministic_and_chunk_independent(clumps):
    r = brass_clump.recipe(n_particles=24, seed=5, mode_weights=(1, 1, 1))
    a = np.concatenate([r.render_chunk(0, 3)[0], r.render_chunk(3, 9)[0]])
    np.testing.assert_array_equal(a, clumps.frames[:9])
    other = brass_clump.simulate(n_particles=2, seed=6)
    assert not np.allclose(other.frames, clumps.frames[:8])
    assert brass_clump.recipe().n_frames == 4956  # paper scale, Table 1


def test_clumps_species_evolve_with_stage(clumps):
    v = clumps.frames.reshape(24, 4, 3, 32, 32, 32).astype(float)
    assert 0 <= v.min() and v.max() <= 1
    # measured from the images: species mass fractions inside the particle
    frac = np.zeros((24, 4, 3))
    for i in range(24):
        mask = v[i, 0].sum(axis=0) > 0.2
        for s in range(4):
            m = v[i, s][:, mask].sum(axis=1)
            frac[i, s] = m / m.sum()
    mean = frac.mean(axis=0)
    assert (np.diff(mean[:, 0]) < 0).all(), mean  # Cu falls
    assert (np.diff(mean[:, 1][:3]) > 0).all(), mean  # Cu2S rises (early/intermediate)
    assert (np.diff(mean[1:, 2]) > 0).all() and mean[:2, 2].max() < 0.03, mean  # CuS late
    assert (np.diff(frac[:, :, 0], axis=1) < 0.01).all()  # per particle, Cu never grows
    # faster modes sulfidise more (less Cu left at 28 days)
    mode = clumps.truth["particle_mode"]
    cu28 = [frac[mode == m, 3, 0].mean() for m in range(3)]
    assert cu28[0] > cu28[1] > cu28[2], cu28
    # truth masses agree with the measured ones
    tf = clumps.truth["species_fraction"].reshape(24, 4, 3)
    np.testing.assert_allclose(tf.mean(axis=0), mean, atol=0.03)


def test_clumps_cu2s_at_surface_early_cus_inside_late(clumps):
    v = clumps.frames.reshape(24, 4, 3, 32, 32, 32).astype(float)
    surf3, deep3, surf28, deep28 = [], [], [], []
    for i in range(24):
        mask, depth = _depth(v[i, 0])
        shallow, inner = mask & (depth <= 1.5), mask & (depth >= 3)
        if inner.sum() < 10:
            continue
        surf3.append(v[i, 1, 1][shallow].mean())
        deep3.append(v[i, 1, 1][inner].mean())
        surf28.append(v[i, 3, 2][shallow].mean())
        deep28.append(v[i, 3, 2][inner].mean())
    assert len(surf3) >= 12
    assert np.mean(surf3) > 3 * np.mean(deep3)  # Cu2S near the surface at 3 days
    assert np.mean(deep28) > 3 * np.mean(surf28)  # CuS inside at 28 days


def test_clumps_store(tmp_path):
    path = generate_by_name("brass_clump", tmp_path / "bc.zarr", n_particles=3, seed=2,
                            progress=False, chunk_frames=5)
    s = open_store(path)
    assert len(s) == 12 and s.meta.spatial_shape == (32, 32, 32)
    assert s.meta.channel_names == ("Cu", "Cu2S", "CuS") and s.meta.unit == "um"
    assert s.labels["stage_days"].tolist() == [0, 3, 14, 28] * 3
    assert s.labels["particle_id"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.truth_attrs["mode_names"] == ["slow", "medium", "fast"]
    assert s.truth["particle_mode"].shape == (3,)
    assert s.truth["species_mass_vox"].shape == (12, 3)
    np.testing.assert_array_equal(s.load(), brass_clump.simulate(n_particles=3, seed=2).frames)
    # a store is never overwritten by accident
    with pytest.raises(StoreError, match="exists"):
        brass_clump.generate(path, n_particles=1, progress=False)


def test_generate_streams_with_bounded_memory(tmp_path):
    """Peak Python-heap memory while writing a store does not grow with the number of frames
    (frames are rendered and appended chunk by chunk)."""
    import tracemalloc

    from matdyn.data.synthetic import np_diffusion

    peaks = {}
    for n in (128, 1024):
        tracemalloc.start()
        np_diffusion.generate(tmp_path / f"s{n}.zarr", n_frames=n, size=48, seed=0,
                              progress=False, chunk_frames=64)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    frame_bytes = 48 * 48 * 4
    # 8x the frames: the peak stays within a few chunks, far below 1024 frames in memory
    assert peaks[1024] < 1.5 * peaks[128] + 64 * frame_bytes
    assert peaks[1024] < 1024 * frame_bytes * 2
