"""The training summary (matdyn.analysis.evaluate): content measures and flags, and 2-channel
2D frames (the authors' NP frames are [128, 128, 2]) trained and evaluated end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from matdyn.analysis.evaluate import evaluate_bundle, fidelity_summary
from matdyn.data.store import StoreWriter
from matdyn.data.synthetic.np_diffusion import MODE_NAMES, region_labels, simulate
from matdyn.errors import AnalysisError
from matdyn.io import write_json_atomic

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def np64():
    d = simulate(n_frames=400, size=64, seed=0)
    return d.frames, d.truth["region_map"]


def test_summary_copy_has_no_flags_and_dropped_lanes_are_flagged(np64):
    frames, rm = np64
    kw = dict(channel_names=["phase"], pixel_size=90.0, unit="nm", particles=True,
              region_map=rm, region_names=MODE_NAMES)
    perm = np.random.default_rng(0).permutation(400)
    real = frames[perm[:200]]
    s = fidelity_summary(frames[perm[200:]], real, **kw)
    assert s["flags"] == [], s["checks"]
    assert set(s["particles"]["regions"]) == set(MODE_NAMES)
    assert {"swd", "intensity_w1.phase", "particle_area_w1", "region_ratio.directed",
            "centre_density_emd", "subpixel_w1"} <= set(s["checks"])
    assert s["particles"]["subpixel"]["locator"] == "trackpy"  # the MC's locator, once
    erased = frames[perm[200:]].copy()
    for img in erased[:, 0]:
        img[rm == 0] = np.median(img)
    s = fidelity_summary(erased, real, **kw)
    assert s["particles"]["regions"]["directed"]["ratio"] == 0.0
    assert "region_ratio.directed" in s["flags"] and "region_ratio.confined" not in s["flags"]
    assert s["checks"]["region_ratio.directed"]["value"] == 1.0  # |1 - ratio|


def test_particle_area_baseline_is_averaged_over_halvings(np64):
    from matdyn.analysis.evaluate import _areas
    from matdyn.analysis.fidelity_content import dark_particle_centres

    frames, _ = np64
    real, gen = frames[:200], frames[200:]
    cr, cg = dark_particle_centres(real), dark_particle_centres(gen)
    singles = [_areas(cr, cg, 200, 200, 90.0, "nm", seed=k, n_splits=1)[0]["real_vs_real"]
               for k in range(20)]
    out, checks = _areas(cr, cg, 200, 200, 90.0, "nm", seed=0, n_splits=20)
    assert out["baseline_splits"] == 20 and out["real_vs_real_sd"] > 0
    assert max(singles) > 1.2 * min(singles)  # one halving alone is a noisy baseline
    assert out["real_vs_real"] == pytest.approx(np.mean(singles))
    assert checks[0].baseline == out["real_vs_real"]


def test_swd_and_diversity_baselines_are_averaged_over_halvings(np64):
    """The summary's SWD baseline is the mean SWD between the halves of IMAGE_BASELINE_SPLITS
    random halvings (the first is the one-halving baseline of the same seed), and the
    diversity baseline the mean |1 - r| of their diversity ratios."""
    from matdyn.analysis.evaluate import IMAGE_BASELINE_SPLITS
    from matdyn.analysis.fidelity import sliced_wasserstein
    from matdyn.analysis.fidelity_content import diversity_fidelity, frame_diversity, halvings

    frames, _ = np64
    real, gen = frames[:120], frames[120:240]
    s = fidelity_summary(gen, real, channel_names=["phase"], pixel_size=90.0, unit="nm",
                         particles=False)
    splits = halvings(120, IMAGE_BASELINE_SPLITS, 0)
    singles = [sliced_wasserstein(real[a], real[b], seed=0).mean for a, b in splits]
    assert s["swd"]["baseline_splits"] == IMAGE_BASELINE_SPLITS >= 3
    assert s["swd"]["real_vs_real"] == pytest.approx(np.mean(singles))
    assert s["swd"]["real_vs_real_sd"] == pytest.approx(np.std(singles)) and np.std(singles) > 0
    assert s["checks"]["swd"]["baseline"] == pytest.approx(np.mean(singles))
    devs = [abs(1 - frame_diversity(real[a]) / frame_diversity(real[b])) for a, b in splits]
    div = s["frame_diversity"]
    assert div["baseline_splits"] == len(splits)
    assert div["real_vs_real_ratio"] == pytest.approx(1 + np.mean(devs))
    one, _ = diversity_fidelity(real, gen, splits[:1])  # one halving
    assert one["baseline_splits"] == 1 and one["real_vs_real_ratio"] == pytest.approx(1 + devs[0])


def test_summary_of_volumes_reports_composition_and_stage_mix():
    rng = np.random.default_rng(0)
    stages = np.repeat([0, 7], 20)
    real = rng.random((40, 3, 16, 16, 16)).astype(np.float32)
    real[stages == 7, 2] *= 3.0  # later stage: more of the third species
    s = fidelity_summary(real[stages == 0], real, channel_names=["Cu", "Cu2S", "CuS"],
                         pixel_size=0.65, unit="um", stages=stages)
    assert s["composition"]["stage_mix"]["generated_share"] == [1.0, 0.0]
    assert "stage_mix" in s["flags"] and "particles" not in s


def _two_channel_store(path: Path) -> Path:
    d = simulate(n_frames=48, size=64, seed=0)
    phase = d.frames[:, 0]
    frames = np.stack([phase, 1.0 + 0.5 * phase], axis=1).astype(np.float32)  # phase, amplitude
    with StoreWriter(path, spatial_shape=(64, 64), channel_names=["phase", "amplitude"],
                     pixel_size=40.58 * 142 / 64, unit="nm", frame_interval=0.05, time_unit="s",
                     source="test", name="np2") as w:
        w.append(frames)
        w.set_truth("region_map", d.truth["region_map"])
        w.truth_attrs = {"mode_names": list(MODE_NAMES)}
    return path


def test_two_channel_2d_frames_train_and_evaluate_end_to_end(tmp_path):
    from matdyn.training.app import run_training

    store = _two_channel_store(tmp_path / "np2.zarr")
    overrides = [
        "model=pggan2d", f"dataset.path={store}", "dataset.source=store", "dataset.name=np2",
        "dataset.ndim=2", "dataset.channels=2", "dataset.channel_names=[phase,amplitude]",
        "dataset.pixel_size=null",
        "schedule=quick", "+schedule.datasets.np2.stages=[[4,8,0,16],[8,8,16,16],[16,8,16,16]]",
        "model.filters=[16,16,8]", "~logger", "trainer.enable_progress_bar=false", "resolution=16",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    bundle = run_training(cfg, tmp_path / "run", cuda=False)
    s = evaluate_bundle(bundle, store, n=32, seed=0, fit="crop", particles=True,
                        figure=tmp_path / "ovg")
    assert s["figure"] == str(tmp_path / "ovg.png") and (tmp_path / "ovg.svg").is_file()
    # particle data: the gallery of atypical / touching particles beside it
    assert s["atypical_figure"] == str(tmp_path / "atypical_particles.png")
    assert (tmp_path / "atypical_particles.svg").is_file()
    assert 0 < s["frame_diversity"]["ratio"] and "frame_diversity" in s["checks"]
    assert s["resolution"] == 16 and s["pixel_size"] == pytest.approx(40.58 * 142 / 16)
    assert set(s["intensity_w1"]) == {"phase", "amplitude"}
    assert s["particles"]["channel"] == "phase"  # particles are found in channel 0
    assert set(s["particles"]["regions"]) <= set(MODE_NAMES)
    assert isinstance(s["flags"], list) and all(k in s["checks"] for k in s["flags"])
    write_json_atomic(tmp_path / "summary.json", s)
    assert json.loads((tmp_path / "summary.json").read_text())["n_real"] == 32
    # the NP case analysis wants one phase channel: it refuses with one line
    from matdyn.analysis.case import run_case
    from matdyn.analysis.cases.np_diffusion import Config
    from matdyn.data.store import open_store
    from matdyn.training.bundle import load_generator

    with pytest.raises(AnalysisError, match="1-channel") as err:
        run_case("np_diffusion", load_generator(bundle), open_store(store), Config(), gamma=1.0,
                 out_dir=tmp_path / "a")
    assert "\n" not in str(err.value)


def test_region_labels_follow_the_frames_geometry():
    m = np.full((10, 20), -1, np.int8)
    m[:, 5:15] = 2  # the central square of a wide frame is all traps
    assert (region_labels(m, 5, "crop") == 2).all()
    assert (region_labels(m, 10, "pad")[:2] == -1).all()  # padding rows hold no region


def test_chart_slit_widths_of_observed_frames_match_the_truth_within_a_pixel(tmp_path):
    from matdyn.analysis.evaluate_chart import chart_slit_summary
    from matdyn.analysis.fidelity_content import flagged
    from matdyn.data.frames import ObservedFrames
    from matdyn.data.store import open_store
    from matdyn.data.synthetic.ta_chart import generate

    store = open_store(generate(tmp_path / "c.zarr", n_frames=12, n_augment=1, progress=False))
    idx = np.arange(len(store))
    obs = ObservedFrames(store, idx, 64, "crop")
    x = obs.load()
    assert obs.pixel_size == pytest.approx(20.72 * 178 / 64)
    s, checks = chart_slit_summary(store, x[::-1].copy(), x, idx, 64, "crop", obs.pixel_size)
    for k, truth in (("d1", 309.0), ("d2", 324.0)):
        assert s[k]["truth"] == truth and s[k]["generated"]["n"] == len(idx)  # every frame measured
        assert abs(s[k]["generated_minus_truth_px"]) < 0.5 and s[k]["within_1px_of_truth"]
    assert flagged(checks) == []
    blank = np.zeros_like(x[:4])  # a generator that draws no chart: no slit found
    s, checks = chart_slit_summary(store, blank, x, idx, 64, "crop", obs.pixel_size)
    assert s["d1"]["generated"]["n"] == 0 and checks == []


def test_every_study_layout_plants_all_three_modes():
    """The held-out layouts of scripts/study_profile.py are valid stand-in settings, and each
    has lanes, a band and traps in its region map (else its per-region ratios mean nothing)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "study_profile.py"
    spec = importlib.util.spec_from_file_location("study_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {"default", "heldout_a", "heldout_b", "heldout_c", "heldout_d", "heldout_e",
            "heldout_h"} <= set(mod.LAYOUTS)
    seeds = set()
    for name, layout in mod.LAYOUTS.items():
        d = simulate(**{**layout, "n_frames": 2})
        labels = set(np.unique(d.truth["region_map"]).tolist())
        assert {0, 1, 2} <= labels, name
        seeds.add(layout["seed"])
    assert len(seeds) == len(mod.LAYOUTS)  # every layout its own random draw


def test_study_profile_table_from_summaries():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "study_profile.py"
    spec = importlib.util.spec_from_file_location("study_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_settings(["lr=model.optimizer.lr=0.0005 model.n_critic=2"]) == \
        {"lr": ["model.optimizer.lr=0.0005", "model.n_critic=2"]}
    with pytest.raises(Exception, match="NAME=override"):
        mod.parse_settings(["no-equals-sign"])
    summary = {"particles": {"regions": {"directed": {"ratio": 0.5}, "free": {"ratio": 0.9},
                                         "confined": {"ratio": 1.0}},
                             "particles_per_frame": {"ratio": 0.8}},
               "swd": {"generated_vs_real": 0.3, "real_vs_real": 0.1}, "flags": ["swd"],
               "frame_diversity": {"ratio": 0.45}}
    rows = [mod.row("quick", "default", 1.5, summary), mod.row("w2", "heldout_a", 2.0, None)]
    text = mod.table(rows)
    assert "| quick | default | 1.5 | 0.50 | 0.90 | 1.00 | 0.80 | 0.45 | 3.00 | — | — | swd |" in text
    # the atypical column names the region with the highest generated / observed share (the
    # observed share floored at 2 %: confined 0 / 0 and directed 3.5 / 2.1 % rank below free)
    summary["particles"]["atypical"] = {"regions": {
        "directed": {"generated": 0.035, "real_vs_real": 0.021},
        "free": {"generated": 0.087, "real_vs_real": 0.038},
        "confined": {"generated": 0.0, "real_vs_real": 0.0}},
        "faint": {"per_frame": {"generated": 0.334, "observed": 0.114}}}
    worst = mod.table([mod.row("quick", "heldout_d", 30.0, summary)])
    assert "| 3.00 | 8.7 / 3.8 (free) | 0.33 / 0.11 | swd |" in worst
    assert "| w2 | heldout_a | 2.0 | training or evaluation failed |" in text
