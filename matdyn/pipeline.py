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
    # the workdir is the step's own output folder: when it holds a finished run made with other
    # inputs (marker key differs), it is moved aside before the step runs, so neither a resumed
    # training nor a sweep's job folders mix the old run with the new one
    archive_stale: bool = False

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

    def is_stale(self) -> bool:
        """A finished run with other inputs is in the workdir (its marker's key differs)."""
        m = self.marker()
        return bool(m and m.get("key") != self.key)

    def move_aside(self) -> Path:
        """Move the workdir to ``<workdir>.old-<time>`` (nothing is deleted; the name has no
        leading dot, so :func:`matdyn.io.clean_stale_siblings` never removes it); returns it."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest, n = self.workdir.with_name(f"{self.workdir.name}.old-{stamp}"), 1
        while dest.exists():
            dest, n = self.workdir.with_name(f"{self.workdir.name}.old-{stamp}-{n}"), n + 1
        self.workdir.rename(dest)
        return dest


_CONFIG_CACHE: dict[tuple[str, tuple[str, ...]], str] = {}


def resolved_config_text(config_name: str, argv: list[str]) -> str:
    """The entry point's composed config (unresolved YAML) for the overrides in `argv`.

    Composed in-process with Hydra's compose API, so a changed default in ``conf/`` (e.g. an
    analysis threshold) changes the key of exactly the steps that read it. Launcher-only
    overrides (``-m``, ``hydra.*``) and sweep lists (``a=1,2``, already in the command) are
    left out of the composition; the sweep a preset defines (``hydra.sweeper.params``) is
    kept. An experiment preset (``+experiment=...``) sets keys for every step; only the
    top-level keys the entry point's own config has count for its key, so a changed sweep
    setting in a preset does not rerun the training.
    """
    overrides = tuple(
        a for a in argv
        if "=" in a and not a.startswith(("hydra.", "-")) and not _is_sweep(a)
    )
    cache_key = (config_name, overrides)
    if cache_key not in _CONFIG_CACHE:
        from omegaconf import OmegaConf

        cfg = _compose(config_name, list(overrides), hydra=True)
        own = set(_compose(config_name, [o for o in overrides if not _is_experiment(o)]))
        sweep = OmegaConf.create({"hydra_sweeper_params": cfg.hydra.sweeper.get("params")})
        mine = OmegaConf.masked_copy(cfg, sorted(own - {"hydra"}))
        _CONFIG_CACHE[cache_key] = OmegaConf.to_yaml(OmegaConf.merge(mine, sweep), resolve=False)
    return _CONFIG_CACHE[cache_key]


def _is_experiment(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] == "experiment"


def _compose(config_name: str, overrides: list[str], hydra: bool = False) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)


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


class _QuoteErrors:
    """Pass a step's stderr through as it comes, except that a line starting with ``error:``
    goes out as ``[step] error: ...``: the driver's own one-line ``error:`` quotes it, and the
    error contract is one ``error:`` line per failed command (issue 13). Partial lines that
    cannot start with ``error:`` are written at once (progress bars keep animating)."""

    TAG = b"error:"

    def __init__(self, sink: Any) -> None:
        self.sink, self.held, self.at_start = sink, b"", True

    def write(self, chunk: bytes) -> None:
        for piece in chunk.splitlines(keepends=True):
            ends = piece.endswith((b"\n", b"\r"))
            if not self.at_start:  # the rest of a line that already passed through
                self.sink.write(piece)
                self.at_start = ends
                continue
            self.held += piece
            if self.held.startswith(self.TAG):  # an error line: written once complete
                if ends:
                    self.sink.write(b"[step] " + self.held)
                    self.held = b""
                continue
            if self.TAG.startswith(self.held) and not ends:  # may still become one
                continue
            self.sink.write(self.held)
            self.held, self.at_start = b"", ends
        self.sink.flush()

    def close(self) -> None:
        if self.held:
            self.sink.write((b"[step] " if self.held.startswith(self.TAG) else b"") + self.held)
            self.held = b""
        self.sink.flush()


def _run_streaming(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command, passing its stderr through live (progress bars keep animating; its
    ``error:`` lines quoted, :class:`_QuoteErrors`) while keeping the tail, so a failure can
    be explained in one line."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    tail = b""
    out = _QuoteErrors(sys.stderr.buffer)
    while True:
        chunk = proc.stderr.read1(65536)
        if not chunk:
            break
        out.write(chunk)
        tail = (tail + chunk)[-8192:]
    out.close()
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
        if step.archive_stale and not dry_run and step.is_stale():
            old = step.move_aside()
            print(f"{head}: the earlier run used other inputs; moved it to {old}", flush=True)
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
EXPERIMENTS = ROOT / "conf" / "experiment"


def scales() -> list[str]:
    """The scales with a preset for every case (``conf/experiment/<case>_<scale>.yaml``)."""
    names = {p.stem for p in EXPERIMENTS.glob("*.yaml")}
    found = {n[len(c) + 1:] for n in names for c in CASES if n.startswith(c + "_")}
    return sorted(sc for sc in found if all(f"{c}_{sc}" in names for c in CASES))


def experiment(case: str, scale: str) -> str:
    """The preset name of a case at a scale; ConfigError when there is none."""
    if case not in CASES:
        raise ConfigError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    name = f"{case}_{scale}"
    if not (EXPERIMENTS / f"{name}.yaml").is_file():
        raise ConfigError(f"no preset conf/experiment/{name}.yaml; SCALE must be one of "
                          f"{', '.join(scales())}")
    return name


def merge_overrides(overrides: list[str]) -> list[str]:
    """Hydra overrides with later ones replacing earlier ones of the same key (Hydra itself
    refuses a key given twice)."""
    out: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        out.pop(key, None)
        out[key] = o
    return list(out.values())


STEPS = ("data", "train", "sweep", "analyze")


def expected_seconds(case: str, scale: str, precision: str | None = None) -> dict[str, float]:
    """Seconds each step of ``<case>_<scale>`` took when measured on a quiet 2-core machine
    (the preset's ``expected_minutes``: {step: minutes}); steps without a measurement are
    left out. Read from the YAML file itself, so that no Hydra composition is needed.

    A step's minutes may depend on the training precision: ``train: {bf16-mixed: 17,
    32-true: 28}`` is read at ``precision``, by default the preset's ``trainer.precision``
    (``32-true`` when unset) as :func:`matdyn.training.app.resolve_training_precision`
    resolves it on this machine's CPU (``auto``: bf16-mixed where the CPU has native bf16).
    A precision the table does not list leaves the step without a measurement."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(EXPERIMENTS / f"{experiment(case, scale)}.yaml")
    table = cfg.get("expected_minutes") or {}
    if precision is None and any(OmegaConf.is_dict(v) for v in table.values()):
        from matdyn.training.app import resolve_training_precision

        asked = OmegaConf.select(cfg, "trainer.precision", default="32-true")
        precision = resolve_training_precision(asked, cuda=False)  # the table is CPU minutes
    out = {}
    for k, v in table.items():
        if OmegaConf.is_dict(v):
            v = v.get(precision)
        if k in STEPS and v is not None:
            out[f"{case}/{k}"] = 60.0 * float(v)
    return out


def expected_duration(steps: list[Step], expected: dict[str, float], *, force: bool = False
                      ) -> tuple[float, list[str]]:
    """(seconds, names of steps to run without a measurement) for the steps that will run:
    those not already up to date (all of them with ``force``)."""
    to_run = [st for st in steps if force or not st.is_fresh()]
    known = sum(expected[st.name] for st in to_run if st.name in expected)
    return known, [st.name for st in to_run if st.name not in expected]


def case_steps(case: str, scale: str, root: Path, *, store: str | None = None,
               extra: dict[str, list[str]] | None = None, python: str = sys.executable
               ) -> list[Step]:
    """The four steps of one case study under ``root/<case>/``.

    Every step gets ``+experiment=<case>_<scale>`` (the per-scale settings live in
    ``conf/experiment/``) and the same ``dataset.*`` overrides, so all steps read one store
    of one size. ``extra`` maps a step name (``data``, ``train``, ``sweep``, ``analyze``) to
    more overrides; ``dataset.*`` ones are applied to every step for the same reason.
    """
    exp = experiment(case, scale)
    extra = {k: list(v) for k, v in (extra or {}).items()}
    unknown = sorted(set(extra) - set(STEPS))
    if unknown:
        raise ConfigError(f"unknown step {unknown[0]!r} in extra overrides; use one of {', '.join(STEPS)}")
    shared = [o for v in extra.values() for o in v if o.lstrip("+~").startswith("dataset.")]
    s = {k: merge_overrides(shared + [o for o in extra.get(k, []) if o not in shared])
         for k in STEPS}
    base = root / case
    if store:  # real data: the given store instead of the synthetic stand-in; its metadata rules
        ds = [f"+experiment={exp}", "dataset.source=store", f"dataset.path={store}",
              "dataset.pixel_size=null", "dataset.unit=null", "dataset.channel_names=null"]
    else:
        ds = [f"+experiment={exp}", f"dataset.path={base / 'data.zarr'}"]
    ds_keys = {o.split("=", 1)[0] for o in ds}
    for k in STEPS:  # extra overrides of a key the pipeline sets replace it
        s[k] = [o for o in s[k] if o.split("=", 1)[0].lstrip("+~") not in ds_keys]
    py = [python]
    data = Step("data", py + ["scripts/make_data.py", *ds, *s["data"],
                              f"hydra.run.dir={base / 'logs' / 'make_data'}"],
                base / "logs" / "make_data", [Path(store) if store else base / "data.zarr"],
                config_name="make_data")
    train_dir = base / "train"
    train_argv = py + ["scripts/train.py", *ds, *s["train"], f"hydra.run.dir={train_dir}"]
    train = Step("train", train_argv, train_dir, [train_dir / "generator.pt"], deps=[data],
                 resume_argv=train_argv + [f"ckpt_path={train_dir}"],
                 can_resume=lambda: (train_dir / "checkpoints" / "last.ckpt").exists(),
                 config_name="train", archive_stale=True)
    bundle = train_dir / "generator.pt"
    sweep_dir = base / "sweep"
    sweep = Step("sweep", py + ["scripts/sweep_gamma.py", "-m", *ds, f"bundle={bundle}", *s["sweep"],
                                f"hydra.sweep.dir={sweep_dir}"],
                 sweep_dir, [sweep_dir / "gamma.json"], deps=[train], config_name="sweep",
                 archive_stale=True)
    an_dir = base / "analysis"
    analyze = Step("analyze", py + ["scripts/analyze.py", *ds, f"bundle={bundle}", "gamma=auto",
                                    f"sweep={sweep_dir}", *s["analyze"],
                                    f"hydra.run.dir={an_dir}"],
                   an_dir, [an_dir / "summary.json"], deps=[sweep], config_name="analyze",
                   archive_stale=True)
    for st in (data, train, sweep, analyze):
        st.name = f"{case}/{st.name}"
    return [data, train, sweep, analyze]
