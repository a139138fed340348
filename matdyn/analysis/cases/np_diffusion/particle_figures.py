"""Figures of the particle-level NP analysis: MSD(Δt), D histogram, γ ↔ Δt calibration.

Reference lines ("planted") appear only when the store has truth; axis labels take the
store's length and time units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from matdyn.analysis.case import CaseContext
from matdyn.analysis.cases.np_diffusion.figures import hist_figure, titled
from matdyn.analysis.cases.np_diffusion.particles import gamma_key


def msd_dt_figure(ctx: CaseContext, df: pd.DataFrame, gammas: list[float],
                  cal: Mapping[str, Any], tracking: Mapping[str, Any], group: str | None,
                  names: Mapping[int, str], unit: str,
                  radii: tuple[float, float | None] | None = None,
                  rays: Mapping[str, Any] | None = None) -> None:
    """MC ensemble MSD (mean over each group's particles, as the tracking's emsd averages
    over tracks) at each γ's Δt, the mean noise floor, tracking MSD(Δt) and the line
    4·D·Δt of the tracking D of all particles, drawn down to the shortest MC Δt (MC D is
    compared with that D, ``mc_vs_tracking``), and the MC MSD of all particles' clouds
    linked within the wide radius (open markers: how much the curve owes to the radius), and
    with ``rays`` (``particles.ensemble.rays``) the MSD of particles followed along the latent
    rays (diamonds, per planted mode when the groups are planted modes, else all)."""
    fig = Figure(figsize=(7.4, 3.6))
    ax = fig.add_axes((0.1, 0.14, 0.5, 0.74))  # the legend goes right of the axes
    dts = dict(zip(cal.get("gammas", []), cal.get("dt", []))) if cal.get("available") else {}
    use_t = sum(dts.get(g) is not None for g in gammas) >= 1
    x = np.array([dts.get(g) if use_t and dts.get(g) is not None else (np.nan if use_t else g)
                  for g in gammas], np.float64)
    keys = [None] if group is None else sorted(int(k) for k in df[group].unique() if k >= 0)
    for i, k in enumerate(keys):  # one MC curve per group
        sub = df if k is None else df[df[group] == k]
        y = [np.nanmean(sub[f"msd_g{gamma_key(g)}"]) if sub[f"msd_g{gamma_key(g)}"].notna().any()
             else np.nan for g in gammas]
        within = f", linked within {radii[0]:g} px" if radii else ""
        ax.plot(x, y, "o-", color=f"C{i}",
                label=f"MC {'all' if k is None else names.get(k, k)} (ensemble{within})")
    if rays:  # followed along the latent rays: no link-radius cap
        by = rays.get("by_gamma", {})
        planted_groups = group == "planted_mode"
        for i, k in enumerate(keys if planted_groups else [None]):
            name = "all" if k is None else names.get(k, k)
            y = [(by.get(gamma_key(g), {}) if name == "all" else
                  by.get(gamma_key(g), {}).get("modes", {}).get(name, {})).get("msd")
                 for g in gammas]
            y = np.array([np.nan if v is None else v for v in y], np.float64)
            if np.isfinite(y).any():
                ax.plot(x, y, "D-.", color=f"C{i}" if planted_groups else "0.2", ms=3.5, lw=0.8,
                        mfc="none", label=f"MC {name}, followed along latent rays")
    wide = [f"msd_wide_g{gamma_key(g)}" for g in gammas]
    if all(c in df for c in wide):  # the link-radius check, all particles
        yw = [np.nanmean(df[c]) if df[c].notna().any() else np.nan for c in wide]
        ax.plot(x, yw, "o:", color="0.35", mfc="none", lw=0.8,
                label="MC all, linked within "
                      + (f"{radii[1]:g} px" if radii and radii[1] else "the wide radius"))
    if "msd_floor" in df and df["msd_floor"].notna().any():
        ax.axhline(float(np.nanmean(df["msd_floor"])), color="0.5", ls=":", lw=1,
                   label="noise floor (still)")
    if use_t and tracking.get("applicable"):
        tr = pd.DataFrame(tracking["msd"])
        for i, (mode, sub) in enumerate(tr.groupby("mode", sort=False)):
            ax.plot(sub["dt"], sub["msd"], "--", color="k" if mode == "all" else f"C{i - 1}",
                    lw=1, label=f"tracking {mode}")
        d_all = (tracking.get("modes", {}).get("all") or {}).get("D")
        lo = np.nanmin(np.r_[x, tr["dt"].to_numpy()]) if len(tr) else np.nan
        if d_all and np.isfinite(lo):  # the line MC D is compared with (mc_vs_tracking)
            t = np.geomspace(lo, tr["dt"].max(), 20)
            ax.plot(t, 4.0 * d_all * t, ":", color="k", lw=0.8, label="tracking 4DΔt (all)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short decade overlap
    tu = cal.get("time_unit", "s")
    ax.set_xlabel(f"Δt ({tu}, γ calibrated on observed frames)" if use_t
                  else "γ (no time calibration)")
    ax.set_ylabel(f"MSD ({unit}²)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.suptitle("MSD(Δt): latent Monte Carlo vs tracking of the observed frames", fontsize=9)
    ctx.save(fig, "particles_msd_dt")  # fixed axes: tight_layout would squeeze in the legend


def d_histogram(ctx: CaseContext, df: pd.DataFrame, tracking: Mapping[str, Any],
                planted: float | None, unit: str, tu: str) -> None:
    """Histogram of log10 D of the reference particles, with floor, tracking and (only
    with truth) planted lines."""
    d = df["D"].to_numpy(np.float64)
    if not np.isfinite(d).any():
        return
    lines = []
    if "D_floor" in df and df["D_floor"].notna().any():
        lines.append((float(np.log10(np.nanmedian(df["D_floor"]))), "noise floor (median)",
                      "0.5", ":"))
    t_all = (tracking.get("modes", {}).get("all") or {}).get("D") if tracking.get("applicable") \
        else None
    if t_all and t_all > 0:
        lines.append((float(np.log10(t_all)), f"tracking (all) {t_all:.3g} {unit}²/{tu}", "k",
                      "--"))
    if planted:
        lines.append((float(np.log10(planted)), f"planted free {planted:.4g}", "C0", "-."))
    fig = hist_figure(np.log10(np.clip(d, 1e-12, None)), xlabel=f"log10 D ({unit}²/{tu})",
                      title=f"D of reference particles at γ = {ctx.gamma:g}", lines=lines)
    ctx.save(fig, "particles_D")


def calibration_figure(ctx: CaseContext, cal: Mapping[str, Any]) -> None:
    """Observed motion difference vs Δt (frame noise removed) with each γ placed on it."""
    if not cal.get("available"):
        return
    tu = cal["time_unit"]
    lags = pd.DataFrame(cal["lags"])
    fig = Figure(figsize=(4.4, 3.0))
    ax = fig.add_subplot()
    ax.plot(lags[f"dt_{tu}"], lags["motion_median"], "o-", color="C0",
            label="observed frames Δt apart (− noise intercept)")
    for g, d, t in zip(cal["gammas"], cal["gamma_diff"], cal["dt"]):
        if t is not None:
            ax.plot([t], [d], "s", color="C3")
            ax.annotate(f"γ={g:.3g}", (t, d), fontsize=7)
    ax.set_xscale("log")
    if (lags["motion_median"] > 0).all():  # squared differences grow ∝ MSD: log-log like MSD(Δt)
        ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"Δt ({tu})")
    metric = str(cal.get("metric", "difference")).split(" ")[0]
    unit = cal.get("difference_unit")
    ax.set_ylabel({"sq_diff": f"median squared difference, {unit}\n(smoothed, σ = "
                              f"{cal.get('smoothing_sigma_px')} px)",
                   "density_diff": f"median density difference\n({unit})"}.get(
                       metric, f"median {metric}"), fontsize=8)
    ax.legend(fontsize=7)
    ctx.save(titled(fig, "γ ↔ Δt calibration"), "time_calibration")
