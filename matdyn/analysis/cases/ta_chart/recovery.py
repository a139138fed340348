"""Recovery of the planted Ta-chart geometry (``summary["recovery"]``): slit widths within
``slit_tolerance_px`` of the truth (§3.2: "within approximately two pixels"), and whether
the generated translation / rotation sequences are smooth and jump-free."""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.cases.ta_chart.config import Config


def _true_widths(obs: Any) -> tuple[float, float] | None:
    if obs.has_truth:
        return obs.expected_widths()
    ta = obs.truth_attrs
    if "d1_nm" in ta and "d2_nm" in ta:
        return float(ta["d1_nm"]), float(ta["d2_nm"])
    return None


def _slit_recovery(slits: dict, d_true: tuple[float, float], pixel_size: float,
                   tol: float) -> dict:
    sw: dict[str, Any] = {}
    for k, name in enumerate(("d1", "d2")):
        gm, om = slits[name]["generated"]["mean"], slits[name]["observed"]["mean"]
        ge = abs(gm - d_true[k]) / pixel_size if gm is not None else float("nan")
        oe = abs(om - d_true[k]) / pixel_size if om is not None else float("nan")
        sw[name] = {"truth": d_true[k], "generated_mean": gm, "observed_mean": om,
                    "generated_error_px": ge, "observed_error_px": oe,
                    "generated_within_tolerance": bool(ge <= tol),
                    "observed_within_tolerance": bool(oe <= tol)}
    sw["tolerance_px"] = tol
    return sw


def recover(obs: Any, slits: dict, sequences: dict, pixel_size: float,
            cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    d_true = _true_widths(obs)
    if d_true is not None:
        out["slit_widths"] = _slit_recovery(slits, d_true, pixel_size, cfg.slit_tolerance_px)
    for kind in ("translation", "rotation"):
        s = sequences[kind]
        bound, steps, gap = s["bound"], s["steps"], s["max_gap_ratio"]
        out[f"{kind}_smoothness"] = {
            "bound": bound, "bound_source": s["bound_source"], "unit": s["unit"],
            "max_step": steps["max"], "p95_step": steps["p95"], "median_step": steps["median"],
            "max_gap_ratio": gap,
            "smooth": bool(np.isfinite(bound) and steps["n"] > 0 and steps["max"] <= bound),
            "jump_free": bool(np.isfinite(gap) and gap <= cfg.jump_gap_ratio),
        }
    return out
