"""Figures of the brass-clump case (paper Figs. 7c, 8a-d)."""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.case import CaseContext
from matdyn.analysis.cases.brass_clump.config import CHANNELS, Config
from matdyn.analysis.cases.brass_clump.steps import Variations, masked_values
from matdyn.viz.figures import (
    cluster_boxplots,
    distribution_comparison,
    image_grid,
    mds_scatter,
    temporal_mapping,
    volume_projections,
)


def density_figure(ctx: CaseContext, obs: np.ndarray, obs_masks: np.ndarray, gen: np.ndarray,
                   gen_masks: np.ndarray, w1: dict) -> None:
    """Fig. 7c: voxel densities inside the clump masks, observed vs generated."""
    rngp = np.random.default_rng(ctx.seed)
    obs_vals = {ch: masked_values(obs, obs_masks, c, 50_000, rngp) for c, ch in enumerate(CHANNELS)}
    gen_vals = {ch: masked_values(gen, gen_masks, c, 50_000, rngp) for c, ch in enumerate(CHANNELS)}
    fig = distribution_comparison(obs_vals, gen_vals, xlabel="density in the clump (state units)",
                                  distances=w1)
    ctx.save(fig, "fig7c_density",
             "Fig. 7c: Cu-state densities, observed (line) vs generated (shaded)")


def group_figures(ctx: CaseContext, v: Variations, emb: np.ndarray, group: np.ndarray,
                  names: list[str], stage: np.ndarray | None) -> None:
    """Fig. 8a (MDS), 8b (temporal mapping), 8c (mass ratios and amplitudes per group)."""
    ctx.save(mds_scatter(emb, group, group_names={n: n for n in names}), "fig8a_mds",
             f"Fig. 8a: MDS of clump variations (γ = {ctx.gamma:g})")
    if stage is not None:
        stage_names = {s: f"Aging-{s:g}" for s in np.unique(stage)}
        ctx.save(temporal_mapping(emb, stage, stage_names=stage_names), "fig8b_temporal_mapping",
                 "Fig. 8b: temporal mapping of clump variations (matched aging stage)")
    vref, amp = v.ref_frac[v.valid], v.amp[v.valid]
    ctx.save(cluster_boxplots({ch: vref[:, c] for c, ch in enumerate(CHANNELS)}, group,
                              units={ch: "mass ratio" for ch in CHANNELS}),
             "fig8c_mass_ratios", "Fig. 8c: compositional mass ratios of the reference clumps "
             "per group")
    ctx.save(cluster_boxplots({ch: amp[:, c] for c, ch in enumerate(CHANNELS)}, group,
                              units={ch: "std of mass ratio" for ch in CHANNELS}),
             "fig8c_amplitude",
             "Fig. 8c (extra): transformation amplitude within variations per group")


def _medoid_samples(ctx: CaseContext, cfg: Config, v: Variations, emb: np.ndarray,
                    members: np.ndarray) -> tuple[int, np.ndarray, list[str]]:
    """The medoid variation's retained samples at low -> high sulfidised ratio, as max
    projections along z, one row per sample and one column per channel."""
    N = v.kept.shape[1]
    centre = emb[members].mean(axis=0)
    i = int(v.vidx[members[int(np.argmin(np.linalg.norm(emb[members] - centre, axis=1)))]])
    js = np.flatnonzero(v.kept[i])
    sulf = 1.0 - v.frac_s[i, js, 0]
    pick = js[np.argsort(sulf, kind="stable")][
        np.round(np.linspace(0, js.size - 1, min(cfg.n_render, js.size))).astype(int)]
    z, eps = ctx.variation_latents(i, N)
    vols = ctx.generate(z[None] + eps[pick], cfg.batch_size)  # [k, C, D, H, W]
    imgs, titles = [], []
    for j, vol in zip(pick, vols):
        for c, ch in enumerate(CHANNELS):
            imgs.append(vol[c].max(axis=0))
            titles.append(f"{ch}, sulfidised {1.0 - v.frac_s[i, j, 0]:.2f}")
    return i, np.stack(imgs), titles


def render_groups(ctx: CaseContext, cfg: Config, v: Variations, emb: np.ndarray,
                  group: np.ndarray, names: list[str]) -> None:
    """Fig. 8d: per group, the representative variation (medoid) and its reference."""
    kw: dict[str, Any] = dict(pixel_size=ctx.pixel_size, unit=ctx.unit)
    for gname in names:
        members = np.flatnonzero(group == gname)
        if members.size == 0:
            continue
        i, imgs, titles = _medoid_samples(ctx, cfg, v, emb, members)
        ctx.save(image_grid(imgs, titles=titles, ncols=len(CHANNELS), shared_range=True,
                            cmap="magma", **kw), f"fig8d_group_{gname}",
                 f"Fig. 8d: group {gname}, variation {i}: max projections, low → high "
                 "sulfidised ratio")
        ref_vol = ctx.generate(ctx.variation_latents(i, 1)[0][None], 1)[0]
        ctx.save(volume_projections(ref_vol, channel_names=CHANNELS, **kw),
                 f"fig8d_group_{gname}_reference", f"Fig. 8d: group {gname}, reference clump {i}")
