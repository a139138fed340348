"""Resumed training is bit-identical to an uninterrupted run (issue 13).

Both runs go through ``run_training``, the path ``scripts/train.py`` takes; the stopped run
ends on a ``trainer.max_steps`` budget and is resumed with ``ckpt_path=<its run dir>`` into
the same run dir, as the README tells users to.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import _cfg, _write_store

from matdyn.training.app import run_training
from matdyn.training.module import step_seed

# batch sizes change at every stage switch (8 -> 4 -> 8): the batch that follows a switch must
# be drawn at the new size and resolution in both runs; 40 frames: epochs are 5, 10, 5 batches
STAGES = "[[4,8,0,32],[8,4,32,32],[16,8,32,32]]"  # 4 + 16 + 8 = 28 iterations, 192 images


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return _write_store(tmp_path_factory.mktemp("resume") / "tiny2d.zarr", 40, 1, (20, 20))


@pytest.fixture(scope="module")
def straight(store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight")
    assert run_training(_cfg(store, "eval_frames=0", stages=STAGES), run, cuda=False)
    return run


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _assert_same_tree(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def assert_same_training(a: Path, b: Path) -> None:
    """Generator, critic, EMA, both optimisers, progress and bundle of two runs equal."""
    ca, cb = _ckpt(a), _ckpt(b)
    sa, sb = ca["state_dict"], cb["state_dict"]
    assert sa.keys() == sb.keys()
    for net in ("generator.", "discriminator.", "g_ema."):
        keys = [k for k in sa if k.startswith(net)]
        assert keys and all(torch.equal(sa[k], sb[k]) for k in keys), net
    _assert_same_tree(ca["optimizer_states"], cb["optimizer_states"], "optimizer_states")
    assert ca["matdyn"]["progress"] == cb["matdyn"]["progress"]
    ba = torch.load(a / "generator.pt", weights_only=True)["state_dict"]
    bb = torch.load(b / "generator.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ba[k], bb[k]) for k in ba)


@pytest.mark.parametrize("stop_steps", [8, 18])  # 8: at the 4 -> 8 px switch, mid-epoch (32/40)
def test_resumed_run_is_bit_identical(store, straight, tmp_path, stop_steps):  # 18: mid-fade
    run = tmp_path / "run"
    half = run_training(_cfg(store, "eval_frames=0", f"trainer.max_steps={stop_steps}",
                             stages=STAGES), run, cuda=False)
    assert half and _ckpt(run)["matdyn"]["progress"]["images_seen"] == {8: 32, 18: 52}[stop_steps]
    run_training(_cfg(store, "eval_frames=0", f"ckpt_path={run}", stages=STAGES), run, cuda=False)
    assert _ckpt(straight)["matdyn"]["progress"] == {
        "images_seen": 160, "stage": 2, "fade_alpha": 1.0, "critic_steps": 28, "generator_steps": 28}
    assert_same_training(straight, run)


def test_step_seeds_differ_by_rank_and_progress():
    seeds = {step_seed(s, r, i) for s in (0, 1) for r in (0, 1) for i in (0, 8, 1_000_003)}
    assert len(seeds) == 12 and all(0 <= x < 2**63 for x in seeds)
    assert step_seed(0, 0, 8) == step_seed(0, 0, 8)
