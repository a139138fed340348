"""The error contract of every entry point (issue 13), table-driven: each bad input or
environment ends with exactly one ``error:`` line on stderr, exit status 2, no traceback, and
nothing written or destroyed (the inputs are unchanged; the run directory holds at most
Hydra's own ``.hydra/`` and log files).

Each case runs the real script in a forked child of this process (tests/forkrun.py), so the
imports (torch, Lightning) are paid once. Read-only and full locations are emulated in the
child only (root ignores ``chmod``): writes under the folder raise ``EROFS`` / ``ENOSPC``.
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from forkrun import run_entries, run_entry

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

DATA = ["dataset=np_diffusion", "dataset.synthetic.n_frames=8", "dataset.synthetic.size=48"]
#: analysis counts small enough for the 8-frame store and a random-init 16 px generator
TINY_ANALYSIS = ["analysis.n_refs=4", "analysis.n_samples=4", "analysis.n_fidelity=8",
                 "analysis.baseline_frames=6", "analysis.depth_frames=6", "analysis.swd_patches=64",
                 "analysis.swd_directions=8", "analysis.swd_repeats=1", "analysis.baseline_repeats=1",
                 "analysis.n_show=2", "block_size=2"]


def _np(t: Path, store: str = "np.zarr") -> list[str]:
    """Dataset overrides: the tiny stand-in, or (other names) an existing store."""
    src = [] if store == "np.zarr" else ["dataset.source=store"]
    return [*DATA, *src, f"dataset.path={t / store}", "progress=false"]


def _unwritable(folder: Path, code: int) -> Callable[[], None]:
    """A patch for the child: every write under ``folder`` fails with OSError(code)."""
    root = str(folder)

    def patch() -> None:
        def inside(p) -> bool:
            try:
                return os.path.abspath(os.fsdecode(p)).startswith(root)
            except TypeError:
                return False

        def deny(p):
            raise OSError(code, os.strerror(code), os.fsdecode(p))

        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

        def fopen(file, mode="r", *a, **k):
            if isinstance(file, (str, bytes, os.PathLike)) and inside(file) and set(mode) & set("wax+"):
                deny(file)
            return real_open(file, mode, *a, **k)

        def oopen(path, flags, *a, **k):
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                deny(path)
            return real_os_open(path, flags, *a, **k)

        def mkdir(path, *a, **k):
            if inside(path):
                deny(path)
            return real_mkdir(path, *a, **k)

        builtins.open, os.open, os.mkdir = fopen, oopen, mkdir
        import io
        io.open = fopen

    return patch


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Tiny inputs: a valid stand-in store, damaged copies (NaN frame, deleted chunk, corrupt
    chunk), a store of another name, a generator bundle, garbage, frames to import."""
    import torch
    import wandb  # noqa: F401
    import zarr

    # imported once here, before the forks (Lightning alone costs seconds)
    import matdyn.analysis.run  # noqa: F401
    import matdyn.data.datamodule  # noqa: F401
    import matdyn.gamma  # noqa: F401
    import matdyn.training.app  # noqa: F401
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import StoreWriter
    from matdyn.gamma.records import GAMMA_FORMAT, GAMMA_VERSION
    from matdyn.io import write_json_atomic
    from matdyn.models import Generator
    from matdyn.training.bundle import save_bundle

    t = tmp_path_factory.mktemp("contract")
    ensure_store({"name": "np_diffusion", "source": "synthetic", "path": str(t / "np.zarr"),
                  "synthetic": {"_target_": "matdyn.data.synthetic.np_diffusion.generate",
                                "seed": 0, "n_frames": 8, "size": 48}}, progress=False)
    for name in ("nan", "hole", "corrupt"):
        shutil.copytree(t / "np.zarr", t / f"{name}.zarr")
    g = zarr.open_group(str(t / "nan.zarr"), mode="r+")
    frames = np.asarray(g["images"][:])
    frames[3, 0, 5, 5] = np.nan
    g["images"][:] = frames
    chunk = t / "hole.zarr" / "images" / "c" / "0" / "0" / "0" / "0"
    chunk.unlink()
    (t / "corrupt.zarr" / "images" / "c" / "0" / "0" / "0" / "0").write_bytes(b"\x00garbage" * 10)
    with StoreWriter(t / "other.zarr", spatial_shape=(48, 48), channel_names=["phase"],
                     pixel_size=40.58, unit="nm", name="other") as w:
        w.append(np.random.default_rng(0).random((8, 1, 48, 48), dtype=np.float32))
    torch.manual_seed(0)
    gen = Generator(latent_dim=8, channels=1, ndim=2, filters=[16, 16, 8])
    save_bundle(t / "g.pt", gen, stage=2, meta={"name": "np_diffusion"})
    (t / "garbage.pt").write_bytes(b"not a bundle" * 100)
    rng = np.random.default_rng(1)
    np.save(t / "ok.npy", rng.random((4, 16, 16), dtype=np.float32))
    bad = rng.random((4, 16, 16), dtype=np.float32)
    bad[2, 3, 3] = np.inf
    np.save(t / "nan.npy", bad)
    (t / "mixed").mkdir()
    np.save(t / "mixed" / "a1.npy", rng.random((12, 10), dtype=np.float32))
    np.save(t / "mixed" / "a2.npy", rng.random((5, 10), dtype=np.float32))
    (t / "exists.zarr").mkdir()
    (t / "exists.zarr" / "keep.txt").write_text("keep")
    (t / "other_sweep").mkdir()
    write_json_atomic(t / "other_sweep" / "gamma.json", {
        "format": GAMMA_FORMAT, "version": GAMMA_VERSION, "bundle": "/elsewhere/generator.pt",
        "bundle_sha256": "0" * 64, "gamma": 0.5,
        "sampler": {"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": 0.5}})
    old_run = t / "runs" / "train-earlier-run" / "checkpoints"
    old_run.mkdir(parents=True)
    (old_run / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    (t / "ro").mkdir()
    (t / "full").mkdir()
    _readme_row_inputs(t)
    return t


def _readme_row_inputs(t: Path) -> None:
    """Inputs of the README rows added last: an LZW TIFF, a video file, a checkpoint of other
    filter widths, a sweep with an unfinished job, a job folder of another job."""
    import json

    import tifffile
    import torch

    from matdyn.gamma.records import JOB_FORMAT, JOB_VERSION
    from matdyn.io import file_sha256

    tifffile.imwrite(t / "lzw.tif", np.ones((2, 16, 16), dtype=np.uint16), compression="lzw")
    (t / "clip.mp4").write_bytes(b"\0" * 64)
    torch.save({"state_dict": {}, "matdyn": {"progress": {}}, "hyper_parameters": {"filters": [4, 4, 4]}},
               t / "other.ckpt")

    def record(status: str, n_refs: int) -> str:
        return json.dumps({"format": JOB_FORMAT, "version": JOB_VERSION, "status": status, "gamma": 0.5,
                           "sampler": {"_target_": "matdyn.sampling.samplers.UniformSampler", "gamma": 0.5},
                           "seed": 0, "n_refs": n_refs, "n_samples": 2, "bundle": str(t / "g.pt"),
                           "bundle_sha256": file_sha256(t / "g.pt"), "store": {"path": str(t / "np.zarr")}})

    (t / "unfinished" / "uniform=0.5").mkdir(parents=True)
    (t / "unfinished" / "uniform=0.5" / "job.json").write_text(record("running", 2))
    (t / "runs" / "sweep-foreign-job").mkdir(parents=True)  # the run dir of that case
    (t / "runs" / "sweep-foreign-job" / "job.json").write_text(record("done", 100))


def _without(module: str, drop: tuple[str, ...] = ()) -> Callable[[], None]:
    """A patch for the child: ``module`` cannot be imported (tifffile also forgets the
    decoders named in ``drop`` that it may have loaded before the fork)."""

    def patch() -> None:
        import sys

        sys.modules[module] = None  # type: ignore[assignment]
        if module == "imagecodecs":
            import tifffile.tifffile as tf

            tf.imagecodecs = None
            for key in drop:
                tf.TIFF.DECOMPRESSORS._codecs.pop(key, None)

    return patch


Case = tuple[str, str, list[str], str, "Callable | None"]


def _context(t: Path) -> SimpleNamespace:
    """Shared pieces of the cases (bundle, γ job, dataset, patches)."""
    import torch

    gpu = torch.cuda.is_available()  # on a GPU machine: an index that does not exist
    cuda, no_cuda = ("device=cuda:99", "CUDA device(s) are visible") if gpu else \
        ("device=cuda", "no CUDA device is visible")
    B, G = f"bundle={t / 'g.pt'}", ["sampler.gamma=0.5", "n_refs=2", "n_samples=2"]
    train = [*_np(t), "dry_run=true", "resolution=16"]
    ro, full = _unwritable(t / "ro", errno.EROFS), _unwritable(t / "full", errno.ENOSPC)
    imp = [f"src={t / 'ok.npy'}", "pixel_size=1", "progress=false"]
    return SimpleNamespace(gpu=gpu, cuda=cuda, no_cuda=no_cuda, B=B, G=G, train=train, ro=ro,
                           full=full, imp=imp)


def _make_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- make_data: Hydra composition, types, environment
    return [
        ("make-unknown-key", "make_data.py", ["seeed=1"], "unknown config key 'seeed'", None),
        ("make-misspelt-group", "make_data.py", ["datset=np_diffusion"], "unknown config key 'datset'", None),
        ("make-misspelt-option", "make_data.py", ["dataset=np_difusion"], "dataset=np_difusion does not exist", None),
        ("make-size-abc", "make_data.py", ["dataset.synthetic.size=abc"], "is not an integer", None),
        ("make-progress-maybe", "make_data.py", ["progress=maybe"], "is not true or false", None),
        ("make-unparsable", "make_data.py", ["force=["], "cannot parse the command-line override", None),
        ("make-readonly", "make_data.py", [*DATA, f"dataset.path={t / 'ro' / 's.zarr'}"],
         "read-only", c.ro),
        ("make-full", "make_data.py", [*DATA, f"dataset.path={t / 'full' / 's.zarr'}"],
         "no space left", c.full),
        ("make-not-permitted", "make_data.py", [*DATA, "hydra.run.dir=/sys/matdyn-x"], "cannot write /sys/", None),
        ("make-bad-interpolation", "make_data.py", [*DATA, "dataset.path=${nope}"], "config value", None),
        ("make-bad-source", "make_data.py", [*_np(t), "dataset.source=disk"], "dataset.source must be", None),
    ]


def _import_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- import_data
    return [
        ("import-pixel-abc", "import_data.py", [f"src={t / 'ok.npy'}", f"out={t}/o.zarr", "pixel_size=abc"],
         "pixel_size must be a number", None),
        ("import-missing-pixel", "import_data.py", [f"src={t / 'ok.npy'}", f"out={t}/o.zarr"], "pixel_size", None),
        ("import-missing-src", "import_data.py", [f"out={t}/o.zarr", "pixel_size=1"], "src not set", None),
        ("import-no-such-src", "import_data.py", [f"src={t / 'none.npy'}", f"out={t}/o.zarr", "pixel_size=1"],
         "none.npy", None),
        ("import-exists", "import_data.py", [*c.imp, f"out={t / 'exists.zarr'}"], "already exists; pass overwrite=true", None),
        ("import-nan", "import_data.py", [f"src={t / 'nan.npy'}", f"out={t}/o.zarr", "pixel_size=1"], "NaN/inf", None),
        ("import-sizes", "import_data.py", [f"src={t / 'mixed'}", f"out={t}/o.zarr", "pixel_size=1"],
         "differs from the first frame", None),
        ("import-ndim-abc", "import_data.py", [*c.imp, f"out={t}/o.zarr", "ndim=abc"], "ndim", None),
        ("import-unknown-key", "import_data.py", [*c.imp, f"out={t}/o.zarr", "pixelsize=1"], "unknown config key", None),
        ("import-channels", "import_data.py", [*c.imp, f"out={t}/o.zarr", "channels=[5]"], "channel", None),
        ("import-axes", "import_data.py", [*c.imp, f"out={t}/o.zarr", "axes=TCYX"],
         "axes='TCYX' does not fit an array of shape (4, 16, 16)", None),
        ("import-channel-names", "import_data.py", [*c.imp, f"out={t}/o.zarr", "channel_names=[a,b]"],
         "channel_names has 2", None),
        ("import-full", "import_data.py", [*c.imp, f"out={t / 'full' / 'o.zarr'}"], "no space left", c.full),
        ("import-lzw-no-codecs", "import_data.py", [f"src={t / 'lzw.tif'}", f"out={t}/o.zarr", "pixel_size=1"],
         "compressed TIFF needs the 'imagecodecs' package", _without("imagecodecs", (5,))),
        ("import-mp4-no-pims", "import_data.py", [f"src={t / 'clip.mp4'}", f"out={t}/o.zarr", "pixel_size=1"],
         "reading .mp4 files needs pims", _without("pims")),
    ]


def _train_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- train (dry runs: everything is checked before any step)
    return [
        ("train-seed-abc", "train.py", [*c.train, "seed=abc"], "seed='abc' is not an integer", None),
        ("train-precision", "train.py", [*c.train, "trainer.precision=banana"], "Precision 'banana' is invalid", None),
        *([] if c.gpu else [("train-gpu", "train.py", [*c.train, "trainer.accelerator=gpu"],
                           "no CUDA device is visible", None)]),
        ("train-threads-0", "train.py", [*c.train, "num_threads=0"], "num_threads=0 must be a positive", None),
        ("train-resolution-abc", "train.py", [*_np(t), "dry_run=true", "resolution=abc"],
         "resolution='abc' is not an integer", None),
        ("train-upsample", "train.py", [*_np(t), "dry_run=true", "resolution=64"], "would upsample", None),
        ("train-res-48", "train.py", [*_np(t), "dry_run=true", "resolution=48"], "power of two", None),
        ("train-misspelt-model", "train.py", [*c.train, "model=pggan4d"], "model=pggan4d does not exist", None),
        ("train-unknown-key", "train.py", [*c.train, "lr=1"], "unknown config key 'lr'", None),
        ("train-no-store", "train.py", [*c.train, "dataset.source=store", f"dataset.path={t}/none.zarr"],
         "no such store", None),
        ("train-nan-store", "train.py", [*_np(t, "nan.zarr"), "dry_run=true", "resolution=16"], "NaN/inf", None),
        ("train-hole-store", "train.py", [*_np(t, "hole.zarr"), "dry_run=true", "resolution=16"],
         "chunk(s) of 'images' are missing", None),
        ("train-pixel-size", "train.py", [*_np(t, "other.zarr"), "dry_run=true", "resolution=16",
                                          "dataset.pixel_size=2.0"], "set dataset.pixel_size=40.58", None),
        ("train-model-channels", "train.py", [*c.train, "model.channels=3"],
         "model.channels=3 but the dataset store has 1 channel(s)", None),
        ("train-wandb-online", "train.py", [*c.train, "logger.mode=online"], "W&B online logging needs an API key", None),
        ("train-earlier-run", "train.py", [*_np(t), "resolution=16"],
         "holds the checkpoint of an earlier run", None),
        ("train-filters-mismatch", "train.py", [*c.train, f"ckpt_path={t / 'other.ckpt'}"],
         "was trained with filters=[4, 4, 4] but this config gives", None),
        ("train-readonly-run", "train.py", [*c.train, f"hydra.run.dir={t / 'ro' / 'run'}"], "read-only", c.ro),
    ]


def _sweep_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- sweep_gamma (one job, run mode)
    return [
        ("sweep-no-bundle", "sweep_gamma.py", [*_np(t)], "bundle is required", None),
        ("sweep-seed-abc", "sweep_gamma.py", [*_np(t), c.B, *c.G, "seed=abc"], "is not an integer", None),
        ("sweep-cuda", "sweep_gamma.py", [*_np(t), c.B, *c.G, c.cuda], c.no_cuda, None),
        ("sweep-threads-0", "sweep_gamma.py", [*_np(t), c.B, *c.G, "num_threads=0"], "num_threads=0", None),
        ("sweep-bundle-missing", "sweep_gamma.py", [*_np(t), f"bundle={t}/none.pt", *c.G], "not found", None),
        ("sweep-bundle-garbage", "sweep_gamma.py", [*_np(t), f"bundle={t}/garbage.pt", *c.G],
         "not a readable generator bundle", None),
        ("sweep-gamma-negative", "sweep_gamma.py", [*_np(t), c.B, "sampler.gamma=-1", "n_refs=2", "n_samples=2"],
         "> 0", None),
        ("sweep-block-size-abc", "sweep_gamma.py", [*_np(t), c.B, *c.G, "block_size=abc"],
         "block_size='abc' is not an integer", None),
        ("sweep-gamma-abc", "sweep_gamma.py", [*_np(t), c.B, "sampler.gamma=abc"], "is not a number", None),
        ("sweep-n-refs-0", "sweep_gamma.py", [*_np(t), c.B, "sampler.gamma=0.5", "n_refs=0", "n_samples=2"],
         "n_refs", None),
        ("sweep-nan-store", "sweep_gamma.py", [*_np(t, "nan.zarr"), c.B, *c.G], "NaN/inf", None),
        ("sweep-hole-store", "sweep_gamma.py", [*_np(t, "hole.zarr"), c.B, *c.G], "are missing", None),
        ("sweep-corrupt-chunk", "sweep_gamma.py", [*_np(t, "corrupt.zarr"), c.B, *c.G], "corrupted", None),
        ("sweep-other-store", "sweep_gamma.py", [*_np(t, "other.zarr"), c.B, *c.G], "trained on store 'np_diffusion'", None),
        ("sweep-foreign-job", "sweep_gamma.py", [*_np(t), c.B, *c.G], "holds another job (n_refs 100", None),
        ("sweep-misspelt-sampler", "sweep_gamma.py", [*_np(t), c.B, "sampler=unifrom"], "sampler=unifrom does not exist", None),
    ]


def _aggregate_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- aggregate_sweep
    return [
        ("aggregate-no-dir", "aggregate_sweep.py", [], "dir is required", None),
        ("aggregate-no-such-dir", "aggregate_sweep.py", [f"dir={t}/nosweep"], "no such sweep directory", None),
        ("aggregate-unknown-key", "aggregate_sweep.py", [f"dir={t}", "rulez=1"], "unknown config key", None),
        ("aggregate-unfinished", "aggregate_sweep.py", [f"dir={t / 'unfinished'}"],
         "1 unfinished job(s) (γ = 0.5)", None),
    ]


def _analyze_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- analyze
    return [
        ("analyze-no-bundle", "analyze.py", [*_np(t)], "bundle is required", None),
        ("analyze-cuda", "analyze.py", [*_np(t), c.B, c.cuda], c.no_cuda, None),
        ("analyze-seed-abc", "analyze.py", [*_np(t), c.B, "seed=abc"], "is not an integer", None),
        ("analyze-nan-store", "analyze.py", [*_np(t, "nan.zarr"), c.B, "gamma=0.5"], "NaN/inf", None),
        ("analyze-corrupt-chunk", "analyze.py", [*_np(t, "corrupt.zarr"), c.B, "gamma=0.5"], "corrupted", None),
        ("analyze-hole-store", "analyze.py", [*_np(t, "hole.zarr"), c.B, "gamma=0.5"], "are missing", None),
        ("analyze-other-store", "analyze.py", [*_np(t, "other.zarr"), c.B, "gamma=0.5"],
         "trained on store 'np_diffusion'", None),
        ("analyze-gamma-abc", "analyze.py", [*_np(t), c.B, "gamma=abc"], "gamma must be a number", None),
        ("analyze-no-gamma-json", "analyze.py", [*_np(t), c.B, f"sweep={t / 'runs'}"], "no gamma.json", None),
        ("analyze-no-such-sweep", "analyze.py", [*_np(t), c.B, "gamma=0.5", f"sweep={t}/nosweep"],
         "no such sweep directory", None),
        ("analyze-other-bundle-gamma", "analyze.py", [*_np(t), c.B, f"sweep={t / 'other_sweep'}"],
         "chose γ for another generator bundle", None),
        ("analyze-other-sampler-gamma", "analyze.py", [*_np(t), c.B, f"sweep={t / 'other_sweep'}",
                                                       "sampler=gaussian"], "but the analysis asks for", None),
        ("analyze-misspelt-analysis", "analyze.py", [*_np(t), c.B, "analysis=np_difusion"],
         "analysis=np_difusion does not exist", None),
        ("analyze-bundle-garbage", "analyze.py", [*_np(t), f"bundle={t}/garbage.pt"],
         "not a readable generator bundle", None),
    ]


def _reproduce_cases(t: Path, c: SimpleNamespace) -> list[Case]:
    # --- reproduce (argparse, not Hydra)
    return [
        ("reproduce-scale", "reproduce.py", ["--scale", "banana"], "invalid choice", None),
        ("reproduce-case", "reproduce.py", ["--cases", "nope", "--dry-run"], "unknown case 'nope'", None),
        ("reproduce-store-form", "reproduce.py", ["--store", "np_diffusion", "--dry-run"], "is not CASE=PATH", None),
        ("reproduce-no-store", "reproduce.py", ["--store", f"np_diffusion={t}/none.zarr", "--dry-run"],
         "no such store", None),
        ("reproduce-extra", "reproduce.py", ["--extra", "np_diffusion:trian:x=1", "--dry-run"], "unknown step", None),
        ("reproduce-out", "reproduce.py", ["--out", str(t / "ro" / "paper"), "--cases", "np_diffusion"],
         "read-only", c.ro),
        ("reproduce-flag", "reproduce.py", ["--bogus"], "unrecognized arguments", None),
        # a step fails: the driver's line quotes the step's (printed as "[step] error: ..."); its
        # out dir lies outside the checked folders, as the failure record written there is wanted
        ("reproduce-step-fails", "reproduce.py", ["--cases", "np_diffusion", "--out", str(t.parent / "repro-fail"),
                                                  "--extra", "np_diffusion:data:dataset.synthetic.size=2"],
         "step 'np_diffusion/data' failed (exit status 2: error: size must be >= 16 px, got 2)", None),
    ]


def _cases(t: Path) -> list[Case]:
    """(id, script, args, expected part of the error line, child patch), per entry point."""
    c = _context(t)
    parts = (_make_cases, _import_cases, _train_cases, _sweep_cases, _aggregate_cases,
             _analyze_cases, _reproduce_cases)
    return [case for part in parts for case in part(t, c)]


def _snapshot(t: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in sorted(t.rglob("*")):
        rel = p.relative_to(t).as_posix()
        if not rel.startswith("runs/") and p.is_file():
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def test_every_entry_point_refuses_bad_input_in_one_line(inputs):
    t = inputs
    failures = []
    cases = _cases(t)
    calls, run_before = [], {}
    for cid, script, args, _expect, patch in cases:
        run_dir = t / "runs" / cid
        hydra = [] if script == "reproduce.py" or any(a.startswith("hydra.run.dir") for a in args) \
            else [f"hydra.run.dir={run_dir}"]
        run_before[cid] = _snapshot(run_dir) if run_dir.exists() else {}
        calls.append({"script": script, "args": [*args, *hydra], "patch": patch,
                      "env": {"HYDRA_FULL_ERROR": "0"}})
    before = _snapshot(t)
    t0 = time.perf_counter()
    # one case at a time: cases of one script share outputs (the import cases all write
    # o.zarr, and two at a time collided on its lock, session 23)
    results = run_entries(calls, jobs=1)
    print(f"{len(cases)} cases: {time.perf_counter() - t0:.1f} s")
    for (cid, _script, _args, expect, _patch), r in zip(cases, results, strict=True):
        run_dir = t / "runs" / cid
        errors = r.error_lines
        problems = []
        if r.rc != 2:
            problems.append(f"exit {r.rc}")
        if len(errors) != 1:
            problems.append(f"{len(errors)} error lines")
        elif expect not in errors[0]:
            problems.append(f"message lacks {expect!r}")
        if "Traceback" in r.stderr:
            problems.append("traceback")
        written = [k for k, v in (_snapshot(run_dir) if run_dir.exists() else {}).items()
                   if run_before[cid].get(k) != v and not k.endswith(".log")
                   and not k.startswith(".hydra/")]
        if written:
            problems.append(f"wrote {written}")
        if problems:
            failures.append(f"{cid}: {', '.join(problems)}\n    {r.stderr.strip()[-600:]}")
    after = _snapshot(t)
    if after != before:  # the inputs are shared: name the files, not the case
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        failures.append(f"inputs changed while the cases ran: {changed}")
    assert not failures, f"{len(failures)} case(s) break the contract:\n" + "\n".join(failures)


def test_a_filter_that_keeps_nothing_is_one_line(inputs):
    """README row ``no reference kept >= min_kept``: found only after the variations, so it is
    not in the table (their blocks and the figures before the filter stay, complete, and a
    re-run with other filter settings resumes from the blocks)."""
    out = inputs / "runs" / "min-kept"
    args = [*_np(inputs), f"bundle={inputs / 'g.pt'}", "gamma=0.5", *TINY_ANALYSIS,
            f"out_dir={out}", f"hydra.run.dir={out}"]
    r = run_entry("analyze.py", *args, "analysis.min_kept=1000", env={"HYDRA_FULL_ERROR": "0"})
    assert r.rc == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.error_lines == [
        "error: no reference kept >= min_kept=1000 of 4 samples (most kept: 4; entropy_diff <= 0.1537, "
        "observed median 0.0707); lower min_kept, raise entropy_threshold or lower gamma"]
    assert not (out / "summary.json").exists()
    assert sorted(p.name for p in (out / "variations" / "blocks").iterdir()) == \
        ["block_000000.npz", "block_000001.npz"]


def test_a_bug_keeps_its_traceback(inputs, monkeypatch):
    """An internal error is not dressed up as a one-line input error: traceback, exit 1."""

    def patch() -> None:
        import matdyn.data.sources as sources

        def boom(*a, **k):
            raise ZeroDivisionError("internal bug")

        sources.ensure_store = boom

    r = run_entry("make_data.py", *_np(inputs), f"hydra.run.dir={inputs / 'runs' / 'bug'}", patch=patch)
    assert r.rc == 1 and "Traceback" in r.stderr and "ZeroDivisionError: internal bug" in r.stderr
    assert not r.error_lines


@pytest.mark.parametrize("raised,rc", [("config", 2), ("bug", 1)])
def test_sweep_exits_nonzero_when_aggregation_fails(inputs, raised, rc):
    """Hydra turns a callback's exception into a warning (exit 0, no gamma.json); the
    sweep's aggregation callback exits itself: 2 with one line for input, 1 for a bug."""

    def patch() -> None:
        import matdyn.gamma.hydra_glue as glue
        from matdyn.errors import ConfigError

        def fails(*a, **k):
            if raised == "config":
                raise ConfigError("rule.bound_stat must be max or p95")
            raise ZeroDivisionError("internal bug")

        glue.aggregate_from_config = fails

    out = inputs / "runs" / f"agg-{raised}"
    r = run_entry("sweep_gamma.py", "-m", *_np(inputs), f"bundle={inputs / 'g.pt'}", "sampler.gamma=0.5",
                  "n_refs=2", "n_samples=2", f"hydra.sweep.dir={out}", patch=patch)
    assert r.rc == rc, r.stderr[-2000:]
    assert not (out / "gamma.json").exists() and (out / "uniform=0.5" / "job.json").is_file()
    if raised == "config":
        assert r.error_lines == [f"error: aggregating {out}: rule.bound_stat must be max or p95"]
    else:
        assert "Traceback" in r.stderr and not r.error_lines


def _raise(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as e:
        return e


def test_user_error_message_sorts_input_from_bugs(tmp_path):
    from hydra.errors import InstantiationException

    from matdyn.cli import user_error_message
    from matdyn.errors import StoreError

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".x.zarr.tmp-1-abcdef-0"))
    assert user_error_message(full) == (f"cannot write {tmp_path}: no space left on the device; "
                                        "choose a writable output location with free space")
    wrapped = _raise(InstantiationException("Error in call to target 'x.f':\nfull_key: trainer"),
                     StoreError("a.zarr: bad\nsecond line"))
    assert user_error_message(wrapped) == "a.zarr: bad; second line"
    try:  # a bug raised while handling a full disk is a bug
        try:
            raise full
        except OSError:
            _ = 1 / 0
    except ZeroDivisionError as bug:
        assert user_error_message(bug) is None
    from matdyn.io import _clean_stale_files  # any function of matdyn raising = our bug

    def ours():
        _clean_stale_files(None)  # type: ignore[arg-type]

    try:
        ours()
    except Exception as inner:
        assert user_error_message(_raise(InstantiationException("Error in call to target 'y'"), inner)) is None
