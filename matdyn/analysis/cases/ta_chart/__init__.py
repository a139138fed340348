"""Ta test-chart case (paper §3.2, Figs. 3-4): rigid motion inside latent variations.

A package of the :class:`~matdyn.analysis.case.Case` protocol, run by
:func:`~matdyn.analysis.case.run_case` (``run_case("ta_chart", generator, store, cfg,
...)``): ``config``, ``geometry`` (crop, slit profiles, the :class:`ChartMotion` reducer),
``observed`` (raw frames, slit positions, observed sequences), ``steps``, ``recovery``,
``figures``. The steps:

1. **Checks.** The generator must make 2D one-channel images (CXDI phase) and the store
   must hold the same kind of frames.
2. **Observed frames** are prepared exactly as in training
   (:class:`~matdyn.data.frames.ObservedFrames`: ``dataset.fit`` crop or pad, resized to
   the generator resolution); slit positions from the store truth follow that geometry. Raw frames are those with label
   ``is_augmented == 0`` (every frame when the label is missing).
3. **Analysis region.** The chart moves under a *fixed* illumination support, so matching
   whole frames would lock onto the support. Registration and IoU masks use the central
   square crop of side ``crop_frac`` × resolution, weighted by a circular window (the
   incircle of the triangular support; the paper also shows centre crops, Fig. 3a). Slit
   profiles may
   reach further out along the slit row, up to ``slit_region_frac`` × resolution / 2 from
   the centre (the support is wider there than its incircle).
4. **Fidelity**: phase-value 1D Wasserstein distance (rad) and multi-scale sliced
   Wasserstein distance between generated (z ~ N(0, I)) and observed frames, each with a
   split-half real-vs-real baseline. All-noise check: a few generated frames are template
   matched against observed raw frames; if none matches (NCC below ``min_anchor_score``)
   the generator does not draw a test chart and :class:`AnalysisError` is raised.
5. **Monte Carlo** (:class:`~matdyn.sampling.engine.VariationEngine`, γ = 1 in the paper):
   ``n_refs`` references × ``n_samples`` perturbed images. The :class:`ChartMotion`
   reducer template-matches every image against its reference
   (:func:`~matdyn.descriptors.registration.register_batch`, ±``angle_range_deg``) and
   measures the slit widths d1, d2 with profiles that follow the measured motion.
6. **Sequences** (Fig. 3b, c): per reference, the retained images sorted by translation
   along the chart axis (the ``sequence_subset_frac`` that rotate least: the paper's
   "selected subsets") and by rotation (those that translate least); IoU of consecutive
   images in those orders versus
   consecutive observed frames (Fig. 4a); slit widths of generated vs observed frames
   (Fig. 4b).

Where the slits are. Observed raw frames: from the store's ground truth when it has one
(chart offset ``offset_nm`` and the chart layout of :mod:`matdyn.data.synthetic.ta_chart`),
otherwise by a profile search (dark runs of the horizontal profile through the slit row
whose widths match ``d1_nm``, ``d2_nm`` within ``slit_search_tolerance_px``, left = d1).
Generated images: each reference image is template matched (±``anchor_angle_range_deg``)
against ``n_anchors`` observed raw frames of known slit geometry; the slits of the best
anchor are mapped into the reference through that match (the chart repeats, so for each of
d1 and d2 the copy nearest the image centre is taken). The slit positions of the
perturbed images then follow their registration against the reference ("template-matched profiles", §3.2). Widths are
the half-contrast widths of profiles across each slit averaged over ``band_width_px``
lines, in nm of the generator's pixel size.

Smoothness bounds (recovery). Translation: the largest step between consecutive raw
frames, from the ground-truth offsets (340 nm/s × 7 ms = 2.38 nm in the paper, §3.2; from
``speed_nm_s`` × ``frame_interval_s`` without truth). Rotation: the observed data have no
time-resolved rotation; its "consecutive steps" are the gaps between the sorted rotation
angles of the images made from one raw frame (the raw frame at 0° and its rotated copies),
pooled over frames; the bound is the largest such gap. A generated sequence is smooth when
no step between neighbours in the sorted order exceeds the bound. Both depend on how
densely the sequence is sampled (more samples → smaller steps), so the median and 95th
percentile of the steps are reported too, and ``jump_free`` judges the largest step against
the largest one expected for as many values spread uniformly over the same range
(``max_gap_ratio`` ≤ ``jump_gap_ratio``), which does not depend on the sample count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from matdyn.analysis.case import CaseContext, Table, VariationPlan, register_case
from matdyn.analysis.cases.ta_chart import figures as figs
from matdyn.analysis.cases.ta_chart import observed as observed_
from matdyn.analysis.cases.ta_chart import steps
from matdyn.analysis.cases.ta_chart.config import CASE, PAPER, Config, angle_grid
from matdyn.analysis.cases.ta_chart.geometry import ChartMotion, SlitGeometry, make_geometry
from matdyn.analysis.cases.ta_chart.recovery import recover
from matdyn.errors import AnalysisError

__all__ = ["CASE", "PAPER", "ChartMotion", "Config", "SlitGeometry", "TaChartCase"]


class TaChartCase:
    """The Ta-chart steps (see the module docstring); one instance per run."""

    name, channels, ndim, what = CASE, 1, 2, "phase images"

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg if cfg is not None else Config()
        self.counts: dict[str, Any] = {}
        self._sections: dict[str, Any] = {}

    def observe(self, ctx: CaseContext) -> observed_.Observed:
        cfg = self.cfg
        obs = observed_.Observed(ctx, cfg)
        if len(obs.raw) < 2:
            raise AnalysisError("the store holds fewer than 2 raw (non-augmented) frames; the "
                                "Ta-chart case needs a frame sequence")
        d_nm = obs.expected_widths()
        self.geom = make_geometry(ctx.resolution, ctx.pixel_size, cfg, d_nm)
        self.geom_obs = make_geometry(ctx.resolution, obs.pixel_size, cfg, d_nm)
        self.anchors = steps.anchors(obs, self.geom_obs, cfg)
        self._obs = obs
        return obs

    def fidelity(self, ctx: CaseContext, obs: observed_.Observed) -> dict:
        """Generated z ~ N(0, I) vs observed frames (all, as in training)."""
        cfg, rng = self.cfg, np.random.default_rng(ctx.seed)
        n_fid = min(cfg.n_fidelity, len(ctx.store))
        obs_fid = obs.load(np.sort(rng.choice(len(ctx.store), n_fid, replace=False)))
        gen_fid = ctx.generate(ctx.fidelity_latents(cfg.n_fidelity), cfg.batch_size)
        probe = steps.probe_anchors(gen_fid, self.anchors, self.geom, cfg)
        fid = steps.fidelity_distances(obs_fid, gen_fid, cfg, ctx.seed)
        fid["probe_anchor_ncc"] = probe
        fid["value_unit"] = "store units (CXDI phase, rad)"
        return fid

    def variations(self, ctx: CaseContext, obs: observed_.Observed) -> VariationPlan:
        cfg = self.cfg
        reducer = ChartMotion(
            self.geom, self.anchors.crops, self.anchors.pairs,
            angles=angle_grid(cfg.angle_range_deg, cfg.angle_step_deg),
            anchor_angles=angle_grid(cfg.anchor_angle_range_deg, cfg.anchor_angle_step_deg),
            upsample_factor=cfg.upsample_factor, refine_iters=cfg.refine_iters,
            sigma=cfg.binarize_sigma)
        return VariationPlan(cfg.n_refs, cfg.n_samples, [], [reducer], cfg.batch_size)

    def filters(self, ctx: CaseContext, result: Any) -> dict:
        self.g = {k.split("/", 1)[1]: result[k] for k in result.keys() if k.startswith("motion/")}
        filters, self.kept = steps.filters(self.g, self.cfg)
        return filters

    def describe(self, ctx: CaseContext, obs: observed_.Observed, result: Any) -> Table:
        cfg, g, kept, unit = self.cfg, self.g, self.kept, ctx.unit
        self.along, self.across = steps.motion(g, ctx.pixel_size)
        self.seqs = steps.sequences(kept, self.along, self.across, g["angle_deg"], g["masks"],
                                    self.geom.size, cfg.sequence_subset_frac)
        self.gw = np.where(kept[..., None], g["widths"], np.nan)  # [M, N, 2]
        self.ow = observed_.observed_widths(obs, self.geom_obs, cfg)
        M, N = kept.shape
        self.counts = {"n_refs": int(M), "n_samples": int(N), "n_kept": int(kept.sum())}
        rows = steps.table_rows(g, kept, self.along, self.across, self.gw, self.seqs, unit)
        units = {f"translation_along_{unit}": unit, f"translation_across_{unit}": unit,
                 "rotation_deg": "deg", f"d1_{unit}": unit, f"d2_{unit}": unit,
                 "shift_row_px": "px", "shift_col_px": "px"}
        return Table(pd.DataFrame(rows), units)

    def group(self, ctx: CaseContext, table: Table) -> dict:
        """Generated sequences sorted by translation / rotation against the observed ones."""
        cfg, obs = self.cfg, self._obs
        iou_r, r_steps, r_source = observed_.observed_rotation(obs, self.geom_obs, cfg)
        self.obs_iou = (observed_.consecutive_iou(obs, self.geom_obs, cfg), iou_r)
        observed = {"translation_steps": obs.translation_steps(), "rotation_steps": r_steps,
                    "rotation_source": r_source, "iou_translation": self.obs_iou[0],
                    "iou_rotation": iou_r}
        seq = steps.sequence_summary(self.seqs, self.kept, self.along, self.across,
                                     self.g["angle_deg"], observed, ctx.unit)
        slits = steps.slit_summary(self.gw, self.ow, self.g["ref_widths"],
                                   self.g["ref_anchor_score"])
        self._sections = {"sequences": seq, "slit_widths": slits}
        return dict(self._sections)

    def recover(self, ctx: CaseContext, obs: observed_.Observed, table: Table) -> dict:
        return recover(obs, self._sections["slit_widths"], self._sections["sequences"],
                       ctx.pixel_size, self.cfg)

    def figures(self, ctx: CaseContext, obs: observed_.Observed, result: Any,
                table: Table) -> None:
        figs.observed_figure(ctx, obs, self.geom_obs)
        best = int(np.argmax(self.kept.sum(axis=1)))
        figs.sequence_figures(ctx, self.cfg, self.geom, best, self.seqs, self.along,
                              self.g["angle_deg"])
        figs.iou_figure(ctx, self.seqs, *self.obs_iou)
        figs.width_figures(ctx, self.geom, best, self.g, self.gw, self.ow)

    def sections(self, ctx: CaseContext) -> dict:
        return {"paper": PAPER}


register_case(CASE, TaChartCase, Config)
