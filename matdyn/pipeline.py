"""The reproduction pipeline: data → training → γ sweep → analysis → report, per case study.

Each step is one command of the thin entry points in ``scripts/``. A step is skipped when
its outputs exist and its *key* — a content hash of its command line and of the keys of
the steps it depends on — matches the key recorded when it last finished, so an
interrupted reproduction resumes where it stopped, and changing a setting reruns exactly
the steps downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdyn.errors import ConfigError, MatdynError
from matdyn.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".matdyn-step.json"
CASES = ("ta_chart", "np_diffusion", "brass_clump")


@dataclass
class Step:
    name: str
    argv: list[str]                    # command, run from the project root
    workdir: Path                      # holds the marker; usually the step's output folder
    outputs: list[Path]                # must exist after the step
    deps: list[Step] = field(default_factory=list)
    resume_argv: list[str] | None = None  # command to use when a partial run can be resumed
    can_resume: Any = None             # callable() -> bool

    config_name: str | None = None     # Hydra primary config of the entry point (conf/<name>.yaml)

    @property
    def key(self) -> str:
        """Content hash of the command, the step's resolved config and its upstream keys."""
        h = hashlib.sha256(json.dumps(self.argv).encode())
        if self.config_name:
            h.update(resolved_config_text(self.config_name, self.argv).encode())
        for d in self.deps:
            h.update(d.key.encode())
        return h.hexdigest()[:16]

    def marker(self) -> dict[str, Any] | None:
        p = self.workdir / MARKER
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_fresh(self) -> bool:
        m = self.marker()
        return bool(m and m.get("key") == self.key and all(o.exists() for o in self.outputs))


_CONFIG_CACHE: dict[tuple[str, tuple[str, ...]], str] = {}


def resolved_config_text(config_name: str, argv: list[str]) -> str:
    """The entry point's composed config (unresolved YAML) for the overrides in `argv`.

    Composed in-process with Hydra's compose API, so a changed default in ``conf/`` (e.g. an
    analysis threshold) changes the key of exactly the steps that read it. Launcher-only
    overrides (``-m``, ``hydra.*``) and sweep lists (``a=1,2``, already in the command) are
    left out of the composition.
    """
    overrides = tuple(
        a for a in argv
        if "=" in a and not a.startswith(("hydra.", "-")) and not _is_sweep(a)
    )
    cache_key = (config_name, overrides)
    if cache_key not in _CONFIG_CACHE:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        _CONFIG_CACHE[cache_key] = OmegaConf.to_yaml(cfg, resolve=False)
    return _CONFIG_CACHE[cache_key]


def _is_sweep(override: str) -> bool:
    value = override.split("=", 1)[1]
    depth = 0
    for ch in value:  # a comma outside brackets makes a sweep list
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


@dataclass
class StepResult:
    name: str
    status: str  # "ran", "skipped", "failed"
    seconds: float


def _write_marker(step: Step, seconds: float) -> None:
    write_json_atomic(step.workdir / MARKER, {"key": step.key, "argv": step.argv,
                                              "seconds": round(seconds, 1),
                                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")})


FAILED = ".matdyn-step-failed.json"


def _run_streaming(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command, passing its stderr through live (progress bars keep animating) while
    keeping the tail, so a failure can be explained in one line."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    tail = b""
    while True:
        chunk = proc.stderr.read1(65536)
        if not chunk:
            break
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        tail = (tail + chunk)[-8192:]
    rc = proc.wait()
    lines = [ln.strip() for ln in tail.decode(errors="replace").replace("\r", "\n").splitlines()
             if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return rc, (errors[-1] if errors else (lines[-1] if lines else ""))


def run_steps(steps: list[Step], *, force: bool = False, dry_run: bool = False,
              keep_going: bool = False, env: dict[str, str] | None = None) -> list[StepResult]:
    """Run steps in order, skipping fresh ones.

    On a failure the step's reason is written to ``<workdir>/.matdyn-step-failed.json`` (the
    report shows it). With ``keep_going`` the steps that depend on the failed one are
    skipped and the others still run; otherwise the first failure raises MatdynError.
    """
    results: list[StepResult] = []
    run_env = {**os.environ, **(env or {})}
    failed: set[int] = set()
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if any(id(d) in failed for d in step.deps):
            failed.add(id(step))
            _write_failure(step, "not run: an earlier step of this case failed")
            print(f"{head}: not run (an earlier step failed)", flush=True)
            results.append(StepResult(step.name, "not run", 0.0))
            continue
        if not force and step.is_fresh():
            print(f"{head}: up to date, skipped ({step.workdir})", flush=True)
            results.append(StepResult(step.name, "skipped", 0.0))
            continue
        argv = step.argv
        if step.resume_argv is not None and step.can_resume is not None and step.can_resume():
            argv = step.resume_argv
            print(f"{head}: resuming an interrupted run", flush=True)
        print(f"{head}: {' '.join(argv)}", flush=True)
        if dry_run:
            results.append(StepResult(step.name, "dry-run", 0.0))
            continue
        (step.workdir / FAILED).unlink(missing_ok=True)
        t0 = time.perf_counter()
        rc, last = _run_streaming(argv, run_env)
        dt = time.perf_counter() - t0
        missing = [str(o) for o in step.outputs if not o.exists()]
        if rc != 0 or missing:
            results.append(StepResult(step.name, "failed", dt))
            why = f"exit status {rc}" if rc else f"missing {missing}"
            reason = f"step '{step.name}' failed ({why}{': ' + last if last else ''})"
            _write_failure(step, reason)
            if not keep_going:
                raise MatdynError(f"{reason} after {dt:.0f} s; fix the cause and run the same "
                                  "command again to resume")
            print(f"{head}: FAILED — {reason}", file=sys.stderr, flush=True)
            failed.add(id(step))
            continue
        _write_marker(step, dt)
        print(f"{head}: done in {dt:.0f} s", flush=True)
        results.append(StepResult(step.name, "ran", dt))
    return results


def _write_failure(step: Step, reason: str) -> None:
    write_json_atomic(step.workdir / FAILED, {"step": step.name, "reason": reason})


# ---------------------------------------------------------------------------------- plans
#: settings per scale; every value is a Hydra override of the corresponding entry point
SCALES: dict[str, dict[str, dict[str, list[str]]]] = {
    "quick": {
        # CPU-sized: the whole reproduction finishes in about an hour on 2 cores
        "ta_chart": {
            "data": ["dataset.synthetic.n_frames=300"],
            "train": ["schedule=quick"],
            "sweep": ["n_refs=24", "n_samples=12", "sampler.gamma=0.25,0.5,1.0,1.5,2.0"],
            "analyze": [],
        },
        "np_diffusion": {
            "data": [],
            "train": ["schedule=quick"],
            "sweep": ["n_refs=48", "n_samples=16", "sampler.gamma=0.25,0.5,1.0,1.5,2.0"],
            "analyze": [],
        },
        "brass_clump": {
            "data": ["dataset.synthetic.n_particles=300"],
            "train": ["schedule=quick"],
            "sweep": ["n_refs=40", "n_samples=12", "sampler.gamma=0.25,0.5,1.0,1.5,2.0"],
            "analyze": [],
        },
    },
    "paper": {
        # the paper's sizes and counts (§3.2–3.4); needs a GPU
        "ta_chart": {
            "data": [],
            "train": ["schedule=paper"],
            "sweep": ["n_refs=1000", "n_samples=100",
                      "sampler.gamma=0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0"],
            "analyze": ["analysis.n_refs=1", "analysis.n_samples=500"],
        },
        "np_diffusion": {
            "data": [],
            "train": ["schedule=paper"],
            "sweep": ["n_refs=1000", "n_samples=100",
                      "sampler.gamma=0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0"],
            "analyze": ["analysis.n_refs=200", "analysis.n_samples=500"],
        },
        "brass_clump": {
            "data": [],
            "train": ["schedule=paper"],
            "sweep": ["n_refs=1000", "n_samples=100",
                      "sampler.gamma=0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0"],
            "analyze": ["analysis.n_refs=3000", "analysis.n_samples=400"],
        },
    },
}


def merge_overrides(overrides: list[str]) -> list[str]:
    """Hydra overrides with later ones replacing earlier ones of the same key (Hydra itself
    refuses a key given twice)."""
    out: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        out.pop(key, None)
        out[key] = o
    return list(out.values())


def case_steps(case: str, scale: str, root: Path, *, store: str | None = None,
               extra: dict[str, list[str]] | None = None, python: str = sys.executable
               ) -> list[Step]:
    """The four steps of one case study under ``root/<case>/``."""
    if scale not in SCALES:
        raise ConfigError(f"SCALE must be one of {sorted(SCALES)}, got {scale!r}")
    if case not in SCALES[scale]:
        raise ConfigError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    s = {k: list(v) for k, v in SCALES[scale][case].items()}
    for k, v in (extra or {}).items():
        s[k] = merge_overrides(s.get(k, []) + list(v))
    base = root / case
    if store:  # real data: use the given store instead of the synthetic stand-in
        ds = [f"dataset={case}", "dataset.source=store", f"dataset.path={store}"]
    else:
        ds = [f"dataset={case}", f"dataset.path={base / 'data.zarr'}"]
    py = [python]
    data = Step("data", py + ["scripts/make_data.py", *ds, *s["data"],
                              f"hydra.run.dir={base / 'logs' / 'make_data'}"],
                base / "logs" / "make_data", [Path(store) if store else base / "data.zarr"],
                config_name="make_data")
    train_dir = base / "train"
    train_argv = py + ["scripts/train.py", *ds, *s["train"], *s.get("data_train", []),
                       f"hydra.run.dir={train_dir}"]
    train = Step("train", train_argv, train_dir, [train_dir / "generator.pt"], deps=[data],
                 resume_argv=train_argv + [f"ckpt_path={train_dir}"],
                 can_resume=lambda: (train_dir / "checkpoints" / "last.ckpt").exists(),
                 config_name="train")
    bundle = train_dir / "generator.pt"
    sweep_dir = base / "sweep"
    sweep = Step("sweep", py + ["scripts/sweep_gamma.py", "-m", *ds, f"bundle={bundle}", *s["sweep"],
                                f"hydra.sweep.dir={sweep_dir}"],
                 sweep_dir, [sweep_dir / "gamma.json"], deps=[train], config_name="sweep")
    an_dir = base / "analysis"
    analyze = Step("analyze", py + ["scripts/analyze.py", *ds, f"bundle={bundle}", "gamma=auto",
                                    f"sweep={sweep_dir}", *s["analyze"],
                                    f"hydra.run.dir={an_dir}"],
                   an_dir, [an_dir / "summary.json"], deps=[sweep], config_name="analyze")
    for st in (data, train, sweep, analyze):
        st.name = f"{case}/{st.name}"
    return [data, train, sweep, analyze]
