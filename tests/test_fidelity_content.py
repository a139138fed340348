"""Content fidelity (issue 11) on cases with known answers: the NP stand-in at 64 px with
its planted region map; a generator that copies the data, drops a region, or shifts it."""

from __future__ import annotations

import numpy as np
import pytest

from matdyn.analysis.fidelity_content import (
    BASELINE_SPLITS,
    MASK_LEVEL,
    Centres,
    Check,
    centre_density,
    channel_fractions,
    checks_table,
    clump_threshold,
    composition_fidelity,
    dark_particle_centres,
    density_chi2,
    density_emd,
    diversity_fidelity,
    flagged,
    frame_diversity,
    half_split,
    halvings,
    particle_fidelity,
)
from matdyn.analysis.fidelity_repeats import (
    circular_w1,
    located_subpixel_fidelity,
    near_repeat_distances,
    near_repeat_fidelity,
    subpixel_fidelity,
)
from matdyn.data.synthetic.np_diffusion import MODE_NAMES, region_labels, simulate
from matdyn.descriptors.particles import tophat_response
from matdyn.dynamics.locate import estimate_locate_params, estimate_locate_params_from
from matdyn.errors import AnalysisError, ConfigError


@pytest.fixture(scope="module")
def np64():
    d = simulate(n_frames=800, size=64, seed=0)
    return d.frames, d.truth["region_map"]


def _fid(real: np.ndarray, gen: np.ndarray, region_map: np.ndarray):
    return particle_fidelity(dark_particle_centres(real), dark_particle_centres(gen), (64, 64),
                             region_map=region_map, region_names=MODE_NAMES)


def test_identical_sets_sit_at_zero_and_fresh_draws_at_baseline_level(np64):
    frames, rm = np64
    real = frames[np.random.default_rng(1).permutation(800)[:300]]
    s, checks = _fid(real, real, rm)
    emd = s["centre_density"]["emd"]  # subsets overlapping half a: closer than the other half
    assert emd["generated_vs_real"] < emd["real_vs_real"]
    assert s["particles_per_frame"]["ratio"] == 1.0
    assert {k: v["ratio"] for k, v in s["regions"].items()} == dict.fromkeys(MODE_NAMES, 1.0)
    assert s["near_repeat"]["ratio"] == 1.0 and s["near_repeat"]["n_real"] > 100
    names = {c.name for c in checks}  # "nothing flagged" means something: the checks ran
    assert {f"region_ratio.{m}" for m in MODE_NAMES} | {"centre_density_emd",
                                                        "near_repeat_median"} <= names
    assert flagged(checks) == []
    # a disjoint random draw of the same data: distances at the split-half baseline level
    perm = np.random.default_rng(2).permutation(800)
    s, checks = _fid(frames[perm[:300]], frames[perm[300:600]], rm)
    emd = s["centre_density"]["emd"]
    assert 0.6 < emd["generated_vs_real"] / emd["real_vs_real"] < 1.5  # matched sizes: about 1
    assert set(s["regions"]) == set(MODE_NAMES)
    for r in s["regions"].values():
        assert 0.9 < r["ratio"] < 1.1
    assert 0.9 < s["near_repeat"]["ratio"] < 1.1  # the store's own trap jitter, both sides
    assert flagged(checks) == []
    assert s["regions"]["confined"]["real_per_frame"] == 4.0  # 4 traps, always inside


def test_particle_baselines_are_the_mean_over_many_halvings(np64):
    """One halving of the observed frames is a noisy baseline (issue 11): the centre-density
    and ratio baselines average BASELINE_SPLITS halvings, and report their spread."""
    frames, rm = np64
    real = dark_particle_centres(frames[:300])
    gen = dark_particle_centres(frames[300:600])
    s, checks = particle_fidelity(real, gen, (64, 64), region_map=rm, region_names=MODE_NAMES)
    emd = s["centre_density"]["emd"]
    by_hand = [density_emd(centre_density(real.subset(a).rc, (64, 64), 16),
                           centre_density(real.subset(b).rc, (64, 64), 16))
               for a, b in halvings(300, BASELINE_SPLITS, 0)]
    assert s["centre_density"]["baseline_splits"] == BASELINE_SPLITS == len(by_hand)
    assert emd["real_vs_real"] == pytest.approx(np.mean(by_hand))
    assert emd["real_vs_real_sd"] == pytest.approx(np.std(by_hand)) and emd["real_vs_real_sd"] > 0
    assert min(by_hand) < emd["real_vs_real"] < max(by_hand)
    one, _ = particle_fidelity(real, gen, (64, 64), n_splits=1)
    assert one["centre_density"]["emd"]["real_vs_real"] == pytest.approx(by_hand[0])
    # ratio baselines: the mean |1 - r| over the halvings, shown as a typical ratio >= 1
    ppf = s["particles_per_frame"]
    dev = np.mean([abs(1 - real.subset(b).per_frame / real.subset(a).per_frame)
                   for a, b in halvings(300, BASELINE_SPLITS, 0)])
    assert ppf["real_vs_real_ratio"] == pytest.approx(1 + dev) and dev > 0
    table = {c.name: c for c in checks}
    assert table["particles_per_frame"].baseline == pytest.approx(dev)
    assert set(s["regions"]) == set(MODE_NAMES)
    assert all(r["real_vs_real_ratio"] >= 1.0 for r in s["regions"].values())


def test_a_generator_that_drops_the_lanes_has_lane_ratio_zero(np64):
    frames, rm = np64
    real, gen = frames[:400], frames[400:].copy()
    lanes = rm == 0
    for img in gen[:, 0]:
        img[lanes] = np.median(img)  # erase every lane particle
    s, checks = _fid(real, gen, rm)
    assert s["regions"]["directed"]["ratio"] == 0.0
    assert s["regions"]["confined"]["ratio"] == 1.0
    assert s["centre_density"]["emd"]["generated_vs_real"] > 5 * s["centre_density"]["emd"]["real_vs_real"]
    names = flagged(checks)
    assert "region_ratio.directed" in names and "region_ratio.confined" not in names
    assert "centre_density_emd" in names


def test_half_formed_particles_in_one_region_are_atypical_there_only(np64):
    """Faint (half-formed) particles in the free band: counts may hold, the band's atypical
    share flags, the lanes' and traps' do not (issue 11: what counts did not see)."""
    frames, rm = np64
    real, gen = frames[:400], frames[400:].copy()
    band = rm == 1
    for img in gen[:, 0]:
        bg = np.median(img)
        img[band] = bg + 0.4 * (img[band] - bg)  # every band particle at 40 % of its depth
    s, checks = _fid(real, gen, rm)
    assert s["regions"]["free"]["ratio"] > 0.9  # still found and counted: counts cannot tell
    assert "region_ratio.free" not in flagged(checks)
    at = s["atypical"]
    assert at["baseline_splits"] == BASELINE_SPLITS
    assert at["regions"]["free"]["generated"] > 0.9  # the faint band particles are all atypical
    assert at["regions"]["free"]["real_vs_real"] < 0.05
    assert at["regions"]["confined"]["generated"] == at["regions"]["confined"]["real_vs_real"] == 0.0
    names = flagged(checks)
    assert "region_atypical.free" in names
    assert "region_atypical.confined" not in names and "region_atypical.directed" not in names
    # the same frames untouched: nothing atypical beyond the data's own share
    s, checks = _fid(real, frames[400:], rm)
    assert s["atypical"]["generated"] < 2 * max(s["atypical"]["real_vs_real"], 0.02)
    assert not [n for n in flagged(checks) if "atypical" in n]


def test_particle_depth_is_the_peak_contrast():
    x = np.zeros((2, 1, 32, 32))  # Otsu runs per frame: one particle in each
    x[0, 0, 4:8, 4:8] = -1.0
    x[1, 0, 20:24, 20:24] = -0.25
    c = dark_particle_centres(x)
    assert c.depth is not None and len(c.depth) == 2
    assert c.depth[1] / c.depth[0] == pytest.approx(0.25, rel=1e-4)  # float32 filtering
    # an uneven particle: the depth is its peak response, not its mean
    y = np.zeros((1, 1, 32, 32))
    y[0, 0, 10:16, 10:16] = -0.2
    y[0, 0, 12:14, 12:14] = -1.0
    u = dark_particle_centres(y)
    resp = tophat_response(y[:, 0], sigma=1.0, radius=6, dark=True)
    inside = resp[0][resp[0] > 0.5 * resp.max()]
    assert len(u.depth) == 1 and u.depth[0] == pytest.approx(resp.max(), rel=1e-6)
    assert u.depth[0] > 1.2 * inside.mean()
    assert c.subset(np.array([1])).depth.tolist() == c.depth[1:].tolist()


def test_a_shifted_set_is_far_in_density(np64):
    frames, rm = np64
    s, checks = _fid(frames[:400], np.roll(frames[400:], 8, axis=2), rm)
    emd = s["centre_density"]["emd"]
    assert emd["generated_vs_real"] > 4 * emd["real_vs_real"]
    assert s["regions"]["confined"]["ratio"] < 0.3  # most traps moved off their region
    assert "centre_density_emd" in flagged(checks)


def test_density_distances_on_known_histograms():
    p = np.zeros((8, 8))
    p[2, 2] = 1.0
    q = np.roll(p, 3, axis=1)
    assert density_emd(p, q) == pytest.approx(3 / 8)  # 3 bins of a 1/8 frame side
    assert density_chi2(p, q) == 1.0 and density_chi2(p, p) == 0.0
    d = centre_density([[0.0, 0.0], [0.0, 0.0], [63.0, 63.0]], (64, 64), bins=4)
    assert d[0, 0] == pytest.approx(2 / 3) and d[3, 3] == pytest.approx(1 / 3)
    with pytest.raises(AnalysisError, match="no particle centres"):
        centre_density(np.zeros((0, 2)), (8, 8))


def test_empty_generator_is_flagged_not_crashing():
    real = Centres(np.array([0, 1]), np.array([[2.0, 2.0], [5.0, 5.0]]), np.array([9, 9]), 2)
    empty = Centres(np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64), 2)
    s, checks = particle_fidelity(real, empty, (8, 8), bins=2)
    assert s["particles_per_frame"]["ratio"] == 0.0
    assert s["centre_density"]["emd"]["generated_vs_real"] is None  # undefined: nothing drawn
    assert {"particles_per_frame", "centre_density_emd"} <= set(flagged(checks))
    # no generated frame at all: flagged too, not a crash in the matched subsets
    no_frames = Centres(np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64), 0)
    s, checks = particle_fidelity(real, no_frames, (8, 8), bins=2, n_splits=3)
    assert s["centre_density"]["emd"]["generated_vs_real"] is None  # inf, JSON-ready
    assert {"centre_density_emd", "centre_density_chi2"} <= set(flagged(checks))


def test_check_floor_and_factor():
    assert not Check("r", 0.10, 0.0, 0.075).flagged()  # within 2 x the ratio floor
    assert Check("r", 0.16, 0.0, 0.075).flagged()
    assert not Check("d", 0.0, 0.0).flagged() and not Check("d", float("nan"), 1.0).flagged()
    with pytest.raises(ConfigError):
        flagged([], factor=0)


def test_checks_table_shows_the_floor_its_ratio_uses():
    t = checks_table([Check("w1", 0.003, 0.0004, 0.004), Check("swd", 0.06, 0.03)])
    assert t["w1"]["ratio_to_baseline"] == pytest.approx(0.75)  # 0.003 / max(0.0004, 0.004)
    assert t["w1"]["floor"] == 0.004 and t["w1"]["baseline"] == 0.0004
    assert "floor" not in t["swd"] and t["swd"]["ratio_to_baseline"] == pytest.approx(2.0)


def test_region_labels_at_working_resolution():
    d = simulate(n_frames=1, seed=0)  # 142 px paper layout
    m = d.truth["region_map"]
    lab = region_labels(m, 64)
    assert lab.shape == (64, 64) and lab.dtype == np.int8
    for k in (-1, 0, 1, 2):  # area shares survive the resampling
        assert abs((lab == k).mean() - (m == k).mean()) < 0.04
    wide = np.zeros((4, 8), np.int8)
    wide[:, :2] = 1
    assert region_labels(wide, 4, "crop").tolist() == [[0] * 4] * 4
    assert region_labels(wide, 8, "pad")[0].tolist() == [-1] * 8
    with pytest.raises(ConfigError, match="fit"):
        region_labels(wide, 4, "stretch")


def test_composition_fidelity_sees_a_shifted_channel_mix():
    rng = np.random.default_rng(0)
    stages = np.repeat([0, 14, 28], 100)
    share = np.stack([1 - stages / 40, stages / 40], axis=1)  # channel 1 grows with the stage
    real = share[:, :, None, None, None] * (1 + 0.05 * rng.random((300, 2, 4, 4, 4)))
    s, checks = composition_fidelity(real, real, ["Cu", "CuS"], stages=stages)
    w1 = s["mass_fraction"]["Cu"]["w1"]  # identical sets: subsets overlap half a, below baseline
    assert {"mass_fraction_w1.Cu", "mass_fraction_w1.CuS", "stage_mix"} <= {c.name for c in checks}
    assert flagged(checks) == [] and w1["generated_vs_real"] < w1["real_vs_real"]
    young = real[stages == 0]  # a generator that only draws the first stage
    s, checks = composition_fidelity(real, young, ["Cu", "CuS"], stages=stages)
    assert s["stage_mix"]["generated_share"] == [1.0, 0.0, 0.0]
    assert set(flagged(checks)) == {"mass_fraction_w1.Cu", "mass_fraction_w1.CuS", "stage_mix"}


def test_composition_baseline_is_the_mean_over_many_halvings_not_one_lucky_split():
    """Stages in unequal numbers make one random halving's W1 swing (a split that happens to
    put more late-stage frames in one half looks like a large real-vs-real distance). The
    baseline is the mean over halvings; its spread is reported beside it."""
    rng = np.random.default_rng(1)
    stages = rng.choice([0, 3, 14, 28], 400, p=[0.3, 0.3, 0.15, 0.25])
    frac = 0.1 + stages / 100 + 0.01 * rng.standard_normal(400)
    real = np.stack([1 - frac, frac], axis=1)[:, :, None, None, None] * np.ones((1, 1, 2, 2, 2))
    singles = [composition_fidelity(real, real, ["Cu", "CuS"], seed=k, n_splits=1)[0]
               ["mass_fraction"]["CuS"]["w1"]["real_vs_real"] for k in range(30)]
    s, _ = composition_fidelity(real, real, ["Cu", "CuS"], stages=stages, n_splits=20)
    w1 = s["mass_fraction"]["CuS"]["w1"]
    assert s["baseline_splits"] == 20 and w1["real_vs_real_sd"] > 0
    assert max(singles) > 1.5 * min(singles)  # one split alone is a noisy baseline
    assert abs(w1["real_vs_real"] - np.mean(singles)) < 0.25 * np.std(singles) + 1e-12
    assert s["stage_mix"]["max_share_difference"]["real_vs_real_sd"] > 0
    with pytest.raises(ConfigError):
        composition_fidelity(real, real, ["Cu", "CuS"], n_splits=0)


def _clumps(rng, n, share, floor_sd):
    """[n, 2, 8, 8, 8] balls of unit occupancy with a CuS share per frame, over a rectified
    noise floor of standard deviation ``floor_sd`` (as the clump stand-in draws it)."""
    g = np.indices((8, 8, 8)) - 3.5
    ball = (np.sqrt((g ** 2).sum(0))[None] < rng.uniform(2.0, 3.5, n)[:, None, None, None])
    x = np.stack([ball * (1 - share)[:, None, None, None], ball * share[:, None, None, None]], 1)
    return np.clip(x + floor_sd * rng.standard_normal(x.shape), 0.0, None)


def test_composition_counts_mass_inside_the_clump_not_the_noise_floor():
    """Over the whole box the noise floor is mass: unaged clumps (no CuS) read several % CuS,
    and a generator whose background is noisier looks like wrong chemistry. Inside the clump
    mask the unaged clumps read ~0 CuS and only a change of the clumps themselves flags."""
    rng = np.random.default_rng(0)
    stages = np.repeat([0, 28], 150)
    share = np.where(stages == 0, 0.0, rng.uniform(0.2, 0.4, 300))
    real = _clumps(rng, 300, share, 0.01)
    thr = clump_threshold(real)
    assert 0.4 < thr < 0.6  # half the clumps' total density (1)
    young = stages == 0
    assert channel_fractions(real)[young, 1].mean() > 0.02  # the floor, counted as CuS
    assert channel_fractions(real, real.sum(1) > thr)[young, 1].mean() < 0.005
    noisier = _clumps(rng, 300, share, 0.05)  # same clumps, 5x the background noise
    _, box = composition_fidelity(real, noisier, ["Cu", "CuS"], stages=stages, mask_level=None)
    s, inside = composition_fidelity(real, noisier, ["Cu", "CuS"], stages=stages)
    assert "mass_fraction_w1.CuS" in flagged(box) and flagged(inside) == []
    assert "mass_fraction_w1.CuS" in {c.name for c in inside}  # checked, and not flagged
    assert s["mask"]["level"] == MASK_LEVEL and 0 < s["mask"]["real_volume_fraction"] < 0.3
    ghost = _clumps(rng, 300, share + 0.05, 0.01)  # 5 % CuS drawn into every clump
    s, checks = composition_fidelity(real, ghost, ["Cu", "CuS"], stages=stages)
    assert "mass_fraction_w1.CuS" in flagged(checks)
    assert abs(s["mass_fraction"]["CuS"]["generated_mean"]
               - s["mass_fraction"]["CuS"]["real_mean"] - 0.05) < 0.01
    with pytest.raises(ConfigError):
        clump_threshold(real, 1.5)
    with pytest.raises(AnalysisError, match="mask"):
        channel_fractions(real, np.ones((3, 8, 8, 8), bool))


def test_a_collapsed_generator_keeps_its_counts_but_fails_diversity(np64):
    """Mode collapse (every generated frame nearly the same observed frame) keeps particles per
    frame and per-region counts at 1 — what the issue's first table measured — but the frames
    no longer differ from each other: frame diversity sees it, fresh draws do not trip it."""
    frames, rm = np64
    real = frames[:400]
    rng = np.random.default_rng(3)
    collapsed = frames[400:401] + 0.01 * rng.standard_normal((400, *frames.shape[1:]))
    s, _ = _fid(real, collapsed, rm)
    assert set(s["regions"]) == set(MODE_NAMES)
    assert all(0.85 <= r["ratio"] <= 1.3 for r in s["regions"].values())  # counts look right
    d, checks = diversity_fidelity(real, collapsed, [half_split(400)])
    assert d["ratio"] < 0.3 and flagged(checks) == ["frame_diversity"]
    d, checks = diversity_fidelity(real, frames[400:800], [half_split(400)])
    assert 0.9 < d["ratio"] < 1.1 and 0.9 < d["real_vs_real_ratio"] < 1.1 and flagged(checks) == []
    assert [c.name for c in checks] == ["frame_diversity"]
    assert frame_diversity(real[:1].repeat(5, 0)) == 0.0
    with pytest.raises(AnalysisError, match="at least 2"):
        frame_diversity(real[:1])


def _jittered(n_frames: int, sigma: float, seed: int, n_free: int = 6) -> Centres:
    """4 fixed sites with N(0, sigma²) jitter per axis plus n_free uniformly placed particles
    per frame in a 64 px frame; every particle 17 px² (radius 2.33 px)."""
    rng = np.random.default_rng(seed)
    sites = np.array([[12.0, 12.0], [12.0, 50.0], [50.0, 12.0], [50.0, 50.0]])
    rc = np.concatenate([sites[None] + sigma * rng.standard_normal((n_frames, 4, 2)),
                         rng.uniform(4, 60, (n_frames, n_free, 2))], axis=1)
    frame = np.repeat(np.arange(n_frames), 4 + n_free)
    return Centres(frame, rc.reshape(-1, 2), np.full(frame.size, 17), n_frames)


def test_near_repeat_distance_sees_trap_jitter_that_counts_cannot():
    """Trapped particles drawn too still (issue 11: 0.12-0.24 px jitter generated vs 0.36 px
    observed on the NP demo) leave counts and densities intact; the near-repeat distance
    drops with the jitter, and a fresh draw of the same process sits at the baseline."""
    real = _jittered(400, 0.4, seed=0)
    d = near_repeat_distances(_jittered(400, 0.4, seed=5, n_free=0), 2.33)
    # only the 4 sites: Rayleigh with scale 0.4·√2, median 1.665·0.4 = 0.666 px
    assert np.median(d) == pytest.approx(0.666, rel=0.06)
    fresh, _ = particle_fidelity(real, _jittered(400, 0.4, seed=1), (64, 64))
    still, checks = particle_fidelity(real, _jittered(400, 0.13, seed=1), (64, 64))
    assert fresh["near_repeat"]["r_max_px"] == pytest.approx(np.sqrt(17 / np.pi))
    assert 0.9 < fresh["near_repeat"]["ratio"] < 1.1
    assert 1.0 < fresh["near_repeat"]["real_vs_real_ratio"] < 1.1
    assert still["near_repeat"]["ratio"] < 0.6
    assert "near_repeat_median" in flagged(checks)
    # the check's value compares half against half: the mean |1 - r| over the halvings, at
    # the halves' own level for a fresh draw, near |1 - ratio| for the still generator
    assert fresh["near_repeat"]["matched_deviation"] < 2 * 0.075
    assert still["near_repeat"]["matched_deviation"] == pytest.approx(
        1 - still["near_repeat"]["ratio"], abs=0.1)
    table = {c.name: c for c in checks}
    assert table["near_repeat_median"].value == still["near_repeat"]["matched_deviation"]
    assert still["particles_per_frame"]["ratio"] == 1.0  # the count is blind to it
    # looser than observed is flagged too
    _, checks = particle_fidelity(real, _jittered(400, 1.0, seed=1), (64, 64))
    assert "near_repeat_median" in flagged(checks)


def test_near_repeat_is_not_checked_when_particles_never_keep_their_places():
    rng = np.random.default_rng(0)
    one = Centres(np.arange(60), rng.uniform(4, 60, (60, 2)), np.full(60, 17), 60)
    still = _jittered(60, 0.05, seed=3, n_free=0)  # a generator with pinned particles
    s, checks = particle_fidelity(one, still, (64, 64))
    assert s["near_repeat"]["n_real"] < 20 and "not checked" in s["near_repeat"]["note"]
    assert s["near_repeat"]["n_generated"] > 20 and "ratio" not in s["near_repeat"]
    assert "near_repeat_median" not in {c.name for c in checks}
    with pytest.raises(ConfigError, match="r_max"):
        near_repeat_distances(one, 0.0)
    with pytest.raises(ConfigError, match="n_pairs"):
        near_repeat_distances(one, 2.0, n_pairs=0)
    assert near_repeat_distances(one.subset(np.array([0])), 2.0).size == 0  # one frame
    empty = Centres(np.zeros(0, int), np.zeros((0, 2)), np.zeros(0, int), 10)
    s, checks = near_repeat_fidelity(empty, one)
    assert checks == [] and "no observed particle" in s["note"]


def test_subpixel_locking_sees_centroids_piled_on_the_pixel_grid():
    """A nearest-upsampling generator piles centroids on its coarse grid (issue 11, session
    13): counts, densities and near-repeat distances stay put; the circular W1 of the
    centroids' fractional parts and the locked share see it."""
    real = _jittered(400, 0.4, seed=0)
    fresh = _jittered(400, 0.4, seed=1)
    rng = np.random.default_rng(2)
    snap = rng.random(fresh.rc.shape) < 0.3  # 30 % of the coordinates on a pixel centre
    locked = Centres(fresh.frame, np.where(snap, np.round(fresh.rc), fresh.rc), fresh.area,
                     fresh.n_frames)
    sub, checks = subpixel_fidelity(real, fresh)
    assert [c.name for c in checks] == ["subpixel_w1"]
    assert flagged(checks) == [] and sub["w1_px"] < 2 * sub["real_vs_real_px"]
    assert 0.08 < sub["real_locked_share"] < 0.12 and 0.08 < sub["generated_locked_share"] < 0.12
    sub, checks = subpixel_fidelity(real, locked)
    assert flagged(checks) == ["subpixel_w1"]
    assert sub["generated_locked_share"] == pytest.approx(0.3 + 0.7 * 0.1, abs=0.02)
    s, _ = particle_fidelity(real, locked, (64, 64))
    assert s["particles_per_frame"]["ratio"] == 1.0  # the count is blind to it
    assert 0.9 < s["near_repeat"]["ratio"] < 1.1  # and so is the near-repeat distance
    assert sub["baseline_splits"] == 5 and sub["w1_px"] > 5 * sub["real_vs_real_px"]
    # identical sets: zero; too few centroids: reported, not checked
    same = subpixel_fidelity(real, real)[0]
    assert same["w1_all_frames_px"] == 0.0 and same["w1_px"] < same["real_vs_real_px"]
    few = real.subset(np.arange(3))
    s, checks = subpixel_fidelity(few, real)
    assert "not checked" in s["note"] and checks == []
    assert circular_w1([0.99], [0.01]) == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="non-empty"):
        circular_w1([], [0.5])


def _blob_frames(n: int, seed: int, snap: bool) -> np.ndarray:
    """n frames [n, 48, 48] of 6 dark Gaussian particles (σ 1.5 px) at random sub-pixel
    places, or (``snap``) at places on a half-pixel grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    out = np.ones((n, 48, 48))
    for i in range(n):
        for _ in range(6):
            r, c = rng.uniform(8, 40, 2)
            if snap:
                r, c = np.round(2 * r) / 2, np.round(2 * c) / 2
            out[i] -= 0.8 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5 ** 2))
    return out


def test_located_subpixel_locking_uses_trackpy_centroids():
    real = _blob_frames(150, 0, False)
    fresh, fresh_checks = located_subpixel_fidelity(real, _blob_frames(150, 1, False))
    on_grid, checks = located_subpixel_fidelity(real, _blob_frames(150, 1, True)[:, None])
    assert fresh["locator"] == "trackpy" and fresh["n_real"] > 450
    assert fresh["w1_px"] < 2 * fresh["real_vs_real_px"] and flagged(fresh_checks) == []
    assert [c.name for c in fresh_checks] == ["subpixel_w1"]
    assert flagged(checks) == ["subpixel_w1"] and on_grid["w1_px"] > 3 * fresh["w1_px"]
    # both sides located with the settings estimated on the first observed frame with a
    # particle (frames without one are passed over)
    blank_first = np.concatenate([np.ones((2, 48, 48)), real])
    params, i = estimate_locate_params_from(blank_first)
    assert i == 2 and params == estimate_locate_params(real[0])
    assert on_grid["locate_diameter_px"] == params.diameter
    with pytest.raises(AnalysisError, match="no particle"):
        estimate_locate_params_from(np.ones((3, 48, 48)))
    # centroids on the half-pixel grid: fractional parts near 0 and 0.5 only
    assert on_grid["generated_locked_share"] > 0.3
    assert fresh["generated_locked_share"] < 0.15
    empty, checks = located_subpixel_fidelity(np.ones((4, 48, 48)), real)
    assert "no particle" in empty["note"] and checks == []


def test_matched_halves_put_a_perfect_generator_at_its_baseline():
    """Sampling noise of a distance shrinks with the sample sizes: all 1000 generated against
    all 1000 observed values sit well below two halves of 500 (the pre-session-16 protocol,
    ratio about 1/sqrt(2)); a generated subset as large as a half puts fresh draws of the same
    distribution at the baseline level, and a shifted one far above it."""
    from matdyn.analysis.baselines import matched_distance, matched_subsets
    from matdyn.analysis.fidelity import wasserstein_1d

    old, new = [], []
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)  # 60 draws: 0.99 +- 0.02 (old protocol 0.67)
        real, gen = rng.standard_normal(1000), rng.standard_normal(1000)
        splits = halvings(1000, 20, seed)
        d = matched_distance(wasserstein_1d, [(real[a], real[b], gen[g]) for (a, b), g in
                                              zip(splits, matched_subsets(1000, splits, seed))])
        assert d["baseline_splits"] == 20 and d["generated_vs_real_sd"] > 0
        new.append(d["generated_vs_real"] / d["real_vs_real"])
        old.append(wasserstein_1d(real, gen) / d["real_vs_real"])
    assert 0.85 < np.mean(new) < 1.15
    assert np.mean(old) < 0.85
    rng = np.random.default_rng(9)
    real, gen = rng.standard_normal(1000), rng.standard_normal(1000) + 0.3
    splits = halvings(1000, 20, 9)
    d = matched_distance(wasserstein_1d, [(real[a], real[b], gen[g]) for (a, b), g in
                                          zip(splits, matched_subsets(1000, splits, 9))])
    assert d["generated_vs_real"] > 3 * d["real_vs_real"]


def test_matched_subsets_are_as_large_as_a_half_and_seeded():
    from matdyn.analysis.baselines import matched_subsets

    splits = halvings(101, 3, 0)
    a = matched_subsets(400, splits, seed=4)
    assert [len(x) for x in a] == [50, 50, 50] and all(len(np.unique(x)) == 50 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, matched_subsets(400, splits, seed=4)))
    assert not np.array_equal(a[0], matched_subsets(400, splits, seed=5)[0])
    assert [len(x) for x in matched_subsets(20, splits)] == [20, 20, 20]  # fewer generated: all
    with pytest.raises(AnalysisError):
        matched_subsets(0, splits)



def test_np_analysis_reports_the_training_summarys_atypical_share(np64):
    """The NP analysis's fidelity section carries the same atypical share as train.py's
    summary (same segmentation, halvings and region map), flags the faded band, and its
    region map is the store's at the working geometry."""
    from types import SimpleNamespace

    from matdyn.analysis.cases.np_diffusion.steps import atypical

    frames, rm = np64
    real, gen = frames[:400], frames[400:].copy()
    band = rm == 1
    for img in gen[:, 0]:
        bg = np.median(img)
        img[band] = bg + 0.4 * (img[band] - bg)
    ctx = SimpleNamespace(store=SimpleNamespace(truth={"region_map": rm}), resolution=64,
                          fit="crop")
    at = atypical(ctx, real, gen, seed=0)
    s, checks = _fid(real, gen, rm)
    assert at["generated"] == s["atypical"]["generated"]
    assert at["regions"] == s["atypical"]["regions"]
    assert "region_atypical.free" in at["flagged"] and "region_atypical.confined" not in at["flagged"]
    # no planted truth: overall share only, no regions
    ctx.store.truth = {}
    plain = atypical(ctx, real, frames[400:], seed=0)
    assert "regions" not in plain and plain["flagged"] == []
    assert plain["real_vs_real"] == s["atypical"]["real_vs_real"]


def _pair_frames(n: int, seed: int, kind: str) -> np.ndarray:
    """[n, 1, 64, 64] frames of 6 dark Gaussian particles (σ 1.5 px) on a 16 px grid; with
    ``kind`` "touching" one of them gets a partner 6 px away (two crisp particles in contact),
    with "smear" one is drawn as a 7 px streak (one broad, single-peaked particle), with
    "dumbbell" as two dark ends joined by a bridge almost as dark (two peaks, no dip), with
    "halo" inside a light ring (a quarter of the particle's depth, radius 4.5 px) and with
    "lobe" beside a light spot (a third of its depth, 4.5 px from its centre); with "ghost"
    one is drawn at 0.3 of the depth (a smudge too faint to segment)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    out = np.zeros((n, 1, 64, 64))

    def blob(r: float, c: float) -> np.ndarray:
        return np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5**2))

    for f in range(n):
        cells = rng.choice(9, 6, replace=False)
        img = np.zeros((64, 64))
        for j, cell in enumerate(cells):
            r, c = 12 + 18 * (cell // 3) + rng.uniform(-2, 2), 12 + 18 * (cell % 3) + rng.uniform(-2, 2)
            if j == 0 and kind == "touching":
                img = np.maximum(img, blob(r, c + 3.0)) + blob(r, c - 3.0)
            elif j == 0 and kind == "dumbbell":  # two dark ends joined by a dark bridge
                img = np.maximum(img, blob(r, c - 3.5) + blob(r, c + 3.5)
                                 + 0.6 * sum(blob(r, c + d) for d in (-1.5, 0.0, 1.5)) / 1.6)
            elif j == 0 and kind == "halo":
                rho = np.hypot(yy - r, xx - c)
                img = img + blob(r, c) - 0.25 * np.exp(-((rho - 4.5) ** 2) / (2 * 0.8**2))
            elif j == 0 and kind == "ghost":  # a smudge too faint for the Otsu mask
                img = img + 0.3 * blob(r, c)
            elif j == 0 and kind == "lobe":
                img = img + blob(r, c) - np.exp(-((yy - r) ** 2 + (xx - c - 4.5) ** 2) / 2) / 3
            elif j == 0 and kind == "smear":
                img = np.maximum(img, sum(blob(r, c + d) for d in np.linspace(-3.5, 3.5, 8)) / 3.2)
            else:
                img = img + blob(r, c)
        out[f, 0] = -img + 0.02 * rng.normal(size=(64, 64))
    return out


def test_light_halos_around_particles_are_counted_apart():
    """A light rim around a dark particle (a ring, or a spot on one side) is a *halo*: an image
    artefact no count, ratio or distance sees (session 23: the linear-upsampling generator on
    held-out h). One particle in six with a halo → halo share ≈ 1/6, flagged; fresh draws of
    clean particles → ≈ 0, not flagged; the halos do not make the particles atypical."""
    real = dark_particle_centres(_pair_frames(300, 0, "plain"))
    d_med = float(np.median(real.depth))
    assert real.halo is not None and np.isfinite(real.halo).all()
    assert abs(np.median(real.halo)) < 0.05 * d_med  # a clean particle has no rim
    for kind, seed in (("halo", 1), ("lobe", 3)):
        gen = dark_particle_centres(_pair_frames(300, seed, kind))
        # the rim contrast of the haloed particle: most of the ring's quarter (lobe: third) depth
        first = np.sort(gen.halo)[-300:]
        assert np.median(first) > 0.15 * d_med, kind
        out, checks = particle_fidelity(real, gen, (64, 64), n_splits=3)
        halo = out["atypical"]["halo"]
        assert 0.12 < halo["generated"] < 0.21 and halo["real_vs_real"] < 0.02, (kind, halo)
        assert halo["rim_contrast"]["generated"]["p99"] > 2 * halo["rim_contrast"]["observed"]["p99"]
        names = flagged(checks)
        assert "halo_share" in names and "atypical_share" not in names, (kind, names)
        assert out["atypical"]["generated"] < 0.02
    clean = dark_particle_centres(_pair_frames(300, 2, "plain"))
    out, checks = particle_fidelity(real, clean, (64, 64), n_splits=3)
    assert out["atypical"]["halo"]["generated"] < 0.02 and "halo_share" not in flagged(checks)
    # without halos measured (a locator that gives none) the halo part is left out
    bare = Centres(real.frame, real.rc, real.area, real.n_frames, real.depth, real.peaks,
                   real.saddle)
    out, _ = particle_fidelity(bare, clean, (64, 64), n_splits=3)
    assert "halo" not in out["atypical"]


def test_smudges_too_faint_to_segment_are_counted_as_faint_features():
    """A dip at 0.3 of a particle's depth is missed by the Otsu mask, so no particle measure
    sees it; it is a *faint feature* (session 23: the generators of held-out h drew 4-7x as
    many as observed). One in six particles drawn that faint → ≈ 1/5 faint feature per
    particle, flagged, with its region named; clean fresh draws → ≈ 0, not flagged."""
    real = dark_particle_centres(_pair_frames(300, 0, "plain"))
    assert real.faint is not None and len(real.faint) > 0  # noise maxima, all below the level
    level = 0.2 * np.median(real.depth)
    assert (real.faint.depth >= level).mean() < 0.01
    ghost = dark_particle_centres(_pair_frames(300, 4, "ghost"))
    assert ghost.per_frame == pytest.approx(5, abs=0.05)  # the faint one is not a particle
    strong = ghost.faint.depth >= level
    assert strong.sum() == pytest.approx(300, abs=15)
    one = ghost.subset(np.array([7]))
    assert (one.faint.depth >= level).sum() == ((ghost.faint.frame == 7) & strong).sum()
    rmap = np.zeros((64, 64), np.int64)
    rmap[32:] = 1  # two regions: top and bottom halves
    out, checks = particle_fidelity(real, ghost, (64, 64), n_splits=3, region_map=rmap,
                                    region_names=["top", "bottom"])
    faint = out["atypical"]["faint"]
    assert faint["generated"] == pytest.approx(0.2, abs=0.02) and faint["real_vs_real"] < 0.005
    assert faint["per_frame"]["generated"] == pytest.approx(1.0, abs=0.1)
    assert faint["per_frame"]["observed"] < 0.05
    assert set(faint["regions"]) == {"top", "bottom"}
    names = flagged(checks)
    assert {"faint_share", "region_faint.top", "region_faint.bottom"} <= set(names)
    assert "atypical_share" not in names
    clean = dark_particle_centres(_pair_frames(300, 2, "plain"))
    out, checks = particle_fidelity(real, clean, (64, 64), n_splits=3)
    assert out["atypical"]["faint"]["generated"] < 0.005
    assert not any(n.startswith(("faint", "region_faint")) for n in flagged(checks))


def test_np_analysis_notes_name_flagged_halo_and_faint_shares():
    """The NP analysis turns flagged halo / faint checks into one note each, with the regions
    that flag; shares that do not flag give no note."""
    from types import SimpleNamespace

    from matdyn.analysis.cases.np_diffusion import _share_note

    notes: list[str] = []
    ctx = SimpleNamespace(note=notes.append)
    faint = {"generated": 0.03, "real_vs_real": 0.007,
             "regions": {"free": {"generated": 0.05, "real_vs_real": 0.001},
                         "confined": {"generated": 0.0, "real_vs_real": 0.0}}}
    flags = ["faint_share", "region_faint.free"]
    _share_note(ctx, faint, flags, "faint", "faint smudges", "tail")
    _share_note(ctx, {"generated": 0.01, "real_vs_real": 0.0}, flags, "halo", "halos", "tail")
    assert notes == ["faint smudges: 3.0 % of generated particles vs 0.7 % observed (by planted "
                     "region: free 5.0 % vs 0.1 %); tail"]


def test_touching_particles_are_counted_apart_from_half_formed_ones():
    """Two crisp particles in contact merge into one mask of twice the area: they are counted
    as *touching* (a pair-spacing statistic), not atypical; a single-peaked streak of the same
    size stays atypical (session 22: most of the default NP stand-in's flagged band particles
    were touching pairs)."""
    real = dark_particle_centres(_pair_frames(300, 0, "plain"))
    assert real.peaks is not None and set(real.peaks.tolist()) == {1}
    touching = dark_particle_centres(_pair_frames(300, 1, "touching"))
    big = touching.area > 1.6 * np.median(touching.area)
    assert big.sum() >= 280 and (touching.peaks[big] == 2).mean() > 0.95
    assert touching.subset(np.array([0])).peaks.tolist() == touching.peaks[touching.frame == 0].tolist()
    smear = dark_particle_centres(_pair_frames(300, 2, "smear"))
    big_s = smear.area > 1.6 * np.median(smear.area)
    assert big_s.sum() >= 280 and (smear.peaks[big_s] == 1).mean() > 0.95
    # the saddle: a clear dip between touching particles, next to none along a dumbbell
    assert np.nanpercentile(touching.saddle[big], 95) < 0.75
    dumbbell = dark_particle_centres(_pair_frames(300, 3, "dumbbell"))
    big_d = dumbbell.area > 1.6 * np.median(dumbbell.area)
    assert big_d.sum() >= 280 and (dumbbell.peaks[big_d] == 2).mean() > 0.9
    assert np.nanpercentile(dumbbell.saddle[big_d], 5) > 0.75

    def shares(gen):
        s, checks = particle_fidelity(real, gen, (64, 64))
        return s["atypical"], flagged(checks)

    at, names = shares(touching)
    # pairs merging into more than 2x the median area (about half of them here) are touching;
    # smaller merges count as one particle, as before
    assert at["touching"]["generated"] > 0.06 and at["touching"]["real_vs_real"] == 0.0
    assert at["generated"] < 0.02  # the pairs are not atypical
    assert "touching_share" in names and "atypical_share" not in names
    for gen in (smear, dumbbell):
        at, names = shares(gen)
        assert at["generated"] > 0.12 and at["touching"]["generated"] < 0.02
        assert "atypical_share" in names and "touching_share" not in names


def test_atypical_particle_gallery_shows_each_kind_in_its_row():
    """The figure beside a training summary (evaluate.atypical_particles): generated atypical
    particles in row 1, generated touching groups in row 2, generated particles with a halo in
    row 3, generated faint features in row 4, observed ones of any kind in row 5, each panel titled with area and relative depth; empty rows say so."""
    from matdyn.analysis.evaluate import atypical_particles

    real = _pair_frames(60, 0, "plain")
    gen = np.concatenate([_pair_frames(30, 1, "touching"), _pair_frames(30, 2, "smear"),
                          _pair_frames(30, 3, "halo"), _pair_frames(30, 4, "ghost")])
    fig = atypical_particles(real, gen, n=6, pixel_size=40.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 30
    assert all(t.startswith("gen atypical A") for t in titles[:6])
    assert all(t.startswith("gen touching A") for t in titles[6:12])
    assert all(t.startswith("gen halo A") for t in titles[12:18])
    # faint features: no area, depth about 0.3 of a particle's
    assert all(t.startswith("gen faint d0.") and " A" not in t for t in titles[18:24])
    assert all(0.2 <= float(t.split(" d")[1]) < 0.4 for t in titles[18:24])
    assert titles[24] == "observed: none" and titles[25:] == [""] * 5
    areas = [int(t.split(" A")[1].split()[0]) for t in titles[:12]]
    assert min(areas) > 1.6 * np.median(dark_particle_centres(real).area)  # the big ones
    assert atypical_particles(np.zeros((3, 1, 32, 32)), gen) is None  # nothing observed
