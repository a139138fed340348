"""Readers: one per container kind, each yielding :class:`~matdyn.data.importers.axes.Block`
pieces with the axis letters the container says (or that can be inferred unambiguously).

* TIFF (tifffile): every page of every series, series axes from OME / ImageJ / shaped
  metadata; compressed TIFF (LZW, deflate, ...) through ``imagecodecs``.
* PNG / JPEG / BMP / GIF (Pillow): the PIL mode gives the axes (L, I;16, F -> YX;
  LA, RGB, RGBA -> YXS); every frame of an animated file.
* ``.npy`` (numpy, memory-mapped) and HDF5 (h5py): no metadata, so the layout is
  inferred by :func:`~matdyn.data.importers.axes.infer_frame_axes` or given by ``axes=``.
* video (.mov, .avi, .mp4, .mkv) and camera containers (.cine, .seq, .spe) through pims
  (video also needs PyAV).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from matdyn.data.importers.axes import (
    Block,
    check_axes,
    infer_frame_axes,
    infer_stack_axes,
    roles,
)
from matdyn.errors import ImportDataError

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
VIDEO_SUFFIXES = (".mov", ".avi", ".mp4", ".mkv")
CAMERA_SUFFIXES = (".cine", ".seq", ".spe")
PIMS_SUFFIXES = VIDEO_SUFFIXES + CAMERA_SUFFIXES
_CHUNK = 64  # frames per block for stacks (bounded memory)
TIFF_READ_BYTES = 256 * 2**20  # TIFF series larger than this are read in slices of pages
# PIL modes: which ones convert before reading, and their axes afterwards
_PIL_CONVERT = {"P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                "HSV": "RGB", "1": "L", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}


def fail(path: Path | str, what: str, e: Exception) -> ImportDataError:
    msg = str(e).splitlines()[0] if str(e) else ""
    if "imagecodecs" in msg:
        return ImportDataError(
            f"{path}: compressed TIFF needs the 'imagecodecs' package; install it with "
            "`pip install imagecodecs`"
        )
    return ImportDataError(f"{path}: unreadable {what} ({type(e).__name__}: {msg[:200]})")


def _chunks(arr, axes: str, origin: str, frame_axis: bool) -> Iterator[Block]:
    """Slices of a (lazy) array along its first axis when that axis is a frame axis."""
    if not frame_axis or arr.ndim == 0:
        yield Block(np.asarray(arr), axes, origin)
        return
    for i in range(0, arr.shape[0], _CHUNK):
        yield Block(np.asarray(arr[i: i + _CHUNK]), axes, origin)


def _leading_is_frames(axes: str, ndim: int, origin: str) -> bool:
    """Whether slicing the first axis keeps whole frames (not a channel or depth axis)."""
    return roles(axes, ndim, origin)[0] == "N"


def read_tiff(path: Path, axes: str | None, ndim: int) -> Iterator[Block]:
    """Every page of every series of a TIFF, with the series' axes (or ``axes=``)."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as e:
        raise fail(path, "TIFF", e) from None
    with tif:
        series = list(tif.series)
        if not series:
            raise ImportDataError(f"{path}: TIFF holds no images")
        for k, s in enumerate(series):
            origin = f"{path} (series {k})" if len(series) > 1 else str(path)
            ax = axes or s.axes
            try:
                yield from _series_blocks(tif, k, s, ax, ndim, origin)
            except ImportDataError:
                raise
            except Exception as e:
                raise fail(origin, "TIFF", e) from None


def _series_blocks(tif, k: int, s, ax: str, ndim: int, origin: str) -> Iterator[Block]:
    """One TIFF series; a large one in slices of its leading frame axis, page by page."""
    shape = tuple(s.shape)
    page_size = int(np.prod(s.keyframe.shape, dtype=np.int64))
    n_pages = int(np.prod(shape, dtype=np.int64)) // max(1, page_size)
    big = s.nbytes > TIFF_READ_BYTES and len(shape) == len(ax) and len(shape) > 1
    if (not big or len(s.pages) != n_pages or n_pages % shape[0]
            or not _leading_is_frames(check_axes(ax, shape, origin), ndim, origin)):
        yield Block(s.asarray(), ax, origin)
        return
    per = n_pages // shape[0]  # pages per index of the leading axis
    step = max(1, TIFF_READ_BYTES // max(1, s.nbytes // shape[0]))
    for i in range(0, shape[0], step):
        j = min(shape[0], i + step)
        arr = tif.asarray(series=k, key=slice(i * per, j * per))
        yield Block(arr.reshape(j - i, *shape[1:]), ax, origin)


def read_pil(path: Path, axes: str | None) -> Iterator[Block]:
    """Every frame of a PNG/JPEG/BMP/GIF; axes from the PIL mode."""
    from PIL import Image, ImageSequence

    try:
        im = Image.open(path)
        im.load()
    except Exception as e:
        raise fail(path, "image", e) from None
    with im:
        n = int(getattr(im, "n_frames", 1) or 1)
        for i, fr in enumerate(ImageSequence.Iterator(im)):
            mode = fr.mode
            if mode in _PIL_CONVERT:
                fr = fr.convert(_PIL_CONVERT[mode])
            arr = np.asarray(fr)
            ax = axes or ("YX" if arr.ndim == 2 else "YXS")
            yield Block(arr, ax, f"{path} (frame {i})" if n > 1 else str(path))


def read_npy_frame(path: Path, axes: str | None, ndim: int, n_names: int | None) -> Block:
    """One per-frame .npy file (no frame axis unless ``axes=`` says so)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise fail(path, ".npy", e) from None
    ax = axes or infer_frame_axes(arr.shape, ndim, n_names, str(path))
    return Block(arr, ax, str(path))


def read_npy_stack(path: Path, axes: str | None, ndim: int, n_names: int | None) -> Iterator[Block]:
    """A .npy stack ``[N, (C,) *spatial]`` read in slices of frames (memory-mapped)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise fail(path, ".npy", e) from None
    yield from _lazy_stack(arr, axes, ndim, n_names, str(path))


def _lazy_stack(arr, axes: str | None, ndim: int, n_names: int | None, origin: str) -> Iterator[Block]:
    """A stack without metadata: ``[N, *spatial]``, ``[N, C|..., *spatial]`` or ``axes=``."""
    shape = tuple(arr.shape)
    ax = axes if axes is not None else infer_stack_axes(shape, ndim, n_names, origin)
    ax = check_axes(ax, shape, origin)
    yield from _chunks(arr, ax, origin, _leading_is_frames(ax, ndim, origin))


def read_hdf5(path: Path, key: str, axes: str | None, ndim: int,
              n_names: int | None) -> Iterator[Block]:
    """An HDF5 dataset ``[N, (C,) *spatial]`` read in slices of frames."""
    try:
        import h5py
    except ImportError:
        raise ImportDataError(
            f"{path}: reading HDF5 needs h5py; install it with `pip install 'matdyn[hdf5]'`"
        ) from None
    try:
        fh = h5py.File(path, "r")
    except Exception as e:
        raise fail(path, "HDF5", e) from None
    with fh:
        if key not in fh or not isinstance(fh[key], h5py.Dataset):
            names = []
            fh.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            raise ImportDataError(
                f"{path}: no dataset '{key}' (datasets: {', '.join(names[:8]) or 'none'}); set h5_key"
            )
        try:
            yield from _lazy_stack(fh[key], axes, ndim, n_names, f"{path}:{key}")
        except (OSError, ValueError, TypeError) as e:
            raise fail(path, "HDF5 data", e) from None


def read_pims(path: Path, axes: str | None) -> Iterator[Block]:
    """Video and camera containers through pims, frame by frame."""
    suffix = path.suffix.lower()
    need = "pims av" if suffix in VIDEO_SUFFIXES else "pims"
    try:
        import pims
        if suffix in VIDEO_SUFFIXES:
            import av  # noqa: F401  (pims' video reader)
    except ImportError:
        raise ImportDataError(
            f"{path}: reading {suffix} files needs {need.replace(' ', ' and ')}; install with "
            f"`pip install {need}`"
        ) from None
    try:
        if suffix in VIDEO_SUFFIXES:
            import av

            av.open(str(path)).close()  # a damaged file fails here, before pims' reader exists
            reader = pims.PyAVReaderIndexed(str(path))
        else:
            cls = {".cine": pims.Cine, ".seq": pims.NorpixSeq, ".spe": pims.SpeStack}[suffix]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pims warns about header/file-size mismatches
                reader = cls(str(path))
    except Exception as e:
        raise fail(path, f"{suffix} file", e) from None
    try:
        n = len(reader)
        for i in range(n):
            try:
                arr = np.asarray(reader[i])
            except Exception as e:
                raise fail(f"{path} (frame {i})", f"{suffix} frame", e) from None
            ax = axes or ("YX" if arr.ndim == 2 else "YXS")
            yield Block(arr, ax, f"{path} (frame {i})")
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
