"""schedule=paper counts phases in passes over the dataset, as the authors' train_pggan.py:
stage 0 trains n_epochs, every later fade and stable phase int(n_epochs * bs[0] / bs[k] / 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from matdyn.data.store import StoreWriter
from matdyn.training.app import build
from matdyn.training.schedule import build_stages

CONF = Path(__file__).resolve().parents[1] / "conf"
#: authors' config/*.yaml: (dataset, ndim, top resolution, n_epochs, Table 1 frame count)
CASES = [("np_diffusion", 2, 128, 32, 2000), ("ta_chart", 2, 256, 32, 10530),
         ("brass_clump", 3, 32, 16, 4956)]


def _paper(ds: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"dataset={ds}", "schedule=paper"]).schedule


def test_paper_phases_follow_the_authors_epoch_rule():
    for ds, ndim, top, n_epochs, n_table in CASES:
        prof = _paper(ds)
        stages, _, extras = build_stages(prof, ds, ndim, top, n_frames=1000)
        bs = [s.batch_size for s in stages]
        expected = [n_epochs] + [int(n_epochs * bs[0] / b / 2) for b in bs[1:]]
        assert [s.stable_images for s in stages] == [e * 1000 for e in expected], ds
        assert [s.fade_images for s in stages] == [0] + [e * 1000 for e in expected[1:]], ds
        assert "epochs_per_phase" not in extras
        # without the frame count: the same rule with Table 1's frame count
        fallback, _, _ = build_stages(prof, ds, ndim, top)
        assert [s.stable_images for s in fallback] == [e * n_table for e in expected], ds
    np_stages, _, _ = build_stages(_paper("np_diffusion"), "np_diffusion", 2, 128, n_frames=2000)
    assert sum(s.images for s in np_stages) == 640_000  # 320 passes over 2000 frames


def test_training_plan_counts_the_store_frames(tmp_path):
    path = tmp_path / "tiny.zarr"
    with StoreWriter(path, spatial_shape=(16, 16), channel_names=["c0"], pixel_size=1.0, unit="nm",
                     frame_interval=1.0, time_unit="s", source="test", name="tiny") as w:
        w.append(np.random.default_rng(0).normal(size=(24, 1, 16, 16)).astype(np.float32))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=pggan2d", f"dataset.path={path}", "dataset.source=store", "dataset.name=tiny",
            "dataset.channel_names=null", "dataset.pixel_size=null", "schedule=paper", "resolution=16",
            "model.filters=[8,8,8]", "~logger",
            "+schedule.datasets.tiny.batch_size_2d=[8,8,4]"])
    plan = build(cfg, tmp_path / "run", cuda=False)["plan"]
    # top-level paper rule for other datasets: 32, 16, 32 epochs over 24 frames
    assert [(s["fade_images"], s["stable_images"]) for s in plan["stages"]] == \
        [(0, 768), (384, 384), (768, 768)]
