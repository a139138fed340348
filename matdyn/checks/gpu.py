"""The one-command GPU check (``make gpu-check`` = ``scripts/gpu_check.py``; issue 14).

Every check runs in its own child process (``python -m matdyn.checks.gpu --child NAME``)
under a wall-clock limit, so a hang, a CUDA error or a compiler crash costs one check, not
the run. The parent writes one JSON line per check, flushed and fsynced as soon as the check
ends, to ``--out`` (so a run killed from outside keeps every finished line)::

    {"name": "train_bf16", "status": "pass" | "fail" | "not_run", "seconds": 41.2,
     "device": "cuda", "numbers": {...}, "reason": null | "one line"}

``status`` not_run is not a failure: it says which check could not run here and why (no
CUDA device, no native bf16 on this GPU, Triton missing for compile, time budget spent, or
left out with --only / --skip). The exit status is 1 when any check failed, else 0; bad
options exit 2 with one ``error:`` line.

Devices: ``--device auto`` runs the CUDA checks on CUDA when torch sees a device and
reports them not_run otherwise; ``--device cuda`` makes a missing CUDA device a failure;
``--device cpu`` runs the CUDA checks on the CPU (slow at the paper's widths; with
``--tiny`` the networks are narrow, which is how the test suite exercises this code).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdyn.checks.base import (
    ROOT,
    CheckFailed,
    CheckNotRun,
    Context,
    child_env,
    finite,
    last_error_line,
)
from matdyn.errors import ConfigError


@dataclass(frozen=True)
class CheckSpec:
    name: str
    needs_cuda: bool  # a CUDA check: not_run without CUDA under --device auto
    timeout_s: float  # default wall-clock limit on a GPU (whole run <= 8 min on one H200)
    what: str


#: in running order: cheap first, compile-heavy last (partial results survive a timeout)
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("env", False, 60, "torch, CUDA, bf16 and compile support detected at run time"),
    CheckSpec("bundle_auto", False, 90, "load_generator(precision='auto') picks bf16 only where "
              "supported and generates finite images (CPU, and CUDA when visible)"),
    CheckSpec("ddp", False, 150, "DDP, 2 processes across a stage transition: identical "
              "parameters on both ranks (NCCL on 2 GPUs, else gloo on the CPU)"),
    CheckSpec("train_fp32", True, 120, "training at the NP widths 4 -> 128 px through every "
              "fade-in, fp32; finite losses; bundle loads and generates on the CPU"),
    CheckSpec("train_bf16", True, 120, "the same with trainer.precision=bf16-mixed"),
    CheckSpec("sweep", True, 120, "scripts/sweep_gamma.py -m (2 γ + aggregation) on a tiny store"),
    CheckSpec("analyze", True, 120, "scripts/analyze.py (NP case) on a tiny store"),
    CheckSpec("inference", True, 240, "generator img/s per variant (eager, bundle fp32, bf16, "
              "bf16 + compile) at 64² and 128², descriptor agreement with fp32"),
    CheckSpec("train_compile", True, 300, "training 4 -> 8 px (through the fade-in into "
              "the stable phase) with perf.compile=true"),
)
NAMES = tuple(c.name for c in CHECKS)


# ----------------------------------------------------------------------------- child side
def run_child(name: str, device: str, workdir: Path, result: Path, tiny: bool) -> None:
    """Run one check in this process and write {"status", "numbers", "reason"} to ``result``."""
    from matdyn.checks import tasks
    from matdyn.io import atomic_write_text

    ctx = Context(name, device, workdir, result, tiny, {})
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh private folder on every run
    workdir.mkdir(parents=True, exist_ok=True)
    fn: Callable[[Context], None] = getattr(tasks, f"check_{name}")
    status, reason = "pass", None
    try:
        fn(ctx)
    except CheckNotRun as e:
        status, reason = "not_run", str(e)
    except CheckFailed as e:
        status, reason = "fail", str(e)
    except Exception as e:  # an unexpected error is a failure of that check, with its line
        import traceback

        traceback.print_exc()
        msg = str(e).strip().splitlines()
        status, reason = "fail", f"{type(e).__name__}: {msg[0][:300] if msg else ''}"
    atomic_write_text(result, json.dumps({"status": status, "reason": reason,
                                          "numbers": finite(ctx.numbers)}))


# ---------------------------------------------------------------------------- parent side
def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session (DDP ranks too)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def spawn_check(name: str, device: str, workdir: Path, timeout: float, tiny: bool,
                by_budget: bool = False) -> dict[str, Any]:
    """Run check ``name`` in a child process under ``timeout`` seconds; its record. A check
    stopped by a limit that the run's budget set (``by_budget``) is not_run, not failed."""
    result = workdir / f"{name}.result.json"
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "matdyn.checks.gpu", "--child", name, "--device", device,
           "--workdir", str(workdir / name), "--result", str(result)] + (["--tiny"] if tiny else [])
    result.unlink(missing_ok=True)  # never read a result left by an earlier run
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, timed_out = proc.returncode, True
        except BaseException:  # Ctrl-C / SIGTERM of the runner: take the check down too
            _kill_group(proc)
            raise
    seconds = time.perf_counter() - t0
    try:
        rec = json.loads(result.read_text())
    except (OSError, ValueError):
        rec = {}
    numbers = rec.get("numbers") or {}
    if timed_out and by_budget:
        status, reason = "not_run", f"stopped after {timeout:.0f} s: the run's --budget was spent"
    elif timed_out:
        status, reason = "fail", f"timed out after {timeout:.0f} s (--timeout-per-check); log {log}"
    elif "status" not in rec:
        tail = last_error_line(log.read_text(errors="replace")) if log.exists() else ""
        status, reason = "fail", f"check process ended (exit {rc}) without a result: {tail}"
    else:
        status, reason = rec["status"], rec.get("reason")
    return {"name": name, "status": status, "seconds": round(seconds, 2), "device": device,
            "numbers": numbers, "reason": reason}


def _partial(workdir: Path, name: str) -> dict[str, Any]:
    """The numbers a check had flushed so far (empty if none)."""
    try:
        return json.loads((workdir / f"{name}.result.json").read_text()).get("numbers") or {}
    except (OSError, ValueError):
        return {}


def _emit(out, rec: dict[str, Any]) -> None:
    line = json.dumps(finite(rec), sort_keys=False)
    if out is not None:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())
    mark = {"pass": "PASS", "fail": "FAIL", "not_run": "----"}.get(rec["status"], "????")
    why = f"  ({rec['reason']})" if rec.get("reason") else ""
    print(f"[{mark}] {rec['name']:<14} {rec['seconds']:7.1f} s  {rec['device']}{why}", flush=True)


def select(only: str | None, skip: str | None) -> list[CheckSpec]:
    """Checks chosen by --only / --skip (comma-separated names); ConfigError on a bad name."""
    def names(arg: str | None) -> list[str]:
        out = [n.strip() for n in (arg or "").split(",") if n.strip()]
        bad = [n for n in out if n not in NAMES]
        if bad:
            raise ConfigError(f"unknown check(s) {', '.join(bad)}; choose from {', '.join(NAMES)}")
        return out

    keep, drop = names(only), set(names(skip))
    return [c for c in CHECKS if (not keep or c.name in keep) and c.name not in drop]


def plan_device(spec: CheckSpec, device: str, cuda: bool) -> tuple[str | None, str | None]:
    """(device to run ``spec`` on, or None with a status and reason for not running it)."""
    if not spec.needs_cuda:  # env fails there when CUDA was asked for and is missing
        return ("cpu" if device == "cpu" or not (cuda or device == "cuda") else "cuda"), None
    if device == "cpu":
        return "cpu", None
    if cuda:
        return "cuda", None
    if device == "cuda":
        return None, "fail:--device cuda but torch.cuda.is_available() is False"
    return None, "not_run:no CUDA device visible (torch.cuda.is_available() is False)"


def run_checks(specs: Sequence[CheckSpec], out_path: Path | None, device: str = "auto",
               timeout: float | None = None, budget: float | None = None, tiny: bool = False,
               workdir: Path | None = None) -> list[dict[str, Any]]:
    """Run ``specs`` in order, one JSON line each to ``out_path``; the records."""
    import torch

    cuda = bool(torch.cuda.is_available())
    t_start = time.perf_counter()
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="matdyn-gpucheck-"))
    scratch.mkdir(parents=True, exist_ok=True)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    out = open(out_path, "w") if out_path is not None else None  # noqa: SIM115
    try:
        for spec in specs:
            dev, why = plan_device(spec, device, cuda)
            left = None if budget is None else budget - (time.perf_counter() - t_start)
            if dev is None:
                status, reason = why.split(":", 1)
                rec = {"name": spec.name, "status": status, "seconds": 0.0, "device": "cuda",
                       "numbers": {}, "reason": reason}
            elif left is not None and left < 15:
                rec = {"name": spec.name, "status": "not_run", "seconds": 0.0, "device": dev,
                       "numbers": {}, "reason": f"time budget of {budget:.0f} s spent (--budget)"}
            else:
                # limits are sized for one GPU; CUDA checks on the CPU get 3x as long
                slow = 3.0 if spec.needs_cuda and dev == "cpu" else 1.0
                limit = float(timeout or spec.timeout_s * slow)
                capped = left is not None and left < limit
                try:
                    rec = spawn_check(spec.name, dev, scratch,
                                      min(limit, left) if capped else limit, tiny, capped)
                except (KeyboardInterrupt, SystemExit):  # say so in the file, then stop
                    _emit(out, {"name": spec.name, "status": "not_run", "seconds": 0.0,
                                "device": dev, "numbers": _partial(scratch, spec.name),
                                "reason": "interrupted (Ctrl-C or SIGTERM) while running"})
                    raise
            _emit(out, rec)
            records.append(rec)
    finally:
        if out is not None:
            out.close()
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return records


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check.py", description="One JSON line per check (pass / fail / not_run). "
        "Checks, in order: " + "; ".join(f"{c.name}: {c.what}" for c in CHECKS))
    p.add_argument("--out", type=Path, help="JSON-lines file (one line per check, flushed)")
    p.add_argument("--only", help="comma-separated checks to run (default: all)")
    p.add_argument("--skip", help="comma-separated checks to leave out")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="auto: CUDA checks on CUDA if visible, else not_run; cuda: missing CUDA "
                        "fails; cpu: run the CUDA checks on the CPU")
    p.add_argument("--timeout-per-check", type=float, default=None,
                   help="seconds per check (default: each check's own, 60-300 s)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run; checks that no longer fit are not_run")
    p.add_argument("--tiny", action="store_true",
                   help="narrow networks and few images (to test the check itself on a CPU)")
    p.add_argument("--workdir", type=Path, help="keep scratch files here (default: temporary)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key in ("timeout_per_check", "budget"):
        v = getattr(args, key)
        if v is not None and not v > 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be > 0 seconds, got {v}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of scripts/gpu_check.py; returns the exit status (1 if any check failed)."""
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.device, args.workdir, args.result, args.tiny)
        return 0
    if args.list:
        for c in CHECKS:
            print(f"{c.name:<14} {'CUDA' if c.needs_cuda else 'any '}  {c.what}")
        return 0
    specs = select(args.only, args.skip)

    def _terminate(signum, frame):  # noqa: ARG001 - SIGTERM: stop the running check too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    records = run_checks(specs, args.out, args.device, args.timeout_per_check, args.budget,
                         args.tiny, args.workdir)
    counts = {s: sum(r["status"] == s for r in records) for s in ("pass", "fail", "not_run")}
    print(f"gpu-check: {counts['pass']} passed, {counts['fail']} failed, "
          f"{counts['not_run']} not run" + (f"; JSON lines in {args.out}" if args.out else ""))
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
