"""The dataset store: one zarr group per dataset.

Layout (format version 1)::

    <name>.zarr/
      images          float32 [N, C, H, W] or [N, C, D, H, W]
      labels/<name>   per-frame arrays, length N (e.g. stage_days, time)
      truth/<name>    ground-truth arrays of any shape (synthetic data only)
      attrs           matdyn_format, name, pixel_size, unit, channel_names, frame_interval,
                      time_unit, source, truth (JSON scalars), extra

Stores are written by :class:`StoreWriter`, which streams frames into a temporary sibling
directory and renames it into place only after validation succeeded, so a crash or a bad
frame never leaves a half-written store at the target path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from matdyn.errors import StoreError
from matdyn.io import clean_stale_siblings, replace_dir, temp_token, to_jsonable
from matdyn.locks import sibling_lock_path, writer_lock

FORMAT_VERSION = 1
#: frames per zarr chunk are chosen so one chunk holds about this many bytes
_CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class StoreMeta:
    """Physical metadata of a store (everything except the arrays)."""

    name: str
    pixel_size: float
    unit: str
    channel_names: tuple[str, ...]
    frame_interval: float | None
    time_unit: str
    source: str
    n_frames: int
    spatial_shape: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 for images, 3 for volumes)."""
        return len(self.spatial_shape)

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_names"] = list(self.channel_names)
        d["spatial_shape"] = list(self.spatial_shape)
        return d


def _frame_chunk(spatial_shape: tuple[int, ...], channels: int) -> int:
    per_frame = channels * math.prod(spatial_shape) * 4
    return int(max(1, min(256, _CHUNK_BYTES // max(per_frame, 1))))


class StoreWriter:
    """Stream frames into a new store; validate and atomically move it into place on close.

    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> with StoreWriter(d + "/x.zarr", spatial_shape=(8, 8), channel_names=["phase"],
    ...                  pixel_size=40.58, unit="nm") as w:
    ...     w.append(np.zeros((3, 1, 8, 8), np.float32))
    >>> len(open_store(d + "/x.zarr"))
    3
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        spatial_shape: tuple[int, ...],
        channel_names: list[str] | tuple[str, ...],
        pixel_size: float,
        unit: str = "nm",
        frame_interval: float | None = None,
        time_unit: str = "s",
        source: str = "unknown",
        name: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.channel_names = tuple(str(c) for c in channel_names)
        if len(self.spatial_shape) not in (2, 3):
            raise StoreError(
                f"{self.path}: spatial_shape {self.spatial_shape} must have 2 (H, W) or 3 (D, H, W) "
                "entries"
            )
        if not self.channel_names:
            raise StoreError(f"{self.path}: channel_names is empty; give one name per channel")
        if not (pixel_size > 0 and math.isfinite(pixel_size)):
            raise StoreError(f"{self.path}: pixel_size must be a positive number, got {pixel_size}")
        if self.path.exists() and not overwrite:
            raise StoreError(
                f"{self.path} already exists; pass overwrite=true (or choose another path)"
            )
        self.overwrite = overwrite
        self.name = name or self.path.stem
        self.pixel_size = float(pixel_size)
        self.unit = unit
        self.frame_interval = None if frame_interval is None else float(frame_interval)
        self.time_unit = time_unit
        self.source = source
        self.truth_attrs: dict[str, Any] = {}
        self.attrs: dict[str, Any] = {}
        self._labels: dict[str, np.ndarray] = {}
        self._truth: dict[str, np.ndarray] = {}
        self._tmp: Path | None = None
        self._group: zarr.Group | None = None
        self._images: zarr.Array | None = None
        self._n = 0
        self._lock = contextlib.ExitStack()

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> StoreWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        try:  # one writer per store path; a second one is refused naming the first
            self._lock.enter_context(writer_lock(sibling_lock_path(self.path), f"store {self.path}"))
        except BaseException:
            self._lock.close()
            raise
        clean_stale_siblings(self.path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{temp_token()}-{uuid.uuid4().hex[:8]}")
        self._group = zarr.open_group(str(self._tmp), mode="w")
        c = len(self.channel_names)
        self._images = self._group.create_array(
            "images",
            shape=(0, c, *self.spatial_shape),
            chunks=(_frame_chunk(self.spatial_shape, c), c, *self.spatial_shape),
            dtype="float32",
            # every chunk is written (zarr 3 skips all-fill chunks by default) and a chunk
            # lost later reads as NaN, never as plausible zeros: validate_store catches both
            fill_value=float("nan"),
            config={"write_empty_chunks": True},
        )
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self._discard()
                return
            try:
                self._finish()
            except BaseException:
                self._discard()
                raise
        finally:
            self._lock.close()

    # -- writing -----------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return self._n

    def append(self, frames: np.ndarray) -> None:
        """Append a batch of frames shaped [n, C, *spatial] (streamed straight to disk)."""
        if self._images is None:
            raise StoreError("StoreWriter.append called outside its `with` block")
        frames = np.asarray(frames)
        expected = (len(self.channel_names), *self.spatial_shape)
        if frames.ndim == len(expected) and frames.shape == expected:
            frames = frames[None]
        if frames.ndim != len(expected) + 1:
            raise StoreError(
                f"{self.path}: frames have rank {frames.ndim}, expected {len(expected) + 1} "
                f"[n, C, {', '.join('DHW'[-len(self.spatial_shape):])}]"
            )
        if frames.shape[1] != expected[0]:
            raise StoreError(
                f"{self.path}: frames have {frames.shape[1]} channels but the store declares "
                f"{expected[0]} ({', '.join(self.channel_names)}); fix channel_names or the data"
            )
        if tuple(frames.shape[2:]) != self.spatial_shape:
            raise StoreError(
                f"{self.path}: frame size {tuple(frames.shape[2:])} differs from the store's "
                f"{self.spatial_shape}; crop or resize frames to one size before import"
            )
        if not np.issubdtype(frames.dtype, np.number):
            raise StoreError(f"{self.path}: frames must be numeric, got dtype {frames.dtype}")
        frames = frames.astype(np.float32, copy=False)
        if not np.isfinite(frames).all():
            bad = int((~np.isfinite(frames)).sum())
            raise StoreError(
                f"{self.path}: frames {self._n}..{self._n + len(frames) - 1} contain {bad} NaN/inf "
                "values; replace or mask them before writing (e.g. np.nan_to_num)"
            )
        n0 = self._n
        self._images.resize((n0 + len(frames), *expected))
        self._images[n0 : n0 + len(frames)] = frames
        self._n += len(frames)

    def set_label(self, name: str, values: np.ndarray | list) -> None:
        """Per-frame label array (checked against the frame count at close)."""
        self._labels[name] = np.asarray(values)

    def set_truth(self, name: str, array: np.ndarray) -> None:
        """Ground-truth array of any shape (synthetic data)."""
        self._truth[name] = np.asarray(array)

    # -- closing -----------------------------------------------------------------------------
    def _finish(self) -> None:
        assert self._group is not None and self._tmp is not None
        if self._n == 0:
            raise StoreError(f"{self.path}: no frames were written; a store needs at least one frame")
        for key, arr in self._labels.items():
            if len(arr) != self._n:
                raise StoreError(
                    f"{self.path}: label '{key}' has {len(arr)} entries for {self._n} frames; "
                    "give exactly one value per frame"
                )
            self._write_array(f"labels/{key}", arr)
        for key, arr in self._truth.items():
            self._write_array(f"truth/{key}", arr)
        self._group.attrs.update(
            to_jsonable(
                {
                    "matdyn_format": FORMAT_VERSION,
                    "name": self.name,
                    "pixel_size": self.pixel_size,
                    "unit": self.unit,
                    "channel_names": list(self.channel_names),
                    "frame_interval": self.frame_interval,
                    "time_unit": self.time_unit,
                    "source": self.source,
                    "truth": self.truth_attrs,
                    "extra": self.attrs,
                }
            )
        )
        validate_store(self._tmp, _display=self.path)
        replace_dir(self._tmp, self.path)
        self._tmp = None

    def _write_array(self, key: str, arr: np.ndarray) -> None:
        assert self._group is not None
        if arr.dtype.kind in "US":
            arr = arr.astype(str).astype(object) if arr.dtype.kind == "U" else arr
            self._group.attrs.setdefault("string_labels", {})
            sl = dict(self._group.attrs.get("string_labels", {}))
            sl[key] = [str(v) for v in arr.tolist()]
            self._group.attrs["string_labels"] = sl
            return
        a = self._group.create_array(key, shape=arr.shape, dtype=arr.dtype, fill_value=0)
        if arr.size:
            a[...] = arr

    def _discard(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class Store:
    """Read access to a validated store."""

    def __init__(self, path: Path, group: zarr.Group, meta: StoreMeta) -> None:
        self.path = path
        self.group = group
        self.meta = meta
        self.images: zarr.Array = group["images"]  # [N, C, *spatial]
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.meta.n_frames

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"Store({str(self.path)!r}, {m.n_frames} frames, {m.channels} ch "
            f"{'x'.join(map(str, m.spatial_shape))} @ {m.pixel_size:g} {m.unit}/px, source={m.source})"
        )

    def load(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames [start:stop] as a float32 array."""
        return np.asarray(self.images[start:stop], dtype=np.float32)

    def _sub(self, prefix: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if prefix in self.group:
            sub = self.group[prefix]
            for key, arr in sub.arrays():
                out[key] = np.asarray(arr[...])
        for key, vals in dict(self.group.attrs.get("string_labels", {})).items():
            p, _, k = key.partition("/")
            if p == prefix:
                out[k] = np.asarray(vals)
        return out

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """Per-frame labels (e.g. ``stage_days``), each of length N."""
        return self._sub("labels")

    @property
    def truth(self) -> dict[str, np.ndarray]:
        """Ground-truth arrays written by a synthetic generator (empty for real data)."""
        return self._sub("truth")

    @property
    def truth_attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("truth", {}) or {})


def _fail(display: Path, msg: str) -> StoreError:
    return StoreError(f"{display}: {msg}")


def validate_store(
    path: str | os.PathLike, *, check_values: bool = True, _display: Path | None = None
) -> StoreMeta:
    """Check a store against the format contract and return its metadata.

    Raises :class:`StoreError` with one line naming the file and the fix for: a missing or
    unreadable store, missing arrays/attrs, wrong rank, zero frames, channel count not
    matching ``channel_names``, NaN/inf values (scanned chunk by chunk, bounded memory).
    """
    path = Path(path)
    display = _display or path
    if not path.exists():
        raise _fail(display, "no such store; create it with `python scripts/make_data.py` or "
                    "`python scripts/import_data.py`")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as e:  # zarr raises many kinds of errors for broken stores
        raise _fail(display, f"unreadable as a zarr store ({type(e).__name__}: {e}); "
                    "re-create it with make_data.py / import_data.py") from None
    if "images" not in group:
        raise _fail(display, "has no 'images' array; this is not a matdyn store "
                    "(import frames with scripts/import_data.py)")
    if attrs.get("matdyn_format") is None:
        raise _fail(display, "lacks the 'matdyn_format' attribute; this is not a matdyn store")
    if int(attrs["matdyn_format"]) > FORMAT_VERSION:
        raise _fail(display, f"format version {attrs['matdyn_format']} is newer than this matdyn "
                    f"supports ({FORMAT_VERSION}); upgrade matdyn")
    try:
        images = group["images"]
        shape = tuple(images.shape)
    except Exception as e:
        raise _fail(display, f"'images' array is unreadable ({type(e).__name__}: {e})") from None
    if len(shape) not in (4, 5):
        raise _fail(display, f"'images' has rank {len(shape)} (shape {shape}); expected 4 "
                    "[N, C, H, W] or 5 [N, C, D, H, W]")
    if shape[0] == 0:
        raise _fail(display, "contains zero frames; import at least one frame")
    channel_names = list(attrs.get("channel_names") or [])
    if len(channel_names) != shape[1]:
        raise _fail(display, f"'images' has {shape[1]} channels but channel_names lists "
                    f"{len(channel_names)} ({channel_names}); make them agree")
    pixel_size = attrs.get("pixel_size")
    if pixel_size is None or not float(pixel_size) > 0:
        raise _fail(display, f"pixel_size must be a positive number, got {pixel_size!r}")
    _check_chunks(images, path, display)
    if check_values:
        step = max(1, images.chunks[0])
        for i in range(0, shape[0], step):
            try:
                block = np.asarray(images[i : i + step])
            except Exception as e:
                raise _fail(display, f"frames {i}..{i + step - 1} are unreadable "
                            f"({type(e).__name__}); the store is corrupted, re-create it") from None
            if not np.isfinite(block).all():
                bad = np.flatnonzero(~np.isfinite(block).reshape(len(block), -1).all(axis=1))
                raise _fail(display, f"frame {i + int(bad[0])} (and {len(bad) - 1} more in this "
                            "chunk) contains NaN/inf values; clean the source data "
                            "(e.g. np.nan_to_num) and re-import")
    return StoreMeta(
        name=str(attrs.get("name", path.stem)),
        pixel_size=float(pixel_size),
        unit=str(attrs.get("unit", "px")),
        channel_names=tuple(channel_names),
        frame_interval=None if attrs.get("frame_interval") is None else float(attrs["frame_interval"]),
        time_unit=str(attrs.get("time_unit", "s")),
        source=str(attrs.get("source", "unknown")),
        n_frames=int(shape[0]),
        spatial_shape=tuple(int(s) for s in shape[2:]),
        extra=dict(attrs.get("extra", {}) or {}),
    )


def _check_chunks(images: zarr.Array, path: Path, display: Path) -> None:
    """A missing chunk of 'images' is an error (zarr would read it as its fill value)."""
    try:
        missing = images.nchunks - images.nchunks_initialized
    except Exception:  # pragma: no cover - a store zarr cannot list
        return
    if missing <= 0:
        return
    step, where = max(1, images.chunks[0]), ""
    for i in range(-(-images.shape[0] // step)):
        key = images.metadata.encode_chunk_key((i,) + (0,) * (images.ndim - 1))
        if not (path / "images" / key).exists():
            where = f" (first: frames {i * step}..{min(images.shape[0], (i + 1) * step) - 1})"
            break
    raise _fail(display, f"{missing} chunk(s) of 'images' are missing{where}; the store is "
                "incomplete or damaged, re-create it with make_data.py / import_data.py")


def open_store(path: str | os.PathLike, *, validate: bool = True) -> Store:
    """Open a store for reading. ``validate=False`` skips the NaN/inf scan (metadata still checked)."""
    path = Path(path)
    meta = validate_store(path, check_values=validate)
    return Store(path, zarr.open_group(str(path), mode="r"), meta)


def describe(store: Store) -> str:
    """A short JSON description of a store (for logs)."""
    return json.dumps({"path": str(store.path), **store.meta.to_dict()}, default=str)
