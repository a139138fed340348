"""On-disk results of the variation engine: ``<out_dir>/manifest.json`` and one
``blocks/block_<b>.npz`` of reducer outputs per finished block, read back lazily as a
:class:`VariationResult`; :func:`merge_results` combines the directories of shards.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import atomic_writer
from matdyn.sampling.streams import block_ranges

log = logging.getLogger("matdyn.sampling")

__all__ = ["FORMAT", "FORMAT_VERSION", "VariationResult", "load_results", "merge_results"]

FORMAT = "matdyn-variations"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- results
class VariationResult:
    """Per-reference outputs assembled from blocks, loaded lazily: ``result["mean/mean"]``
    is [M', ...] over the references covered (M' = M for a complete run)."""

    def __init__(
        self, manifest: dict[str, Any], blocks: dict[int, Path | dict[str, np.ndarray]]
    ) -> None:
        self.manifest = manifest
        self._blocks = dict(sorted(blocks.items()))
        self._ranges = block_ranges(manifest["n_refs"], manifest["block_size"])

    @property
    def n_refs(self) -> int:
        return int(self.manifest["n_refs"])

    @property
    def n_samples(self) -> int:
        return int(self.manifest["n_samples"])

    @property
    def complete(self) -> bool:
        """True when every block of the run is present."""
        return len(self._blocks) == len(self._ranges)

    @property
    def missing_blocks(self) -> list[int]:
        return [b for b in range(len(self._ranges)) if b not in self._blocks]

    @property
    def ref_indices(self) -> np.ndarray:
        """Global indices of the covered references, ascending."""
        parts = [np.arange(*self._ranges[b]) for b in self._blocks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _get(self, b: int, key: str | None) -> Any:
        """One array of block b (or, with key=None, the block's key list)."""
        src = self._blocks[b]
        if isinstance(src, Path):
            with np.load(src) as f:
                return list(f.files) if key is None else (f[key] if key in f.files else None)
        return list(src) if key is None else src.get(key)

    def keys(self) -> list[str]:
        if not self._blocks:
            return []
        return sorted(k for k in self._get(next(iter(self._blocks)), None) if not k.startswith("_"))

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        parts = []
        for b in self._blocks:
            value = self._get(b, key)
            if value is None:
                raise KeyError(f"{key!r} not in results; available: {self.keys()}")
            parts.append(value)
        if not parts:
            raise KeyError(f"{key!r}: the results hold no finished block")
        return np.concatenate(parts, axis=0)

    def to_dict(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return {k: self[k] for k in (keys or self.keys())}

    def __repr__(self) -> str:
        return (
            f"VariationResult(n_refs={self.n_refs}, n_samples={self.n_samples}, "
            f"blocks={len(self._blocks)}/{len(self._ranges)}, keys={self.keys()})"
        )


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnalysisError(
            f"{out_dir} is not a variation results directory (no manifest.json)"
        ) from None
    except (OSError, json.JSONDecodeError) as err:
        raise AnalysisError(f"cannot read {path}: {err}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise AnalysisError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest


def _block_path(out_dir: Path, b: int) -> Path:
    return out_dir / "blocks" / f"block_{b:06d}.npz"


def _block_readable(path: Path) -> bool:
    """A block file that opens as a zip and whose members pass their CRC check. An
    unreadable one (truncated or damaged: a disk error, a copy cut short) is removed with
    one log line so that it counts as missing and is recomputed, never fatal."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is None:
            return True
        why = f"member {bad} fails its CRC check"
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        why = f"{type(err).__name__}: {err}"
    log.warning("%s is unreadable (%s); removed, it will be recomputed", path, why)
    path.unlink(missing_ok=True)
    return False


def _done_blocks(out_dir: Path, n_blocks: int) -> dict[int, Path]:
    return {b: p for b in range(n_blocks)
            if (p := _block_path(out_dir, b)).is_file() and _block_readable(p)}


def merge_results(*dirs: str | Path, require_complete: bool = True) -> VariationResult:
    """Combine the results directories of shards (or one directory) into one result.

    All manifests must describe the same run; with ``require_complete`` every block of the
    run must be present.
    """
    if not dirs:
        raise ConfigError("merge_results needs at least one results directory")
    manifest: dict[str, Any] | None = None
    blocks: dict[int, Path | dict[str, np.ndarray]] = {}
    for d in map(Path, dirs):
        m = _read_manifest(d)
        if manifest is None:
            manifest = m
        elif m["fingerprint"] != manifest["fingerprint"]:
            diff = sorted(
                k for k in m["fingerprint"] if m["fingerprint"][k] != manifest["fingerprint"].get(k)
            )
            raise AnalysisError(f"{d} holds a different run than {dirs[0]} (differs in {diff})")
        n_blocks = len(block_ranges(m["n_refs"], m["block_size"]))
        for b, p in _done_blocks(d, n_blocks).items():
            blocks.setdefault(b, p)
    assert manifest is not None
    result = VariationResult(manifest, blocks)
    if require_complete and not result.complete:
        miss = result.missing_blocks
        raise AnalysisError(
            f"results are incomplete: {len(miss)} of {len(result._ranges)} blocks missing "
            f"(first: block {miss[0]}, references {result._ranges[miss[0]]}); run the missing "
            "shards or pass require_complete=False"
        )
    return result


def load_results(out_dir: str | Path) -> VariationResult:
    """Open one results directory (complete or not)."""
    return merge_results(out_dir, require_complete=False)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a crash leaves either the old state or the complete file."""
    with atomic_writer(path, "wb", fsync=True) as fh:
        np.savez(fh, **arrays)
