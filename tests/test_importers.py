from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matdyn.data.importers import import_frames
from matdyn.data.store import open_store
from matdyn.errors import ImportDataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 12, 10)).astype(np.float32)


def test_npy_folder_roundtrip_with_norm_term(tmp_path, frames):
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(frames):  # natural order: f2 before f10
        np.save(src / f"frame_{i * 5}.npy", f)
    np.save(src / "norm_term.npy", np.float32(1.5))
    s = open_store(import_frames(src, tmp_path / "s.zarr", pixel_size=40.58, progress=False))
    np.testing.assert_array_equal(s.load()[:, 0], frames)
    assert s.meta.extra["norm_term"] == [1.5]
    assert s.meta.pixel_size == pytest.approx(40.58)


def test_npy_stack_3d_multichannel(tmp_path):
    vol = np.random.default_rng(1).random((4, 3, 6, 6, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    s = open_store(import_frames(tmp_path / "v.npy", tmp_path / "v.zarr", pixel_size=0.65, unit="um",
                                 ndim=3, channel_names=["Cu", "Cu2S", "CuS"], progress=False))
    np.testing.assert_array_equal(s.load(), vol)
    assert s.meta.channel_names == ("Cu", "Cu2S", "CuS") and s.meta.ndim == 3


def test_png_sequence_and_multipage_tiff(tmp_path):
    import imageio.v3 as iio
    import tifffile

    imgs = np.random.default_rng(2).integers(0, 255, size=(3, 9, 11), dtype=np.uint8)
    d = tmp_path / "png"
    d.mkdir()
    for i, im in enumerate(imgs):
        iio.imwrite(d / f"{i:03d}.png", im)
    s = open_store(import_frames(d, tmp_path / "p.zarr", pixel_size=1.0, progress=False))
    np.testing.assert_array_equal(s.load()[:, 0], imgs.astype(np.float32))
    tifffile.imwrite(tmp_path / "stack.tif", imgs.astype(np.float32), photometric="minisblack")
    t = open_store(import_frames(tmp_path / "stack.tif", tmp_path / "t.zarr", pixel_size=1.0, progress=False))
    np.testing.assert_array_equal(t.load()[:, 0], imgs.astype(np.float32))


def test_hdf5(tmp_path, frames):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = frames
    s = open_store(import_frames(tmp_path / "d.h5", tmp_path / "h.zarr", pixel_size=2.0, progress=False))
    np.testing.assert_array_equal(s.load()[:, 0], frames)
    with pytest.raises(ImportDataError, match="no dataset 'nope'"):
        import_frames(tmp_path / "d.h5", tmp_path / "h2.zarr", pixel_size=2.0, h5_key="nope", progress=False)


def test_import_errors_leave_nothing(tmp_path, frames):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "a0.npy", frames[0])
    np.save(src / "a1.npy", frames[1, :5])
    with pytest.raises(ImportDataError, match=r"a1\.npy: frame size"):
        import_frames(src, tmp_path / "o.zarr", pixel_size=1, progress=False)
    assert not (tmp_path / "o.zarr").exists()
    np.save(src / "a1.npy", np.full_like(frames[0], np.nan))
    with pytest.raises(ImportDataError, match=r"a1\.npy: contains NaN"):
        import_frames(src, tmp_path / "o.zarr", pixel_size=1, progress=False)
    (src / "a1.npy").write_bytes(b"garbage")
    with pytest.raises(ImportDataError, match=r"a1\.npy: unreadable"):
        import_frames(src, tmp_path / "o.zarr", pixel_size=1, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImportDataError, match="no frames found"):
        import_frames(empty, tmp_path / "o.zarr", pixel_size=1, progress=False)
    with pytest.raises(ImportDataError, match="channel_names has 2"):
        import_frames(_stack(tmp_path, frames), tmp_path / "o.zarr", pixel_size=1,
                      channel_names=["a", "b"], progress=False)
    assert not (tmp_path / "o.zarr").exists()


def _stack(tmp_path: Path, frames: np.ndarray) -> Path:
    np.save(tmp_path / "stack.npy", frames)
    return tmp_path / "stack.npy"


def test_import_cli_bad_input_exits_nonzero(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_data.py"), f"src={tmp_path}/none",
         f"out={tmp_path}/o.zarr", "pixel_size=1", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "no such file" in r.stderr
