"""NP-diffusion case study (paper §3.3): fidelity, latent Monte Carlo, particle dynamics.

``analysis.descriptors`` chooses what the ``describe`` step measures: ``particles``
(default, issue 12; :mod:`.particles`): every particle of each reference image located and
followed through the kept samples, giving MSD (nm²), D = MSD / (2·ndim·Δt) (nm²/s) with
Δt from the γ → Δt calibration of observed frames (:mod:`.timebase`, summary section
``time_calibration``), noise floors, anisotropy, drift fraction and, over ``msd_gammas``,
MSD(Δt) with D from its slope and the MSD exponent; a tracking baseline of the observed
frames sits beside it (``tracking_baseline``); the number of clusters comes from the data
(``n_modes: auto``). ``traces`` is the paper's protocol (averaged images, steps 4-7 below),
``both`` runs the two side by side. The paper's protocol:

A package of the :class:`~matdyn.analysis.case.Case` protocol, run by
:func:`~matdyn.analysis.case.run_case` (``run_case("np_diffusion", generator, store, cfg,
...)``): ``config`` (Config, paper numbers), ``traces`` (segmentation and moments),
``steps`` (fidelity, entropy filter, trace table, clustering), ``recovery`` (planted truth),
``figures``. The steps:

1. **Inputs.** A 1-channel 2D generator and store. Observed frames are prepared exactly
   as in training (:class:`~matdyn.data.frames.ObservedFrames`, ``dataset.fit`` crop or
   pad, resized to the generator's resolution); every length uses the pixel size of that
   geometry (the bundle's, else :func:`~matdyn.data.frames.working_pixel_size`).
2. **Fidelity (§3.3.1, Fig. 5a/b).** ``n_fidelity`` generated frames (z ~ N(0, I)) vs as
   many observed frames spread over the store. Particles are segmented identically in both
   sets: Gaussian σ, black top-hat, threshold = ``trace_threshold`` × the *observed* particle
   depth (median single-particle dip), components ≥ ``min_area`` px. Reported, each with a
   split-half real-vs-real baseline: the 1D Wasserstein distance of particle areas
   (``area_normalize="range"``: both samples mapped to [0, 1] by the min and max of the
   pooled areas, our reading of the paper's 0.068; also the raw value in nm²), the
   multi-scale sliced Wasserstein distance (Karras et al. 2018) and the S₂ RMS distance of
   the particle masks. A generator whose frames lack the spatial correlation of the data
   (lag-1 pixel autocorrelation < ``noise_corr_ratio`` × the observed one) or show no
   particles is rejected as noise.
3. **Monte Carlo (§3.3.2).** ``n_refs`` references × ``n_samples`` perturbations
   ε ~ U[-γ, γ]^d through :class:`~matdyn.sampling.engine.VariationEngine` (resumable in
   ``out_dir/variations``). A sample is kept when its image-entropy difference to its
   reference is ≤ the threshold: a number (paper 0.2, on the paper's own entropy scale), or
   ``"auto"``: the ``entropy_bound`` ("max", the paper's "upper bound", or "p95") of the
   same metric between consecutive observed frames at the same resolution
   (:func:`~matdyn.gamma.continuity.consecutive_differences`). Kept samples (and the
   reference, Eq. 3, with ``include_reference``) are averaged pixel-wise
   (:class:`~matdyn.sampling.reducers.FilteredMean`).
4. **Traces (Fig. 6a).** Each averaged image is segmented with
   :func:`~matdyn.descriptors.traces.extract_traces` at ``depth`` = the median
   single-particle dip depth of *its reference image*, so fading traces of moving particles
   are measured against the depth of a still particle. The reference image's own particles
   are described the same way (the "before averaging" baseline).
5. **Descriptors.** ``anisotropy`` = (λ1 - λ2)/(λ1 + λ2) of the depth-weighted second
   moments (0 isotropic, → 1 line); ``tortuosity`` = arc-chord ratio of the ordered,
   smoothed skeleton path (≥ 1, 1 = straight; grows with meandering). **Diffusion area**
   (Fig. 6b) = the MSD-equivalent spread of the trace beyond the still particle::

       A = [tr Σ_trace - tr Σ_particle] × pixel_size²   (nm²)

   Σ are the second moments of the smoothed dip above a locally fitted background plane,
   inside a Mahalanobis window of radius ``moment_window`` within the trace's watershed
   basin (no threshold, so the tails of faded traces count); Σ_particle is that of the
   reference particle lying on the trace (else the median reference particle). Averaging
   convolves the particle with the distribution of its positions and second moments of a
   convolution add, so A estimates tr Σ_positions. If the kept samples are the states
   reachable from the reference within the time t that γ stands for (the paper equates
   γ = 1 with ~1 s, §3.3.1), that is the mean squared displacement MSD(t) = 4 D t; if they
   behave like the frames of a t-long window, it is the window spread (2 D t / 3 = MSD / 6
   for free diffusion). The summary gives both planted values (``planted_msd``,
   ``planted_window_spread``, from the true trajectories), the planted 4 D t and the
   paper's 7712 ± 2862 nm² (XPCS: 7550 nm² per s). On 1-s averages of the stand-in's own
   frames at 128 px, A matched the planted window spread within ~15-30 % per mode. Noise
   makes A scatter around 0 for still particles (the reference rows of the table,
   measured against their median, show that floor). A trace fades below the
   segmentation threshold once its spread per axis exceeds about twice the particle's
   own second moment, so very mobile particles are missed rather than measured. The mask
   area (``area``), the 1-σ ellipse area (``ellipse_area``) and ``rms_displacement`` = √A
   (A clipped at 0; much less skewed than A, the better clustering feature) are in the
   table too.
6. **Clustering (Fig. 6c/d).** ``features`` of the averaged traces, scaled per column
   (``scaling``, paper: range), Euclidean; HAC cut into ``n_modes`` clusters with average
   linkage (paper) and the robust variants ``trimmed`` (average linkage after setting aside
   rows with |z| > ``trim_z``, then nearest centre) and ``ward``, which cluster
   ``robust_features`` (default anisotropy + rms displacement: tortuosity is ~1 for nearly
   every trace of the stand-in, FINDINGS.md). Clusters are named:
   highest mean anisotropy → directed, then larger mean diffusion area → free, → confined.
7. **Ground truth** (synthetic stores only, ``summary["recovery"]``): a trace's planted
   mode is the store's ``region_map`` (cropped or padded with -1, then nearest-neighbour
   resized like the frames) at the trace centroid; traces outside every region (-1) are
   left out of the ARI.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from matdyn.analysis.case import CaseContext, Table, VariationPlan, register_case, stats
from matdyn.analysis.cases.np_diffusion import figures as figs
from matdyn.analysis.cases.np_diffusion import particle_figures as pfigs
from matdyn.analysis.cases.np_diffusion import particles, rays, steps, timebase
from matdyn.analysis.cases.np_diffusion.config import CASE, FREE, PAPER, Config
from matdyn.analysis.cases.np_diffusion.recovery import mode_names, recover, recover_particles
from matdyn.descriptors.differences import (
    DensityDifference,
    EntropyDifference,
    MetricFilter,
    SquaredDifference,
)
from matdyn.errors import AnalysisError
from matdyn.sampling.reducers import FilteredMean, SampleMetrics

__all__ = ["CASE", "PAPER", "Config", "NPDiffusionCase"]

#: observed near repeats whose median reaches this fraction of r/√2 (the median of chance
#: coincidences uniform over the disc of radius r) are taken as coincidences: nothing keeps
#: its place (freely diffusing beads: 1.24 px observed against r/√2 = 1.41 px, Princeton)
CHANCE_LEVEL = 0.8
#: particles followed along the latent rays: a note when more than this share is lost by the
#: analysis γ (their MSD does not count)
RAY_LOST_NOTE = 0.2


class NPDiffusionCase:
    """The NP-diffusion steps (see the module docstring); one instance per run."""

    name, channels, ndim, what = CASE, 1, 2, "phase images"

    def __init__(self, cfg: Config | None = None) -> None:
        # a copy: observe() settles dark_particles="auto" on it
        self.cfg = copy.copy(cfg) if cfg is not None else Config()
        self.counts: dict[str, Any] = {}
        self._sections: dict[str, Any] = {}
        self._particles = self.cfg.descriptors in ("particles", "both")
        self._traces = self.cfg.descriptors in ("traces", "both")
        self._tracking: dict[str, Any] = {}

    def observe(self, ctx: CaseContext) -> steps.Observed:
        obs = steps.observe(ctx, self.cfg)
        self._polarity = steps.resolve_polarity(self.cfg, obs.fidelity)
        return obs

    def fidelity(self, ctx: CaseContext, observed: steps.Observed) -> dict:
        cfg, real = self.cfg, observed.fidelity
        gen = ctx.generate(ctx.fidelity_latents(cfg.n_fidelity), cfg.batch_size)
        fid = steps.fidelity(ctx, cfg, real, gen)
        areas = fid.pop("_areas")
        figs.fidelity_figures(ctx, real, gen, fid, areas, cfg.n_show, steps.area_unit(ctx))
        swd = fid["swd"]
        if swd["value"] > 10.0 * max(swd["baseline"], 1e-12):
            ctx.note(f"generated frames are far from the observed ones (SWD {swd['value']:.3g} "
                     f"vs real-vs-real {swd['baseline']:.3g}); is the generator trained?")
        nr = fid["near_repeat"]
        chance = (nr.get("real_median_px") is not None and nr.get("r_max_px") and
                  nr["real_median_px"] >= CHANCE_LEVEL * nr["r_max_px"] / np.sqrt(2))
        if nr.get("flagged") and chance:  # nothing keeps its place: coincidences on both sides
            ctx.note(f"near-repeat distance {nr['generated_median_px']:.2f} px generated vs "
                     f"{nr['real_median_px']:.2f} px observed (ratio {nr['ratio']:.2f}) is "
                     f"flagged, but the observed near repeats are chance coincidences (median "
                     f"near r/√2 = {nr['r_max_px'] / np.sqrt(2):.2f} px): no observed particle "
                     "keeps its place, so the check says little about the motion here")
        elif nr.get("flagged"):
            how = "still" if nr["ratio"] < 1 else "loose"
            ctx.note(f"particles that keep their place are drawn too {how}: near-repeat distance "
                     f"{nr['generated_median_px']:.2f} px generated vs {nr['real_median_px']:.2f} px "
                     f"observed (ratio {nr['ratio']:.2f}, real-vs-real {nr['real_vs_real_ratio']:.2f}); "
                     "their MC displacements are biased the same way, and the image-wide γ "
                     "calibration hands their share of motion to the other particles")
        at = fid["atypical"]
        _share_note(ctx, at, at.get("flagged") or [], "atypical",
                    "the generator draws too many faint, half-formed, split or merged particles",
                    "their Monte Carlo displacements and links are the least reliable")
        _share_note(ctx, at.get("touching") or {}, at.get("flagged") or [], "touching",
                    "the generator draws particles touching (two crisp particles merged in one "
                    "mask) too often", "their pair spacing differs from the observed one")
        _share_note(ctx, at.get("halo") or {}, at.get("flagged") or [], "halo",
                    "the generator draws light halos around particles (a rim brighter than "
                    "its surroundings) more often than observed",
                    "halos are image artefacts, not particles; the image differences that "
                    "calibrate gamma include them")
        _share_note(ctx, at.get("faint") or {}, at.get("flagged") or [], "faint",
                    "the generator draws faint smudges (dips too faint to segment as "
                    "particles) more often than observed; shares are faint features per "
                    "particle",
                    "the particle measures do not see them, the image differences that "
                    "calibrate gamma do")
        sp = fid["subpixel"]
        if sp.get("flagged"):
            how = "more" if sp["generated_locked_share"] > sp["real_locked_share"] else "less"
            ctx.note(f"generated particle centroids sit on the pixel grid {how} often than "
                     f"observed: {100 * sp['generated_locked_share']:.1f} % of coordinates within "
                     f"{sp['lock_window_px']} px of a pixel centre vs "
                     f"{100 * sp['real_locked_share']:.1f} % observed (circular W1 "
                     f"{sp['w1_px'] if sp['w1_px'] is not None else float('inf'):.3f} px, "
                     f"real-vs-real {sp['real_vs_real_px']:.3f} px); "
                     "sub-pixel MC displacements are biased by the grid (see model.upsample)")
        return fid

    def _plan(self, ctx: CaseContext, n_samples: int, floor: int, mean: bool) -> VariationPlan:
        """Entropy filter (fixed or from consecutive observed frames); per reference the
        filtered mean (traces), every sample's metrics and, for particles, the links."""
        from matdyn.dynamics.streaming import ParticleLinks

        cfg = self.cfg
        ent, dens = EntropyDifference(bins=cfg.entropy_bins), DensityDifference()
        metrics: list[Any] = [ent, dens]
        if self._particles and cfg.calibration_metric == "sq_diff":
            metrics.append(self._cal_metric)
        keep = MetricFilter(upper={ent.name: self._thr[0]})
        reducers: list[Any] = [SampleMetrics([m.name for m in metrics], name="metrics")]
        if mean:
            reducers.insert(0, FilteredMean(keep, include_reference=cfg.include_reference,
                                            name="mean"))
        if self._particles:
            links = ParticleLinks(self._params, keep, search_radius=cfg.search_radius,
                                  max_particles=cfg.max_particles, floor_samples=floor,
                                  seed=ctx.seed, name=particles.PREFIX,
                                  wide_factor=cfg.radius_check_factor)
            self._link_radius, self._wide_radius = links.radius, links.wide
            reducers.append(links)
        return VariationPlan(cfg.n_refs, n_samples, metrics, reducers, cfg.batch_size)

    def variations(self, ctx: CaseContext, observed: steps.Observed) -> VariationPlan:
        cfg = self.cfg
        ent = EntropyDifference(bins=cfg.entropy_bins)
        self._thr = steps.entropy_threshold(cfg, observed.baseline, ent, observed.n_store)
        if self._particles:
            self._params, self._params_source = particles.locate_params(ctx, cfg,
                                                                        observed.baseline)
            self._cal_metric = (
                SquaredDifference(sigma=cfg.calibration_sigma_px(self._params.diameter))
                if cfg.calibration_metric == "sq_diff" else DensityDifference())
        return self._plan(ctx, cfg.n_samples, cfg.floor_samples, True)

    def filters(self, ctx: CaseContext, result: Any) -> dict:
        thr, source, base = self._thr
        filters, self._n_kept, self._used = steps.filter_summary(self.cfg, result, thr, source,
                                                                 base, ctx.gamma)
        figs.filter_figure(ctx, result["metrics/entropy_diff"], filters["entropy_diff"])
        return filters

    def describe(self, ctx: CaseContext, observed: Any, result: Any) -> Table:
        cfg, frames, units = self.cfg, [], {}
        refs = result["mean/reference"]
        self.counts = {"n_refs": int(len(refs)), "n_samples": int(cfg.n_samples),
                       "n_refs_used": int(self._used.sum()), "n_fidelity": int(cfg.n_fidelity)}
        if self._particles:
            df, u = self._describe_particles(ctx, observed, result)
            frames.append(df)
            units |= u
        if self._traces:
            frames.append(self._describe_traces(ctx, result))
            units |= steps.table_units(ctx)
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return Table(frame, units)

    # ------------------------------------------------------------------ particles
    def _runs(self, ctx: CaseContext, result: Any) -> dict[float, Any]:
        """The run's variation plus one engine run per other γ of ``msd_gammas``."""
        from matdyn.gamma.records import build_sampler, sampler_spec

        runs = {ctx.gamma: result}
        for g in self.cfg.msd_gammas:  # one more engine run per γ, same references
            if all(abs(g - h) > 1e-9 for h in runs):
                sampler = build_sampler(sampler_spec(ctx.sampler), g)
                runs[g] = ctx.vary(self._plan(ctx, self.cfg.msd_samples, 0, False), sampler,
                                   f"variations_gamma_{particles.gamma_key(g)}")
        return runs

    def _describe_particles(self, ctx: CaseContext, observed: Any,
                            result: Any) -> tuple[pd.DataFrame, dict[str, str]]:
        cfg = self.cfg
        runs = self._runs(ctx, result)
        key = f"metrics/{self._cal_metric.name}"
        gamma_diff = {g: float(np.nanmedian(r[key])) for g, r in runs.items()}
        cal = timebase.calibrate(ctx, observed.baseline, gamma_diff, self._cal_metric)
        if not cal["available"] or cal.get("note"):
            ctx.note(f"time calibration: {cal.get('note')}")
        flat = [(g, t, e) for g, t, e in zip(cal.get("gammas", []), cal.get("dt", []),
                                             cal.get("local_exponent", []))
                if e is not None and t is not None and e < timebase.SATURATION_EXPONENT]
        if flat:
            ctx.note("time calibration: at γ = " + ", ".join(f"{g:.3g} (Δt {t:.3g} "
                     f"{cal['time_unit']}, difference ∝ Δt^{e:.2f})" for g, t, e in flat)
                     + " the observed frame difference grows slowly with Δt (it saturates "
                     "once particles move farther than their size), so each of these Δt is "
                     "poorly determined, and the MC MSD(Δt) exponent with them (figure "
                     "time_calibration)")
        dts = dict(zip(cal["gammas"], cal["dt"])) if cal["available"] else {}
        nm_px = ctx.pixel_size * (ctx.nm or 1.0)
        df = particles.table(ctx, runs, dts, nm_px)
        if df.empty:
            raise AnalysisError(f"no particle located in any of the {cfg.n_refs} reference "
                                "images; check locate_diameter / dark_particles")
        self._gammas, self._dts, self._cal = sorted(runs), dts, cal
        dt0, fi = cal.get("dt_of_analysis_gamma"), ctx.store.meta.frame_interval
        check = ((max(1, round(dt0 / fi)), self._link_radius, self._wide_radius)
                 if dt0 and fi and self._wide_radius else None)
        self._tracking = timebase.tracking(ctx, cfg.tracking_frames, self._params, check)
        lu, tu = steps.length_unit(ctx), cal.get("time_unit") or ctx.store.meta.time_unit or "s"
        units = {"centroid_row": "px", "centroid_col": "px", "msd": f"{lu}^2",
                 "msd_floor": f"{lu}^2", "D": f"{lu}^2/{tu}", "D_floor": f"{lu}^2/{tu}",
                 "D_slope": f"{lu}^2/{tu}", "mean_dy": lu, "mean_dx": lu, "rg": lu}
        units |= {f"msd_g{particles.gamma_key(g)}": f"{lu}^2" for g in runs}
        if "msd_wide" in df:
            units |= {"msd_wide": f"{lu}^2"} | {f"msd_wide_g{particles.gamma_key(g)}": f"{lu}^2"
                                                for g in runs}
        r0 = result
        info = {"locate": {"diameter": self._params.diameter, "minmass": self._params.minmass,
                           "dark": self._params.dark, "polarity": self._polarity,
                           "estimated_on": self._params_source,
                           "used_by": "the Monte Carlo links and the tracking baseline"},
                "gammas": self._gammas,
                "appearing_per_kept_sample": float(r0["particles/appearing"].sum()
                                                   / max(r0["particles/kept"].sum(), 1)),
                "ref_particles_left_out": int(np.clip(r0["particles/n_ref"] - cfg.max_particles,
                                                      0, None).sum())}
        self._sections["particles"] = particles.summary(df, cal["dt_of_analysis_gamma"], units,
                                                        info)
        ens = self._ensemble(ctx, df)
        ens["link_radius"] = lr = particles.link_radius_check(
            ens["msd_by_gamma"], ens["msd_wide_by_gamma"], self._link_radius,
            self._wide_radius, nm_px, paired_by_gamma=ens["msd_paired_by_gamma"])
        lr["observed"] = (self._tracking.get("info") or {}).get("radius_check")
        lr["units"] = {"msd_cap": f"{lu}^2", "link_radius_px": "px", "wide_radius_px": "px",
                       "observed.msd_px2": "px^2"}
        ens["units"] = {"msd_by_gamma": f"{lu}^2", "floor": f"{lu}^2", "D": f"{lu}^2/{tu}"}
        self._sections["particles"]["ensemble"] = ens
        if lr["sensitive_gammas"]:
            ks = lr["sensitive_gammas"]
            ratios = ", ".join(f"{lr['by_gamma'][k]['wide_over_msd']:.2f}×" for k in ks)
            ob = lr["observed"] or {}
            same = ""
            if ob.get("wide_over_msd") is not None and np.isfinite(ob["wide_over_msd"]):
                same = (f" The same check on observed frames {ob['lag_frames']} apart (the lag "
                        f"nearest the analysis Δt) gives {ob['wide_over_msd']:.2f}×.")
            ctx.note(f"MC MSD depends on the link radius at γ = {', '.join(ks)}: linked within "
                     f"{lr['wide_radius_px']:g} px instead of {lr['link_radius_px']:g} px "
                     f"(analysis.search_radius), the MSD is {ratios} as large.{same} The "
                     "generator moves some particles farther than the radius (counted as "
                     "appearing), while wider links may pair neighbours, so MC D there is set "
                     "by the radius as much as by the motion (particles.ensemble.link_radius; "
                     "mc_vs_tracking.D_wide_over_tracking, agrees_wide)")
        self._sections["time_calibration"] = cal
        self._sections["tracking_baseline"] = self._tracking
        if cfg.ray_samples:
            self._ray_section(ctx, result, ens, nm_px, lu, tu)
        agree = particles.agreement(ens, self._sections["particles"], self._tracking)
        self._sections["mc_vs_tracking"] = agree
        if agree["agrees"] is False:
            ctx.note(f"MC D of all particles ({agree['mc_D']:.3g} {units['D']}, ensemble MSD at "
                     f"γ = {ctx.gamma:.3g}) is outside {agree['factor']:g}× of the tracking D "
                     f"of the observed frames ({agree['tracking_D']:.3g}): the generator's "
                     "latent neighbourhood does not move particles like the data, so MC D is "
                     "not a measurement of D here")
        note = particles.motion_note(agree, cal["dt_of_analysis_gamma"], tu)
        if note:
            ctx.note(note)
        self.counts["n_particles"] = int(len(df))
        ps = self._sections["particles"]
        ctx.log({"particles/msd_median": ps["msd"]["median"], "particles/D_median": ps["D"]["median"],
                 "particles/msd_floor_median": ps["msd_floor"]["median"] if "msd_floor" in ps else None,
                 "time_calibration/dt": cal["dt_of_analysis_gamma"],
                 "tracking/D_all": (self._tracking.get("modes", {}).get("all") or {}).get("D")})
        return df, units

    def _ray_section(self, ctx: CaseContext, result: Any, ens: dict[str, Any], nm_px: float,
                     lu: str, tu: str) -> None:
        """``particles.ensemble.rays``: MC MSD and D with particles followed along the latent
        rays (:mod:`.rays`), beside the one-jump estimate of ``result`` (the run's γ)."""
        cfg = self.cfg
        d_modes = np.asarray(dict(ctx.store.truth).get("mode_diffusion_nm2_s", []),
                             np.float64).ravel()
        floors = ((result["particles/ref_yx"], result["particles/floor_msd_px2"])
                  if "particles/floor_msd_px2" in result else None)
        sec, _ = rays.section(ctx, self._params, self._link_radius, self._gammas, self._dts,
                              nm_px, cfg.n_refs, cfg.ray_samples, cfg.max_particles,
                              self._tracking, floors=floors,
                              planted_free=float(d_modes[FREE]) if d_modes.size > FREE else None)
        sec["units"] = {"msd": f"{lu}^2", "D": f"{lu}^2/{tu}", "dt": tu}
        ens["rays"] = sec
        ens["D_rays"], ens["rays_msd_exponent"] = sec["D"], sec["msd_exponent"]
        lost = sec["lost_fraction"]
        if lost is not None and lost > RAY_LOST_NOTE:
            ctx.note(f"particles followed along the latent rays: {lost:.0%} of them are lost "
                     f"by γ = {ctx.gamma:g} (erased by the generator, or moved more than "
                     f"{self._link_radius:g} px in one step of t); their MSD does not count, "
                     "so particles.ensemble.rays.D is low if the lost ones are the fast ones")

    def _ensemble(self, ctx: CaseContext, rows: pd.DataFrame) -> dict[str, Any]:
        """Ensemble MSD and D of some particle rows (:func:`particles.ensemble`)."""
        return particles.ensemble(rows, self._gammas, self._dts, ctx.gamma,
                                  ndim=int(ctx.store.meta.ndim))

    # ------------------------------------------------------------------ traces
    def _describe_traces(self, ctx: CaseContext, result: Any) -> pd.DataFrame:
        cfg = self.cfg
        refs, means = result["mean/reference"], result["mean/mean"]
        table = steps.trace_table(ctx, cfg, refs, means, result.ref_indices, self._n_kept,
                                  self._used)
        avg = table[table.source == "averaged"]
        need = cfg.fixed_modes() or 3
        if len(avg) < need:
            raise AnalysisError(
                f"only {len(avg)} traces found in {int(self._used.sum())} averaged images, fewer "
                f"than {need} modes; all-noise generator, or raise n_refs / lower "
                "trace_threshold")
        ref_rows = table.source == "reference"
        self.counts |= {"n_traces_averaged": int(len(avg)),
                        "n_traces_reference": int(ref_rows.sum())}
        self._sections["traces"] = {
            "anisotropy_reference": stats(table.loc[ref_rows, "anisotropy"]),
            "anisotropy_averaged": stats(avg["anisotropy"]),
            "tortuosity_averaged": stats(avg["tortuosity"]),
            "tortuosity_convention": "arc-chord ratio of the smoothed skeleton path, >= 1 "
                                     "(1 = straight)"}
        self._sections["diffusion_area"] = self._diffusion(ctx, avg["diffusion_area"])
        return table

    def _diffusion(self, ctx: CaseContext, values: Any) -> dict:
        t_s = float(self.cfg.gamma_time_s)
        truth = dict(ctx.store.truth or {})
        d_modes = np.asarray(truth.get("mode_diffusion_nm2_s", []), dtype=np.float64).ravel()
        diffusion = {
            "unit": steps.area_unit(ctx),
            "definition": "MSD-equivalent spread: (tr Σ_trace - tr Σ of the still reference "
                          "particle) × pixel_size²",
            "time_s": t_s, **stats(values),
            "planted_free_4Dt": float(4.0 * d_modes[FREE] * t_s) if d_modes.size > FREE else None,
            "paper": PAPER["diffusion_area_nm2"]}
        ctx.log({"diffusion_area/mean": diffusion["mean"], "diffusion_area/std": diffusion["std"]})
        return diffusion

    def _trace_cfg(self, df: pd.DataFrame) -> Config:
        """The config with ``n_modes`` resolved: fixed, or chosen from the trace features."""
        from matdyn.dynamics import choose_n_clusters

        cfg = self.cfg
        if cfg.fixed_modes() is not None:
            return cfg
        avg = df[df.source == "averaged"]
        x = avg[list(cfg.robust_features or cfg.features)].to_numpy(np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        k = choose_n_clusters(x, method=cfg.cluster_count, min_silhouette=cfg.min_silhouette).k
        return replace(cfg, n_modes=int(k))

    # ------------------------------------------------------------------ group, recover
    def group(self, ctx: CaseContext, table: Table) -> dict:
        out = {}
        if self._traces:
            df = table.frame
            self._tcfg = self._trace_cfg(df)
            summary, self._results, self._rows = steps.cluster(self._tcfg, df)
            out["clustering_traces" if self._particles else "clustering"] = summary
        if self._particles:
            df = table.frame
            sub = df[df.source == "particle"].copy()
            try:
                summary, self._presults, self._prows = particles.cluster(
                    self.cfg, sub, ens=lambda rows: self._ensemble(ctx, rows))
            except AnalysisError as err:  # too few moving particles: MSD and D still stand
                ctx.note(f"particle clustering skipped: {err}")
                summary = {"descriptors": "particles", "error": str(err),
                           "separation_real": False}
                self._presults, self._prows = {}, sub.index.to_numpy()[:0]
            for c in [c for c in sub.columns if c.startswith(("cluster_", "mode_"))]:
                if c not in df:
                    df[c] = -1 if c.startswith("cluster_") else ""
                df.loc[sub.index, c] = sub[c]
            self._preal = summary["separation_real"]
            out["clustering"] = summary
        return out

    def recover(self, ctx: CaseContext, observed: Any, table: Table) -> dict:
        if "region_map" not in ctx.store.truth:
            return None  # type: ignore[return-value]
        rec = {}
        if self._traces:
            rec = recover(ctx, self._tcfg, table.frame, self._results, self._rows)
        if self._particles:
            feats = particles.features(table.frame.loc[self._prows], self.cfg.particle_features,
                                       self.cfg.feature_gamma)
            prec = recover_particles(ctx, table.frame, self._presults, self._prows, self._gammas,
                                     self._dts, self._tracking, features=feats)
            rec = prec | ({"traces": rec} if rec else {})
        return rec

    # ------------------------------------------------------------------ figures
    def figures(self, ctx: CaseContext, observed: Any, result: Any, table: Table) -> None:
        cfg, df = self.cfg, table.frame
        figs.variation_figures(ctx, result["mean/reference"], result["mean/mean"], self._n_kept,
                               self._used, cfg.n_show)
        if self._particles:
            self._particle_figures(ctx, df[df.source == "particle"])
        if not self._traces:
            return
        au = steps.area_unit(ctx)
        self._cluster_figures(ctx, df)
        avg = df[df.source == "averaged"]
        truth = bool(ctx.store.truth)
        figs.diffusion_figure(ctx, avg["diffusion_area"].to_numpy(),
                              self._sections["diffusion_area"], au,
                              PAPER["diffusion_area_nm2"]["mean"] if truth else None)
        if "planted_mode" in df:
            figs.recovery_figures(ctx, df[df.source != "particle"], self._rows,
                                  mode_names(ctx.store), au)
        else:
            ctx.save(figs.ref_vs_avg_figure(df[df.source != "particle"], None, {}),
                     "traces_anisotropy_reference_averaged")

    def _particle_figures(self, ctx: CaseContext, df: pd.DataFrame) -> None:
        lu = steps.length_unit(ctx)
        tu = self._cal.get("time_unit") or ctx.store.meta.time_unit or "s"
        truth = "planted_mode" in df
        group = "planted_mode" if truth else "cluster_average" if "cluster_average" in df else None
        names = mode_names(ctx.store) if truth else {}
        if not truth and group is not None:  # clusters: "one mode", or named by mobility
            ok = df[group] >= 0
            names = particles.name_clusters(df.loc[ok, group].to_numpy(),
                                            df.loc[ok, "msd"].to_numpy(np.float64), self._preal)
        pfigs.msd_dt_figure(ctx, df, self._gammas, self._cal, self._tracking, group, names, lu,
                            radii=(self._link_radius, self._wide_radius),
                            rays=(self._sections.get("particles") or {}).get("ensemble", {})
                            .get("rays"))
        d_modes = np.asarray(dict(ctx.store.truth).get("mode_diffusion_nm2_s", []),
                             np.float64).ravel()
        planted = float(d_modes[FREE]) if truth and d_modes.size > FREE else None
        pfigs.d_histogram(ctx, df, self._tracking, planted, lu, tu)
        pfigs.calibration_figure(ctx, self._cal)
        sub = df.loc[self._prows]
        clustered = [particles.feature_column(f, self.cfg.feature_gamma)
                     for f in self.cfg.particle_features]  # what the clustering saw first
        shown = [c for c in dict.fromkeys([*clustered, "D", "drift_fraction", "msd_exponent"])
                 if c in sub and sub[c].notna().any()]
        units = {"msd": f"{lu}^2", "D": f"{lu}^2/{tu}"}
        units |= {c: f"{lu}^2" for c in shown if c.startswith("msd_g")}
        fg = self.cfg.feature_gamma
        at = [f"{f} at γ = {fg:g}" if fg is not None and f in particles.PER_GAMMA else f
              for f in self.cfg.particle_features]
        for method, res in self._presults.items():
            names_c = particles.name_clusters(res.labels, sub["msd"].to_numpy(np.float64),
                                              self._preal)
            figs.cluster_figures(ctx, sub, method, res, names_c, at, shown, units,
                                 int(len(set(res.labels))), tag="particles")

    def _cluster_figures(self, ctx: CaseContext, df: Any) -> None:
        cfg = self._tcfg
        sub = df.loc[self._rows]
        feats, robust = list(cfg.features), list(cfg.robust_features) or list(cfg.features)
        every = list(dict.fromkeys(feats + robust))
        shown = list(dict.fromkeys(["anisotropy", "tortuosity"] + every))
        units = {"diffusion_area": steps.area_unit(ctx),
                 "rms_displacement": steps.length_unit(ctx)}
        aniso, area = sub["anisotropy"].to_numpy(), sub["diffusion_area"].to_numpy()
        for method, res in self._results.items():
            names = steps.name_clusters(res.labels, aniso, area, cfg.n_modes)
            figs.cluster_figures(ctx, sub, method, res, names,
                                 feats if method == "average" else robust, shown, units,
                                 cfg.n_modes)

    def sections(self, ctx: CaseContext) -> dict:
        return dict(self._sections, paper=PAPER)


register_case(CASE, NPDiffusionCase, Config)


def _share_note(ctx: CaseContext, share: dict, flags: list[str], kind: str, lead: str,
                tail: str) -> None:
    """A note for a flagged particle share (``fidelity.atypical`` or its ``touching``,
    ``halo`` or ``faint`` part): the overall generated vs observed share and the flagged
    planted regions."""
    if not any(f.startswith((kind, f"region_{kind}")) for f in flags):
        return

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    worst = [f"{k} {pct(v['generated'])} vs {pct(v['real_vs_real'])}"
             for k, v in (share.get("regions") or {}).items() if f"region_{kind}.{k}" in flags]
    ctx.note(f"{lead}: {pct(share.get('generated'))} of generated particles vs "
             f"{pct(share.get('real_vs_real'))} observed"
             + (f" (by planted region: {'; '.join(worst)})" if worst else "") + f"; {tail}")
