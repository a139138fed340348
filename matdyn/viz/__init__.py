"""Plotting: arrays in, matplotlib Figures out (see :mod:`matdyn.viz.figures`)."""

from matdyn.viz.figures import (
    add_scale_bar,
    cluster_boxplots,
    continuity_curves,
    dendrogram_figure,
    distribution_comparison,
    image_grid,
    iou_distributions,
    mds_scatter,
    save_figure,
    sequence_strip,
    temporal_mapping,
    volume_projections,
)

__all__ = [
    "add_scale_bar",
    "cluster_boxplots",
    "continuity_curves",
    "dendrogram_figure",
    "distribution_comparison",
    "image_grid",
    "iou_distributions",
    "mds_scatter",
    "save_figure",
    "sequence_strip",
    "temporal_mapping",
    "volume_projections",
]
