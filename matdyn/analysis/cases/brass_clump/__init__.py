"""Brass-clump case (paper §3.4, Figs. 7-8): sulfidation modes of clump variations.

A package of the :class:`~matdyn.analysis.case.Case` protocol, run by
:func:`~matdyn.analysis.case.run_case` (``run_case("brass_clump", generator, store, cfg,
...)``): ``config`` (Config, channels, paper numbers), ``steps`` (composition reducer,
observed scan, fidelity, filters, groups, temporal mapping), ``recovery``, ``figures``.
The steps:

1. **Checks.** The generator must make 3D volumes with one channel per Cu state
   (Cu, Cu₂S, CuS); the store must hold the same channels.
2. **Observed volumes** are streamed once from the store, prepared as in training
   (:class:`~matdyn.data.frames.ObservedFrames`: ``dataset.fit`` crop or pad, resized to
   the generator resolution). Per volume we keep the channel masses inside the
   clump mask (total density > ``mask_threshold``), the mask's volume fraction, the aging
   stage (label ``stage_days``) and, for synthetic stores, the planted reactivity mode.
3. **Fidelity** (Fig. 7c): per-channel Wasserstein distances of the voxel densities inside
   the clump masks, generated (z ~ N(0, I)) vs observed, in state-normalised units (each
   channel mapped to [0, 1] by the observed channel's range; the paper reports
   0.010 / 0.017 / 0.006 for Cu / Cu₂S / CuS, §3.4.1) and in physical units; 3D
   multi-scale sliced Wasserstein distance; each with a split-half real-vs-real baseline.
   All-noise check: the generated clump masks must fill about the same share of the box as
   the observed ones (within a factor ``max_volume_ratio``), otherwise
   :class:`AnalysisError`.
4. **Monte Carlo** (γ = 0.5 in the paper): ``n_refs`` references × ``n_samples`` samples.
   Filters (§3.4.2): compositional mass deviation ≤ ``mass_dev_max`` (20 %) and
   IOU₃D ≥ ``iou_min`` (0.5). Descriptor per clump variation:
   [Var(IQR_Cu), Var(IQR_Cu₂S), Var(IQR_CuS)] over the retained samples, IQRs taken inside
   each sample's clump mask (:class:`~matdyn.sampling.reducers.IQRVariance`).
5. **Embedding and groups** (Fig. 8a): metric MDS to 2D of the scaled descriptors;
   ``n_groups`` clusters (:mod:`matdyn.analysis.clustering`, Ward by default).
6. **Temporal mapping** (Fig. 8b): each variation is mapped to aging stages through the
   ``k_neighbors`` observed volumes nearest to its reference in the space of per-channel
   mass fractions; its stage is their majority (ties: the earlier stage) and
   ``stage_mean`` their mean. Groups are named A, B, C, ... by increasing mean stage, as in
   the paper (A: Aging-0; B: 3-14 days; C: 14-28 days).
7. **Figures**: Fig. 7c densities, Fig. 8a MDS, Fig. 8b temporal mapping, Fig. 8c mass
   ratios per group (and the within-variation amplitude), Fig. 8d per group the
   representative variation (medoid) from low to high sulfidised mass ratio.

Recovery (synthetic stores): adjusted Rand index between the groups and the planted
reactivity mode of the matched observed particles, and between groups and matched stage;
Spearman / Kendall correlation between each variation's group rank (by mean stage) and its
matched stage ("groups order by stage").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from matdyn.analysis.case import (
    CaseContext,
    Table,
    VariationPlan,
    fmt_stats,
    register_case,
    stats,
)
from matdyn.analysis.cases.brass_clump import figures as figs
from matdyn.analysis.cases.brass_clump import steps
from matdyn.analysis.cases.brass_clump.config import CASE, CHANNELS, PAPER, Config
from matdyn.analysis.cases.brass_clump.recovery import recover
from matdyn.analysis.cases.brass_clump.steps import Composition
from matdyn.descriptors.differences import IoU, MassDeviation, MetricFilter
from matdyn.descriptors.particles import Binarizer
from matdyn.errors import AnalysisError
from matdyn.sampling.reducers import IQRVariance, SampleMetrics

__all__ = ["CASE", "CHANNELS", "PAPER", "BrassClumpCase", "Composition", "Config"]


class BrassClumpCase:
    """The brass-clump steps (see the module docstring); one instance per run."""

    name, channels, ndim, what = CASE, len(CHANNELS), 3, ", ".join(CHANNELS)

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg if cfg is not None else Config()
        self.mask = Binarizer(threshold=float(self.cfg.mask_threshold), channel=None)
        self.counts: dict[str, Any] = {}
        self._sections: dict[str, Any] = {}

    def observe(self, ctx: CaseContext) -> steps.Observed:
        obs = steps.scan_observed(ctx, self.mask, self.cfg, np.random.default_rng(ctx.seed))
        if len(obs.mass) < self.cfg.k_neighbors:
            raise AnalysisError(f"the store holds {len(obs.mass)} volumes; need at least "
                                f"k_neighbors={self.cfg.k_neighbors}")
        return obs

    def fidelity(self, ctx: CaseContext, obs: steps.Observed) -> dict:
        cfg = self.cfg
        gen = ctx.generate(ctx.fidelity_latents(cfg.n_fidelity), cfg.batch_size)
        volume_fraction = steps.check_volumes(gen, obs, self.mask, cfg)
        gen_masks, obs_masks = self.mask(gen), self.mask(obs.fidelity)
        fid = steps.fidelity_distances(obs.fidelity, obs_masks, gen, gen_masks, cfg, ctx.seed)
        fid["volume_fraction"] = volume_fraction
        figs.density_figure(ctx, obs.fidelity, obs_masks, gen, gen_masks, fid["intensity_w1"])
        return fid

    def variations(self, ctx: CaseContext, obs: steps.Observed) -> VariationPlan:
        """§3.4.2 filters (mass deviation, IOU3D) inside IQRVariance, plus compositions."""
        cfg = self.cfg
        keep = MetricFilter(upper={"mass_dev": cfg.mass_dev_max}, lower={"iou": cfg.iou_min})
        return VariationPlan(
            cfg.n_refs, cfg.n_samples, [MassDeviation(), IoU(self.mask)],
            [SampleMetrics(["mass_dev", "iou"]), IQRVariance(keep=keep, mask=self.mask),
             Composition(self.mask)], cfg.batch_size)

    def filters(self, ctx: CaseContext, result: Any) -> dict:
        cfg = self.cfg
        mass_dev, iou = result["metrics/mass_dev"], result["metrics/iou"]
        kept = result["iqr/kept"].astype(bool)
        if not kept.any():
            raise AnalysisError(
                f"the filters reject every sample: mass deviation {fmt_stats(stats(mass_dev))} "
                f"(need <= {cfg.mass_dev_max}), IOU3D {fmt_stats(stats(iou))} (need >= "
                f"{cfg.iou_min}); relax analysis.mass_dev_max / analysis.iou_min or lower gamma")
        return steps.filters(mass_dev, iou, kept, cfg)

    def describe(self, ctx: CaseContext, obs: steps.Observed, result: Any) -> Table:
        cfg = self.cfg
        self.v = v = steps.variations(result, cfg)
        self.emb, self.labels = steps.embed_and_cluster(v, cfg, ctx.seed)
        self.tm = steps.temporal_mapping(ctx, v, obs, cfg)
        self.go, self.group_of = steps.name_groups(self.labels, self.tm.score, cfg.n_groups)
        self.counts = {"n_refs": int(v.kept.shape[0]), "n_samples": int(v.kept.shape[1]),
                       "n_valid_variations": int(v.valid.sum()), "n_observed": int(len(obs.mass))}
        rows = steps.table_rows(v, self.emb, self.group_of, self.tm)
        units = {f"var_iqr_{ch}": "state units^2" for ch in CHANNELS}
        units |= {"stage_days": "days", "stage_mean": "days"}
        return Table(pd.DataFrame(rows), units)

    def group(self, ctx: CaseContext, table: Table) -> dict:
        names = steps.group_names(self.cfg.n_groups)
        order = [str(self.group_of[np.flatnonzero(self.labels == g)[0]]) for g in self.go.groups]
        return {"groups": steps.groups_summary(self.v, self.group_of, self.tm, names),
                "group_order": {"by": self.tm.score_name, "order": order,
                                "mean": self.go.mean_score.tolist()}}

    def recover(self, ctx: CaseContext, obs: Any, table: Table) -> dict:
        return recover(self.labels, self.go, self.tm,
                       list((ctx.store.truth_attrs or {}).get("mode_names", [])))

    def figures(self, ctx: CaseContext, obs: Any, result: Any, table: Table) -> None:
        names = steps.group_names(self.cfg.n_groups)
        figs.group_figures(ctx, self.v, self.emb, self.group_of, names, self.tm.stage)
        figs.render_groups(ctx, self.cfg, self.v, self.emb, self.group_of, names)

    def sections(self, ctx: CaseContext) -> dict:
        return {"paper": PAPER}


register_case(CASE, BrassClumpCase, Config)
