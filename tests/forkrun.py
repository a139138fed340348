"""Run an entry point (``scripts/*.py``) in a forked child of the test process: the exit
status, stdout and stderr of a real process, without paying Python + torch + Lightning
imports again for every case (the parent imports them once). POSIX only.

``patch`` runs in the child before the script (e.g. to make a folder read-only for that
process only, which ``chmod`` cannot do for root)."""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("error:")]


def _child(script: Path, args: Sequence[str], cwd: Path, out: str, err: str,
           patch: Callable[[], None] | None) -> None:
    code = 1
    try:
        fo = os.open(out, os.O_WRONLY | os.O_TRUNC)
        fe = os.open(err, os.O_WRONLY | os.O_TRUNC)
        os.dup2(fo, 1)
        os.dup2(fe, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(cwd)
        sys.argv = [str(script), *args]
        if patch is not None:
            patch()
        try:
            runpy.run_path(str(script), run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_entry(script: str, *args: str, cwd: Path | None = None, env: dict | None = None,
              patch: Callable[[], None] | None = None, timeout: float = 300) -> Result:
    """Run ``scripts/<script>`` with ``args`` in a forked child; its rc, stdout, stderr."""
    return run_entries([{"script": script, "args": args, "cwd": cwd, "env": env,
                         "patch": patch}], jobs=1)[0]


def run_entries(calls: Sequence[dict], jobs: int = 2) -> list[Result]:
    """Run several entry points, up to ``jobs`` forked children at a time; each call is a
    dict of :func:`run_entry`'s arguments (``script``, ``args`` and optional ``cwd``, ``env``,
    ``patch``). Results come back in the order of ``calls``. ``jobs`` > 1 only for calls that
    share no output: two at a time halve the wall time of cases that stop early on 2 cores
    (the error-contract table: 77 s -> 39 s), but its import cases share one output store and
    collided on its lock, so it runs them one at a time."""
    results: list[Result | None] = [None] * len(calls)
    with tempfile.TemporaryDirectory() as d:
        running: dict[int, tuple[int, str, str]] = {}
        pending = list(enumerate(calls))
        while pending or running:
            while pending and len(running) < max(int(jobs), 1):
                k, call = pending.pop(0)
                out, err = os.path.join(d, f"{k}.out"), os.path.join(d, f"{k}.err")
                for f in (out, err):
                    open(f, "w").close()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child
                    if call.get("env"):
                        os.environ.update(call["env"])
                    _child(ROOT / "scripts" / call["script"], list(call["args"]),
                           call.get("cwd") or ROOT, out, err, call.get("patch"))
                running[pid] = (k, out, err)
            done = False
            # only our own children (a test may hold others); block when one is left
            flag = 0 if len(running) == 1 and not pending else os.WNOHANG
            for pid in list(running):
                got, status = os.waitpid(pid, flag)
                if got == pid:
                    k, out, err = running.pop(pid)
                    results[k] = Result(os.waitstatus_to_exitcode(status), Path(out).read_text(),
                                        Path(err).read_text())
                    done = True
            if not done:
                time.sleep(0.01)
    return [r for r in results if r is not None]


def start_entry(script: str, *args: str, log: Path, cwd: Path | None = None,
                patch: Callable[[], None] | None = None) -> int:
    """Start ``scripts/<script>`` in a forked child and return its pid at once (for kill -9
    tests); its stdout and stderr go to ``log`` and ``log.err``. Reap it with ``os.waitpid``."""
    path = ROOT / "scripts" / script
    err = log.with_name(log.name + ".err")
    for f in (log, err):
        f.write_text("")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.setsid()  # its own process group: killpg takes the children it starts too
        _child(path, args, cwd or ROOT, str(log), str(err), patch)
    return pid
