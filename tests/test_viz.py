"""Figure functions return Figures with the expected panels; save_figure writes PNG + SVG."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import linkage

from matdyn.errors import AnalysisError
from matdyn.viz import (
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

RNG = np.random.default_rng(0)


def test_image_grid_and_scale_bar():
    fig = image_grid(RNG.random((5, 12, 12)), pixel_size=40.58, unit="nm", ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts and texts[0].endswith(" nm")
    # 12 px × 40.58 nm = 487 nm wide, a quarter is 122 nm -> a 100 nm bar
    assert texts[0] == "100 nm"


@pytest.mark.parametrize(
    "build, n_axes",
    [
        (lambda: continuity_curves(
            np.array([0.025, 0.05, 0.1]),
            {"entropy difference": RNG.random((3, 10)), "area difference": RNG.random(3)},
            baselines={"entropy difference": (0.1, 0.3)}, chosen=0.1,
            units={"area difference": "px"}), 2),
        (lambda: distribution_comparison(
            {c: RNG.random(30) for c in ("Cu", "Cu2S", "CuS")},
            {c: RNG.random(30) for c in ("Cu", "Cu2S", "CuS")},
            xlabel="intensity (a.u.)", distances={"Cu": 0.01}), 3),
        (lambda: distribution_comparison(RNG.random(30), RNG.random(30), xlabel="area (nm²)"), 1),
        (lambda: dendrogram_figure(linkage(RNG.random((40, 2)), "average"), k=3, truncate_p=10), 1),
        (lambda: cluster_boxplots(
            {"anisotropy": RNG.random(12), "tortuosity": 1 + RNG.random(12)},
            np.repeat([0, 1, 2], 4)), 2),
        (lambda: mds_scatter(RNG.random((12, 2)), np.repeat(["A", "B", "C"], 4)), 1),
        (lambda: temporal_mapping(RNG.random((40, 2)), np.repeat([0, 3, 14, 28], 10),
                                  stage_names={0: "Aging-0"}), 4),
        (lambda: sequence_strip(RNG.random((4, 10, 10)), [30.0, 0.0, 10.0, 20.0],
                                pixel_size=20.72), 4),
        (lambda: iou_distributions({"translation": RNG.random(20), "rotation": RNG.random(20)},
                                   {"translation": RNG.random(20), "rotation": RNG.random(20)}), 2),
        (lambda: volume_projections(RNG.random((3, 6, 7, 8)), channel_names=["Cu", "Cu2S", "CuS"],
                                    pixel_size=0.65), 9),
    ],
)  # fmt: skip
def test_figure_functions_axes(build, n_axes):
    fig = build()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    assert all(ax.get_xlabel() or not ax.get_xticks().size for ax in fig.axes)


def test_axis_labels_carry_units():
    fig = volume_projections(RNG.random((1, 4, 4, 4)), pixel_size=0.65, unit="µm")
    assert fig.axes[0].get_xlabel() == "x (µm)"
    fig = continuity_curves(
        [0.1, 0.2], {"area difference": [1.0, 2.0]}, units={"area difference": "px"}
    )
    assert fig.axes[0].get_ylabel() == "area difference (px)"


def test_sequence_strip_sorts_and_annotates():
    fig = sequence_strip(RNG.random((3, 8, 8)), [2.0, -1.0, 0.5], kind="rotation")
    assert [ax.get_title() for ax in fig.axes] == ["θ = +0.0°", "θ = +1.5°", "θ = +3.0°"]
    with pytest.raises(AnalysisError):
        sequence_strip(RNG.random((3, 8, 8)), [1.0, 2.0])


def test_save_figure_writes_png_and_svg(tmp_path):
    fig = image_grid(RNG.random((2, 8, 8)), pixel_size=1.0)
    paths = save_figure(fig, tmp_path / "sub" / "grid")
    assert [p.name for p in paths] == ["grid.png", "grid.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[1].read_bytes()[:2000]
    save_figure(fig, tmp_path / "sub" / "grid")  # overwriting is fine
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["grid.png", "grid.svg"]


def test_cluster_boxplots_skip_undefined_values_and_log_scale_decades():
    """A descriptor with NaNs (an MSD exponent not fitted for some particles) still gets its
    boxes, with the count left out in the title; MSD over several decades gets a log axis."""
    lab = np.repeat([0, 1, 2], 20)
    expo = 0.2 + RNG.random(60)
    expo[::7] = np.nan
    msd = np.concatenate([RNG.uniform(1e4, 2e4, 20), RNG.uniform(500, 900, 20), RNG.uniform(5, 12, 20)])
    fig = cluster_boxplots({"msd": msd, "msd_exponent": expo}, lab,
                           group_names={0: "most mobile", 1: "mobility rank 2", 2: "least mobile"})
    ax_msd, ax_exp = fig.axes
    assert ax_msd.get_yscale() == "log" and ax_exp.get_yscale() == "linear"
    medians = [line.get_ydata()[0] for line in ax_exp.lines if len(line.get_ydata()) == 2
               and line.get_ydata()[0] == line.get_ydata()[1]]
    assert medians and np.isfinite(medians).all()  # boxes drawn, not an empty panel
    assert ax_exp.get_title() == f"{int(np.isnan(expo).sum())} of 60 undefined, not shown"
    assert [t.get_text() for t in ax_msd.get_xticklabels()] == ["most\nmobile", "mobility\nrank 2",
                                                                  "least\nmobile"]
