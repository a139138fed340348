"""Import frames from disk into a dataset store.

Supported sources:

* a folder of per-frame ``.npy`` files (sorted in natural order), optionally with the paper
  authors' ``norm_term.npy`` beside them (their images are normalised as
  ``(x - norm) / norm`` for training; we keep frames in physical units and record ``norm``
  in the store so training can use the same normalisation);
* a single ``.npy`` stack [N, ...];
* a folder of PNG / TIFF images, or one multi-page TIFF;
* an HDF5 file (``h5py`` needed: ``pip install matdyn[hdf5]``) with a dataset key.

Frames are streamed one file at a time into :class:`~matdyn.data.store.StoreWriter`, so
memory stays bounded and a failure leaves no store behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from matdyn.data.store import StoreWriter
from matdyn.errors import ImportDataError, StoreError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_BATCH = 64


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _to_frame(arr: np.ndarray, ndim: int, source: Path, channels_last: bool = False) -> np.ndarray:
    """Bring one frame to [C, *spatial]."""
    arr = np.asarray(arr)
    if channels_last and arr.ndim == ndim + 1:
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim == ndim:
        arr = arr[None]
    if arr.ndim != ndim + 1:
        raise ImportDataError(
            f"{source}: frame has shape {arr.shape}; expected {ndim}D spatial data "
            f"{'(H, W)' if ndim == 2 else '(D, H, W)'} optionally with a leading channel axis "
            "(set ndim=3 for volumes)"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise ImportDataError(f"{source}: dtype {arr.dtype} is not numeric")
    return arr.astype(np.float32, copy=False)


def _read_image(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as e:
        raise ImportDataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def _image_frame(img: np.ndarray, path: Path) -> np.ndarray:
    """Image pixels → [C, H, W]; identical RGB(A) channels collapse to one grey channel."""
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        rgb = img[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return _to_frame(rgb[..., 0], 2, path)
        return _to_frame(rgb, 2, path, channels_last=True)
    return _to_frame(img, 2, path)


def _iter_frames(
    src: Path, ndim: int, h5_key: str, pattern: str | None
) -> tuple[Iterator[tuple[np.ndarray, Path]], dict]:
    """Yield ([C, *spatial] frame, origin path) pairs and extra attrs found beside them."""
    extra: dict = {}
    if not src.exists():
        raise ImportDataError(f"{src}: no such file or folder")
    if src.is_dir():
        files = sorted((p for p in src.iterdir() if p.is_file()), key=_natural_key)
        if pattern:
            files = [p for p in files if p.match(pattern)]
        norm = src / "norm_term.npy"
        if norm.exists():
            try:
                extra["norm_term"] = np.asarray(np.load(norm), dtype=np.float64).ravel().tolist()
            except Exception as e:
                raise ImportDataError(f"{norm}: unreadable ({type(e).__name__}: {e})") from None
        npys = [p for p in files if p.suffix == ".npy" and p.name != "norm_term.npy"]
        imgs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if npys and imgs:
            raise ImportDataError(
                f"{src}: holds both .npy files and images; pass pattern='*.npy' or pattern='*.png'"
            )
        if not npys and not imgs:
            raise ImportDataError(
                f"{src}: no frames found (.npy, .png, .tif); check the folder or the pattern"
            )

        def gen() -> Iterator[tuple[np.ndarray, Path]]:
            for p in npys:
                try:
                    arr = np.load(p, allow_pickle=False)
                except Exception as e:
                    raise ImportDataError(f"{p}: unreadable .npy ({type(e).__name__}: {e})") from None
                yield _to_frame(arr, ndim, p), p
            for p in imgs:
                img = _read_image(p)
                if p.suffix.lower() in (".tif", ".tiff") and img.ndim == 3 and img.shape[-1] not in (3, 4):
                    for k in range(img.shape[0]):  # multi-page TIFF inside a folder
                        yield _to_frame(img[k], 2, p), p
                else:
                    yield _image_frame(img, p), p

        return gen(), extra
    suffix = src.suffix.lower()
    if suffix == ".npy":
        try:
            stack = np.load(src, mmap_mode="r")
        except Exception as e:
            raise ImportDataError(f"{src}: unreadable .npy ({type(e).__name__}: {e})") from None
        if stack.ndim not in (ndim + 1, ndim + 2):
            raise ImportDataError(f"{src}: stack has shape {stack.shape}; expected [N, (C,) *spatial]")
        return ((_to_frame(np.array(f), ndim, src), src) for f in stack), extra
    if suffix in (".tif", ".tiff"):
        img = _read_image(src)
        if img.ndim == 2:
            img = img[None]
        return ((_to_frame(f, 2, src), src) for f in img), extra
    if suffix in H5_SUFFIXES:
        try:
            import h5py
        except ImportError:
            raise ImportDataError(
                f"{src}: reading HDF5 needs h5py; install it with `pip install 'matdyn[hdf5]'`"
            ) from None

        def gen_h5() -> Iterator[tuple[np.ndarray, Path]]:
            try:
                fh = h5py.File(src, "r")
            except Exception as e:
                raise ImportDataError(f"{src}: unreadable HDF5 ({type(e).__name__}: {e})") from None
            with fh:
                if h5_key not in fh:
                    raise ImportDataError(
                        f"{src}: no dataset '{h5_key}' (has: {', '.join(fh.keys())}); set h5_key"
                    )
                ds = fh[h5_key]
                for i in range(ds.shape[0]):
                    yield _to_frame(ds[i], ndim, src), src

        return gen_h5(), extra
    if suffix in IMAGE_SUFFIXES:
        return iter([(_image_frame(_read_image(src), src), src)]), extra
    raise ImportDataError(f"{src}: unsupported file type '{suffix}' (use .npy, .png, .tif, .h5)")


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
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Import frames from `src` into a new store at `out` and return its path.

    >>> import tempfile, numpy as np, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3): np.save(d / f"f{i}.npy", np.full((4, 4), i, np.float32))
    >>> import_frames(d, d / "s.zarr", pixel_size=40.58, progress=False).name
    's.zarr'
    """
    if ndim not in (2, 3):
        raise ImportDataError(f"ndim must be 2 (images) or 3 (volumes), got {ndim}")
    if not pixel_size or pixel_size <= 0:
        raise ImportDataError(f"pixel_size must be a positive number in {unit}/px, got {pixel_size}")
    src, out = Path(src), Path(out)
    frames, extra = _iter_frames(src, ndim, h5_key, pattern)
    first, origin = next(frames, (None, None))
    if first is None:
        raise ImportDataError(f"{src}: contains zero frames")
    names = list(channel_names) if channel_names else (
        ["phase"] if first.shape[0] == 1 else [f"ch{i}" for i in range(first.shape[0])]
    )
    if len(names) != first.shape[0]:
        raise ImportDataError(
            f"{origin}: frames have {first.shape[0]} channels but channel_names has {len(names)} "
            f"({names}); make them agree"
        )
    shape = tuple(first.shape[1:])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"import {src.name}", unit="frame")
    try:
        with StoreWriter(out, spatial_shape=shape, channel_names=names, pixel_size=pixel_size,
                         unit=unit, frame_interval=frame_interval, time_unit=time_unit,
                         source=str(src.resolve()), name=name or out.stem,
                         overwrite=overwrite) as w:
            w.attrs.update(extra)
            frame, where = first, origin
            buf: list[np.ndarray] = []
            while frame is not None:
                if frame.shape[0] != len(names):
                    raise ImportDataError(
                        f"{where}: has {frame.shape[0]} channels, earlier frames have {len(names)}; "
                        "all frames need the same channels"
                    )
                if tuple(frame.shape[1:]) != shape:
                    raise ImportDataError(
                        f"{where}: frame size {tuple(frame.shape[1:])} differs from the first "
                        f"frame's {shape}; crop/resize to one size first"
                    )
                if not np.isfinite(frame).all():
                    raise ImportDataError(
                        f"{where}: contains NaN/inf values; clean it (e.g. np.nan_to_num) or "
                        "remove the file"
                    )
                buf.append(frame)
                if len(buf) == _BATCH:  # append in batches: fewer zarr resizes, bounded memory
                    w.append(np.stack(buf))
                    buf.clear()
                if bar is not None:
                    bar.update(1)
                frame, where = next(frames, (None, None))
            if buf:
                w.append(np.stack(buf))
    except StoreError as e:
        raise ImportDataError(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
    return out
