"""Reproduce the paper's three case studies: data → training → γ sweep → analysis → report.

    python scripts/reproduce.py                      # SCALE=quick, all cases, outputs/paper/
    python scripts/reproduce.py --scale paper        # the paper's sizes and counts (GPU)

The settings of a case at a scale are the preset conf/experiment/<case>_<scale>.yaml, passed
to every step as +experiment=<case>_<scale> (the same data size in every step).
    python scripts/reproduce.py --cases np_diffusion --out outputs/demo
    python scripts/reproduce.py --store np_diffusion=mine.zarr   # your data instead of the stand-in

Steps whose outputs exist and whose command (content hash) did not change are skipped, so
an interrupted reproduction resumes; an interrupted training resumes from its last.ckpt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from matdyn.cli import one_line, user_error_message
from matdyn.data.store import validate_store
from matdyn.errors import ConfigError
from matdyn.pipeline import (
    CASES,
    STEPS,
    case_steps,
    expected_duration,
    expected_seconds,
    run_steps,
    scales,
)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one ``error:`` line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {one_line(message)}; see python scripts/reproduce.py --help", file=sys.stderr)
        sys.exit(2)


def expected_line(seconds: float, unknown: list[str], cores: int) -> str:
    """The line printed before any step runs: how long the steps to run took on a quiet
    2-core machine (the presets' ``expected_minutes``)."""
    parts = []
    if seconds:
        parts.append(f"expected duration: about {seconds / 60:.0f} min on a quiet 2-core CPU "
                     f"(this machine: {cores} cores; a busy machine takes longer)")
    if unknown:
        parts.append(f"no measured duration for {', '.join(unknown)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default=os.environ.get("SCALE", "quick"), choices=scales(),
                    help="preset scale: conf/experiment/<case>_<scale>.yaml")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case studies")
    ap.add_argument("--out", default="outputs/paper", help="root folder of all outputs")
    ap.add_argument("--store", action="append", default=[], metavar="CASE=PATH",
                    help="use an existing store for a case instead of its synthetic stand-in")
    ap.add_argument("--extra", action="append", default=[], metavar="CASE:STEP:OVERRIDE",
                    help=f"extra Hydra override for one step ({', '.join(STEPS)}), e.g. "
                         "np_diffusion:train:num_threads=1; dataset.* overrides go to every step")
    ap.add_argument("--force", action="store_true", help="rerun every step")
    ap.add_argument("--keep-going", action="store_true",
                    help="after a failed step, still run the other cases and write the report")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args(argv)
    try:
        cases = [c for c in a.cases.split(",") if c]
        bad = [s for s in a.store if "=" not in s]
        if bad:
            raise ConfigError(f"--store {bad[0]!r} is not CASE=PATH, e.g. --store np_diffusion=mine.zarr")
        stores = dict(s.split("=", 1) for s in a.store)
        extra: dict[str, dict[str, list[str]]] = {}
        for e in a.extra:
            if e.count(":") < 2:
                raise ConfigError(f"--extra {e!r} is not CASE:STEP:OVERRIDE, e.g. "
                                  "np_diffusion:train:num_threads=1")
            case, step, override = e.split(":", 2)
            extra.setdefault(case, {}).setdefault(step, []).append(override)
        root = Path(a.out).resolve()
        for path in stores.values():  # a wrong --store fails now, not after other cases ran
            validate_store(Path(path).expanduser().resolve(), check_values=False)
        if not a.dry_run:
            root.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before any step
        steps = []
        for case in cases:
            steps += case_steps(case, a.scale, root, store=stores.get(case), extra=extra.get(case))
        expected: dict[str, float] = {}
        for case in cases:
            expected.update(expected_seconds(case, a.scale))
        seconds, unknown = expected_duration(steps, expected, force=a.force)
        if seconds or unknown:
            print(expected_line(seconds, unknown, os.cpu_count() or 1), flush=True)
        t0 = time.perf_counter()
        results = run_steps(steps, force=a.force, dry_run=a.dry_run, keep_going=a.keep_going)
        if a.dry_run:
            return 0
        from matdyn.report import build_report

        # seconds each step took when it last ran (kept in its marker, so resumed or skipped
        # steps still show their time)
        timings = {st.name: float(m["seconds"]) for st in steps
                   if (m := st.marker()) is not None and "seconds" in m}
        md, page = build_report(root, cases, scale=a.scale, timings=timings)
        total = time.perf_counter() - t0
        vs = f", expected about {seconds:.0f} s" if seconds and not unknown else ""
        print(f"\nreport: {md}\n        {page}\n(total {total:.0f} s{vs})")
        failed = [r.name for r in results if r.status in ("failed", "not run")]
        if failed:
            print(f"error: steps failed or not run: {', '.join(failed)} (see the report)",
                  file=sys.stderr)
            return 1
        return 0
    except Exception as e:  # input or environment: one line; a bug: its traceback
        msg = user_error_message(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
