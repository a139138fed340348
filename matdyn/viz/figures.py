"""Figures of the paper, one function per figure kind: arrays in, ``Figure`` out.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI
backend), so they are safe in workers and tests. :func:`save_figure` writes PNG + SVG
atomically (:func:`matdyn.io.atomic_writer`).

Axes show physical units where the data have them: pass ``pixel_size`` and ``unit``
from the dataset store's metadata.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from matdyn.errors import AnalysisError
from matdyn.io import atomic_writer

__all__ = [
    "save_figure",
    "add_scale_bar",
    "image_grid",
    "continuity_curves",
    "distribution_comparison",
    "dendrogram_figure",
    "cluster_boxplots",
    "mds_scatter",
    "temporal_mapping",
    "sequence_strip",
    "iou_distributions",
    "volume_projections",
]

OBSERVED_COLOR = "#2ca02c"  # Fig. 4a: observed green
GENERATED_COLOR = "#e6b800"  # Fig. 4a: generated yellow
OUTLIER_COLOR = "0.6"  # Figs. 6d / 8c: gray outlier dots


def save_figure(fig: Figure, path_stem: str | os.PathLike[str], dpi: int = 150) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` atomically; returns the two paths.

    >>> import tempfile, pathlib
    >>> fig = Figure(); _ = fig.add_subplot().plot([0, 1])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     [p.name for p in save_figure(fig, pathlib.Path(d) / "fig")]
    ['fig.png', 'fig.svg']
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    # each format: write a temporary sibling, then rename over the target
    for fmt in ("png", "svg"):
        target = stem.with_name(stem.name + "." + fmt)
        with atomic_writer(target, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written


def _nice_length(target: float) -> float:
    """Largest 1, 2 or 5 × 10^k not above ``target``."""
    if target <= 0:
        return 0.0
    exp = math.floor(math.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * 10**exp <= target:
            return m * 10**exp
    return 10.0**exp


def _fmt_length(value: float, unit: str) -> str:
    return f"{value:g} {unit}"


def add_scale_bar(
    ax: Any, width_px: int, height_px: int, pixel_size: float, unit: str, fraction: float = 0.25
) -> float:
    """Draw a white scale bar (bottom right) of a round physical length; returns that length."""
    length = _nice_length(fraction * width_px * pixel_size)
    if length <= 0:
        return 0.0
    bar_px = length / pixel_size
    thick = max(1.0, 0.02 * height_px)
    x0 = width_px - 0.05 * width_px - bar_px
    y0 = height_px - 0.06 * height_px - thick
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), bar_px, thick, color="white", lw=0))
    ax.text(
        x0 - 0.5 + bar_px, y0 - 0.5 - 0.01 * height_px, _fmt_length(length, unit),
        color="white", ha="right", va="bottom", fontsize=7,
    )  # fmt: skip
    return length


def _image_stack(images: Any) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise AnalysisError(
            f"expected images [N, H, W] (or [N, 1, H, W]), got shape {np.shape(images)}"
        )
    return arr


def _grid(fig: Figure, n: int, ncols: int) -> list[Any]:
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return list(axes[:n])


def image_grid(
    images: Any,
    *,
    pixel_size: float | None = None,
    unit: str = "nm",
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    cmap: str = "gray",
    shared_range: bool = True,
    panel_size: float = 1.8,
) -> Figure:
    """Grid of 2D images (Fig. 5a, 7a/b slices) with a physical scale bar on each panel.

    >>> image_grid(np.zeros((3, 8, 8)), pixel_size=40.58, ncols=2).axes.__len__()
    3
    """
    stack = _image_stack(images)
    n = len(stack)
    ncols = min(n, ncols or min(n, 6))
    fig = Figure(figsize=(panel_size * ncols, panel_size * math.ceil(n / ncols)))
    vmin, vmax = (float(stack.min()), float(stack.max())) if shared_range else (None, None)
    # one panel per image
    for i, ax in enumerate(_grid(fig, n, ncols)):
        ax.imshow(stack[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        if pixel_size is not None:
            add_scale_bar(ax, stack.shape[2], stack.shape[1], pixel_size, unit)
    fig.tight_layout()
    return fig


def _summary(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Centre line and optional quartile band of [M] or [M, samples] values."""
    if values.ndim == 1:
        return values, None, None
    q1, med, q3 = np.nanpercentile(values, [25, 50, 75], axis=1)
    return med, q1, q3


def continuity_curves(
    margin: Any,
    metrics: Mapping[str, Any],
    *,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    chosen: float | None = None,
    xlabel: str = "sampling margin per dimension",
    units: Mapping[str, str] | None = None,
) -> Figure:
    """Latent continuity (Figs. 5c, 7d): one panel per metric versus the sampling margin.

    ``metrics[name]`` is [M] (one value per margin) or [M, samples] (median line with the
    interquartile band). ``baselines[name] = (median, max)`` of the same metric between
    consecutive real frames, drawn as a shaded band; ``chosen`` marks the selected margin.

    >>> m = np.array([0.025, 0.05, 0.1])
    >>> fig = continuity_curves(m, {"entropy": np.array([0.01, 0.02, 0.05])},
    ...                         baselines={"entropy": (0.01, 0.03)}, chosen=0.05)
    >>> len(fig.axes)
    1
    """
    x = np.asarray(margin, dtype=np.float64)
    if not metrics:
        raise AnalysisError("continuity_curves needs at least one metric")
    fig = Figure(figsize=(3.6 * len(metrics), 3.0))
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    # one panel per metric
    for ax, (name, vals) in zip(axes, metrics.items()):
        v = np.asarray(vals, dtype=np.float64)
        if v.shape[0] != len(x):
            raise AnalysisError(f"metric {name!r} has {v.shape[0]} rows for {len(x)} margins")
        centre, lo, hi = _summary(v)
        ax.plot(x, centre, "o-", color="C0", label="generated")
        if lo is not None:
            ax.fill_between(x, lo, hi, color="C0", alpha=0.25, lw=0, label="IQR")
        if baselines and name in baselines:
            b_med, b_max = baselines[name]
            ax.axhspan(
                b_med, b_max, color="C2", alpha=0.25, lw=0, label="consecutive frames (median–max)"
            )
            ax.axhline(b_max, color="C2", lw=1)
        if chosen is not None:
            ax.axvline(chosen, color="C3", ls="--", lw=1, label=f"chosen = {chosen:g}")
        unit = (units or {}).get(name)
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _as_channels(data: Any, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    if isinstance(data, Mapping):
        return {k: np.asarray(v, dtype=np.float64).ravel() for k, v in data.items()}
    return {(names[0] if names else "value"): np.asarray(data, dtype=np.float64).ravel()}


def distribution_comparison(
    observed: Any,
    generated: Any,
    *,
    xlabel: str = "value",
    bins: int = 50,
    distances: Mapping[str, float] | None = None,
    names: Sequence[str] | None = None,
) -> Figure:
    """Observed (line) versus generated (shaded) densities (Figs. 5b, 7c).

    ``observed``/``generated``: arrays, or mappings channel → array (one panel each, e.g.
    Cu, Cu₂S, CuS). ``distances[channel]`` (e.g. a Wasserstein distance) goes in the title.

    >>> rng = np.random.default_rng(0)
    >>> fig = distribution_comparison({"Cu": rng.random(50), "CuS": rng.random(50)},
    ...                               {"Cu": rng.random(50), "CuS": rng.random(50)})
    >>> len(fig.axes)
    2
    """
    obs, gen = _as_channels(observed, names), _as_channels(generated, names)
    keys = [k for k in obs if k in gen]
    if not keys:
        raise AnalysisError("observed and generated share no channel names")
    fig = Figure(figsize=(3.2 * len(keys), 2.8))
    axes = fig.subplots(1, len(keys), squeeze=False).ravel()
    # one panel per channel, common bins for both sets
    for ax, key in zip(axes, keys):
        lo = min(obs[key].min(), gen[key].min())
        hi = max(obs[key].max(), gen[key].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        ax.hist(
            gen[key], bins=edges, density=True, color=GENERATED_COLOR, alpha=0.5, label="generated"
        )
        ax.hist(obs[key], bins=edges, density=True, histtype="step", color=OBSERVED_COLOR, lw=1.5,
                label="observed")  # fmt: skip
        title = key
        if distances and key in distances:
            title += f"  (W = {distances[key]:.3g})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def dendrogram_figure(
    linkage_matrix: Any,
    *,
    k: int | None = None,
    truncate_p: int = 30,
    xlabel: str = "material variations",
    ylabel: str = "scaled distance",
) -> Figure:
    """HAC dendrogram (Fig. 6c); with ``k`` the tree is coloured by the k-cluster cut.

    >>> from scipy.cluster.hierarchy import linkage
    >>> Z = linkage(np.array([[0.0], [0.1], [5.0], [5.2], [9.0]]), "average")
    >>> len(dendrogram_figure(Z, k=3).axes)
    1
    """
    from scipy.cluster.hierarchy import dendrogram

    Z = np.asarray(linkage_matrix, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] != 4 or len(Z) == 0:
        raise AnalysisError(f"expected a scipy linkage matrix [n-1, 4], got shape {Z.shape}")
    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.add_subplot()
    threshold = None
    if k is not None and 1 < k <= len(Z):
        heights = np.sort(Z[:, 2])
        threshold = 0.5 * (heights[-k] + heights[-k + 1])  # between the (k-1)th and kth merges
    n_leaves = len(Z) + 1
    trunc = {"truncate_mode": "lastp", "p": truncate_p} if n_leaves > truncate_p else {}
    dendrogram(Z, ax=ax, color_threshold=threshold, above_threshold_color="0.4", no_labels=bool(trunc),
               **trunc)  # fmt: skip
    if threshold is not None:
        ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"{k} clusters")
        ax.legend(fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel if not trunc else f"{xlabel} (tree cut to its top {truncate_p} branches)")
    fig.tight_layout()
    return fig


def cluster_boxplots(
    values: Mapping[str, Any],
    labels: Any,
    *,
    units: Mapping[str, str] | None = None,
    group_names: Mapping[Any, str] | None = None,
) -> Figure:
    """Box plots of each descriptor per cluster, outliers as gray dots (Figs. 6d, 8c).

    Non-finite values (e.g. an MSD exponent that could not be fitted) are left out of their
    box and counted in the panel title; a positive descriptor spanning more than two decades
    (MSD, D) gets a log axis, so that the least mobile cluster is not a flat line at zero.
    Cluster names are wrapped onto several lines.

    >>> fig = cluster_boxplots({"anisotropy": [0.1, 0.2, 0.8, 0.9]}, [0, 0, 1, 1])
    >>> len(fig.axes)
    1
    """
    lab = np.asarray(labels).ravel()
    groups = list(np.unique(lab))
    fig = Figure(figsize=(3.0 * len(values), 3.2))
    axes = fig.subplots(1, len(values), squeeze=False).ravel()
    # one panel per descriptor, one box per cluster
    for ax, (name, vals) in zip(axes, values.items()):
        v = np.asarray(vals, dtype=np.float64).ravel()
        if v.shape != lab.shape:
            raise AnalysisError(f"descriptor {name!r} has {v.size} values for {lab.size} labels")
        ok = np.isfinite(v)
        data = [v[(lab == g) & ok] for g in groups]
        ax.boxplot(
            data, flierprops={"marker": "o", "markersize": 3, "markerfacecolor": OUTLIER_COLOR,
                              "markeredgecolor": OUTLIER_COLOR},
        )  # fmt: skip
        if ok.any() and (v[ok] > 0).all() and v[ok].max() > 100 * v[ok].min():
            ax.set_yscale("log")
        if not ok.all():
            ax.set_title(f"{int((~ok).sum())} of {v.size} undefined, not shown", fontsize=8)
        ax.set_xticks(range(1, len(groups) + 1))
        ax.set_xticklabels([textwrap.fill((group_names or {}).get(g, str(g)), 10) for g in groups],
                           fontsize=8)
        unit = (units or {}).get(name)
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.set_xlabel("cluster")
    fig.tight_layout()
    return fig


def mds_scatter(
    embedding: Any,
    groups: Any,
    *,
    group_names: Mapping[Any, str] | None = None,
    xlabel: str = "MDS 1",
    ylabel: str = "MDS 2",
) -> Figure:
    """2D embedding coloured by group (Fig. 8a).

    >>> len(mds_scatter(np.zeros((4, 2)), [0, 0, 1, 1]).axes)
    1
    """
    emb = np.asarray(embedding, dtype=np.float64)
    grp = np.asarray(groups).ravel()
    if emb.ndim != 2 or emb.shape[1] < 2 or len(emb) != len(grp):
        raise AnalysisError(f"need embedding [n, 2] and n groups, got {emb.shape} and {grp.shape}")
    fig = Figure(figsize=(3.6, 3.4))
    ax = fig.add_subplot()
    # one colour per group
    for i, g in enumerate(np.unique(grp)):
        sel = grp == g
        ax.scatter(
            emb[sel, 0], emb[sel, 1], s=8, color=f"C{i}", label=(group_names or {}).get(g, str(g))
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    return fig


def temporal_mapping(
    embedding: Any,
    stages: Any,
    *,
    stage_names: Mapping[Any, str] | None = None,
    contour_levels: int = 4,
) -> Figure:
    """One panel per stage (Fig. 8b): that stage's points dark with density contours, the
    other stages' points light in the background.

    >>> rng = np.random.default_rng(0)
    >>> len(temporal_mapping(rng.random((40, 2)), np.repeat([0, 3, 14, 28], 10)).axes)
    4
    """
    from scipy.stats import gaussian_kde

    emb = np.asarray(embedding, dtype=np.float64)
    st = np.asarray(stages).ravel()
    if emb.ndim != 2 or emb.shape[1] < 2 or len(emb) != len(st):
        raise AnalysisError(f"need embedding [n, 2] and n stages, got {emb.shape} and {st.shape}")
    uniq = list(np.unique(st))
    fig = Figure(figsize=(2.8 * len(uniq), 2.8))
    axes = fig.subplots(1, len(uniq), squeeze=False, sharex=True, sharey=True).ravel()
    pad = 0.05 * (np.ptp(emb[:, :2], axis=0) + 1e-12)
    lo, hi = emb[:, :2].min(axis=0) - pad, emb[:, :2].max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 60), np.linspace(lo[1], hi[1], 60))
    # one panel per stage
    for i, (ax, s) in enumerate(zip(axes, uniq)):
        sel = st == s
        ax.scatter(emb[~sel, 0], emb[~sel, 1], s=4, color="0.85")
        ax.scatter(emb[sel, 0], emb[sel, 1], s=6, color=f"C{i}")
        if sel.sum() >= 3:
            try:
                kde = gaussian_kde(emb[sel, :2].T)
                dens = kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
                ax.contour(gx, gy, dens, levels=contour_levels, colors=f"C{i}", linewidths=0.8)
            except np.linalg.LinAlgError:  # degenerate (collinear) points: no contours
                pass
        ax.set_title((stage_names or {}).get(s, str(s)), fontsize=9)
        ax.set_xlabel("MDS 1")
        if i == 0:
            ax.set_ylabel("MDS 2")
    fig.tight_layout()
    return fig


def sequence_strip(
    images: Any,
    values: Any,
    *,
    kind: str = "translation",
    unit: str = "nm",
    sort: bool = True,
    relative: bool = True,
    pixel_size: float | None = None,
    cmap: str = "gray",
) -> Figure:
    """A row of generated images ordered by their measured motion (Fig. 3b, c).

    ``values``: translation (physical units) or rotation (degrees) per image; annotations
    give the value relative to the first image of the sorted strip (``relative``).

    >>> len(sequence_strip(np.zeros((3, 8, 8)), [2.0, 0.0, 1.0], kind="rotation").axes)
    3
    """
    stack = _image_stack(images)
    vals = np.asarray(values, dtype=np.float64).ravel()
    if len(vals) != len(stack):
        raise AnalysisError(f"{len(vals)} values for {len(stack)} images")
    if kind not in ("translation", "rotation"):
        raise AnalysisError(f"kind must be 'translation' or 'rotation', got {kind!r}")
    order = np.argsort(vals, kind="stable") if sort else np.arange(len(vals))
    shown = vals[order] - (vals[order][0] if relative else 0.0)
    fig = Figure(figsize=(1.6 * len(stack), 1.9))
    axes = fig.subplots(1, len(stack), squeeze=False).ravel()
    vmin, vmax = float(stack.min()), float(stack.max())
    # one panel per image, annotated with its motion
    for ax, i, v in zip(axes, order, shown):
        ax.imshow(stack[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        label = f"Δx = {v:.0f} {unit}" if kind == "translation" else f"θ = {v:+.1f}°"
        ax.set_title(label, fontsize=8)
        if pixel_size is not None:
            add_scale_bar(ax, stack.shape[2], stack.shape[1], pixel_size, unit)
    fig.tight_layout()
    return fig


def iou_distributions(
    observed: Mapping[str, Any], generated: Mapping[str, Any], *, bins: int = 30
) -> Figure:
    """IoU between consecutive frames, observed (green) vs generated (yellow), one panel
    per sequence kind (Fig. 4a: translation, rotation).

    >>> rng = np.random.default_rng(0)
    >>> fig = iou_distributions({"translation": rng.random(20)}, {"translation": rng.random(20)})
    >>> len(fig.axes)
    1
    """
    keys = [k for k in observed if k in generated]
    if not keys:
        raise AnalysisError("observed and generated IoU share no sequence names")
    fig = Figure(figsize=(3.2 * len(keys), 2.8))
    axes = fig.subplots(1, len(keys), squeeze=False).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    # one panel per sequence kind
    for ax, key in zip(axes, keys):
        ax.hist(np.asarray(observed[key]).ravel(), bins=edges, density=True, alpha=0.6,
                color=OBSERVED_COLOR, label="observed")  # fmt: skip
        ax.hist(np.asarray(generated[key]).ravel(), bins=edges, density=True, alpha=0.6,
                color=GENERATED_COLOR, label="generated")  # fmt: skip
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("IoU of consecutive frames")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def volume_projections(
    volume: Any,
    *,
    channel_names: Sequence[str] | None = None,
    pixel_size: float | None = None,
    unit: str = "µm",
    reduce: str = "max",
    cmap: str = "magma",
) -> Figure:
    """Orthogonal projections of a 3D multi-channel volume [C, D, H, W] (Fig. 8d): one row
    per channel, columns = projections along z (D), y (H) and x (W).

    >>> len(volume_projections(np.zeros((3, 4, 5, 6)), pixel_size=0.65).axes)
    9
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim == 3:
        vol = vol[None]
    if vol.ndim != 4:
        raise AnalysisError(
            f"expected a volume [C, D, H, W] or [D, H, W], got shape {np.shape(volume)}"
        )
    if reduce not in ("max", "mean", "sum"):
        raise AnalysisError(f"reduce must be 'max', 'mean' or 'sum', got {reduce!r}")
    proj = getattr(np, reduce)
    names = (
        list(channel_names)
        if channel_names is not None
        else [f"channel {c}" for c in range(len(vol))]
    )
    fig = Figure(figsize=(6.6, 2.2 * len(vol)))
    axes = fig.subplots(len(vol), 3, squeeze=False)
    views = (("z", 0, ("x", "y")), ("y", 1, ("x", "z")), ("x", 2, ("y", "z")))
    # one row per channel, one column per projection axis
    for c in range(len(vol)):
        vmax = float(vol[c].max()) if vol[c].max() > vol[c].min() else None
        for j, (axis_name, axis, (xl, yl)) in enumerate(views):
            img = proj(vol[c], axis=axis)
            ax = axes[c, j]
            extent = None
            if pixel_size is not None:
                extent = (0, img.shape[1] * pixel_size, img.shape[0] * pixel_size, 0)
            ax.imshow(img, cmap=cmap, vmax=vmax, extent=extent, interpolation="nearest")
            suffix = f" ({unit})" if pixel_size is not None else " (voxels)"
            ax.set_xlabel(xl + suffix, fontsize=7)
            ax.set_ylabel(yl + suffix, fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_title(f"{names[c]}: {reduce} along {axis_name}", fontsize=8)
    fig.tight_layout()
    return fig
