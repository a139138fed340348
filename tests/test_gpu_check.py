"""The one-command GPU check (scripts/gpu_check.py, matdyn.checks) on a machine without CUDA,
and the run-time capability detection behind ``load_generator(precision="auto")``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from matdyn.checks import hardware as caps_module
from matdyn.checks.agreement import TOLERANCES, descriptor_agreement, violations
from matdyn.checks.gpu import (
    CHECKS,
    NAMES,
    main,
    plan_device,
    run_checks,
    select,
    spawn_check,
)
from matdyn.checks.hardware import Capabilities, bf16_probe, capabilities, resolve_precision
from matdyn.errors import ConfigError
from matdyn.models import Generator
from matdyn.training.bundle import load_generator, save_bundle

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"name", "status", "seconds", "device", "numbers", "reason"}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the no-CUDA behaviour")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# --------------------------------------------------------------------------- capabilities
def _fake(**kw) -> Capabilities:
    base = dict(torch_version="x", cpu_capability="AVX512", bf16_cpu=False, cuda=False,
                cuda_devices=0, cuda_name=None, cuda_capability=None, bf16_cuda=False,
                compile_cpu=True, compile_cuda=False, triton=False)
    return Capabilities(**{**base, **kw})


def test_capabilities_are_consistent_with_the_probes():
    c = capabilities()
    assert c is capabilities()  # cached per process
    assert c.cuda == torch.cuda.is_available() and c.torch_version == torch.__version__
    assert c.bf16("cpu") == (caps_module.cpu_native_bf16() and bf16_probe("cpu"))
    assert bf16_probe("cpu")  # bf16 autocast runs on any CPU (emulated or native)
    assert not c.bf16("mps") and not c.compile("xla")
    if not c.cuda:
        assert (c.bf16_cuda, c.compile_cuda, c.cuda_devices, c.cuda_name) == (False, False, 0, None)
    assert json.loads(json.dumps(c.as_dict()))["bf16_cpu"] == c.bf16_cpu


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_detected_bf16(monkeypatch, tmp_path, native):
    monkeypatch.setattr(caps_module, "capabilities", lambda: _fake(bf16_cpu=native))
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cuda") == "fp32"  # no CUDA bf16 in the fake
    assert resolve_precision("fp32", "cpu") == "fp32"
    torch.manual_seed(0)
    path = save_bundle(tmp_path / "g.pt", Generator(8, 1, 2, [16, 16, 8]), stage=2)
    z = torch.randn(6, 8)
    auto, fp32 = load_generator(path, precision="auto"), load_generator(path)
    with torch.inference_mode():
        x, ref = auto(z), fp32(z)
    assert auto.precision == "auto" and auto.active_precision == ("bf16" if native else "fp32")
    assert f"precision=auto ({auto.active_precision})" in repr(auto)
    assert x.dtype == torch.float32
    if native:
        assert not torch.equal(x, ref) and (x - ref).abs().max() < 0.3  # bf16 really ran
        with torch.inference_mode():
            assert torch.equal(x, load_generator(path, precision="bf16")(z))
    else:
        assert torch.equal(x, ref)


def test_descriptor_agreement_bounds():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    imgs = []
    for _ in range(6):  # dark discs on a bright background, like NP phase images
        cy, cx = rng.uniform(8, 24, 2)
        imgs.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < 25, -0.8, 0.6))
    ref = np.stack(imgs)[:, None].astype(np.float32) + 0.01 * rng.standard_normal((6, 1, 32, 32))
    same = descriptor_agreement(ref, ref)
    assert same["entropy_diff_max"] == 0 and same["iou_min"] == 1 and same["mass_rel_max"] == 0
    assert violations(same) == []
    assert 0.02 < same["mask_fraction"] < 0.2
    shifted = descriptor_agreement(ref, np.roll(ref, 3, axis=-1))  # masks move by 3 px
    assert shifted["iou_median"] < 0.7
    assert any(v.startswith("iou_median") for v in violations(shifted))
    assert [t[0] for t in TOLERANCES][:2] == ["entropy_diff_median", "entropy_diff_max"]


# ------------------------------------------------------------------------------- the runner
def test_selection_and_bad_options(tmp_path):
    assert [c.name for c in select(None, None)] == list(NAMES)
    assert [c.name for c in select("inference,env", "env")] == ["inference"]  # running order
    with pytest.raises(ConfigError, match="unknown check.*choose from env"):
        select("env,gpu", None)
    with pytest.raises(ConfigError, match="--budget must be > 0"):
        main(["--budget", "0"])
    assert {c.name for c in CHECKS if not c.needs_cuda} == {"env", "bundle_auto", "ddp"}


@no_cuda
def test_cuda_asked_for_but_absent_fails_without_running(tmp_path):
    out = tmp_path / "c.jsonl"
    assert main(["--only", "train_fp32,inference", "--device", "cuda", "--out", str(out)]) == 1
    recs = _lines(out)
    assert [r["status"] for r in recs] == ["fail", "fail"]
    assert all("is_available() is False" in r["reason"] and r["seconds"] == 0 for r in recs)
    assert plan_device(CHECKS[0], "cuda", cuda=False) == ("cuda", None)  # env then fails
    assert plan_device(CHECKS[0], "auto", cuda=False) == ("cpu", None)
    assert plan_device(CHECKS[0], "cpu", cuda=True) == ("cpu", None)


def test_a_check_past_its_time_limit_fails_and_keeps_the_run_going(tmp_path):
    out = tmp_path / "t.jsonl"
    specs = select("env", None)
    recs = run_checks(specs, out, device="cpu", timeout=0.3, workdir=tmp_path / "w")
    assert recs[0]["status"] == "fail" and recs[0]["reason"].startswith("timed out after 0 s")
    assert recs[0]["seconds"] < 15 and _lines(out) == recs
    budget = run_checks(specs, None, device="cpu", budget=5.0)  # < 15 s left: not started
    assert budget[0]["status"] == "not_run" and "--budget" in budget[0]["reason"]
    stopped = spawn_check("env", "cpu", tmp_path, 0.3, tiny=False, by_budget=True)
    assert stopped["status"] == "not_run" and "budget was spent" in stopped["reason"]


@pytest.mark.slow  # a subprocess run of the script, ~13 s; the checks themselves are tested above
@no_cuda
def test_script_on_a_cpu_reports_cuda_checks_not_run(tmp_path):
    out = tmp_path / "gpu.jsonl"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(out),
           "--only", "env,bundle_auto,train_fp32,train_bf16,sweep,analyze,inference,train_compile"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = _lines(out)
    assert [r["name"] for r in recs] == ["env", "bundle_auto", "train_fp32", "train_bf16", "sweep",
                                         "analyze", "inference", "train_compile"]
    assert all(set(r) == KEYS for r in recs)
    env, auto, *gpu = recs
    assert env["status"] == "pass" and env["numbers"]["cuda"] is False
    assert env["numbers"]["bf16_cpu"] == capabilities().bf16_cpu
    assert auto["status"] == "pass", auto["reason"]
    assert auto["numbers"]["cpu_active"] == ("bf16" if capabilities().bf16_cpu else "fp32")
    for r in gpu:
        assert r["status"] == "not_run" and r["reason"].startswith("no CUDA device visible")
    assert "2 passed, 0 failed, 6 not run" in proc.stdout


@pytest.mark.slow
def test_cuda_checks_run_on_the_cpu_with_tiny_networks(tmp_path):
    """The CUDA checks' own code (train, sweep, analyze, inference, DDP) on the CPU."""
    out = tmp_path / "tiny.jsonl"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(out), "--device",
           "cpu", "--tiny", "--skip", "train_compile,bundle_auto,env"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    recs = {r["name"]: r for r in _lines(out)}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {n: r["status"] for n, r in recs.items()} == dict.fromkeys(
        ["ddp", "train_fp32", "train_bf16", "sweep", "analyze", "inference"], "pass"
    ) | ({} if capabilities().bf16_cpu else {"train_bf16": "not_run"})
    assert recs["train_fp32"]["numbers"]["stages_seen"] == [0, 1, 2]
    assert recs["ddp"]["numbers"]["max_abs_param_diff"] == 0.0
    inf = recs["inference"]["numbers"]
    assert inf["64px_bundle"]["violations"] == [] and inf["128px_eager"]["img_per_s"] > 0
    assert inf["64px_bundle"]["iou_min"] >= 0.99  # fp32 bundle vs fp32 reference: same masks
