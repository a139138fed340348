"""Experiment presets (conf/experiment/) and the reproduction plan built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from matdyn import pipeline
from matdyn.errors import ConfigError
from matdyn.pipeline import CASES, case_steps, scales

CONF = Path(__file__).resolve().parents[1] / "conf"
STEP_CONFIG = {"data": "make_data", "train": "train", "sweep": "sweep", "analyze": "analyze"}


def _composed(step: pipeline.Step) -> dict:
    """The config an entry point composes for a step's command line (sweep lists left out)."""
    overrides = [a for a in step.argv if "=" in a and not a.startswith(("hydra.", "-"))
                 and not pipeline._is_sweep(a)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(step.config_name, overrides=overrides, return_hydra_config=True)


def test_every_case_has_a_quick_and_a_paper_preset():
    assert scales() == ["paper", "quick"]
    with pytest.raises(ConfigError, match="SCALE must be one of paper, quick"):
        case_steps("np_diffusion", "huge", Path("/tmp/x"))
    with pytest.raises(ConfigError, match="unknown case"):
        case_steps("nope", "quick", Path("/tmp/x"))
    with pytest.raises(ConfigError, match="unknown step 'trian'"):
        case_steps("np_diffusion", "quick", Path("/tmp/x"), extra={"trian": ["seed=1"]})


# the data sizes of the quick presets (the old pipeline.SCALES); paper = the configs' defaults
QUICK_DATA = {"ta_chart": ("n_frames", 300), "np_diffusion": ("n_frames", 2000),
              "brass_clump": ("n_particles", 300)}
PAPER_DATA = {"ta_chart": ("n_frames", 1755), "np_diffusion": ("n_frames", 2000),
              "brass_clump": ("n_particles", 1239)}


@pytest.mark.parametrize("scale", ["quick", "paper"])
def test_every_step_reads_the_same_dataset(scale, tmp_path):
    """The quick reproduction used to pass the small data size to the data step only; training
    then found a store "made with other settings" and regenerated it at full size."""
    for case in CASES:
        steps = case_steps(case, scale, tmp_path)
        cfgs = {s.name.split("/")[1]: _composed(s) for s in steps}
        datasets = {name: dict(c.dataset) for name, c in cfgs.items()}
        assert all(d == datasets["data"] for d in datasets.values()), (case, datasets)
        key, n = (QUICK_DATA if scale == "quick" else PAPER_DATA)[case]
        assert datasets["data"]["synthetic"][key] == n and datasets["data"]["name"] == case
        assert datasets["data"]["path"] == str(tmp_path / case / "data.zarr")
        # each step's own settings come from the preset
        assert cfgs["train"].profile == scale
        gammas = cfgs["sweep"].hydra.sweeper.params["sampler.gamma"].split(",")
        # the preset's sweep (the quick NP sweep starts lower: conf/experiment/np_diffusion_quick.yaml;
        # the clump sweeps at 0.01, where the stand-in's stage-to-stage shape bound is met)
        first = {("quick", "np_diffusion"): "0.05", ("quick", "brass_clump"): "0.01",
                 ("paper", "brass_clump"): "0.01"}.get((scale, case), "0.25")
        assert len(gammas) >= 5 and gammas[0] == first
        assert [float(g) for g in gammas] == sorted(float(g) for g in gammas)
        assert cfgs["analyze"].hydra.runtime.choices.analysis == case
    paper = _composed(case_steps("brass_clump", "paper", tmp_path)[3])
    assert (paper.analysis.n_refs, paper.analysis.n_samples) == (3000, 400)  # §3.4.2


def test_dataset_extras_reach_every_step(tmp_path):
    steps = case_steps("np_diffusion", "quick", tmp_path,
                       extra={"data": ["dataset.synthetic.n_frames=24"], "train": ["seed=3"]})
    sizes = [_composed(s).dataset.synthetic.n_frames for s in steps]
    assert sizes == [24, 24, 24, 24]
    assert "seed=3" in steps[1].argv and "seed=3" not in steps[2].argv


def test_own_store_takes_its_metadata(tmp_path):
    steps = case_steps("np_diffusion", "quick", tmp_path, store="/data/mine.zarr")
    ds = _composed(steps[1]).dataset
    assert (ds.source, ds.path, ds.pixel_size, ds.unit) == ("store", "/data/mine.zarr", None, None)
    assert steps[0].outputs == [Path("/data/mine.zarr")]


def test_preset_keys_count_only_for_the_steps_that_read_them(monkeypatch, tmp_path):
    """A sweep setting changed in a preset reruns the sweep and analysis, not data and training;
    a changed data size reruns everything."""
    keys = [s.key for s in case_steps("ta_chart", "quick", tmp_path)]
    real = pipeline._compose

    def patched(name, overrides, hydra=False):
        cfg = real(name, overrides, hydra)
        if any(o == "+experiment=ta_chart_quick" for o in overrides):
            cfg.n_refs = 7  # as if the preset's sweep n_refs had been edited
        return cfg

    monkeypatch.setattr(pipeline, "_compose", patched)
    pipeline._CONFIG_CACHE.clear()
    again = [s.key for s in case_steps("ta_chart", "quick", tmp_path)]
    assert again[:2] == keys[:2] and again[2] != keys[2] and again[3] != keys[3]
    pipeline._CONFIG_CACHE.clear()
    monkeypatch.setattr(pipeline, "_compose", real)
    bigger = case_steps("ta_chart", "quick", tmp_path,
                        extra={"data": ["dataset.synthetic.n_frames=301"]})
    assert all(b.key != k for b, k in zip(bigger, keys, strict=True))


def test_a_steps_error_line_is_quoted_once_the_driver_fails():
    """The step's own ``error:`` line goes out as ``[step] error: ...`` (the driver's one
    ``error:`` line quotes it); everything else passes through unchanged, even split lines."""
    import io

    from matdyn.pipeline import _QuoteErrors

    def run(*chunks: bytes) -> bytes:
        out = io.BytesIO()
        q = _QuoteErrors(out)
        for c in chunks:
            q.write(c)
        q.close()
        return out.getvalue()

    assert run(b"abc\nerror: x\nok 10%\r20%\r", b"done\n") == b"abc\n[step] error: x\nok 10%\r20%\rdone\n"
    assert run(b"err", b"or: split", b" line\nerr", b"x\n") == b"[step] error: split line\nerrx\n"
    assert run(b"no error: here\n", b"error: tail") == b"no error: here\n[step] error: tail"


def test_expected_duration_counts_only_the_steps_that_will_run(monkeypatch, tmp_path):
    """`reproduce.py` announces the measured minutes of the steps it will run: a fresh step
    does not count (unless --force), a step without a measurement is named."""
    presets = tmp_path / "experiment"
    presets.mkdir()
    (presets / "np_diffusion_quick.yaml").write_text(
        "expected_minutes: {data: 1.5, train: 10, sweep: 2}\n")
    monkeypatch.setattr(pipeline, "EXPERIMENTS", presets)
    expected = pipeline.expected_seconds("np_diffusion", "quick")
    assert expected == {"np_diffusion/data": 90.0, "np_diffusion/train": 600.0,
                        "np_diffusion/sweep": 120.0}
    steps = case_steps("np_diffusion", "quick", tmp_path / "out")
    data = steps[0]
    data.outputs[0].mkdir(parents=True)
    data.workdir.mkdir(parents=True)
    pipeline._write_marker(data, 1.0)  # the data step is done and up to date
    assert data.is_fresh()
    seconds, unknown = pipeline.expected_duration(steps, expected)
    assert seconds == 720.0 and unknown == ["np_diffusion/analyze"]
    seconds, _ = pipeline.expected_duration(steps, expected, force=True)
    assert seconds == 810.0


def test_expected_training_minutes_follow_the_training_precision(monkeypatch, tmp_path):
    """A preset whose training time depends on bf16 (trainer.precision=auto) lists minutes per
    resolved precision; the table is read at the precision that will train on this CPU."""
    presets = tmp_path / "experiment"
    presets.mkdir()
    (presets / "np_diffusion_quick.yaml").write_text(
        "expected_minutes: {data: 1, train: {bf16-mixed: 10, 32-true: 30}}\n"
        "trainer: {precision: auto}\n")
    monkeypatch.setattr(pipeline, "EXPERIMENTS", presets)
    assert pipeline.expected_seconds("np_diffusion", "quick", "bf16-mixed") == {
        "np_diffusion/data": 60.0, "np_diffusion/train": 600.0}
    assert pipeline.expected_seconds("np_diffusion", "quick", "32-true")["np_diffusion/train"] == 1800.0
    # a precision the table does not measure: the step has no expected duration
    assert "np_diffusion/train" not in pipeline.expected_seconds("np_diffusion", "quick", "16-mixed")
    import dataclasses

    from matdyn.checks import hardware

    caps = hardware.capabilities()
    for native, minutes in ((True, 600.0), (False, 1800.0)):  # auto resolves on this CPU
        monkeypatch.setattr(hardware, "capabilities",
                            lambda n=native: dataclasses.replace(caps, bf16_cpu=n))
        assert pipeline.expected_seconds("np_diffusion", "quick")["np_diffusion/train"] == minutes


def test_the_demo_preset_has_a_measured_duration():
    """`make demo` prints its expected duration (issue 11): every step of np_diffusion_quick
    carries one."""
    expected = pipeline.expected_seconds("np_diffusion", "quick")
    assert set(expected) == {f"np_diffusion/{s}" for s in pipeline.STEPS}
    assert all(v > 0 for v in expected.values())
