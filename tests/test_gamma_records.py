"""γ package records without running any job: sampler specifications, store identity, job
folders and their discovery, gamma.json reading and the analysis's sampler resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma import build_sampler, resolve_sampler, sampler_spec, scan_jobs
from matdyn.gamma.records import (
    JOB_FORMAT,
    JOB_VERSION,
    check_job_folder,
    check_siblings,
    finished_jobs,
    identity_conflicts,
)
from matdyn.gamma.resolve import PAPER_GAMMA
from matdyn.sampling.samplers import GaussianSampler, UniformSampler

UNI = "matdyn.sampling.samplers.UniformSampler"
GAU = "matdyn.sampling.samplers.GaussianSampler"


def test_sampler_spec_round_trip_and_scale():
    for s in (UniformSampler(0.75), GaussianSampler(0.2)):
        again = build_sampler(sampler_spec(s))
        assert type(again) is type(s) and again.scale == s.scale
    assert sampler_spec(GaussianSampler(0.2)) == {"_target_": GAU, "sigma": 0.2}
    assert build_sampler({"_target_": GAU}, 0.4).sigma == 0.4  # scale argument found by signature
    assert build_sampler({"_target_": UNI, "gamma": 1.0}, 0.5).gamma == 0.5
    with pytest.raises(ConfigError, match="not a PerturbationSampler"):
        build_sampler({"_target_": "matdyn.io.file_sha256"})
    with pytest.raises(ConfigError, match="not a PerturbationSampler"):
        build_sampler({"gamma": 1.0})
    with pytest.raises(ConfigError, match="bad arguments"):
        build_sampler({"_target_": UNI, "gamma": 1.0, "sigma": 2.0})
    with pytest.raises(ConfigError, match="finite and > 0"):
        build_sampler({"_target_": UNI, "gamma": -1.0})


def test_identity_conflicts_compare_common_keys():
    assert identity_conflicts({"path": "/a"}, {"path": "/a", "n_frames": 3}) == []
    assert identity_conflicts({"path": "/a", "spatial_shape": [4, 4]},
                              {"path": "/b", "spatial_shape": (4, 4)}) == ["path"]


def _record(gamma: float, *, status: str = "done", sha: str = "a" * 64, seed: int = 0,
            target: str = UNI, store: str = "/data/np.zarr", n_refs: int = 4) -> dict:
    key = "gamma" if target == UNI else "sigma"
    return {"format": JOB_FORMAT, "version": JOB_VERSION, "status": status, "gamma": gamma,
            "sampler": {"_target_": target, key: gamma}, "seed": seed, "n_refs": n_refs,
            "n_samples": 4, "metric_specs": ["EntropyDifference()"], "bundle": "g.pt",
            "bundle_sha256": sha, "store": {"path": store}}


def _write(root: Path, name: str, rec: dict) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "job.json").write_text(json.dumps(rec))
    return root / name


def test_jobs_are_found_by_their_records_not_their_folder(tmp_path):
    _write(tmp_path, "b", _record(1.0))
    _write(tmp_path, "a", _record(0.5))
    (tmp_path / "7" / ".hydra").mkdir(parents=True)  # a folder without a record is no job
    assert [(j.path.name, j.gamma) for j in finished_jobs(tmp_path)] == [("a", 0.5), ("b", 1.0)]
    _write(tmp_path, "c", _record(0.75, status="running"))
    with pytest.raises(AnalysisError, match=r"1 unfinished job\(s\) \(γ = 0.75\)"):
        finished_jobs(tmp_path)
    _write(tmp_path, "c", _record(0.5))
    with pytest.raises(AnalysisError, match="both hold γ = 0.5 with seed 0"):
        finished_jobs(tmp_path)
    _write(tmp_path, "c", _record(0.5, seed=1))  # same γ, other seed: pooled later
    assert len(finished_jobs(tmp_path)) == 3
    _write(tmp_path, "c", _record(0.5, sha="b" * 64))
    with pytest.raises(AnalysisError, match="different generator bundles"):
        finished_jobs(tmp_path)
    _write(tmp_path, "c", _record(0.5, target=GAU))
    with pytest.raises(AnalysisError, match="different samplers"):
        finished_jobs(tmp_path)


def test_old_job_folders_and_versions_are_refused(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"format": JOB_FORMAT, "version": 1}))
    with pytest.raises(AnalysisError, match="older matdyn"):
        scan_jobs(tmp_path)
    other = tmp_path / "other"
    _write(other, "x", {**_record(1.0), "version": 1})
    with pytest.raises(AnalysisError, match="version 1"):
        scan_jobs(other)


def test_job_folder_and_sibling_checks(tmp_path):
    folder = _write(tmp_path, "uniform=1.0", _record(1.0))
    assert check_job_folder(folder, _record(1.0)) is True  # same job: resume
    assert check_job_folder(tmp_path / "uniform=2.0", _record(2.0)) is False  # new job
    with pytest.raises(ConfigError, match=r"holds another job \(n_refs 4\)"):
        check_job_folder(folder, _record(1.0, n_refs=8))
    with pytest.raises(ConfigError, match="holds another job .bundle g.pt"):
        check_job_folder(folder, _record(1.0, sha="b" * 64))
    with pytest.raises(ConfigError, match="holds another job .store path"):
        check_job_folder(folder, _record(1.0, store="/else.zarr"))
    check_siblings(tmp_path, _record(2.0), tmp_path / "uniform=2.0")
    with pytest.raises(ConfigError, match="holds jobs of another bundle"):
        check_siblings(tmp_path, _record(2.0, sha="b" * 64), tmp_path / "uniform=2.0")
    with pytest.raises(ConfigError, match="holds jobs on another store"):
        check_siblings(tmp_path, _record(2.0, store="/else.zarr"), tmp_path / "uniform=2.0")


def _gamma_json(root: Path, sampler: dict, **extra) -> Path:
    rec = {"format": "matdyn-gamma", "version": 2, "gamma": 0.3, "sampler": sampler,
           "bundle_sha256": "a" * 64, "store": {"path": "/data/np.zarr", "n_frames": 8}, **extra}
    root.mkdir(parents=True, exist_ok=True)
    (root / "gamma.json").write_text(json.dumps(rec))
    return root


def test_resolve_sampler_builds_what_the_sweep_recorded(tmp_path):
    d = _gamma_json(tmp_path / "g", {"_target_": GAU, "sigma": 0.3})
    r = resolve_sampler("auto", d, "np_diffusion")
    assert isinstance(r.sampler, GaussianSampler) and r.sampler.sigma == 0.3 and r.gamma == 0.3
    assert r.source == f"sweep:{d / 'gamma.json'}" and r.spec == {"_target_": GAU, "sigma": 0.3}
    assert resolve_sampler("auto", d / "gamma.json", "x", {"_target_": GAU}).sampler.sigma == 0.3
    ok = resolve_sampler("auto", d, "x", bundle_sha256="a" * 64, store={"path": "/data/np.zarr"})
    assert ok.record["gamma"] == 0.3
    with pytest.raises(ConfigError, match="swept with .*GaussianSampler but the analysis asks"):
        resolve_sampler("auto", d, "x", {"_target_": UNI})
    with pytest.raises(ConfigError, match="another generator bundle"):
        resolve_sampler("auto", d, "x", bundle_sha256="b" * 64)
    with pytest.raises(ConfigError, match=r"another store \(differs in \['n_frames'\]\)"):
        resolve_sampler("auto", d, "x", store={"path": "/data/np.zarr", "n_frames": 9})
    old = _gamma_json(tmp_path / "old", {"_target_": UNI, "gamma": 0.3}, version=1)
    with pytest.raises(AnalysisError, match="version 1"):
        resolve_sampler("auto", old, "x")
    with pytest.raises(ConfigError, match="no gamma.json"):
        resolve_sampler("auto", tmp_path / "none", "x")


def test_resolve_sampler_given_and_paper():
    r = resolve_sampler(0.8, None, "brass_clump")
    assert r.sampler.gamma == 0.8 and r.source == "given" and r.record is None
    r = resolve_sampler("auto", None, "brass_clump")
    assert r.sampler.gamma == PAPER_GAMMA["brass_clump"] == 0.5 and r.source == "paper"
    r = resolve_sampler("auto", None, "np_diffusion", {"_target_": GAU, "sigma": 0.1})
    assert isinstance(r.sampler, GaussianSampler) and r.gamma == 0.1 and r.source == "config"
    r = resolve_sampler("auto", None, "brass_clump", {"_target_": UNI, "gamma": 1.0})
    assert r.gamma == 0.5 and r.source == "paper"  # the paper's γ is a uniform half-width
    with pytest.raises(ConfigError, match="gamma must be > 0"):
        resolve_sampler(0, None, "np_diffusion")
    with pytest.raises(ConfigError, match="number or 'auto'"):
        resolve_sampler("big", None, "np_diffusion")
    with pytest.raises(ConfigError, match="needs sweep=<dir>"):
        resolve_sampler("auto", None, "mine")
