"""Entry of one case-study analysis: open the bundle and its store, resolve γ
(:func:`resolve_gamma`), then :func:`matdyn.analysis.case.run_case`, which writes
``summary.json`` (with the bundle's hash, the store, the seed and the resolved config in
``provenance``, so any figure can be regenerated); W&B logging when enabled."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import file_sha256, write_json_atomic  # noqa: F401  (re-exported)

log = logging.getLogger("matdyn.analysis")

#: γ the paper settled on per case, used when no sweep is given (§3.2, §3.3.1, §3.4.1)
PAPER_GAMMA = {"ta_chart": 1.0, "np_diffusion": 1.0, "brass_clump": 0.5}


def resolve_gamma(gamma: Any, sweep: str | os.PathLike | None, case: str) -> tuple[float, str]:
    """γ as a number and where it came from ('given', 'sweep:<path>' or 'paper')."""
    from matdyn.cli import project_path

    if gamma is not None and str(gamma) != "auto":
        try:
            g = float(gamma)
        except ValueError:
            raise ConfigError(f"gamma must be a number or 'auto', got {gamma!r}") from None
        if not g > 0:
            raise ConfigError(f"gamma must be > 0, got {g}")
        return g, "given"
    if sweep:
        p = project_path(sweep)
        p = p / "gamma.json" if p.is_dir() else p
        if not p.is_file():
            raise ConfigError(f"{p}: no gamma.json; run the γ sweep first "
                              "(python scripts/sweep_gamma.py -m ...) or pass gamma=<value>")
        try:
            g = float(json.loads(p.read_text())["gamma"])
        except (KeyError, ValueError, json.JSONDecodeError) as e:
            raise ConfigError(f"{p}: unreadable gamma.json ({type(e).__name__}); re-run the "
                              "aggregation (scripts/aggregate_sweep.py)") from None
        return g, f"sweep:{p}"
    if case not in PAPER_GAMMA:
        raise ConfigError(f"gamma=auto needs sweep=<dir> for case {case!r}")
    log.info("gamma=auto without a sweep: using the paper's γ = %s for %s", PAPER_GAMMA[case], case)
    return PAPER_GAMMA[case], "paper"


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


def run_analysis(
    dataset: Mapping[str, Any],
    analysis: Any,
    bundle_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    gamma: Any = "auto",
    sweep: str | os.PathLike | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    wandb_cfg: Mapping[str, Any] | None = None,
    resolved_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Library entry of ``scripts/analyze.py``: open the bundle and the store it was
    trained on, then :func:`matdyn.analysis.case.run_case` with the case of `analysis`
    (a case Config dataclass), ``dataset.fit``, and W&B logging when enabled."""
    import torch

    from matdyn.analysis.case import get_case, run_case
    from matdyn.cli import project_path
    from matdyn.data.sources import ensure_store
    from matdyn.data.store import open_store
    from matdyn.training.bundle import load_generator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case, _ = get_case(analysis)
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
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = gen.to(device)
    log.info("analysis %s: bundle %s, output %s", case, bundle_path, out)
    provenance = {"bundle": str(bundle_path), "bundle_sha256": file_sha256(bundle_path),
                  "store": str(store.path), "resolved_config": dict(resolved_config or {})}
    run_wandb = _wandb(wandb_cfg, out, case, resolved_config)
    try:
        summary = run_case(case, gen, store, analysis, out_dir=out, gamma=gamma, sweep=sweep,
                           seed=seed, fit=str(dataset.get("fit") or "crop"), progress=progress,
                           log=run_wandb.log if run_wandb is not None else None,
                           provenance=provenance)
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
