"""Sharded variation runs: several processes (GPUs, nodes, a SLURM array) fill ONE results
directory, then a merge step checks that nothing is missing.

The partition: references are grouped in blocks of ``block_size`` consecutive indices
(:func:`~matdyn.sampling.streams.block_ranges`); shard ``k/n`` takes the k-th of n
contiguous, near-equal groups of blocks (:func:`~matdyn.sampling.streams.shard_blocks`).
Every shard writes its finished blocks into the same ``<out_dir>/blocks/`` (file names are
block numbers, so shards never write the same file) and, when its blocks are done, its
record ``<out_dir>/shards/shard_<k>_of_<n>.json``. Random streams depend on (seed, i)
only, so the merged result is bit-identical to a single-process run.

* :func:`run_shard` — run one shard of an engine and return a :class:`ShardReport` (with
  :meth:`ShardReport.line`: what was done and what is left).
* :func:`require_complete` — the merge's check: the result, or an AnalysisError naming the
  missing shards and references.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matdyn.errors import AnalysisError
from matdyn.io import write_json_atomic
from matdyn.sampling.results import VariationResult, _done_blocks, _read_manifest, merge_results
from matdyn.sampling.streams import block_ranges, parse_shard, shard_blocks

__all__ = ["SHARDS_SUBDIR", "ShardReport", "fmt_ranges", "missing_description", "require_complete",
           "run_shard", "shard_counts"]

#: sub-folder of a results directory holding one record per finished shard
SHARDS_SUBDIR = "shards"


def fmt_ranges(indices: Any) -> str:
    """Sorted integers as compact inclusive ranges.

    >>> fmt_ranges([0, 1, 2, 5, 7, 8])
    '0-2, 5, 7-8'
    """
    idx = sorted(int(i) for i in indices)
    parts: list[list[int]] = []
    for i in idx:
        if parts and parts[-1][1] == i - 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


@dataclass
class ShardReport:
    """What one shard did (``blocks_run`` computed now, ``blocks_skipped`` found done) and
    what the whole run still lacks (``missing``: a sentence, empty when complete)."""

    shard: str
    out_dir: str
    references: str
    blocks_run: int
    blocks_skipped: int
    blocks_done_total: int
    blocks_total: int
    missing: str
    elapsed_s: float

    @property
    def complete(self) -> bool:
        return self.blocks_done_total == self.blocks_total

    def line(self, merge_hint: str = "run the merge") -> str:
        """One line for the user: ``shard 1/4: references 2-3 ... left: ...``."""
        refs = f"references {self.references}" if self.references else "no references (more shards than blocks)"
        did = (f"shard {self.shard}: {refs}: {self.blocks_run} block(s) computed, "
               f"{self.blocks_skipped} already done ({self.elapsed_s:.1f} s) in {self.out_dir}")
        if self.complete:
            return f"{did}; all {self.blocks_total} blocks of the run are done: {merge_hint}"
        return f"{did}; left: {self.missing}; then {merge_hint}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_counts(out_dir: str | Path) -> list[int]:
    """Shard counts n of the shard records in ``out_dir`` (most frequent first)."""
    counts: dict[int, int] = {}
    for p in sorted((Path(out_dir) / SHARDS_SUBDIR).glob("shard_*_of_*.json")):
        try:
            n = int(json.loads(p.read_text())["n"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        counts[n] = counts.get(n, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))


def missing_description(out_dir: str | Path, missing_blocks: list[int], n_refs: int,
                        block_size: int) -> str:
    """'shards 0/4, 2/4 (references 0-1, 4-5 of 8)' (or only the references when no shard
    record says how many shards the run was split into)."""
    ranges = block_ranges(n_refs, block_size)
    refs = [i for b in missing_blocks for i in range(*ranges[b])]
    where = f"references {fmt_ranges(refs)} of {n_refs} ({len(missing_blocks)} of {len(ranges)} blocks)"
    counts = shard_counts(out_dir)
    if not counts:
        return where
    n = counts[0]
    gone = set(missing_blocks)
    shards = [f"{k}/{n}" for k in range(n) if gone & set(shard_blocks(len(ranges), (k, n)))]
    return f"shard{'s' if len(shards) > 1 else ''} {', '.join(shards)}: {where}"


def _record(out_dir: Path, k: int, n: int, mine: range, ranges: list, report: ShardReport) -> None:
    refs = [ranges[b] for b in mine]
    write_json_atomic(out_dir / SHARDS_SUBDIR / f"shard_{k}_of_{n}.json",
                      {"shard": f"{k}/{n}", "k": k, "n": n, "blocks": [mine.start, mine.stop],
                       "references": [refs[0][0], refs[-1][1]] if refs else None,
                       "elapsed_s": report.elapsed_s})


def run_shard(engine: Any, out_dir: str | Path, shard: str | tuple[int, int]) -> tuple[VariationResult, ShardReport]:
    """Run shard ``k/n`` of a :class:`~matdyn.sampling.engine.VariationEngine` into
    ``out_dir`` (resuming its finished blocks), write its record and report.

    Raises ConfigError for a bad shard spec (``k/n`` with integers 0 <= k < n) and for a
    directory holding another run (the engine's fingerprint check).
    """
    k, n = parse_shard(shard)
    out = Path(out_dir)
    t0 = time.perf_counter()
    ranges = engine.blocks
    mine = shard_blocks(len(ranges), (k, n))
    before = set(_done_blocks(out, len(ranges))) if (out / "manifest.json").is_file() else set()
    result = engine.run(out, shard=(k, n))
    done = sorted(_done_blocks(out, len(ranges)))
    missing = sorted(set(range(len(ranges))) - set(done))
    refs = [i for b in mine for i in range(*ranges[b])]
    report = ShardReport(
        shard=f"{k}/{n}", out_dir=str(out), references=fmt_ranges(refs),
        blocks_run=len([b for b in mine if b not in before]),
        blocks_skipped=len([b for b in mine if b in before]), blocks_done_total=len(done),
        blocks_total=len(ranges), missing="", elapsed_s=round(time.perf_counter() - t0, 2))
    _record(out, k, n, mine, ranges, report)
    if missing:
        report.missing = missing_description(out, missing, engine.n_refs, engine.block_size)
    return result, report


def require_complete(out_dir: str | Path, what: str = "the variation run",
                     then: str = "run those shards into the same directory, then merge again",
                     ) -> VariationResult:
    """The complete result of ``out_dir`` (every block present), else an AnalysisError
    naming the missing shards and references, followed by ``then`` (what to do)."""
    out = Path(out_dir)
    if not (out / "manifest.json").is_file():
        raise AnalysisError(f"{out} holds no variation results: run the shards (shard=k/n) of "
                            f"{what} into it first")
    manifest = _read_manifest(out)
    result = merge_results(out, require_complete=False)
    if not result.complete:
        miss = missing_description(out, result.missing_blocks, int(manifest["n_refs"]),
                                   int(manifest["block_size"]))
        raise AnalysisError(f"{what} in {out} is incomplete, missing {miss}; {then}")
    return result
