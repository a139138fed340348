"""Figures of the Ta-chart case (paper Figs. 3a-c, 4a, 4b)."""

from __future__ import annotations

import math

import numpy as np

from matdyn.analysis.case import CaseContext
from matdyn.analysis.cases.ta_chart.config import Config
from matdyn.analysis.cases.ta_chart.geometry import SlitGeometry
from matdyn.analysis.cases.ta_chart.observed import Observed
from matdyn.viz.figures import (
    distribution_comparison,
    image_grid,
    iou_distributions,
    sequence_strip,
)


def slit_figure(image: np.ndarray, slits: np.ndarray, angle: float, geom: SlitGeometry, unit: str):
    from matplotlib.figure import Figure
    """Fig. 4b: the reference with the registration disc and the d1, d2 profile lines."""
    from matplotlib.patches import Circle

    fig = Figure(figsize=(3.4, 3.4))
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", interpolation="nearest")
    c0 = geom.image_centre
    ax.add_patch(
        Circle(
            (c0, c0),
            geom.size / 2.0,
            fill=False,
            color="C0",
            lw=0.8,
            ls="--",
            label="registration disc",
        )
    )
    th = math.radians(angle)
    u = np.array([-math.sin(th), math.cos(th)])
    for k, name in enumerate(("d1", "d2")):
        c = slits[k]
        if not np.all(np.isfinite(c)):
            continue
        a, b = c - geom.half_length_px[k] * u, c + geom.half_length_px[k] * u
        ax.plot([a[1], b[1]], [a[0], b[0]], color=f"C{k + 1}", lw=1.5, label=f"{name} profile")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"Fig. 4b: slit profiles in the reference ({geom.pixel_size:.1f} {unit}/px)", fontsize=8
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- run


def observed_figure(ctx: CaseContext, obs: Observed, geom_obs: SlitGeometry) -> None:
    """Fig. 3a: raw frames spread over the store and rotated copies of the first."""
    show = obs.raw[np.round(np.linspace(0, len(obs.raw) - 1, min(5, len(obs.raw)))).astype(int)]
    titles = [f"raw frame {int(k)}" for k in show]
    extra: list[int] = []
    if obs.source is not None and obs.is_aug.any():
        extra = list(np.flatnonzero(obs.is_aug & (obs.source == obs.source[show[0]]))[:4])
        rot = obs.truth.get("rotation_deg")
        titles += [f"rotated {float(rot[k]):+.1f}°" if rot is not None else f"augmented {int(k)}"
                   for k in extra]
    imgs = geom_obs.crop(obs.load(np.r_[show, extra].astype(np.int64)))
    ctx.save(image_grid(imgs, pixel_size=obs.pixel_size, unit=ctx.unit, titles=titles, ncols=5),
             "fig3a_observed")


def sequence_figures(ctx: CaseContext, cfg: Config, geom: SlitGeometry, best: int, seqs: dict,
                     along: np.ndarray, angle: np.ndarray) -> None:
    """Fig. 3b/c: generated translation and rotation sequences of reference ``best``."""
    z_b, eps_b = ctx.variation_latents(best, along.shape[1])
    for kind, order, vals, fname in (
        ("translation", seqs["order_t"].get(best), along[best], "fig3b_translation_sequence"),
        ("rotation", seqs["order_r"].get(best), angle[best], "fig3c_rotation_sequence"),
    ):
        if order is None or len(order) < 2:
            continue
        pick = order[np.round(np.linspace(0, len(order) - 1,
                                          min(cfg.strip_length, len(order)))).astype(int)]
        imgs = ctx.generate(z_b[None] + eps_b[pick], cfg.batch_size)
        fig = sequence_strip(geom.crop(imgs), vals[pick], kind=kind, unit=ctx.unit,
                             pixel_size=ctx.pixel_size)
        fig.suptitle(f"Fig. 3{'b' if kind == 'translation' else 'c'}: generated {kind} sequence "
                     f"(reference {best}, γ = {ctx.gamma:g})", fontsize=9, y=1.06)
        ctx.save(fig, fname)


def iou_figure(ctx: CaseContext, seqs: dict, obs_iou_t: np.ndarray,
               obs_iou_r: np.ndarray) -> None:
    """Fig. 4a: IoU of consecutive frames, observed vs generated sequences."""
    gen_iou = {"translation": seqs["iou_t"], "rotation": seqs["iou_r"]}
    obs_iou = {"translation": obs_iou_t}
    if obs_iou_r.size:
        obs_iou["rotation"] = obs_iou_r
    fig = iou_distributions(obs_iou, {k: v for k, v in gen_iou.items() if k in obs_iou})
    fig.suptitle("Fig. 4a: IoU of consecutive frames", fontsize=9, y=1.04)
    ctx.save(fig, "fig4a_iou")


def width_figures(ctx: CaseContext, geom: SlitGeometry, best: int, g: dict, gw: np.ndarray,
                  ow: np.ndarray) -> None:
    """Fig. 4b: the reference's slit profiles and the width distributions."""
    ref_image = ctx.generate(ctx.variation_latents(best, 1)[0][None], 1)[0, 0]
    ctx.save(slit_figure(ref_image, g["ref_slits"][best], float(g["ref_slit_angle"][best]), geom,
                         ctx.unit), "fig4b_reference_slits")
    obs_w = {k: ow[:, i][np.isfinite(ow[:, i])] for i, k in enumerate(("d1", "d2"))}
    gen_w = {k: gw[..., i][np.isfinite(gw[..., i])] for i, k in enumerate(("d1", "d2"))}
    if all(v.size for v in obs_w.values()) and all(v.size for v in gen_w.values()):
        fig = distribution_comparison(obs_w, gen_w, xlabel=f"slit width ({ctx.unit})", bins=30)
        fig.suptitle("Fig. 4b: slit widths, observed vs generated", fontsize=9, y=1.04)
        ctx.save(fig, "fig4b_slit_widths")
