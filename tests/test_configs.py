"""The real configs compose and every `_target_` group instantiates (LHT tests/test_configs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _train_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("model,ndim,channels", [("pggan", 2, 1), ("pggan2d", 2, 1), ("pggan3d", 3, 3)])
def test_model_config_instantiates_with_data_values(model, ndim, channels):
    from matdyn.training.module import PGGANModule

    ds = "brass_clump" if ndim == 3 else "np_diffusion"
    cfg = _train_cfg(f"model={model}", f"dataset={ds}")
    assert cfg.model._target_ == "matdyn.training.module.PGGANModule"
    # data-derived values are passed at instantiate time, as training/app.py::build does
    m = instantiate(cfg.model, ndim=ndim, channels=channels, filters=[8, 8], ema_decay=0.99,
                    _convert_="all")
    assert isinstance(m, PGGANModule)
    assert (m.hparams.ndim, m.hparams.channels, m.hparams.filters) == (ndim, channels, [8, 8])
    assert (m.hparams.latent_dim, m.hparams.gp_weight, m.hparams.drift_weight) == (32, 10.0, 0.001)
    opt = m.configure_optimizers()[0]
    assert type(opt).__name__ == "Adam" and opt.defaults["betas"] == (0.0, 0.99)  # paper §S1
    assert opt.defaults["lr"] == 0.001


def test_callbacks_config_instantiates(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from matdyn.training.app import _callback_kwargs
    from matdyn.training.samples import StageSamples

    cfg = _train_cfg("seed=5")
    built = {name: instantiate(node, **_callback_kwargs(name, node, tmp_path), _convert_="all")
             for name, node in cfg.callbacks.items()}
    assert isinstance(built["checkpoint"], ModelCheckpoint) and isinstance(built["samples"], StageSamples)
    assert built["checkpoint"].dirpath == str(tmp_path / "checkpoints")
    assert built["checkpoint"].save_last is True and built["checkpoint"].save_top_k == 0
    assert (built["samples"].out_dir, built["samples"].n, built["samples"].seed) == (
        tmp_path / "samples", 16, 5)
    # a path given in the config is kept
    node = _train_cfg("callbacks.checkpoint.dirpath=/elsewhere").callbacks.checkpoint
    assert _callback_kwargs("checkpoint", node, tmp_path) == {}


def test_library_builds_without_hydra():
    from matdyn.training.module import PGGANModule

    m = PGGANModule(latent_dim=8, channels=2, ndim=2, filters=[8, 4])
    assert m.hparams.channels == 2 and m.generator.num_stages == 2


def test_no_library_module_reads_hydra_state():
    """Only the entry points (scripts/) read HydraConfig; matdyn.cli.hydra_output_dir is the
    helper they call (a docstring may name them, code may not)."""
    readers = {str(p.relative_to(ROOT)) for p in (ROOT / "matdyn").rglob("*.py")
               if re.search(r"import HydraConfig|HydraConfig\.|hydra\._internal[.\s]", p.read_text())}
    assert readers == {"matdyn/cli.py"}
    cli = (ROOT / "matdyn" / "cli.py").read_text()
    assert "HydraConfig" not in cli.split("def project_path")[1].split("\ndef ")[0]


def test_project_path_is_absolute_from_the_current_dir(tmp_path, monkeypatch):
    from matdyn.cli import project_path

    monkeypatch.chdir(tmp_path)
    assert project_path("a/b.zarr") == tmp_path / "a" / "b.zarr"
    assert project_path("/x/y") == Path("/x/y")
