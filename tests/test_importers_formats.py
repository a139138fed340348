"""Real-format files, written at test time with the tools scientists use (tifffile, Pillow,
imageio, h5py, numpy, PyAV), import with the right shape and pixel values (issue 10)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from matdyn.data.importers import ImportSummary, import_frames
from matdyn.data.store import open_store
from matdyn.errors import ImportDataError

RNG = np.random.default_rng(10)


def _imp(src, tmp_path: Path, **kw):
    s = ImportSummary()
    out = import_frames(src, tmp_path / f"o{len(list(tmp_path.glob('o*.zarr')))}.zarr",
                        pixel_size=1.0, progress=False, summary=s, **kw)
    return open_store(out).load(), s


# -- fault 1: grey + alpha PNG (and the colour kinds around it) ----------------------------
def test_grey_alpha_png_folder(tmp_path):
    grey = RNG.integers(0, 256, (3, 48, 64), dtype=np.uint8)
    for i, g in enumerate(grey):
        la = np.stack([g, np.full_like(g, 255)], -1)
        Image.fromarray(la, mode="LA").save(tmp_path / f"f{i}.png")
    x, s = _imp(tmp_path, tmp_path)
    assert x.shape == (3, 1, 48, 64)
    np.testing.assert_array_equal(x[:, 0], grey)
    assert "alpha dropped" in s.line() and "3 frames" in s.line()


def test_rgba_colour_kinds(tmp_path):
    g = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    d = tmp_path / "eq"
    d.mkdir()
    Image.fromarray(np.stack([g, g, g, np.full_like(g, 9)], -1), mode="RGBA").save(d / "a.png")
    x, s = _imp(d, tmp_path)
    assert x.shape == (1, 1, 20, 30) and "equal RGB -> grey" in s.line()
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    d2 = tmp_path / "rgb"
    d2.mkdir()
    Image.fromarray(rgb, mode="RGB").save(d2 / "a.png")
    x, s = _imp(d2, tmp_path)
    assert x.shape == (1, 3, 20, 30) and "3 colour channels: pass grey=true" in s.line()
    x, s = _imp(d2, tmp_path, grey=True)
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(x[0, 0], luma, rtol=1e-5)
    x, _ = _imp(d2, tmp_path, channels=[1])
    np.testing.assert_array_equal(x[0, 0], rgb[..., 1])
    with pytest.raises(ImportDataError, match=r"channels=\[5\] but frames have 3"):
        _imp(d2, tmp_path, channels=[5])


# -- fault 2: one RGB TIFF as src == the same file in a folder -----------------------------
def test_rgb_tiff_single_file_and_folder_agree(tmp_path):
    rgb = RNG.integers(0, 65535, (64, 80, 3), dtype=np.uint16)
    d = tmp_path / "d"
    d.mkdir()
    tifffile.imwrite(d / "rgb.tif", rgb, photometric="rgb")
    a, _ = _imp(d / "rgb.tif", tmp_path)
    b, _ = _imp(d, tmp_path)
    assert a.shape == b.shape == (1, 3, 64, 80)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], np.moveaxis(rgb, -1, 0))


# -- fault 3: page-per-series TIFF, mixed page sizes ---------------------------------------
def test_page_per_series_tiff_reads_every_page(tmp_path):
    fr = RNG.integers(0, 4000, (5, 12, 14), dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "pp.tif") as w:
        for f in fr:
            w.write(f)
    assert len(tifffile.TiffFile(tmp_path / "pp.tif").series) == 5
    x, s = _imp(tmp_path / "pp.tif", tmp_path)
    assert x.shape == (5, 1, 12, 14)
    np.testing.assert_array_equal(x[:, 0], fr)
    assert "uint16" in s.line()


@pytest.mark.parametrize("shaped", [True, False])
def test_mixed_page_sizes_refused(tmp_path, shaped):
    with tifffile.TiffWriter(tmp_path / "mix.tif") as w:
        w.write(np.zeros((12, 14), np.uint8), metadata={} if shaped else None)
        w.write(np.zeros((12, 14), np.uint8), metadata={} if shaped else None)
        w.write(np.zeros((10, 14), np.uint8), metadata={} if shaped else None)
    with pytest.raises(ImportDataError, match=r"mix\.tif \(series \d\): frame size \(10, 14\) differs"):
        _imp(tmp_path / "mix.tif", tmp_path)
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".*tmp*"))


# -- fault 4: volumes honour ndim=3 on every path -------------------------------------------
def test_imagej_zyx_volume(tmp_path):
    vol = RNG.integers(0, 255, (16, 16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", vol, imagej=True, metadata={"axes": "ZYX"})
    x, s = _imp(tmp_path / "v.tif", tmp_path, ndim=3)
    assert x.shape == (1, 1, 16, 16, 16)
    np.testing.assert_array_equal(x[0, 0], vol)
    x2, s2 = _imp(tmp_path / "v.tif", tmp_path, ndim=2)  # Z slices as 2D frames, said so
    assert x2.shape == (16, 1, 16, 16) and "Z->frames" in s2.line()


def test_ome_tzcyx_volume_matches_npy(tmp_path):
    data = RNG.random((4, 16, 3, 16, 16)).astype(np.float32)  # T Z C Y X
    tifffile.imwrite(tmp_path / "v.ome.tif", data, metadata={"axes": "TZCYX"})
    names = ["Cu", "Cu2S", "CuS"]
    x, s = _imp(tmp_path / "v.ome.tif", tmp_path, ndim=3, channel_names=names)
    want = np.transpose(data, (0, 2, 1, 3, 4))
    assert x.shape == (4, 3, 16, 16, 16)
    np.testing.assert_array_equal(x, want)
    assert "TZCYX (T->frames, C->channels)" in s.line()
    np.save(tmp_path / "v.npy", want)
    y, _ = _imp(tmp_path / "v.npy", tmp_path, ndim=3, channel_names=names)
    np.testing.assert_array_equal(x, y)
    # explicit axes= on the .npy (stored as T Z C Y X) gives the same
    np.save(tmp_path / "raw.npy", data)
    z, _ = _imp(tmp_path / "raw.npy", tmp_path, ndim=3, axes="TZCYX")
    np.testing.assert_array_equal(z, want)


def test_imagej_hyperstack_tzcyx(tmp_path):
    data = RNG.integers(0, 60000, (3, 4, 2, 10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    x, _ = _imp(tmp_path / "h.tif", tmp_path, ndim=3)
    np.testing.assert_array_equal(x, np.transpose(data, (0, 2, 1, 3, 4)))
    x2, _ = _imp(tmp_path / "h.tif", tmp_path, ndim=2)  # T*Z frames of 2 channels
    np.testing.assert_array_equal(x2, data.reshape(12, 2, 10, 12))


# -- fault 5: compressed TIFF ---------------------------------------------------------------
@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "packbits"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_compressed_tiff(tmp_path, compression, ndim):
    shape = (3, 9, 11) if ndim == 2 else (6, 9, 11)
    data = RNG.integers(0, 65535, shape, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", data, compression=compression, photometric="minisblack")
    x, _ = _imp(tmp_path / "c.tif", tmp_path, ndim=ndim)
    np.testing.assert_array_equal(x.reshape(shape), data)
    assert x.shape == ((3, 1, 9, 11) if ndim == 2 else (1, 1, 6, 9, 11))


def test_missing_codec_names_package():
    from matdyn.data.importers.readers import fail

    e = fail("a.tif", "TIFF", ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package"))
    assert str(e) == ("a.tif: compressed TIFF needs the 'imagecodecs' package; install it with "
                      "`pip install imagecodecs`")


# -- fault 6: the paper authors' per-frame .npy layout --------------------------------------
def test_paper_layout_2d_channels_last(tmp_path):
    fr = RNG.normal(size=(3, 128, 128, 2)).astype(np.float32)
    for i, f in enumerate(fr):
        np.save(tmp_path / f"img_{i}.npy", f)
    np.save(tmp_path / "norm_term.npy", np.float32(3.5))
    x, s = _imp(tmp_path, tmp_path)
    assert x.shape == (3, 2, 128, 128)
    np.testing.assert_array_equal(x, np.moveaxis(fr, -1, 1))
    assert open_store(tmp_path / "o0.zarr").meta.extra["norm_term"] == [3.5]
    assert "YXC (C->channels)" in s.line()


def test_paper_layout_3d_channels_last(tmp_path):
    fr = RNG.random((2, 32, 32, 32, 3)).astype(np.float32)
    for i, f in enumerate(fr):
        np.save(tmp_path / f"vol_{i}.npy", f)
    np.save(tmp_path / "norm_term.npy", np.array([1.0, 2.0, 3.0]))
    x, _ = _imp(tmp_path, tmp_path, ndim=3, channel_names=["Cu", "Cu2S", "CuS"])
    assert x.shape == (2, 3, 32, 32, 32)
    np.testing.assert_array_equal(x, np.moveaxis(fr, -1, 1))


def test_npy_channels_first_and_ambiguous(tmp_path):
    d = tmp_path / "cf"
    d.mkdir()
    fr = RNG.random((2, 2, 16, 18)).astype(np.float32)
    for i, f in enumerate(fr):
        np.save(d / f"{i}.npy", f)
    x, _ = _imp(d, tmp_path)
    np.testing.assert_array_equal(x, fr)
    amb = tmp_path / "amb"
    amb.mkdir()
    np.save(amb / "0.npy", np.zeros((3, 16, 3), np.float32))
    with pytest.raises(ImportDataError, match=r"ambiguous.*pass axes=CYX \(channels first\) or "
                                              r"axes=YXC \(channels last\)"):
        _imp(amb, tmp_path)
    x, _ = _imp(amb, tmp_path, axes="YXC")
    assert x.shape == (1, 3, 3, 16)
    np.save(tmp_path / "one.npy", np.zeros((128, 128, 2), np.float32))  # a stack or one frame?
    with pytest.raises(ImportDataError, match=r"ambiguous.*axes=TYX \(128 frames\) or axes=YXC"):
        _imp(tmp_path / "one.npy", tmp_path)
    x, _ = _imp(tmp_path / "one.npy", tmp_path, axes="YXC")
    assert x.shape == (1, 2, 128, 128)
    with pytest.raises(ImportDataError, match=r"axes='TYXQ' does not fit an array of shape"):
        _imp(tmp_path / "one.npy", tmp_path, axes="TYXQ")


# -- the rest of the corpus -----------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 16])
def test_png_sequence_bit_depths(tmp_path, bits):
    dt = np.uint8 if bits == 8 else np.uint16
    fr = RNG.integers(0, 2**bits, (4, 10, 13), dtype=dt)
    import imageio.v3 as iio

    for i, f in enumerate(fr):
        iio.imwrite(tmp_path / f"p{i}.png", f)
    x, s = _imp(tmp_path, tmp_path)
    np.testing.assert_array_equal(x[:, 0], fr)
    assert f"source dtype {np.dtype(dt).name} (stored as float32)," in s.line() and "4 frames" in s.line()


def test_multipage_tiff_one_series(tmp_path):
    fr = RNG.random((7, 8, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "m.tif", fr)  # 7 pages, one shaped series
    assert len(tifffile.TiffFile(tmp_path / "m.tif").series) == 1
    x, _ = _imp(tmp_path / "m.tif", tmp_path)
    np.testing.assert_array_equal(x[:, 0], fr)


def test_hdf5_channels_and_volumes(tmp_path):
    h5py = pytest.importorskip("h5py")
    a = RNG.random((5, 2, 8, 9)).astype(np.float32)
    v = RNG.random((3, 6, 6, 6, 2)).astype(np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = a
        f["grp/vol"] = v
    x, _ = _imp(tmp_path / "d.h5", tmp_path)
    np.testing.assert_array_equal(x, a)
    y, _ = _imp(tmp_path / "d.h5", tmp_path, ndim=3, h5_key="grp/vol")
    np.testing.assert_array_equal(y, np.moveaxis(v, -1, 1))


def test_video_avi_lossless(tmp_path):
    av = pytest.importorskip("av")
    pytest.importorskip("pims")
    fr = RNG.integers(0, 255, (4, 32, 48, 3), dtype=np.uint8)
    c = av.open(str(tmp_path / "v.avi"), "w")
    st = c.add_stream("png", rate=10)
    st.width, st.height, st.pix_fmt = 48, 32, "rgb24"
    for f in fr:
        for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    for p in st.encode():
        c.mux(p)
    c.close()
    x, s = _imp(tmp_path / "v.avi", tmp_path)
    np.testing.assert_array_equal(x, np.moveaxis(fr, -1, 1))
    g, _ = _imp(tmp_path / "v.avi", tmp_path, grey=True)
    assert g.shape == (4, 1, 32, 48)


def test_princeton_spe(tmp_path):
    pytest.importorskip("pims")
    fr = RNG.integers(0, 65535, (3, 6, 5), dtype=np.uint16)
    h = bytearray(4100)  # SPE 2.x header: datatype@108 (3 = uint16), xdim@42, ydim@656, frames@1446
    struct.pack_into("<h", h, 108, 3)
    struct.pack_into("<H", h, 42, 5)
    struct.pack_into("<H", h, 656, 6)
    struct.pack_into("<i", h, 1446, 3)
    (tmp_path / "x.spe").write_bytes(bytes(h) + fr.tobytes())
    x, _ = _imp(tmp_path / "x.spe", tmp_path)
    np.testing.assert_array_equal(x[:, 0], fr)


def test_missing_reader_names_package(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pims", None)
    (tmp_path / "a.cine").write_bytes(b"\0" * 64)
    with pytest.raises(ImportDataError, match=r"a\.cine: reading \.cine files needs pims; "
                                              r"install with `pip install pims`"):
        _imp(tmp_path / "a.cine", tmp_path)
    (tmp_path / "b.mp4").write_bytes(b"\0" * 64)
    with pytest.raises(ImportDataError, match=r"pip install pims av"):
        _imp(tmp_path / "b.mp4", tmp_path)


def test_summary_line(tmp_path):
    fr = RNG.integers(100, 200, (3, 8, 9), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "m.tif", fr, photometric="minisblack")
    _, s = _imp(tmp_path / "m.tif", tmp_path)
    assert s.line() == (f"imported 3 frames, 1 channel(s) [phase] (default name; channel_names= "
                        f"names it), 2D 8x9 px, source dtype uint16 (stored as float32), values "
                        f"[{fr.min()}, {fr.max()}], axes QYX (Q->frames)")
    assert s.warning is None
    # a folder of single-image files: the axes are per file and the files become the frames
    (tmp_path / "dir").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "dir" / f"f{i}.tif", fr[i], photometric="minisblack")
    _, s = _imp(tmp_path / "dir", tmp_path, channel_names=["intensity"])
    line = s.line()
    assert line.startswith("imported 2 frames, 1 channel(s) [intensity], 2D 8x9 px")
    assert line.endswith("axes YX per file (one frame per file, files in natural order)")
    tifffile.imwrite(tmp_path / "dir" / "f2.tif", fr, photometric="minisblack")  # a 3-page stack
    _, s = _imp(tmp_path / "dir", tmp_path)
    assert s.frames == 5 and "the files' frames concatenated in natural order" in s.line()


def test_large_tiff_series_read_in_page_slices(tmp_path, monkeypatch):
    from matdyn.data.importers import readers

    monkeypatch.setattr(readers, "TIFF_READ_BYTES", 300)  # force the sliced path
    calls = []
    real = tifffile.TiffFile.asarray
    monkeypatch.setattr(tifffile.TiffFile, "asarray",
                        lambda self, *a, **k: calls.append(k.get("key")) or real(self, *a, **k))
    data = RNG.integers(0, 60000, (5, 4, 2, 10, 12), dtype=np.uint16)  # T Z C Y X
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    x, _ = _imp(tmp_path / "h.tif", tmp_path, ndim=3)
    np.testing.assert_array_equal(x, np.transpose(data, (0, 2, 1, 3, 4)))
    assert len(calls) == 5 and calls[1] == slice(8, 16)  # one T index (8 pages) at a time
    rgb = RNG.integers(0, 255, (6, 10, 12, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    x, _ = _imp(tmp_path / "rgb.tif", tmp_path)
    np.testing.assert_array_equal(x, np.moveaxis(rgb, -1, 1))


def test_norm_term_must_match_channels(tmp_path):
    for i in range(2):
        np.save(tmp_path / f"f{i}.npy", np.zeros((16, 16, 2), np.float32))
    np.save(tmp_path / "norm_term.npy", np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ImportDataError, match=r"norm_term\.npy: has 3 values but frames have 2"):
        _imp(tmp_path, tmp_path)
    np.save(tmp_path / "norm_term.npy", np.array([1.0, 2.0]))
    x, _ = _imp(tmp_path, tmp_path)
    assert x.shape == (2, 2, 16, 16)
