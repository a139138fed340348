"""Entry of one case-study analysis: open the bundle and its store, resolve the sampler
(:func:`matdyn.gamma.resolve_sampler`, checked against the bundle and store), then :func:`matdyn.analysis.case.run_case`, which writes
``summary.json`` (with the bundle's hash, the store, the seed and the resolved config in
``provenance``, so any figure can be regenerated); W&B logging when enabled."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.errors import AnalysisError
from matdyn.io import file_sha256, write_json_atomic  # noqa: F401  (re-exported)
from matdyn.locks import locks_output_dir

log = logging.getLogger("matdyn.analysis")

def _wandb(wandb_cfg: Mapping[str, Any] | None, out: Path, case: str,
           resolved_config: Mapping[str, Any] | None) -> Any:
    wb = dict(wandb_cfg or {})
    if not wb.get("enabled", False) or wb.get("mode", "offline") == "disabled":
        return None
    import wandb

    return wandb.init(project=wb.get("project", "matdyn"), mode=wb.get("mode", "offline"),
                      dir=str(out), job_type="analysis", group=case,
                      config=dict(resolved_config or {}), reinit="finish_previous")


def _log_outputs(run_wandb: Any, out: Path, summary: Mapping[str, Any]) -> None:
    """Figures, table and recovery scores under the same ``analysis/<case>/`` keys."""
    import wandb

    case = summary["case"]
    for rel in summary.get("figures", []):
        p = out / rel
        if p.suffix == ".png" and p.is_file():
            run_wandb.log({f"analysis/{case}/figures/{p.stem}": wandb.Image(str(p))})
    table = out / str(summary.get("table") or "")
    if table.is_file() and table.suffix == ".csv":
        import pandas as pd

        run_wandb.log({f"analysis/{case}/table": wandb.Table(dataframe=pd.read_csv(table))})
    run_wandb.summary.update(_flat(summary.get("recovery") or {}, f"analysis/{case}/recovery"))


@locks_output_dir("analysis folder")  # one analysis per folder (matdyn.locks)
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
    precision: str = "fp32",
    progress: bool = True,
    wandb_cfg: Mapping[str, Any] | None = None,
    resolved_config: Mapping[str, Any] | None = None,
    shard: str | None = None,
    merge: bool = False,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Library entry of ``scripts/analyze.py``: open the bundle and the store it was
    trained on, then :func:`matdyn.analysis.case.run_case` with the case of `analysis`
    (a case Config dataclass), ``dataset.fit``, and W&B logging when enabled.

    The perturbation sampler comes from :func:`matdyn.gamma.resolve_sampler` (``gamma``,
    ``sweep``, optional ``sampler`` spec ``{_target_: ..., ...}``): a sweep's gamma.json
    gives exactly the sampler it recorded, checked against this bundle and store.

    ``shard="k/n"``: compute only that shard of the variations into ``out_dir/variations``
    and return its report (:func:`matdyn.analysis.shards.run_case_shard`; no W&B, no
    summary); ``merge=True``: finish the analysis from the shards' blocks (missing shards
    are an AnalysisError naming them). ``block_size``: references per engine block.
    """
    import torch

    from matdyn.analysis.case import get_case, run_case
    from matdyn.analysis.shards import check_shard_options, run_case_shard
    from matdyn.cli import project_path
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import open_store
    from matdyn.gamma import resolve_sampler, store_identity
    from matdyn.sampling.shards import require_complete
    from matdyn.training.bundle import load_generator

    check_shard_options(shard, merge)
    out = Path(out_dir)
    case, _ = get_case(analysis)
    if hasattr(analysis, "validate"):  # a bad key fails before anything is loaded or logged
        analysis.validate()
    if merge:  # refuse missing shards before any work
        require_complete(out / "variations", f"the {case} analysis")
    out.mkdir(parents=True, exist_ok=True)
    bundle_path = project_path(bundle_path)
    gen = load_generator(bundle_path, precision=precision)
    ensure_store(dataset, progress=progress)
    store = open_store(project_path(dataset["path"]))  # validated: NaN/inf, missing chunks
    trained_on = str(gen.meta.get("name", ""))
    if trained_on and trained_on != store.meta.name:
        raise AnalysisError(
            f"{bundle_path} was trained on store '{trained_on}' but the analysis reads store "
            f"'{store.meta.name}' ({store.path}); pass the matching dataset=... or bundle=..."
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = gen.to(device)
    sha = file_sha256(bundle_path)
    resolved = resolve_sampler(
        gamma, project_path(sweep) if sweep else None, case, sampler, bundle_sha256=sha,
        store=store_identity({**dataset, "path": str(store.path)}, store.meta),
    )
    log.info("analysis %s: bundle %s, sampler %r (%s), output %s", case, bundle_path,
             resolved.sampler, resolved.source, out)
    fit = str(dataset.get("fit") or "crop")
    if shard is not None:
        return run_case_shard(case, gen, store, analysis, out_dir=out, shard=shard, gamma=resolved,
                              seed=seed, fit=fit, progress=progress, block_size=block_size)
    provenance = {"bundle": str(bundle_path), "bundle_sha256": sha,
                  "store": str(store.path), "resolved_config": dict(resolved_config or {})}
    run_wandb = _wandb(wandb_cfg, out, case, resolved_config)
    try:
        summary = run_case(case, gen, store, analysis, out_dir=out, gamma=resolved,
                           seed=seed, fit=fit, progress=progress,
                           log=run_wandb.log if run_wandb is not None else None,
                           provenance=provenance, merge=merge, block_size=block_size)
        if run_wandb is not None:
            _log_outputs(run_wandb, out, summary)
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
