"""γ sweep: the γ choice rules, real-frame ordering, inversion mapping, and the Hydra
entry points end to end (two-γ multirun + aggregation callback, aggregate script,
unfinished jobs, re-running missing / earlier / later γ into an existing sweep, a
gaussian sweep, bad γ, bad bundle) on a tiny generator and a tiny synthetic store."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import matdyn.gamma as sw
from matdyn.data.frames import ObservedFrames, consecutive_sequence
from matdyn.errors import AnalysisError, CheckpointError, ConfigError
from matdyn.gamma import (
    CalibrationSpec,
    RuleSpec,
    gamma_at_acceptance,
    gamma_at_bound,
    gamma_from_angle,
    inversion_calibration,
    metrics_from_spec,
    run_sweep_job,
)
from matdyn.gamma.records import identity_conflicts
from matdyn.io import file_sha256
from matdyn.sampling.samplers import UniformSampler

ROOT = Path(__file__).resolve().parents[1]
GAMMAS = np.arange(0.25, 2.01, 0.25)


# ----------------------------------------------------------------------------- γ choice
def test_bound_rule_interpolates_first_crossing():
    typical = 0.1 * GAMMAS**2  # monotone; 0.15625 at 1.25, 0.225 at 1.5
    c = gamma_at_bound(GAMMAS, typical, 0.2)
    assert c.clipped is None and c.bracket == (1.25, 1.5)
    assert c.gamma == pytest.approx(1.25 + (0.2 - 0.15625) / (0.225 - 0.15625) * 0.25)
    # order of the jobs does not matter; without interpolation: last swept γ under the bound
    perm = np.random.default_rng(0).permutation(GAMMAS.size)
    assert gamma_at_bound(GAMMAS[perm], typical[perm], 0.2).gamma == pytest.approx(c.gamma)
    assert gamma_at_bound(GAMMAS, typical, 0.2, interpolate=False).gamma == 1.25
    assert gamma_at_bound(GAMMAS, 0.1 * GAMMAS, 0.1).gamma == pytest.approx(1.0)  # exact hit


def test_bound_rule_clips_with_a_message():
    lo = gamma_at_bound(GAMMAS, 0.1 * GAMMAS, 0.01)
    assert (lo.gamma, lo.clipped) == (0.25, "low") and "smaller γ" in lo.message
    hi = gamma_at_bound(GAMMAS, 0.1 * GAMMAS, 5.0)
    assert (hi.gamma, hi.clipped) == (2.0, "high") and "larger γ" in hi.message
    with pytest.raises(AnalysisError, match="not finite at γ = \\[0.5\\]"):
        gamma_at_bound([0.25, 0.5], [0.1, np.nan], 0.2)
    with pytest.raises(AnalysisError, match="distinct"):
        gamma_at_bound([0.5, 0.5], [0.1, 0.2], 0.15)


def test_acceptance_rule_largest_gamma_above_target():
    acc = 1.0 - 0.4 * GAMMAS  # 0.5 at γ = 1.25
    assert gamma_at_acceptance(GAMMAS, acc, 0.5).gamma == pytest.approx(1.25)
    assert gamma_at_acceptance(GAMMAS, acc, 0.45).gamma == pytest.approx(1.375)
    assert gamma_at_acceptance(GAMMAS, acc, 0.45, interpolate=False).gamma == 1.25
    # noisy curve: the largest γ that still meets the target wins
    c = gamma_at_acceptance([0.5, 1.0, 1.5, 2.0], [0.9, 0.45, 0.55, 0.3], 0.5)
    assert c.bracket == (1.5, 2.0) and c.gamma == pytest.approx(1.5 + 0.05 / 0.25 * 0.5)
    assert gamma_at_acceptance(GAMMAS, acc, 0.99).clipped == "low"
    assert gamma_at_acceptance(GAMMAS, np.ones_like(GAMMAS), 0.5).clipped == "high"


def test_rule_and_calibration_settings_are_checked():
    assert RuleSpec.from_mapping({"bound_stat": "p95"}).bound_stat == "p95"
    with pytest.raises(ConfigError, match="unknown key"):
        RuleSpec.from_mapping({"bound_sta": "p95"})
    with pytest.raises(ConfigError, match="bound_stat"):
        RuleSpec(bound_stat="p50")
    assert RuleSpec().bound_stat == "median"  # default: robust to outlier frames (issue 12)
    with pytest.raises(ConfigError, match="target"):
        RuleSpec(name="acceptance", target=1.5)
    with pytest.raises(ConfigError, match="calibration.method"):
        CalibrationSpec.from_mapping({"method": "magic"})


def test_metrics_from_spec():
    assert [m.name for m in metrics_from_spec("auto", "ta_chart", 2)] == ["shape_diff"]
    assert [m.name for m in metrics_from_spec(None, "brass_clump", 3)] == ["shape_diff", "density_diff"]
    ms = metrics_from_spec(
        [{"_target_": "matdyn.descriptors.differences.EntropyDifference", "bins": 64}], "x", 2
    )
    assert ms[0].bins == 64
    with pytest.raises(ConfigError, match="_target_"):
        metrics_from_spec([{"bins": 3}], "x", 2)
    with pytest.raises(ConfigError, match="'auto'"):
        metrics_from_spec("entropy", "x", 2)


# ----------------------------------------------------------------------------- real frames
def test_consecutive_sequence_by_labels():
    aug = np.array([0, 1, 1, 0, 1, 1, 0])
    s = consecutive_sequence({"is_augmented": aug}, 7)
    assert s.indices.tolist() == [0, 3, 6] and s.groups is None
    lab = {"particle_id": np.array([2, 1, 2, 1]), "stage_days": np.array([14.0, 3.0, 3.0, 0.0])}
    s = consecutive_sequence(lab, 4)
    assert s.indices.tolist() == [3, 1, 2, 0] and s.groups.tolist() == [1, 1, 2, 2]
    with pytest.raises(AnalysisError, match="at least two"):
        consecutive_sequence({"is_augmented": np.array([0, 1])}, 2)


class _ArrayStore:
    """Store stand-in: load() ranges and zarr-like oindex on a numpy array."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.images = self

    @property
    def oindex(self):
        return self

    def __getitem__(self, idx):
        return self.x[idx]

    def load(self, start=0, stop=None):
        return self.x[start:stop]

    def __len__(self):
        return len(self.x)


def test_observed_frames_sparse_and_dense_reads_agree():
    x = np.random.default_rng(0).random((40, 1, 12, 16)).astype(np.float32)
    src = ObservedFrames(_ArrayStore(x), np.arange(40), 4)
    full = src.load()
    assert full.shape == (40, 1, 4, 4)  # centre crop to 12 x 12, then 3x3 area pooling
    np.testing.assert_allclose(full[0, 0, 0, 0], x[0, 0, :3, 2:5].mean(), rtol=1e-6)
    for idx in ([39, 0], [5, 6, 4], [30, 2, 30]):  # sparse (oindex) and dense paths
        np.testing.assert_array_equal(ObservedFrames(_ArrayStore(x), np.array(idx), 4).load(), full[idx])


# ----------------------------------------------------------------------------- inversion mapping
def test_gamma_from_angle_inverts_atan():
    assert gamma_from_angle(math.atan(1 / math.sqrt(3))) == pytest.approx(1.0)
    assert gamma_from_angle(math.atan(0.4), "gaussian") == pytest.approx(0.4)
    with pytest.raises(AnalysisError):
        gamma_from_angle(2.0)


class _Bundle:
    latent_dim = 32
    stage, fade_alpha = 0, 1.0
    offset = torch.zeros(1, 1, 1, 1)
    scale = torch.ones(1, 1, 1, 1)

    def from_physical(self, x):  # GeneratorBundle's way into [-1, 1] (no transform here)
        return (x - self.offset) / self.scale

    def generator(self, z, stage, alpha):  # pragma: no cover - invert is replaced below
        raise AssertionError


def test_inversion_mapping_recovers_gamma_from_true_latents(monkeypatch):
    """With a perfect inversion (the true latents), pairs z, z + ε with ε ~ U[-γ, γ]^d give
    back γ through the angle; the plain distance reading underestimates it (chord < ‖ε‖)."""
    from matdyn.sampling import inversion

    d, gamma, pairs = 32, 1.0, 200
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(pairs, d, generator=g)
    z1 = z0 + UniformSampler(gamma).sample(pairs, d, g)
    z = torch.stack([z0, z1], 1).reshape(-1, d)  # z0_0, z1_0, z0_1, z1_1, ...
    groups = np.repeat(np.arange(pairs), 2)
    monkeypatch.setattr(
        inversion, "invert",
        lambda *a, **k: inversion.InversionResult(z, torch.zeros(len(z)), torch.zeros(len(z), 1, 1, 1)),
    )
    frames = np.zeros((len(z), 1, 1, 1), np.float32)
    spec = CalibrationSpec(method="inversion", stat="mean")
    out = inversion_calibration(_Bundle(), frames, groups, spec)
    assert out["n_pairs"] == pairs and out["mapping"] == "angular"
    assert out["gamma"] == out["gamma_angular"] == pytest.approx(gamma, rel=0.05)
    assert out["gamma_distance"] < 0.95 * out["gamma_angular"]
    # on the measured sweep curve (angles of γ = 0.5 .. 2 for d = 32) the answer agrees
    angles = [math.atan(gg / math.sqrt(3)) * 1.005 for gg in GAMMAS]
    out2 = inversion_calibration(_Bundle(), frames, groups, spec, gammas=GAMMAS, angular_steps=angles)
    assert out2["gamma_angular"] == pytest.approx(gamma, rel=0.05) and not out2["notes"]
    out3 = inversion_calibration(_Bundle(), frames, groups, CalibrationSpec(mapping="distance", stat="mean"))
    assert out3["gamma"] == out3["gamma_distance"]


# ----------------------------------------------------------------------------- entry points
def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               HYDRA_FULL_ERROR="0")
    env.pop("PYTHONWARNINGS", None)
    return env


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)


def _tiny_bundle(path: Path, channels: int = 1, seed: int = 0) -> Path:
    from matdyn.models import Generator
    from matdyn.training.bundle import save_bundle

    torch.manual_seed(seed)
    g = Generator(latent_dim=8, channels=channels, ndim=2, filters=[16, 16, 8])
    return save_bundle(path, g, stage=2, meta={"name": "np_diffusion"})  # 16 x 16 images


def _job_args(tmp: Path, bundle: Path, *extra: str) -> list[str]:
    return [
        "-m", "dataset=np_diffusion", f"bundle={bundle}",
        "dataset.synthetic.n_frames=8", "dataset.synthetic.size=48", f"dataset.path={tmp / 'np.zarr'}",
        "n_refs=4", "n_samples=4", "progress=false", *extra,
    ]


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished two-γ multirun (basic launcher) with its aggregation."""
    tmp = tmp_path_factory.mktemp("sweep")
    bundle = _tiny_bundle(tmp / "g.pt")
    out = tmp / "multirun"
    proc = _run("sweep_gamma.py", *_job_args(tmp, bundle, "sampler.gamma=0.5,1.0", f"hydra.sweep.dir={out}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, bundle, out, proc


def test_two_gamma_multirun_writes_jobs_and_gamma_json(sweep):
    tmp, bundle, out, proc = sweep
    # job folders are named by value and hold their own records
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["uniform=0.5", "uniform=1.0"]
    job = json.loads((out / "uniform=1.0" / "job.json").read_text())
    assert job["status"] == "done" and job["gamma"] == 1.0
    assert job["sampler"] == {"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": 1.0}
    assert job["bundle_sha256"] == file_sha256(bundle) and job["store"]["path"] == str(tmp / "np.zarr")
    assert job["n_refs"] == 4 and job["metric_names"] == ["entropy_diff", "area_diff"]
    assert job["per_dim_distance_mean"] == pytest.approx(job["per_dim_distance_expected"], rel=0.25)
    assert {"median", "mean", "p95", "typical", "per_reference_median"} <= set(job["metrics"]["area_diff"])
    assert (out / "uniform=1.0" / "variations" / "manifest.json").is_file()  # resumable engine results

    g = json.loads((out / "gamma.json").read_text())
    assert (g["format"], g["version"]) == ("matdyn-gamma", 2)
    assert g["sampler"] == {"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": g["gamma"]}
    assert g["bundle_sha256"] == file_sha256(bundle)
    assert g["store"]["n_frames"] == 8 and g["store"]["spatial_shape"] == [48, 48]
    assert g["rule"] == "bound" and g["calibration"] == "continuity" and g["inversion"] is None
    assert g["metric"] == "entropy_diff" and g["bound_stat"] == "median"
    assert g["bound"] == pytest.approx(g["baseline"]["summary"]["entropy_diff"]["median"])
    assert g["baseline"]["resolution"] == 16 and g["baseline"]["n_pairs"] == 7
    assert [r["gamma"] for r in g["per_gamma"]] == [0.5, 1.0]
    for r in g["per_gamma"]:
        assert set(r["acceptance"]) == {"entropy_diff", "area_diff", "all", "filter"}
    # the chosen γ is where the typical entropy difference meets the bound
    typ = [r["metrics"]["entropy_diff"]["typical"] for r in g["per_gamma"]]
    choice = gamma_at_bound([0.5, 1.0], typ, g["bound"])
    assert g["gamma"] == pytest.approx(choice.gamma)
    assert g["continuity"]["choice_entropy_diff"]["clipped"] == choice.clipped
    # whether the rule was met inside the swept range is recorded, with what to do if not
    assert g["gamma_rule_met"] is (choice.clipped is None)
    assert g["gamma_rule_note"] == choice.message
    assert (out / "continuity.png").stat().st_size > 0 and (out / "continuity.svg").is_file()
    assert "gamma:" in proc.stdout


def test_aggregate_script_with_overrides_and_inversion(sweep, tmp_path):
    _, _, out, _ = sweep
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    (d / "gamma.json").unlink()
    proc = _run("aggregate_sweep.py", f"dir={d}", "rule.bound_stat=p95", "calibration=inversion",
                "calibration.steps=5", "calibration.restarts=1", "calibration.n_frames=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    g = json.loads((d / "gamma.json").read_text())
    assert g["bound_stat"] == "p95" and g["calibration"] == "inversion"
    assert g["bound"] == pytest.approx(g["baseline"]["summary"]["entropy_diff"]["p95"])
    inv = g["inversion"]
    assert inv["n_frames"] == 4 and inv["n_pairs"] == 3 and inv["gamma"] == g["gamma"]
    assert g["sampler"]["gamma"] == inv["gamma"]
    assert {"gamma_angular", "gamma_distance", "per_dim_distance", "angle_deg"} <= set(inv)
    assert "inversion γ" in proc.stdout and "continuity γ" in proc.stdout


def test_aggregate_refuses_an_unfinished_job(sweep, tmp_path):
    _, _, out, _ = sweep
    d = tmp_path / "broken"
    shutil.copytree(out, d)
    (d / "gamma.json").unlink()
    rec = json.loads((d / "uniform=1.0" / "job.json").read_text())
    (d / "uniform=1.0" / "job.json").write_text(json.dumps({**rec, "status": "running"}))
    proc = _run("aggregate_sweep.py", f"dir={d}")
    assert proc.returncode == 2
    err = _errors(proc)
    assert len(err) == 1 and "unfinished job(s) (γ = 1)" in err[0] and "Traceback" not in proc.stderr
    assert not (d / "gamma.json").exists()
    shutil.rmtree(d / "uniform=1.0")  # a lone γ cannot be aggregated
    with pytest.raises(AnalysisError, match="holds jobs for 1 γ value"):
        sw.aggregate_sweep(d)
    with pytest.raises(AnalysisError, match="does not exist"):
        sw.aggregate_sweep(tmp_path / "nowhere")


def _snapshot(sweep_dir: Path) -> dict[str, bytes]:
    """Every job's files (records, Hydra's per-job config, engine results) by relative path."""
    return {str(p.relative_to(sweep_dir)): p.read_bytes() for p in sorted(sweep_dir.glob("*=*/**/*"))
            if p.is_file()}


def test_rerun_missing_earlier_and_later_gamma_into_existing_sweep(sweep, tmp_path):
    """Re-running γ values below, between, above and equal to the swept ones into the same
    directory adds those jobs (or resumes γ = 1.0) and leaves the other jobs untouched."""
    tmp, bundle, out, _ = sweep
    d = tmp_path / "resume"
    shutil.copytree(out, d)
    before, first = _snapshot(d), (d / "multirun.yaml").read_text()
    proc = _run("sweep_gamma.py", *_job_args(tmp, bundle, "sampler.gamma=1.5,0.75,1.0,0.25",
                                             f"hydra.sweep.dir={d}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _snapshot(d)
    # the untouched job keeps every byte (its record, its Hydra config, its results)
    assert {k: v for k, v in after.items() if k.startswith("uniform=0.5/")} == \
        {k: v for k, v in before.items() if k.startswith("uniform=0.5/")}
    old1, new1 = (json.loads(s[k]) for s in (before, after) for k in ["uniform=1.0/job.json"])
    assert new1["metrics"] == old1["metrics"]  # resumed, same numbers
    # every job folder holds a finished record of its own γ
    g = json.loads((d / "gamma.json").read_text())
    names = sorted(p.name for p in d.iterdir() if p.is_dir())
    assert names == ["uniform=0.25", "uniform=0.5", "uniform=0.75", "uniform=1.0", "uniform=1.5"]
    for n in names:
        rec = json.loads((d / n / "job.json").read_text())
        assert rec["status"] == "done" and n == f"uniform={rec['gamma']}"
        assert rec["bundle_sha256"] == old1["bundle_sha256"]
        assert rec["store"]["path"] == str(tmp / "np.zarr") and not identity_conflicts(rec["store"], g["store"])
    assert [r["gamma"] for r in g["per_gamma"]] == [0.25, 0.5, 0.75, 1.0, 1.5]
    assert sorted(j["dir"] for j in g["jobs"]) == names
    # both multiruns stay on record: the first one's multirun.yaml is kept, not overwritten
    assert (d / "multirun.1.yaml").read_text() == first and not (d / "multirun.2.yaml").exists()
    assert "sampler.gamma=0.5,1.0" in first
    assert "sampler.gamma=1.5,0.75,1.0,0.25" in (d / "multirun.yaml").read_text()
    # the same jobs' numbers as in the first sweep
    g0 = json.loads((out / "gamma.json").read_text())
    for r0 in g0["per_gamma"]:
        r = next(r for r in g["per_gamma"] if r["gamma"] == r0["gamma"])
        assert r["metrics"] == r0["metrics"]


def test_rerun_with_another_bundle_or_settings_is_refused(sweep, tmp_path):
    tmp, bundle, out, _ = sweep
    d = tmp_path / "conflict"
    shutil.copytree(out, d)
    before = _snapshot(d)
    other = _tiny_bundle(tmp_path / "other.pt", seed=1)
    proc = _run("sweep_gamma.py", *_job_args(tmp, other, "sampler.gamma=2.0", f"hydra.sweep.dir={d}"))
    err = _errors(proc)
    assert proc.returncode == 2 and len(err) == 1 and "holds jobs of another bundle" in err[0]
    # the same γ with other settings: its folder refuses (library entry, same one-line error)
    ds = json.loads((d / "uniform=1.0" / "job.json").read_text())["dataset_config"]
    with pytest.raises(ConfigError, match=r"uniform=1.0 holds another job \(n_refs 4\);"):
        run_sweep_job(ds, bundle, UniformSampler(1.0), d / "uniform=1.0", sweep_dir=d, n_refs=6,
                      n_samples=4, progress=False)
    after = _snapshot(d)
    assert {k: after[k] for k in before} == before  # no record or result of another job changed
    assert not (d / "uniform=2.0" / "job.json").exists()


def test_gaussian_sweep_feeds_a_gaussian_analysis_sampler(sweep, tmp_path):
    from matdyn.data.store import open_store
    from matdyn.gamma import resolve_sampler, store_identity
    from matdyn.sampling.samplers import GaussianSampler

    tmp, bundle, _, _ = sweep
    d = tmp_path / "gauss"
    proc = _run("sweep_gamma.py", *_job_args(tmp, bundle, "sampler=gaussian", "sampler.sigma=0.3,0.6",
                                             f"hydra.sweep.dir={d}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["gaussian=0.3", "gaussian=0.6"]
    g = json.loads((d / "gamma.json").read_text())
    assert g["sampler"] == {"_target_": "matdyn.sampling.samplers.GaussianSampler", "sigma": g["gamma"]}
    assert g["distribution"] == "gaussian" and [r["gamma"] for r in g["per_gamma"]] == [0.3, 0.6]
    # what the analysis gets: exactly that sampler, checked against its bundle and store
    store = open_store(tmp / "np.zarr", validate=False)
    ident = store_identity({"path": str(tmp / "np.zarr")}, store.meta)
    r = resolve_sampler("auto", d, "np_diffusion", bundle_sha256=file_sha256(bundle), store=ident)
    assert isinstance(r.sampler, GaussianSampler) and r.sampler.sigma == g["gamma"] == r.gamma
    assert r.source == f"sweep:{d / 'gamma.json'}" and r.record["bundle_sha256"] == file_sha256(bundle)
    with pytest.raises(ConfigError, match="swept with matdyn.sampling.samplers.GaussianSampler"):
        resolve_sampler("auto", d, "np_diffusion",
                        {"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": 1.0})
    with pytest.raises(ConfigError, match="another generator bundle"):
        resolve_sampler("auto", d, "np_diffusion", bundle_sha256="0" * 64)
    # and through the analysis entry: the case's run() receives that gaussian sampler
    seen = _analysis_sampler(tmp, bundle, d, tmp_path / "analysis")
    assert isinstance(seen["sampler"], GaussianSampler) and seen["sampler"].sigma == g["gamma"]
    assert seen["gamma"] == g["gamma"] and seen["summary"]["sampler"] == g["sampler"]


def _analysis_sampler(tmp: Path, bundle: Path, sweep_dir: Path, out: Path) -> dict:
    """What ``run_analysis`` hands ``run_case`` (replaced by a probe) for ``sweep=sweep_dir``."""
    import matdyn.analysis.case as case_mod
    from matdyn.analysis.cases.np_diffusion import Config
    from matdyn.analysis.run import run_analysis

    seen: dict = {}

    def probe(case, gen, store, cfg, *, out_dir, gamma, **kw):
        sampler, g, source = case_mod._sampler(gamma, None, case)
        seen.update(gamma=g, sampler=sampler, source=source)
        return {"case": case, "sampler": sw.sampler_spec(sampler)}

    real = case_mod.run_case
    case_mod.run_case = probe
    try:
        ds = {"name": "np_diffusion", "source": "store", "path": str(tmp / "np.zarr"), "channels": 1}
        seen["summary"] = run_analysis(ds, Config(), bundle, out, sweep=sweep_dir, device="cpu",
                                       progress=False)
    finally:
        case_mod.run_case = real
    return seen


def test_nonpositive_gamma_is_a_clear_error(sweep, tmp_path):
    tmp, bundle, _, _ = sweep
    proc = _run("sweep_gamma.py", *_job_args(tmp, bundle, "sampler.gamma=0", f"hydra.sweep.dir={tmp_path}"))
    assert proc.returncode == 2
    assert "error: UniformSampler.gamma must be finite and > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_bundles_are_clear_errors(sweep, tmp_path):
    tmp, _, _, _ = sweep
    ds = {"name": "np_diffusion", "path": str(tmp / "np.zarr"), "ndim": 2, "channels": 1}
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a bundle")
    with pytest.raises(CheckpointError, match="junk.pt"):
        run_sweep_job(ds, junk, UniformSampler(1.0), tmp_path / "job")
    two = _tiny_bundle(tmp_path / "two.pt", channels=2)
    with pytest.raises(CheckpointError, match="2 channel"):
        run_sweep_job(ds, two, UniformSampler(1.0), tmp_path / "job")
    with pytest.raises(CheckpointError, match="not found"):
        run_sweep_job(ds, tmp_path / "none.pt", UniformSampler(1.0), tmp_path / "job")


def test_joblib_launcher(sweep, tmp_path):
    tmp, bundle, out, _ = sweep
    d = tmp_path / "joblib"
    proc = _run("sweep_gamma.py", *_job_args(tmp, bundle, "sampler.gamma=0.5,1.0", f"hydra.sweep.dir={d}",
                                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((out / "gamma.json").read_text())
    b = json.loads((d / "gamma.json").read_text())
    assert b["gamma"] == pytest.approx(a["gamma"])  # same seeds, same jobs: same answer


def test_module_exports():
    assert set(sw.__all__) <= set(dir(sw))


def test_earlier_multirun_yaml_is_kept_in_order(tmp_path):
    from matdyn.gamma.hydra_glue import keep_earlier_multirun

    assert keep_earlier_multirun(tmp_path, "a") is None  # a new sweep directory
    (tmp_path / "multirun.yaml").write_text("a")
    assert keep_earlier_multirun(tmp_path, "a") is None  # the same multirun again: nothing kept
    for old, new, n in (("a", "b", 1), ("b", "c", 2)):
        assert keep_earlier_multirun(tmp_path, new) == tmp_path / f"multirun.{n}.yaml"
        assert not (tmp_path / "multirun.yaml").exists()
        (tmp_path / "multirun.yaml").write_text(new)  # what Hydra's sweeper then writes
        assert (tmp_path / f"multirun.{n}.yaml").read_text() == old


def test_inference_precision_reaches_the_generator(sweep, tmp_path, monkeypatch):
    """`precision=` of sweep_gamma.py / analyze.py goes to load_generator (fp32 default; a bad
    value is the bundle's one-line ConfigError before any job folder is written)."""
    import matdyn.training.bundle as bundle_mod

    tmp, bundle, _, _ = sweep
    ds = {"name": "np_diffusion", "path": str(tmp / "np.zarr"), "ndim": 2, "channels": 1}
    with pytest.raises(ConfigError, match="precision must be one of"):
        run_sweep_job(ds, bundle, UniformSampler(1.0), tmp_path / "job", precision="banana")
    assert not (tmp_path / "job" / "job.json").exists()
    seen = []
    real = bundle_mod.load_generator

    def spy(path, **kw):
        seen.append(kw.get("precision"))
        return real(path, **kw)

    monkeypatch.setattr(bundle_mod, "load_generator", spy)
    s = run_sweep_job(ds, bundle, UniformSampler(1.0), tmp_path / "bf16", n_refs=4, n_samples=4,
                      precision="bf16", progress=False)
    assert seen == ["bf16"] and s["status"] == "done"
