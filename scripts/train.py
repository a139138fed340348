"""Train a progressive-growing WGAN-GP: ``python scripts/train.py [dataset=...] [schedule=...]``.

See conf/train.yaml for the options and matdyn/training/app.py for resume, init_from and
multi-GPU / multi-node use. At the end the generator bundle (generator.pt) and a fidelity
summary (summary.json: generated vs real, with real-vs-real baselines) are written into
the run directory. Bad input ends with one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import hydra
from omegaconf import DictConfig

from matdyn.cli import entry_point, guarded, project_path
from matdyn.locks import dir_lock_path, writer_lock


def absolute_paths(cfg: DictConfig) -> None:
    """The config's paths made absolute here, so the library gets absolute paths only."""
    cfg.dataset.path = str(project_path(cfg.dataset.path))
    for key in ("ckpt_path", "init_from"):
        if cfg.get(key):
            cfg[key] = str(project_path(cfg[key]))


@entry_point
@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@guarded
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    absolute_paths(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    is_main = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    # one training per run directory (DDP ranks > 0 belong to rank 0's run)
    with writer_lock(dir_lock_path(run_dir), f"run directory {run_dir}") if is_main else nullcontext():
        _train_and_evaluate(cfg, run_dir, is_main)


def _train_and_evaluate(cfg: DictConfig, run_dir: Path, is_main: bool) -> None:
    from matdyn.training.app import run_training

    bundle = run_training(cfg, run_dir)
    n_eval = int(cfg.get("eval_frames", 1000))  # paper §3.3.1: 1000 generated vs observed frames
    if bundle is not None and n_eval > 0 and is_main and not cfg.get("dry_run", False):
        from matdyn.analysis.evaluate import evaluate_bundle
        from matdyn.io import write_json_atomic

        summary = evaluate_bundle(bundle, Path(cfg.dataset.path), n=n_eval,
                                  seed=int(cfg.seed), fit=str(cfg.dataset.get("fit", "crop")),
                                  # particle measures only mean something for particle data (§3.3.1)
                                  particles=cfg.dataset.name == "np_diffusion",
                                  figure=run_dir / "observed_vs_generated")
        write_json_atomic(run_dir / "summary.json", summary)
        pa = summary.get("particle_area_w1", {})
        if pa.get("real_vs_real") is not None:
            g = "inf (no particle drawn)" if pa["generated_vs_real"] is None else f"{pa['generated_vs_real']:.4f}"
            print(f"particle-area Wasserstein (range-normalised, half vs half): {g} "
                  f"(real vs real {pa['real_vs_real']:.4f})")
        for name, r in (summary.get("particles", {}).get("regions") or {}).items():
            ratio = "undefined" if r["ratio"] is None else f"{r['ratio']:.2f}"
            print(f"particles per frame, {name}: generated {r['generated_per_frame']:.2f} / "
                  f"observed {r['real_per_frame']:.2f} = {ratio}")
        flags = summary.get("flags", [])
        print(f"fidelity flags (> {summary.get('flag_factor', 2):g}x real-vs-real): "
              + (", ".join(flags) if flags else "none"))
        div = summary.get("frame_diversity") or {}
        if div.get("ratio") is not None:
            print(f"frame diversity (mean RMS difference between frames): generated / observed = "
                  f"{div['ratio']:.2f} (two halves of the observed frames differ by "
                  f"{abs(div['real_vs_real_ratio'] - 1):.0%} on average)")
        print(f"summary: {run_dir / 'summary.json'}; figure: {summary.get('figure')}")


if __name__ == "__main__":
    main()
