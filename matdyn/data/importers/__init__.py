"""Import frames from disk into a dataset store.

Supported sources (a folder of files, or one file):

* TIFF — every page of every series (multi-page, page-per-series, ImageJ hyperstacks,
  OME-TIFF), LZW/deflate/zstd-compressed through ``imagecodecs``;
* PNG / JPEG / BMP / GIF — 8- and 16-bit grey, grey+alpha, RGB(A) (Pillow);
* ``.npy`` — per-frame files (natural sort order; channels first or last) with the paper
  authors' optional ``norm_term.npy`` (their images are normalised as ``(x - norm) / norm``;
  we keep frames in physical units and record ``norm`` in the store), or one stack;
* HDF5 (``h5py``: ``pip install matdyn[hdf5]``) with a dataset key;
* video (.mov, .avi, .mp4, .mkv) and camera containers (.cine, .seq, .spe) through pims.

The axis order of what is read (TIFF series axes, PIL mode, .npy shape) is mapped to
``[N, C, (D,) H, W]`` in one place (:mod:`matdyn.data.importers.axes`); ``axes=`` overrides
it, and an ambiguous layout is refused with the ``axes=`` to pass. Frames are streamed into
:class:`~matdyn.data.store.StoreWriter` (bounded memory; a failure leaves no store behind).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matdyn.data.importers.axes import Block, Notes, select_channels, to_frames
from matdyn.data.importers.readers import (
    H5_SUFFIXES,
    IMAGE_SUFFIXES,
    PIL_SUFFIXES,
    PIMS_SUFFIXES,
    TIFF_SUFFIXES,
    fail,
    read_hdf5,
    read_npy_frame,
    read_npy_stack,
    read_pil,
    read_pims,
    read_tiff,
)
from matdyn.data.scaling import outlier_message, robust_limits
from matdyn.data.store import StoreWriter, open_store
from matdyn.errors import ImportDataError, StoreError

__all__ = ["import_frames", "ImportSummary", "IMAGE_SUFFIXES", "H5_SUFFIXES", "PIMS_SUFFIXES"]
log = logging.getLogger("matdyn.data")
_BATCH = 64
_FOLDER_SUFFIXES = (".npy",) + IMAGE_SUFFIXES + PIMS_SUFFIXES


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _file_blocks(p: Path, *, axes: str | None, ndim: int, h5_key: str, n_names: int | None,
                 in_folder: bool) -> Iterator[Block]:
    """Blocks of one file; any reader failure becomes one ImportDataError line naming it."""
    try:
        yield from _reader_blocks(p, axes=axes, ndim=ndim, h5_key=h5_key, n_names=n_names,
                                  in_folder=in_folder)
    except ImportDataError:
        raise
    except Exception as e:  # a reader library's own error on a damaged/odd file
        raise fail(p, f"{p.suffix or 'file'} file", e) from None


def _reader_blocks(p: Path, *, axes: str | None, ndim: int, h5_key: str, n_names: int | None,
                   in_folder: bool) -> Iterator[Block]:
    """Blocks of one file, by suffix."""
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if in_folder:
            yield read_npy_frame(p, axes, ndim, n_names)
        else:
            yield from read_npy_stack(p, axes, ndim, n_names)
    elif suffix in TIFF_SUFFIXES:
        yield from read_tiff(p, axes, ndim)
    elif suffix in PIL_SUFFIXES:
        yield from read_pil(p, axes)
    elif suffix in H5_SUFFIXES and not in_folder:
        yield from read_hdf5(p, h5_key, axes, ndim, n_names)
    elif suffix in PIMS_SUFFIXES:
        yield from read_pims(p, axes)
    else:
        kinds = ".npy, .tif, .png, .jpg, .h5, .mp4/.avi/.mov, .cine, .seq, .spe"
        raise ImportDataError(f"{p}: unsupported file type '{suffix or p.name}' (use {kinds})")


def _folder_files(src: Path, pattern: str | None) -> tuple[list[Path], dict]:
    """The frame files of a folder (one kind) and the norm_term found beside them."""
    extra: dict = {}
    files = sorted((p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=_natural_key)
    if pattern:
        files = [p for p in files if p.match(pattern)]
    norm = src / "norm_term.npy"
    if norm.exists():
        try:
            vals = np.asarray(np.load(norm, allow_pickle=False), dtype=np.float64).ravel()
        except Exception as e:
            raise ImportDataError(f"{norm}: unreadable ({type(e).__name__}: {e})") from None
        if vals.size == 0 or not np.isfinite(vals).all():
            raise ImportDataError(f"{norm}: norm_term must be finite numbers, got {vals.tolist()}")
        extra["norm_term"] = vals.tolist()
    files = [p for p in files if p.name != "norm_term.npy" and p.suffix.lower() in _FOLDER_SUFFIXES]
    kinds = {".npy" if p.suffix.lower() == ".npy" else "image" for p in files}
    if len(kinds) > 1:
        raise ImportDataError(
            f"{src}: holds both .npy files and images; pass pattern='*.npy' or pattern='*.png'"
        )
    if not files:
        raise ImportDataError(
            f"{src}: no frames found (.npy, .png, .tif, video); check the folder or the pattern"
        )
    return files, extra


def _blocks(src: Path, *, axes, ndim, h5_key, pattern, n_names) -> tuple[Iterator[Block], dict]:
    if not src.exists():
        raise ImportDataError(f"{src}: no such file or folder")
    if src.is_dir():
        files, extra = _folder_files(src, pattern)

        def gen() -> Iterator[Block]:
            for p in files:
                yield from _file_blocks(p, axes=axes, ndim=ndim, h5_key=h5_key, n_names=n_names,
                                        in_folder=True)

        return gen(), extra
    return _file_blocks(src, axes=axes, ndim=ndim, h5_key=h5_key, n_names=n_names,
                        in_folder=False), {}


@dataclass
class ImportSummary:
    """What an import understood: printed as one line by ``scripts/import_data.py``."""

    frames: int = 0
    channels: list[str] = field(default_factory=list)
    spatial: tuple[int, ...] = ()
    dtypes: list[str] = field(default_factory=list)
    vmin: float = float("inf")
    vmax: float = float("-inf")
    notes: Notes = field(default_factory=Notes)
    warning: str | None = None
    report: bool = True
    #: frames read from a folder of files (each file's axes are per file)
    folder: bool = False
    #: channel names not given: the default name(s) were used
    default_names: bool = False
    #: blocks read (a file, or a TIFF series / HDF5 dataset within one)
    blocks: int = 0

    def line(self) -> str:
        extra = []
        n = self.notes
        if n.dropped_alpha:
            extra.append("alpha dropped")
        if n.grey_collapsed:
            extra.append("equal RGB -> grey")
        if n.luma:
            extra.append("RGB -> grey (BT.601 luma)")
        if n.colour:
            extra.append("3 colour channels: pass grey=true for one grey channel")
        if self.folder:
            extra.append("one frame per file, files in natural order" if self.frames == self.blocks
                         else "the files' frames concatenated in natural order")
        sp = "x".join(str(s) for s in self.spatial)
        named = ("" if not self.default_names else " (default name; channel_names= names it)"
                 if len(self.channels) == 1 else " (default names; channel_names= names them)")
        return (f"imported {self.frames} frames, {len(self.channels)} channel(s) "
                f"[{', '.join(self.channels)}]{named}, {len(self.spatial)}D {sp} px, source dtype "
                f"{'/'.join(self.dtypes)} (stored as float32), values [{self.vmin:.6g}, "
                f"{self.vmax:.6g}], axes {'; '.join(n.axes)}{' per file' if self.folder else ''}"
                + (f" ({'; '.join(extra)})" if extra else ""))


def import_frames(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    pixel_size: float,
    unit: str = "nm",
    channel_names: list[str] | None = None,
    ndim: int = 2,
    frame_interval: float | None = None,
    time_unit: str = "s",
    pattern: str | None = None,
    h5_key: str = "images",
    axes: str | None = None,
    grey: bool = False,
    channels: list[int] | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    summary: ImportSummary | None = None,
) -> Path:
    """Import frames from `src` into a new store at `out` and return its path.

    Args:
        axes: axis letters of each file/series/dataset as read (e.g. ``TYX``, ``YXC``,
            ``TZCYX``), overriding what the container says or the shape suggests.
        grey: import RGB as one grey channel (ITU-R BT.601 luma 0.299/0.587/0.114).
        channels: keep only these channel indices (applied before ``grey``).
        summary: filled with what was understood (frames, channels, shape, dtype, range,
            axes) and the outlier warning, if any; ``summary.line()`` is the one-line report.
            Without it, the outlier warning goes to the ``matdyn.data`` logger.

    Errors: :class:`ImportDataError` with one line naming the file and the fix.

    >>> import tempfile, numpy as np, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3): np.save(d / f"f{i}.npy", np.full((4, 4), i, np.float32))
    >>> import_frames(d, d / "s.zarr", pixel_size=40.58, progress=False).name
    's.zarr'
    """
    if ndim not in (2, 3):
        raise ImportDataError(f"ndim must be 2 (images) or 3 (volumes), got {ndim}")
    try:
        pixel_size = float(pixel_size)
    except (TypeError, ValueError):
        raise ImportDataError(f"pixel_size must be a number in {unit}/px, got {pixel_size!r}") from None
    if not pixel_size > 0 or not np.isfinite(pixel_size):
        raise ImportDataError(f"pixel_size must be a positive number in {unit}/px, got {pixel_size}")
    if frame_interval is not None:
        try:
            frame_interval = float(frame_interval)
        except (TypeError, ValueError):
            raise ImportDataError(f"frame_interval must be a number in {time_unit}, got "
                                  f"{frame_interval!r}") from None
        if not frame_interval > 0 or not np.isfinite(frame_interval):
            raise ImportDataError(f"frame_interval must be positive, got {frame_interval}")
    src, out = Path(src), Path(out)
    if axes is not None and not str(axes).strip():
        axes = None
    n_names = len(channel_names) if channel_names else None
    blocks, extra = _blocks(src, axes=axes, ndim=ndim, h5_key=h5_key, pattern=pattern,
                            n_names=n_names)
    s = summary if summary is not None else ImportSummary()
    s.report = summary is None  # without a summary object, the outlier warning is logged
    frames = _frames(blocks, ndim, grey, channels, s)
    first, origin = next(frames, (None, None))
    if first is None:
        raise ImportDataError(f"{src}: contains zero frames")
    if 0 in first.shape:
        raise ImportDataError(f"{origin}: frame shape {tuple(first.shape)} (channels, *spatial) "
                              "has an empty dimension; check the file or pass axes=")
    names = [str(n) for n in channel_names] if channel_names else (
        ["phase"] if first.shape[0] == 1 else [f"ch{i}" for i in range(first.shape[0])]
    )
    if len(names) != first.shape[0]:
        raise ImportDataError(
            f"{origin}: frames have {first.shape[0]} channels but channel_names has {len(names)} "
            f"({names}); make them agree (or pass axes=/channels=)"
        )
    norm = extra.get("norm_term")
    if norm is not None and len(norm) not in (1, len(names)):
        raise ImportDataError(
            f"{src / 'norm_term.npy'}: has {len(norm)} values but frames have {len(names)} "
            "channel(s); give one value, or one per channel"
        )
    s.channels, s.spatial = names, tuple(first.shape[1:])
    s.folder, s.default_names = src.is_dir(), not channel_names
    _write(out, first, origin, frames, s, extra, progress,
           dict(pixel_size=pixel_size, unit=unit, frame_interval=frame_interval,
                time_unit=time_unit, source=str(src.resolve()), name=name or out.stem,
                overwrite=overwrite))
    _check_outliers(out, s)
    return out


def _frames(blocks: Iterator[Block], ndim: int, grey: bool, channels: list[int] | None,
            s: ImportSummary) -> Iterator[tuple[np.ndarray, str]]:
    """Single frames ``[C, *spatial]`` (float32) with their origin."""
    for b in blocks:
        s.blocks += 1
        dt = str(np.asarray(b.array).dtype)
        if dt not in s.dtypes:
            s.dtypes.append(dt)
        arr = select_channels(to_frames(b, ndim, s.notes), grey, channels, b.origin, s.notes)
        for f in arr:
            yield f.astype(np.float32, copy=False), b.origin


def _write(out: Path, first: np.ndarray, origin: str, frames, s: ImportSummary, extra: dict,
           progress: bool, meta: dict) -> None:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"import {Path(meta['source']).name}", unit="frame")
    shape, nc = s.spatial, len(s.channels)
    try:
        with StoreWriter(out, spatial_shape=shape, channel_names=s.channels, **meta) as w:
            w.attrs.update(extra)
            frame, where = first, origin
            buf: list[np.ndarray] = []
            while frame is not None:
                _check_frame(frame, where, nc, shape, s)
                buf.append(frame)
                s.frames += 1
                s.vmin, s.vmax = min(s.vmin, float(frame.min())), max(s.vmax, float(frame.max()))
                if len(buf) == _BATCH:  # append in batches: fewer zarr resizes, bounded memory
                    w.append(np.stack(buf))
                    buf.clear()
                if bar is not None:
                    bar.update(1)
                frame, where = next(frames, (None, None))
            if buf:
                w.append(np.stack(buf))
            w.attrs["import"] = {"axes": list(s.notes.axes), "dtype": list(s.dtypes),
                                 "summary": s.line()}
    except StoreError as e:
        raise ImportDataError(str(e)) from None
    except MemoryError:
        raise ImportDataError(f"{origin}: out of memory reading this file; split it") from None
    finally:
        if bar is not None:
            bar.close()


def _check_frame(frame: np.ndarray, where: str, nc: int, shape: tuple, s: ImportSummary) -> None:
    if frame.shape[0] != nc:
        hint = "; pass grey=true or channels=[0]" if s.notes.grey_collapsed or s.notes.colour else ""
        raise ImportDataError(
            f"{where}: has {frame.shape[0]} channels, earlier frames have {nc}; all frames need "
            f"the same channels{hint}"
        )
    if tuple(frame.shape[1:]) != shape:
        raise ImportDataError(
            f"{where}: frame size {tuple(frame.shape[1:])} differs from the first frame's "
            f"{shape}; crop/resize to one size first"
        )
    if not np.isfinite(frame).all():
        raise ImportDataError(
            f"{where}: contains NaN/inf values; clean it (e.g. np.nan_to_num) or remove the file"
        )


def _check_outliers(out: Path, s: ImportSummary) -> None:
    """Warn in one line when a few outlier pixels would dictate min/max scaling."""
    store = open_store(out, validate=False)
    step = max(1, int(store.images.chunks[0]))
    n = len(store)
    lims = robust_limits((store.load(i, min(n, i + step)) for i in range(0, n, step)), n)
    s.warning = outlier_message(lims, s.channels, str(out))
    if s.warning and s.report:
        log.warning(s.warning)
