"""Entry points of the data layer (issue 10): the import summary and outlier warning lines,
and Hydra list overrides reaching the synthetic generators as plain Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from omegaconf import OmegaConf

from matdyn.data.importers import ImportSummary, import_frames
from matdyn.data.sources import plain_config, synthetic_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args],
                          capture_output=True, text=True, cwd=cwd)


def _hot_tiff(path: Path) -> np.ndarray:
    x = np.random.default_rng(3).integers(477, 577, size=(5, 64, 64)).astype(np.uint16)
    x[2, 10, 12] = 65535
    tifffile.imwrite(path, x, compression="lzw", photometric="minisblack")
    return x


def test_import_warns_about_hot_pixel(tmp_path, caplog):
    _hot_tiff(tmp_path / "hot.tif")
    s = ImportSummary()
    with caplog.at_level("WARNING", logger="matdyn.data"):
        import_frames(tmp_path / "hot.tif", tmp_path / "h.zarr", pixel_size=1, progress=False, summary=s)
    assert s.warning is not None and "\n" not in s.warning
    assert "1 pixel(s)" in s.warning and "frame 2 pixel (10, 12)" in s.warning
    assert "outside [477, 576]" in s.warning and "data range [477, 65535]" in s.warning
    assert not caplog.records  # the caller reports it
    with caplog.at_level("WARNING", logger="matdyn.data"):
        import_frames(tmp_path / "hot.tif", tmp_path / "h2.zarr", pixel_size=1, progress=False)
    assert [r.getMessage() for r in caplog.records] == [s.warning.replace("h.zarr", "h2.zarr")]


def test_import_cli_prints_one_summary_line_and_warning(tmp_path):
    _hot_tiff(tmp_path / "hot.tif")
    r = _run("import_data.py", f"src={tmp_path}/hot.tif", f"out={tmp_path}/h.zarr", "pixel_size=2",
             "progress=false", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines() == [
        "imported 5 frames, 1 channel(s) [phase] (default name; channel_names= names it), 2D 64x64 "
        "px, source dtype uint16 (stored as float32), values [477, 65535], axes QYX (Q->frames)"]
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "1 pixel(s)" in warn[0]


def test_import_cli_missing_src_is_one_error_line(tmp_path):
    r = _run("import_data.py", f"out={tmp_path}/o.zarr", "pixel_size=1", f"hydra.run.dir={tmp_path}/r")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: src not set")


def test_plain_config_recurses():
    cfg = OmegaConf.create({"a": [1.0, {"b": [2, 3]}], "c": {"d": [4]}})
    p = plain_config({"x": cfg.a, "y": cfg.c, "z": (cfg.c.d,)})
    assert p == {"x": [1.0, {"b": [2, 3]}], "y": {"d": [4]}, "z": ([4],)}
    assert type(p["x"]) is list and type(p["x"][1]["b"]) is list and type(p["y"]) is dict
    assert synthetic_fingerprint({"l": cfg.a}) == synthetic_fingerprint({"l": [1.0, {"b": [2, 3]}]})


@pytest.mark.parametrize("offsets,ok", [("[-50.0,-30.0]", True), ("[35.0,55.0]", False)])
def test_make_data_list_override(tmp_path, offsets, ok):
    r = _run("make_data.py", "dataset=np_diffusion", f"+dataset.synthetic.lane_offsets_px={offsets}",
             "dataset.synthetic.n_frames=4", "dataset.synthetic.size=142", f"dataset.path={tmp_path}/s.zarr",
             "progress=false", f"hydra.run.dir={tmp_path}/run")
    assert "Traceback" not in r.stderr and "not JSON serializable" not in r.stderr
    if ok:  # a store, with the list recorded as plain JSON
        assert r.returncode == 0, r.stderr[-2000:]
        import zarr

        attrs = dict(zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs)
        assert "synthetic_fingerprint" in attrs["extra"]
    else:  # these offsets put a lane inside the trap region: one line naming the setting
        assert r.returncode == 2
        assert r.stderr.strip().splitlines()[-1].startswith("error:") and "lane_offsets_px" in r.stderr


def test_a_synthetic_dataset_never_replaces_a_store_it_did_not_make(tmp_path):
    # dataset.path=<your store> with the dataset's default source=synthetic used to replace
    # the user's imported store with the stand-in; now one error line, the store untouched
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import StoreWriter, open_store
    from matdyn.errors import ConfigError

    spec = {"_target_": "matdyn.data.synthetic.np_diffusion.generate", "seed": 0,
            "n_frames": 4, "size": 48}
    mine = tmp_path / "mine.zarr"
    frames = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    with StoreWriter(mine, spatial_shape=(32, 32), channel_names=["phase"], pixel_size=40.58,
                     unit="nm", name="mine") as w:
        w.append(frames)
    for where in (mine, tmp_path / "folder"):
        (tmp_path / "folder").mkdir(exist_ok=True)
        (tmp_path / "folder" / "notes.txt").write_text("keep me")
        with pytest.raises(ConfigError, match="dataset.source=store"):
            ensure_store({"name": "np_diffusion", "source": "synthetic", "path": str(where),
                          "synthetic": spec}, progress=False)
    np.testing.assert_array_equal(open_store(mine).load(0, 3), frames)
    assert (tmp_path / "folder" / "notes.txt").read_text() == "keep me"
    # a stand-in made with other settings is a cache: regenerated in place
    made = tmp_path / "made.zarr"
    ensure_store({"name": "np_diffusion", "source": "synthetic", "path": str(made),
                  "synthetic": spec}, progress=False)
    ensure_store({"name": "np_diffusion", "source": "synthetic", "path": str(made),
                  "synthetic": {**spec, "seed": 1}}, progress=False)
    assert open_store(made).truth_attrs["seed"] == 1
