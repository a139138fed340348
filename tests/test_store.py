from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from matdyn.data.store import StoreWriter, open_store, validate_store
from matdyn.errors import StoreError


def _write(path: Path, n: int = 5, c: int = 1, spatial=(8, 8), **kw) -> Path:
    with StoreWriter(path, spatial_shape=spatial, channel_names=[f"c{i}" for i in range(c)],
                     pixel_size=20.72, unit="nm", frame_interval=0.007, **kw) as w:
        w.append(np.arange(n * c * np.prod(spatial), dtype=np.float32).reshape(n, c, *spatial))
        w.set_label("time", np.arange(n) * 0.007)
        w.set_truth("offsets", np.linspace(0, 1, n))
        w.truth_attrs["d1_nm"] = 309.0
    return path


def test_roundtrip_2d_and_3d(tmp_path):
    p = _write(tmp_path / "a.zarr", n=7, c=2)
    s = open_store(p)
    assert len(s) == 7 and s.meta.channels == 2 and s.meta.ndim == 2
    assert s.meta.pixel_size == pytest.approx(20.72) and s.meta.unit == "nm"
    np.testing.assert_array_equal(s.load(2, 4), np.arange(7 * 2 * 64, dtype=np.float32).reshape(7, 2, 8, 8)[2:4])
    np.testing.assert_allclose(s.labels["time"], np.arange(7) * 0.007)
    assert s.truth["offsets"].shape == (7,)
    assert s.truth_attrs == {"d1_nm": 309.0}
    v = open_store(_write(tmp_path / "v.zarr", n=3, c=3, spatial=(4, 4, 4)))
    assert v.meta.ndim == 3 and v.images.shape == (3, 3, 4, 4, 4)


def test_streaming_append_many_batches(tmp_path):
    with StoreWriter(tmp_path / "s.zarr", spatial_shape=(4, 4), channel_names=["p"], pixel_size=1) as w:
        for i in range(10):
            w.append(np.full((3, 1, 4, 4), i, np.float32))
    s = open_store(tmp_path / "s.zarr")
    assert len(s) == 30
    assert s.load(27, 30).max() == 9 and s.load(0, 3).max() == 0


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "bad.zarr"
    with pytest.raises(StoreError, match="NaN/inf"):
        with StoreWriter(target, spatial_shape=(4, 4), channel_names=["p"], pixel_size=1) as w:
            w.append(np.zeros((2, 1, 4, 4)))
            w.append(np.full((1, 1, 4, 4), np.nan))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left either


def test_failed_overwrite_keeps_old_store(tmp_path):
    p = _write(tmp_path / "a.zarr", n=4)
    with pytest.raises(RuntimeError):
        with StoreWriter(p, spatial_shape=(8, 8), channel_names=["c0"], pixel_size=1, overwrite=True) as w:
            w.append(np.zeros((1, 1, 8, 8)))
            raise RuntimeError("killed mid-write")
    assert len(open_store(p)) == 4
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.zarr"]


def test_refuses_existing_without_overwrite(tmp_path):
    p = _write(tmp_path / "a.zarr")
    with pytest.raises(StoreError, match="already exists"):
        StoreWriter(p, spatial_shape=(8, 8), channel_names=["c0"], pixel_size=1)


@pytest.mark.parametrize(
    "frames,match",
    [
        (np.zeros((0, 1, 4, 4)), "no frames"),
        (np.zeros((2, 4, 4)), "rank"),
        (np.zeros((2, 2, 4, 4)), "2 channels"),
        (np.zeros((2, 1, 5, 4)), "frame size"),
    ],
)
def test_writer_errors(tmp_path, frames, match):
    with pytest.raises(StoreError, match=match):
        with StoreWriter(tmp_path / "e.zarr", spatial_shape=(4, 4), channel_names=["p"], pixel_size=1) as w:
            if len(frames):
                w.append(frames)
    assert not (tmp_path / "e.zarr").exists()


def test_label_length_checked(tmp_path):
    with pytest.raises(StoreError, match="label 'stage'"):
        with StoreWriter(tmp_path / "e.zarr", spatial_shape=(4, 4), channel_names=["p"], pixel_size=1) as w:
            w.append(np.zeros((3, 1, 4, 4)))
            w.set_label("stage", [0, 3])


def _tamper(p: Path, **attrs) -> None:
    g = zarr.open_group(str(p), mode="r+")
    for k, v in attrs.items():
        g.attrs[k] = v


def test_validation_errors_name_file_and_fix(tmp_path):
    with pytest.raises(StoreError, match="no such store.*make_data"):
        validate_store(tmp_path / "missing.zarr")
    junk = tmp_path / "junk.zarr"
    junk.mkdir()
    (junk / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        validate_store(junk)
    p = _write(tmp_path / "a.zarr", c=2)
    _tamper(p, channel_names=["only_one"])
    with pytest.raises(StoreError, match=r"a\.zarr.*2 channels.*channel_names"):
        validate_store(p)
    # NaN sneaked in after writing (e.g. by another tool)
    q = _write(tmp_path / "b.zarr", n=6)
    zarr.open_group(str(q), mode="r+")["images"][4, 0, 1, 1] = np.inf
    with pytest.raises(StoreError, match="frame 4 .*NaN/inf"):
        validate_store(q)
    # wrong rank
    r = tmp_path / "r.zarr"
    g = zarr.open_group(str(r), mode="w")
    g.create_array("images", shape=(3, 4, 4), dtype="float32")
    g.attrs.update({"matdyn_format": 1, "channel_names": ["p"], "pixel_size": 1.0})
    with pytest.raises(StoreError, match="rank 3"):
        validate_store(r)
    # zero frames
    z = tmp_path / "z.zarr"
    g = zarr.open_group(str(z), mode="w")
    g.create_array("images", shape=(0, 1, 4, 4), dtype="float32")
    g.attrs.update({"matdyn_format": 1, "channel_names": ["p"], "pixel_size": 1.0})
    with pytest.raises(StoreError, match="zero frames"):
        validate_store(z)


def test_meta_json_serialisable(tmp_path):
    s = open_store(_write(tmp_path / "a.zarr"))
    d = json.loads(json.dumps(s.meta.to_dict()))
    assert d["spatial_shape"] == [8, 8] and d["frame_interval"] == pytest.approx(0.007)


# --------------------------------------------------------------- the one atomic writer
def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_atomic_writer_ordinary_permissions_and_all_or_nothing(tmp_path):
    import os

    import torch
    from matplotlib.figure import Figure

    from matdyn.io import atomic_write_text, atomic_writer, write_json_atomic
    from matdyn.training.bundle import atomic_torch_save
    from matdyn.viz.figures import save_figure

    old = os.umask(0o022)
    try:
        fig = Figure()
        fig.add_subplot().plot([0, 1])
        written = [atomic_write_text(tmp_path / "a.txt", "x"),
                   write_json_atomic(tmp_path / "b.json", {"k": 1}),
                   atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pt"),
                   *save_figure(fig, tmp_path / "fig")]
        # files written like any other output (mkstemp's 0600 was the bug)
        assert [_mode(p) for p in written] == [0o644] * 5
        os.umask(0o027)
        assert _mode(atomic_write_text(tmp_path / "d.txt", "y")) == 0o640
    finally:
        os.umask(old)
    # a failure inside the block keeps the old file and leaves no temporary behind
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(tmp_path / "a.txt", "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.txt", "b.json", "c.pt", "d.txt", "fig.png", "fig.svg"]
