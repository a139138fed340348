"""A tiny end-to-end reproduction (data -> train -> sweep -> analysis) and its report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from matdyn.pipeline import case_steps, merge_overrides
from matdyn.report import ROWS, Row, _traces_skipped, build_report, dig

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "np_diffusion:data:dataset.synthetic.n_frames=24", "np_diffusion:data:dataset.synthetic.size=48",
    "np_diffusion:train:resolution=16", "np_diffusion:train:model.filters=[16,16,8]",
    "np_diffusion:train:+schedule.datasets.np_diffusion.stages=[[4,8,0,48],[8,8,48,48],[16,8,48,96]]",
    "np_diffusion:train:~logger", "np_diffusion:train:eval_frames=24", "np_diffusion:train:num_threads=1",
    "np_diffusion:sweep:n_refs=4", "np_diffusion:sweep:n_samples=4", "np_diffusion:sweep:sampler.gamma=0.5,1.0",
    "np_diffusion:sweep:progress=false", "np_diffusion:sweep:logger.wandb=false",
    "np_diffusion:analyze:analysis.n_refs=4", "np_diffusion:analyze:analysis.n_samples=6",
    "np_diffusion:analyze:analysis.n_fidelity=16", "np_diffusion:analyze:analysis.baseline_frames=16",
    "np_diffusion:analyze:analysis.depth_frames=8", "np_diffusion:analyze:progress=false",
    "np_diffusion:analyze:analysis.min_kept=1",  # a 96-image generator keeps few samples at γ ≤ 1
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    # no --keep-going: any failed step makes reproduce.py exit non-zero, and the test fail
    out = tmp_path_factory.mktemp("repro")
    argv = [sys.executable, "scripts/reproduce.py", "--cases", "np_diffusion", "--out", str(out)
            ] + [f"--extra={e}" for e in TINY]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return out, proc


def _rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| quantity") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_tiny_reproduction_writes_complete_report(tiny_run):
    out, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "report.md").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    # the data size of the preset/extras reached every step: one 24-frame store, never regenerated
    assert (proc.stdout + proc.stderr).count("generating synthetic stand-in") == 1
    assert (out / "np_diffusion" / "train" / "generator.pt").is_file(), proc.stderr[-2000:]
    assert (out / "np_diffusion" / "sweep" / "gamma.json").is_file(), proc.stderr[-2000:]
    md = (out / "report.md").read_text()
    assert "synthetic stand-ins" in md
    rows = _rows(md)
    for row in ROWS["np_diffusion"]:
        assert row.label in rows, row.label
        ours = rows[row.label][2]
        # every value is a number, a yes/no (e.g. the γ rule met) or says why it is missing
        assert re.search(r"\d", ours) or ours in ("yes", "no") or ours.startswith(
            ("not computed:", "not run:")), (row.label, ours)
    numeric = {r.label for r in ROWS["np_diffusion"] if re.search(r"\d", rows[r.label][2])
               and not rows[r.label][2].startswith("not computed")}
    # every step succeeded (exit status 0), so the training, sweep and analysis rows hold numbers
    # (measured 2026-12-01: 9 of 10; the free-mode diffusion area needs more frames than 24)
    assert len(numeric) >= 8, sorted(set(rows) - numeric)
    # (the 16 px tiny generator moves too few particles to cluster: that row may say why not)
    for label in ("NP-area Wasserstein", "γ matching consecutive", "particles per frame, generated"):
        assert any(n.startswith(label) for n in numeric), label
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert not re.search(r'<img src="(?!data:)', page)  # self-contained


@pytest.mark.slow
def test_rerun_skips_finished_steps(tiny_run):
    out, _ = tiny_run
    argv = [sys.executable, "scripts/reproduce.py", "--cases", "np_diffusion", "--out", str(out),
            "--dry-run"] + [f"--extra={e}" for e in TINY]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("up to date, skipped") == 4, proc.stdout


def test_failed_step_is_explained_in_report(tmp_path):
    (tmp_path / "np_diffusion" / "analysis").mkdir(parents=True)
    (tmp_path / "np_diffusion" / "analysis" / ".matdyn-step-failed.json").write_text(
        '{"reason": "step \'np_diffusion/analyze\' failed (exit status 2: error: all samples rejected)"}')
    md, _ = build_report(tmp_path, ["np_diffusion"])
    text = md.read_text()
    assert "not computed: step 'np_diffusion/analyze' failed" in text
    assert "all samples rejected" in text


def test_row_and_override_helpers():
    assert dig({"a": {"b": 2}}, "a.b") == 2
    assert str(dig({"a": {}}, "a.b")).startswith("not computed: `a.b` absent")
    assert str(dig({}, "train.x")).startswith("not computed: no train output")
    assert Row("x", "1", "=yes").cells({}) == ["x", "1", "yes", "—"]
    assert merge_overrides(["n=1", "m=2", "n=3", "+s.t=[1]"]) == ["m=2", "n=3", "+s.t=[1]"]
    steps = case_steps("np_diffusion", "quick", Path("/tmp/x"), extra={"sweep": ["n_refs=2"]})
    sweep = [s for s in steps if s.name.endswith("sweep")][0]
    assert "n_refs=2" in sweep.argv and "+experiment=np_diffusion_quick" in sweep.argv
    assert "n_refs=2" not in steps[1].argv
    # the key changes with the command and with upstream steps
    other = case_steps("np_diffusion", "quick", Path("/tmp/x"), extra={"train": ["seed=1"]})
    assert other[0].key == steps[0].key and other[1].key != steps[1].key and other[3].key != steps[3].key


def test_trace_rows_say_the_protocol_was_off_not_absent():
    """With the particle descriptors (the NP default), the paper's trace rows explain that
    the trace protocol did not run instead of naming an absent key."""
    rows = [r for r in ROWS["np_diffusion"] if r.skipped is _traces_skipped]
    assert len(rows) == 3
    off = {"analysis": {"config": {"descriptors": "particles"}, "recovery": {}}}
    for r in rows:
        cell = r.cells(off)[2]
        assert cell.startswith("not run:") and "descriptors=both" in cell
    on = {"analysis": {"config": {"descriptors": "both"},
                       "recovery": {"traces": {"anisotropy_auc_confined": 0.8}}}}
    auc = [r for r in rows if r.label.startswith("AUC")][0]
    assert auc.cells(on)[2] == "0.8"


def test_clump_composition_row_names_the_store_channels():
    """The per-channel mass-fraction row takes its channel names from the training summary
    (the store's), not from the stand-in."""
    row = [r for r in ROWS["brass_clump"] if r.label.startswith("mass-fraction W1")][0]
    per = {"Fe": {"w1": {"generated_vs_real": 0.0312, "real_vs_real": 0.014}},
           "O": {"w1": {"generated_vs_real": 0.02, "real_vs_real": 0.0061}}}
    cells = row.cells({"train": {"composition": {"mass_fraction": per}}})
    assert cells[2:] == ["Fe 0.031 / O 0.020", "Fe 0.014 / O 0.006"]
    assert row.cells({"train": {"composition": {"error": "too few frames"}}})[2] == \
        "not computed: too few frames"


def test_step_key_follows_resolved_config(monkeypatch):
    """A changed default in conf/ (not on the command line) changes the key of the steps that
    read it, and only those."""
    from matdyn import pipeline

    base = case_steps("np_diffusion", "quick", Path("/tmp/x"))
    keys = [s.key for s in base]
    real = pipeline.resolved_config_text

    def patched(name: str, argv: list[str]) -> str:
        text = real(name, argv)
        return text + "changed: 1\n" if name == "analyze" else text

    monkeypatch.setattr(pipeline, "resolved_config_text", patched)
    again = case_steps("np_diffusion", "quick", Path("/tmp/x"))
    assert [s.key for s in again][:3] == keys[:3] and again[3].key != keys[3]
    assert pipeline._is_sweep("sampler.gamma=0.5,1.0") and not pipeline._is_sweep("f=[1,2]")


def test_a_finished_step_with_other_inputs_is_moved_aside_not_resumed(tmp_path):
    """A step whose folder holds a finished run of another command is rerun in a clean folder:
    the old run moves to <dir>.old-<time> (nothing deleted), and no stale checkpoint or job
    folder is resumed (the demo's sweep refused its own folder after an upstream change)."""
    from matdyn.pipeline import Step, run_steps

    out = tmp_path / "train"

    def step(value: str) -> Step:
        code = (f"import pathlib; d = pathlib.Path({str(out)!r}); d.mkdir(exist_ok=True); "
                f"(d / 'result.txt').write_text({value!r})")
        return Step("train", [sys.executable, "-c", code], out, [out / "result.txt"],
                    resume_argv=[sys.executable, "-c", "raise SystemExit(3)"],
                    can_resume=lambda: (out / "last.ckpt").exists(), archive_stale=True)

    assert [r.status for r in run_steps([step("one")])] == ["ran"]
    (out / "last.ckpt").write_text("a checkpoint of the first run")
    assert [r.status for r in run_steps([step("one")])] == ["skipped"]
    res = run_steps([step("two")])  # other inputs: moved aside, rerun from scratch (no resume)
    assert [r.status for r in res] == ["ran"] and (out / "result.txt").read_text() == "two"
    old = [p for p in tmp_path.iterdir() if p.name.startswith("train.old-")]
    assert len(old) == 1 and (old[0] / "result.txt").read_text() == "one"
    assert (old[0] / "last.ckpt").is_file() and not (out / "last.ckpt").exists()


def test_ray_rows_say_why_they_are_empty_and_read_the_rays():
    rows = [r for r in ROWS["np_diffusion"] if "rays" in r.label]
    assert len(rows) == 2
    off = {"analysis": {"config": {"ray_samples": 0}}}
    assert all(r.cells(off)[2].startswith("not run: particles not followed") for r in rows)
    ran = {"analysis": {"config": {"ray_samples": 16},
                        "mc_vs_tracking": {"D_rays_over_tracking": 1.5, "mc_rays_msd_exponent": 0.84,
                                           "rays_motion": "diffusive", "tracking_alpha": 0.94},
                        "particles": {"ensemble": {"rays": {"lost_fraction": 0.06}}}}}
    assert [r.cells(ran)[2] for r in rows] == ["1.50; 6%", "0.84 (diffusive) vs 0.94"]
    missing = {"analysis": {"config": {"ray_samples": 16}, "mc_vs_tracking": {}}}
    assert all(r.cells(missing)[2].startswith("not computed: `analysis.mc_vs_tracking")
               for r in rows)
