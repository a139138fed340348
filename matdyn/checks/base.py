"""Shared pieces of the GPU check: the check context handed to each check function, its
outcomes (:class:`CheckFailed`, :class:`CheckNotRun`) and child-process helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # repository root (scripts/, conf/)


class CheckFailed(Exception):
    """A check's assertion failed; the message is the one-line reason."""


class CheckNotRun(Exception):
    """A check cannot run here (missing hardware or software); the message says why."""


def finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats as strings ("nan", "inf"), numpy as Python."""
    from matdyn.io import to_jsonable

    value = to_jsonable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


@dataclass
class Context:
    """What a check function gets: where to work, on which device, and its numbers."""

    name: str
    device: str        # "cuda" | "cpu"
    workdir: Path      # private scratch folder of this check
    result: Path       # JSON file the numbers are flushed to
    tiny: bool         # narrow networks (tests on a CPU)
    numbers: dict[str, Any]

    def flush(self) -> None:
        """Write the numbers so far (they survive a timeout)."""
        from matdyn.io import atomic_write_text

        atomic_write_text(self.result, json.dumps({"numbers": finite(self.numbers)}))

    def record(self, **numbers: Any) -> None:
        self.numbers.update(numbers)
        self.flush()

    def run(self, cmd: Sequence[str], timeout: float = 600, env: dict | None = None,
            log: str | None = None) -> subprocess.CompletedProcess:
        """Run a command from the repository root; its output (stdout and stderr together) is
        streamed to ``<workdir>/<log>``, so it survives a timeout, and returned as stdout."""
        path = self.workdir / (log or "command.log")
        with open(path, "w") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=child_env(env), stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode,
                                           path.read_text(errors="replace"), "")


def child_env(extra: dict | None = None) -> dict[str, str]:
    """Environment for child processes: the repository on PYTHONPATH, W&B off, no GUI."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("HYDRA_FULL_ERROR", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def last_error_line(text: str) -> str:
    """The most telling line of a failed command's output (an ``error:`` line, else the
    last exception line, else the last non-empty line), shortened to 300 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pred in (lambda s: s.startswith("error:"),
                 lambda s: s.split(":", 1)[0].endswith(("Error", "Exception"))):
        hits = [ln for ln in lines if pred(ln)]
        if hits:
            return hits[-1][:300]
    return lines[-1][:300] if lines else "(no output)"


