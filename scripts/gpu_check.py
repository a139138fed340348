"""One-command check of every GPU path (issue 14): ``make gpu-check`` or

    python scripts/gpu_check.py --out gpu_check.jsonl [--only a,b] [--skip a,b]
        [--device auto|cuda|cpu] [--timeout-per-check S] [--budget S] [--list]

One JSON line per check (name, status pass / fail / not_run, seconds, device, numbers,
reason), flushed as each check ends; exit 1 if any check failed, 0 otherwise (not_run is no
failure), 2 on bad options. Without CUDA the CPU checks run and the CUDA checks are reported
not_run with the reason. What each check does: matdyn/checks/gpu.py and matdyn/checks/tasks.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from matdyn.checks.gpu import main  # noqa: E402
from matdyn.cli import guarded  # noqa: E402

if __name__ == "__main__":
    sys.exit(guarded(main)())
