"""Fuzz pass over every importer path (issue 10): odd, empty, truncated and mistyped inputs
either import or raise one ImportDataError line naming the file; nothing half-written."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from matdyn.data.importers import import_frames
from matdyn.data.store import open_store
from matdyn.errors import ImportDataError

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = [".npy", ".tif", ".png", ".jpg", ".gif", ".h5", ".avi", ".mp4", ".spe", ".cine", ".seq",
            ".txt"]


def _valid_bytes(suffix: str) -> bytes:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    buf = io.BytesIO()
    if suffix == ".npy":
        np.save(buf, np.zeros((3, 8, 8), np.float32))
    elif suffix == ".tif":
        tifffile.imwrite(buf, np.zeros((3, 8, 8), np.uint16), compression="lzw")
    elif suffix in (".png", ".jpg", ".gif"):
        Image.fromarray(img).save(buf, format={".png": "PNG", ".jpg": "JPEG", ".gif": "GIF"}[suffix])
    elif suffix == ".spe":
        h = bytearray(4100)
        struct.pack_into("<h", h, 108, 3)
        struct.pack_into("<H", h, 42, 8)
        struct.pack_into("<H", h, 656, 8)
        struct.pack_into("<i", h, 1446, 2)
        return bytes(h) + np.zeros((2, 8, 8), np.uint16).tobytes()
    else:
        return b"\x00" * 256
    return buf.getvalue()


def _odd_files(tmp: Path) -> list[tuple[Path, dict]]:
    """(path, import kwargs) pairs: empty, garbage, truncated files and odd arrays."""
    cases: list[tuple[Path, dict]] = []
    for i, suf in enumerate(SUFFIXES):
        full = _valid_bytes(suf)
        for kind, data in (("empty", b""), ("garbage", b"\x89junk" * 37), ("half", full[: len(full) // 2])):
            p = tmp / f"{kind}{i}{suf}"
            p.write_bytes(data)
            cases.append((p, {}))
    arrays = {
        "scalar": np.float32(3), "line": np.zeros(7), "empty0": np.zeros((0, 8, 8)),
        "emptyw": np.zeros((8, 0)), "cplx": np.zeros((2, 4, 4), complex), "bool": np.ones((2, 4, 4), bool),
        "str": np.array([["a", "b"], ["c", "d"]]), "six_d": np.zeros((1, 2, 1, 2, 3, 3)),
        "nan": np.full((2, 4, 4), np.nan), "inf": np.array([[np.inf, 1], [1, 1]]),
        "int8": np.full((2, 4, 4), -3, np.int8), "big": np.full((2, 4, 4), 1e38, np.float64),
    }
    for name, a in arrays.items():
        np.save(tmp / f"{name}.npy", a)
        cases.append((tmp / f"{name}.npy", {}))
        cases.append((tmp / f"{name}.npy", {"ndim": 3}))
    np.save(tmp / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases.append((tmp / "obj.npy", {}))
    ok = tmp / "ok.npy"
    np.save(ok, np.zeros((3, 8, 8), np.float32))
    for kw in ({"axes": "ABC"}, {"axes": "YY"}, {"axes": "T Y X"}, {"axes": "tyx"}, {"axes": "CTX"},
               {"axes": "TCYX"}, {"axes": "SYX"}, {"channels": []}, {"channels": [9]},
               {"grey": True}, {"ndim": 4}, {"channel_names": ["a", "b"]}, {"pixel_size": -1},
               {"pixel_size": "abc"}, {"frame_interval": "x"}, {"pattern": "*.none"},
               {"axes": "ZYX", "ndim": 3}, {"axes": "TYX", "ndim": 3}):
        cases.append((ok, kw))
    tifffile.imwrite(tmp / "one_px.tif", np.zeros((1, 1), np.uint8))
    cases.append((tmp / "one_px.tif", {}))
    cases.append((tmp / "one_px.tif", {"ndim": 3}))
    with tifffile.TiffWriter(tmp / "mixed_dtype.tif") as w:
        w.write(np.zeros((4, 4), np.uint8))
        w.write(np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    cases.append((tmp / "mixed_dtype.tif", {}))
    folder = tmp / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    cases.append((folder, {}))
    np.save(folder / "norm_term.npy", np.array([np.nan]))
    np.save(folder / "a.npy", np.zeros((4, 4)))
    cases.append((folder, {}))
    cases.append((tmp / "does_not_exist", {}))
    try:
        import h5py

        with h5py.File(tmp / "odd.h5", "w") as f:
            f["images"] = np.float32(1)
            f.create_group("grp")
            f["strs"] = np.array([b"a", b"b"])
        for key in ("images", "grp", "strs", "missing"):
            cases.append((tmp / "odd.h5", {"h5_key": key}))
    except ImportError:  # pragma: no cover
        pass
    return cases


def test_fuzz_every_path_imports_or_refuses_in_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    outs = tmp_path / "out"
    outs.mkdir()
    refused = imported = 0
    for k, (path, kw) in enumerate(_odd_files(src)):
        kw = {"pixel_size": 1.0, **kw}
        out = outs / f"s{k}.zarr"
        try:
            import_frames(path, out, progress=False, **kw)
        except ImportDataError as e:
            msg = str(e)
            assert "\n" not in msg and msg.strip(), (path, kw, msg)
            named = path.name in msg or any(str(v) in msg for v in kw.values()) or "ndim" in msg
            assert named, (path, kw, msg)
            assert not out.exists(), (path, kw)
            refused += 1
        else:
            assert len(open_store(out)) >= 1  # a store that validates
            imported += 1
        leftovers = [p.name for p in outs.iterdir() if p.name.startswith(".")]
        assert not leftovers, (path, kw, leftovers)
    assert refused > 60 and imported >= 5


@pytest.mark.parametrize("args,rc", [
    (["src={d}/garbage.tif"], 2),
    (["src={d}/ok.npy", "axes=QQQ"], 2),
    (["src={d}/ok.npy", "channels=[a]"], 2),
    (["src={d}/ok.npy", "grey=true", "axes=YXC"], 0),
])
def test_fuzz_cli_exit_codes(tmp_path, args, rc):
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00garbage")
    np.save(tmp_path / "ok.npy", np.zeros((4, 5, 3), np.float32))
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_data.py"), *[a.format(d=tmp_path) for a in args],
         f"out={tmp_path}/o.zarr", "pixel_size=1", "progress=false", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert r.returncode == rc, r.stderr[-2000:]
    if rc == 2:
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith("error:") and "Traceback" not in r.stderr
        assert not (tmp_path / "o.zarr").exists()
    else:
        assert r.stdout.strip().splitlines()[-1].startswith("imported 1 frames, 1 channel(s)")
