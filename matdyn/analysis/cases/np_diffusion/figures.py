"""Figures of the NP case (paper Figs. 5a/b, 6b-d)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from matdyn.analysis.case import CaseContext
from matdyn.viz.figures import (
    cluster_boxplots,
    dendrogram_figure,
    distribution_comparison,
    image_grid,
)


def titled(fig: Figure, title: str) -> Figure:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def pair_grid(
    top: np.ndarray,
    bottom: np.ndarray,
    top_label: str,
    bottom_label: str,
    ps: float,
    unit: str,
    bottom_titles: Sequence[str] | None = None,
) -> Figure:
    n = min(len(top), len(bottom))
    titles = [f"{top_label} {i + 1}" for i in range(n)]
    titles += (
        list(bottom_titles[:n])
        if bottom_titles is not None
        else [f"{bottom_label} {i + 1}" for i in range(n)]
    )
    return image_grid(
        np.concatenate([top[:n], bottom[:n]]),
        pixel_size=ps,
        unit=unit,
        ncols=n,
        titles=titles,
        shared_range=False,
    )


def hist_figure(
    values: np.ndarray,
    *,
    xlabel: str,
    title: str,
    lines: Sequence[tuple[float, str, str, str]] = (),
) -> Figure:
    """Histogram with vertical lines (value, label, colour, style)."""
    fig = Figure(figsize=(4.4, 3.0))
    ax = fig.add_subplot()
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=max(5, min(40, int(np.sqrt(max(v.size, 1))) * 2)), color="0.6")
    for x, label, color, style in lines:
        if x is not None and math.isfinite(x):
            ax.axvline(x, color=color, ls=style, lw=1.2, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    if lines:
        ax.legend(fontsize=7)
    return titled(fig, title)


def ref_vs_avg_figure(df: pd.DataFrame, groups: str | None, names: Mapping[int, str]) -> Figure:
    """Anisotropy of traces in the reference frames vs after averaging, per group."""
    keys = [None] if groups is None else sorted(int(g) for g in df[groups].unique() if g >= 0)
    fig = Figure(figsize=(max(3.2, 1.6 * len(keys) + 1.0), 3.0))
    ax = fig.add_subplot()
    data, ticks, colours = [], [], []
    # two boxes per group: reference frames, averaged images
    for g in keys:
        sub = df if g is None else df[df[groups] == g]
        for src, col in (("reference", "#2ca02c"), ("averaged", "#e6b800")):
            data.append(sub.loc[sub.source == src, "anisotropy"].to_numpy(dtype=np.float64))
            ticks.append(f"{'all' if g is None else names.get(g, str(g))}\n{src[:3]}")
            colours.append(col)
    bp = ax.boxplot([d if d.size else np.array([np.nan]) for d in data], patch_artist=True)
    for patch, col in zip(bp["boxes"], colours):
        patch.set_facecolor(col)
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(ticks) + 1))
    ax.set_xticklabels(ticks, fontsize=7)
    ax.set_ylabel("anisotropy")
    return titled(fig, "Traces before (reference frames) and after latent averaging")




def fidelity_figures(ctx: CaseContext, real: np.ndarray, gen: np.ndarray, fid: dict,
                     areas: tuple[np.ndarray, np.ndarray], n_show: int, area_unit: str) -> None:
    """Fig. 5a (observed vs generated frames) and Fig. 5b (particle areas)."""
    n = min(n_show, len(real), len(gen))
    grid = pair_grid(real[:n], gen[:n], "observed", "generated", ctx.pixel_size, ctx.unit)
    ctx.save(grid, "fig5a_observed_generated",
             "Fig. 5a: observed (top) and generated (bottom) phase images")
    w = fid["particle_area_w1"]
    fig = distribution_comparison(areas[0], areas[1], xlabel=f"particle area ({area_unit})",
                                  names=["particle area"],
                                  distances={"particle area": w["value"]})
    fig.axes[0].ticklabel_format(style="sci", scilimits=(-3, 4))
    ctx.save(fig, "fig5b_particle_area",
             f"Fig. 5b: NP areas, observed vs generated (W1 {w['normalize']}; "
             f"real-vs-real {w['baseline']:.3g})")


def filter_figure(ctx: CaseContext, ediff: np.ndarray, entry: dict) -> None:
    """Histogram of the entropy differences with the threshold (and the observed max)."""
    thr, base = entry["threshold"], entry.get("consecutive_observed")
    lines = [(thr, f"threshold {thr:.3g}", "C3", "--")]
    if base is not None:
        lines.append((base["max"], f"consecutive observed max {base['max']:.3g}", "C2", ":"))
    rate = entry["rejection_rate_overall"]
    fig = hist_figure(ediff.ravel(), xlabel="entropy difference to the reference (bits)",
                      lines=lines,
                      title=f"Entropy filter at γ = {ctx.gamma:g}: rejected {100 * rate:.0f} %")
    ctx.save(fig, "filter_entropy_diff")


def cluster_figures(ctx: CaseContext, sub: pd.DataFrame, method: str, res, names: dict,
                    feats: list[str], shown: list[str], units: dict, k: int,
                    tag: str = "") -> None:
    """Fig. 6c (dendrogram) and Fig. 6d (descriptors per mode) of one clustering; ``tag``
    prefixes the file names (``<tag>_fig6c_...``) and names the rows in the titles."""
    label = "average linkage, trimmed" if method == "trimmed" else f"{method} linkage"
    pre, what = (f"{tag}_", tag) if tag else ("", "NP variations")
    if len(res.linkage):
        fig = dendrogram_figure(res.linkage, k=k, xlabel=what)
        ctx.save(fig, f"{pre}fig6c_dendrogram_{method}",
                 f"Fig. 6c: HAC ({label}) on scaled {', '.join(feats)}")
    fig = cluster_boxplots({f: sub[f].to_numpy(dtype=np.float64) for f in shown}, res.labels,
                           group_names=names, units=units)
    ctx.save(fig, f"{pre}fig6d_boxplots_{method}",
             f"Fig. 6d: {what} per cluster ({label} on {', '.join(feats)})")


def variation_figures(ctx: CaseContext, refs: np.ndarray, means: np.ndarray,
                      n_kept: np.ndarray, used: np.ndarray, n_show: int) -> None:
    """References (top) and their averaged variations (bottom)."""
    shown = np.flatnonzero(used)[:n_show]
    grid = pair_grid(refs[shown], means[shown], "reference", "averaged", ctx.pixel_size,
                     ctx.unit, bottom_titles=[f"avg ({int(n_kept[i])} kept)" for i in shown])
    ctx.save(grid, "fig5a_references_averaged",
             f"References (top) and their averaged variations (bottom), γ = {ctx.gamma:g}")


def diffusion_figure(ctx: CaseContext, values: np.ndarray, diffusion: dict, area_unit: str,
                     paper_mean: float | None) -> None:
    """Fig. 6b: histogram of the diffusion areas with the mean; the planted 4Dt only when
    the store has it, the paper's value only when given (a store with truth, nm units)."""
    mean_line = (
        (diffusion["mean"], f"mean {diffusion['mean']:.0f} ± {diffusion['std']:.0f}", "red", "-")
        if diffusion["n"] else (float("nan"), "", "red", "-"))
    lines = [mean_line]
    planted = diffusion.get("planted_free_4Dt")
    if planted is not None:
        lines.append((planted, f"planted free 4Dt {planted:.0f}", "C0", "--"))
    if paper_mean is not None and ctx.nm is not None:
        lines.append((paper_mean, f"paper {paper_mean:.0f}", "C2", ":"))
    fig = hist_figure(
        values, xlabel=f"diffusion area ({area_unit})",
        title=f"Fig. 6b: diffusion areas of NP variations (γ = {ctx.gamma:g} ≈ "
              f"{diffusion['time_s']:g} s, assumed)", lines=lines)
    ctx.save(fig, "fig6b_diffusion_area")


def recovery_figures(ctx: CaseContext, table: pd.DataFrame, rows: np.ndarray,
                     mode_names: dict[int, str], area_unit: str) -> None:
    """Traces before/after averaging and descriptors per planted mode (ground truth)."""
    ctx.save(ref_vs_avg_figure(table, "planted_mode", mode_names),
             "traces_anisotropy_reference_averaged")
    planted = table.loc[rows, "planted_mode"].to_numpy()
    inside = planted >= 0
    col = {c: table.loc[rows, c].to_numpy(dtype=np.float64)[inside]
           for c in ("anisotropy", "tortuosity", "diffusion_area")}
    fig = cluster_boxplots({"anisotropy": col["anisotropy"], "tortuosity": col["tortuosity"],
                            "diffusion area": col["diffusion_area"]}, planted[inside],
                           group_names=mode_names, units={"diffusion area": area_unit})
    for ax in fig.axes:
        ax.set_xlabel("planted mode")
    ctx.save(fig, "recovery_planted_modes",
             "Descriptors of averaged traces per planted mode (ground truth)")
