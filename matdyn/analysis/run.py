"""Run one case-study analysis end to end: resolve data, bundle and γ, call the case module,
write ``summary.json`` (with the resolved config, the bundle's hash and the seed, so any
figure can be regenerated) and log everything to W&B."""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import file_sha256, write_json_atomic  # noqa: F401  (re-exported)

log = logging.getLogger("matdyn.analysis")

def run_analysis(
    dataset: Mapping[str, Any],
    analysis: Any,
    bundle_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    gamma: Any = "auto",
    sweep: str | os.PathLike | None = None,
    sampler: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    wandb_cfg: Mapping[str, Any] | None = None,
    resolved_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Library entry of ``scripts/analyze.py``; `analysis` is a case Config dataclass.

    The perturbation sampler comes from :func:`matdyn.gamma.resolve_sampler` (``gamma``,
    ``sweep``, optional ``sampler`` spec ``{_target_: ..., ...}``): a sweep's gamma.json
    gives exactly the sampler it recorded, checked against this bundle and store.
    """
    import torch

    from matdyn.cli import project_path
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import open_store
    from matdyn.gamma import resolve_sampler, store_identity
    from matdyn.training.bundle import load_generator

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(type(analysis).__module__)
    case = module.__name__.rsplit(".", 1)[-1]
    if not hasattr(module, "run"):
        raise ConfigError(f"analysis config {type(analysis).__name__} has no case module with run()")
    bundle_path = project_path(bundle_path)
    gen = load_generator(bundle_path)
    ensure_store(dataset, progress=progress)
    store = open_store(project_path(dataset["path"]), validate=False)
    trained_on = str(gen.meta.get("name", ""))
    if trained_on and trained_on != store.meta.name:
        raise AnalysisError(
            f"{bundle_path} was trained on store '{trained_on}' but the analysis reads store "
            f"'{store.meta.name}' ({store.path}); pass the matching dataset=... or bundle=..."
        )
    if gen.channels != store.meta.channels or gen.ndim != store.meta.ndim:
        raise AnalysisError(
            f"{bundle_path} makes {gen.channels}-channel {gen.ndim}D images but store "
            f"'{store.meta.name}' holds {store.meta.channels}-channel {store.meta.ndim}D frames"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = gen.to(device)
    resolved = resolve_sampler(
        gamma, project_path(sweep) if sweep else None, case, sampler,
        bundle_sha256=file_sha256(bundle_path),
        store=store_identity({**dataset, "path": str(store.path)}, store.meta),
    )
    g, gamma_source = resolved.gamma, resolved.source
    log.info("analysis %s: bundle %s, sampler %r (%s), output %s", case, bundle_path,
             resolved.sampler, gamma_source, out)

    run_wandb = None
    wb = dict(wandb_cfg or {})
    if wb.get("enabled", False) and wb.get("mode", "offline") != "disabled":
        import wandb

        run_wandb = wandb.init(project=wb.get("project", "matdyn"), mode=wb.get("mode", "offline"),
                               dir=str(out), job_type="analysis", group=case,
                               config=dict(resolved_config or {}), reinit="finish_previous")

    def _log(values: Mapping[str, Any]) -> None:
        if run_wandb is not None:
            run_wandb.log({f"analysis/{k}": v for k, v in values.items()})

    try:
        summary = module.run(gen, store, analysis, gamma=g, sampler=resolved.sampler, out_dir=out,
                             seed=seed, progress=progress, log=_log)
        summary = dict(summary)
        summary.update(
            gamma=g,
            gamma_source=gamma_source,
            sampler=resolved.spec,
            seed=seed,
            bundle=str(bundle_path),
            bundle_sha256=file_sha256(bundle_path),
            store=str(store.path),
            config=dict(resolved_config or {}),
            elapsed_s=round(time.perf_counter() - t0, 2),
        )
        write_json_atomic(out / "summary.json", summary)
        if run_wandb is not None:
            import wandb

            for rel in summary.get("figures", []):
                p = out / rel
                if p.suffix == ".png" and p.is_file():
                    run_wandb.log({f"figures/{p.stem}": wandb.Image(str(p))})
            table = out / str(summary.get("table", ""))
            if table.is_file() and table.suffix == ".csv":
                import pandas as pd

                run_wandb.log({"variations": wandb.Table(dataframe=pd.read_csv(table))})
            run_wandb.summary.update(_flat(summary.get("recovery", {}), "recovery"))
    finally:
        if run_wandb is not None:
            run_wandb.finish()
    return summary


def _flat(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
    return out
